"""Tiny synthetic sequencing data with a known truth, for the demo and the tests.

    python -m genomics_steps.synthetic --lake URI --project P --reference NAME --samples S1 S2 ...

Writes, all deterministic from the names given:
- ``<lake>/references/<NAME>/``: ``transcriptome.fa`` (genes with one or two isoforms), ``tx2gene.tsv``, and
  ``genome.fa`` (two small contigs);
- ``<lake>/raw/<P>/<S>_R1.fastq.gz`` and ``_R2``: paired-end reads, for RNA-seq samples (``--kind rnaseq``)
  simulated from the transcriptome at known abundances, for DNA samples (``--kind germline``) from a diploid
  genome carrying planted SNVs at ~30x;
- ``write_bcl_convert_output``: the same reads laid out as Illumina's BCL Convert writes a run folder (lanes
  split or not, a per-project sub-folder, Undetermined files, Reports/ and Logs/), single-end samples included;
- ``<lake>/truth/<P>/<S>/``: ``transcript_tpm.tsv`` (the true TPM of each transcript) or ``variants.tsv`` (the
  planted SNVs and their genotypes), which the science checks compare the pipelines' results with.

It stands in for a sequencer: the pipelines never read the truth.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import math
import random
import sys

from genomics_steps.runtime import read_uri, write_uri

READ_LENGTH = 100
FRAGMENT_MEAN, FRAGMENT_SD = 250, 25
ERROR_RATE = 0.002
_COMPLEMENT = str.maketrans("ACGT", "TGCA")


def _rng(*names: str) -> random.Random:
    return random.Random(int(hashlib.sha256("/".join(names).encode()).hexdigest()[:16], 16))


def _sequence(rng: random.Random, length: int) -> str:
    return "".join(rng.choices("ACGT", k=length))


def revcomp(seq: str) -> str:
    return seq.translate(_COMPLEMENT)[::-1]


def fasta(records: dict[str, str], width: int = 60) -> str:
    out = io.StringIO()
    for name, seq in records.items():
        out.write(f">{name}\n")
        for i in range(0, len(seq), width):
            out.write(seq[i : i + width] + "\n")
    return out.getvalue()


# --- references -----------------------------------------------------------------------------------
def transcriptome(reference: str, genes: int = 40) -> tuple[dict[str, str], dict[str, str]]:
    """Transcripts and their genes. One gene in four has a second isoform that skips its middle exon."""
    rng = _rng(reference, "transcriptome")
    transcripts: dict[str, str] = {}
    tx2gene: dict[str, str] = {}
    for g in range(1, genes + 1):
        gene = f"GENE{g:03d}"
        exons = [_sequence(rng, rng.randint(250, 700)) for _ in range(3)]
        transcripts[f"{gene}-T1"] = "".join(exons)
        tx2gene[f"{gene}-T1"] = gene
        if g % 4 == 0:
            transcripts[f"{gene}-T2"] = exons[0] + exons[2]
            tx2gene[f"{gene}-T2"] = gene
    return transcripts, tx2gene


def genome(reference: str) -> dict[str, str]:
    rng = _rng(reference, "genome")
    return {"chr1": _sequence(rng, 40_000), "chr2": _sequence(rng, 20_000)}


# --- reads ----------------------------------------------------------------------------------------
def _mutate(rng: random.Random, read: str) -> str:
    if rng.random() > READ_LENGTH * ERROR_RATE * 2:  # most reads carry no error: skip the per-base loop
        return read
    bases = list(read)
    for i in range(len(bases)):
        if rng.random() < ERROR_RATE:
            bases[i] = rng.choice([b for b in "ACGT" if b != bases[i]])
    return "".join(bases)


def _pair(rng: random.Random, template: str) -> tuple[str, str] | None:
    length = max(READ_LENGTH + 20, int(rng.gauss(FRAGMENT_MEAN, FRAGMENT_SD)))
    if length > len(template):
        return None
    start = rng.randint(0, len(template) - length)
    fragment = template[start : start + length]
    if rng.random() < 0.5:  # unstranded library: either strand is read first
        fragment = revcomp(fragment)
    return _mutate(rng, fragment[:READ_LENGTH]), _mutate(rng, revcomp(fragment)[:READ_LENGTH])


def _fastq_pair(sample: str, pairs: list[tuple[str, str]], phred: int = 40) -> tuple[bytes, bytes]:
    quality = chr(33 + phred) * READ_LENGTH
    r1, r2 = io.StringIO(), io.StringIO()
    for i, (a, b) in enumerate(pairs, 1):
        r1.write(f"@{sample}.{i}/1\n{a}\n+\n{quality}\n")
        r2.write(f"@{sample}.{i}/2\n{b}\n+\n{quality}\n")
    return (gzip.compress(r1.getvalue().encode(), compresslevel=4, mtime=0),
            gzip.compress(r2.getvalue().encode(), compresslevel=4, mtime=0))


def rnaseq_sample(reference: str, sample: str, fragments: int = 40_000,
                  phred: int = 40) -> tuple[bytes, bytes, dict[str, float]]:
    """Reads at known abundances: each transcript's TPM is drawn log-normally per sample; fragments are
    sampled in proportion to TPM x length, as in a real library. Every base has quality ``phred``. Returns R1,
    R2 and the true TPM."""
    transcripts, _ = transcriptome(reference)
    rng = _rng(reference, sample, "rnaseq")
    names = list(transcripts)
    expression = {t: math.exp(rng.gauss(0, 1.5)) for t in names}
    total = sum(expression.values())
    tpm = {t: 1e6 * e / total for t, e in expression.items()}
    weights = [tpm[t] * len(transcripts[t]) for t in names]
    pairs: list[tuple[str, str]] = []
    while len(pairs) < fragments:
        for t in rng.choices(names, weights, k=fragments - len(pairs)):
            pair = _pair(rng, transcripts[t])
            if pair:
                pairs.append(pair)
    r1, r2 = _fastq_pair(sample, pairs, phred)
    return r1, r2, tpm


def planted_variants(reference: str, sample: str, count: int = 40) -> list[tuple[str, int, str, str, str]]:
    """SNVs (chrom, 1-based pos, ref, alt, genotype 0/1 or 1/1) at least 150 bp apart, away from contig ends."""
    contigs = genome(reference)
    rng = _rng(reference, sample, "variants")
    chosen: list[tuple[str, int, str, str, str]] = []
    taken: dict[str, list[int]] = {c: [] for c in contigs}
    while len(chosen) < count:
        chrom = rng.choices(list(contigs), [len(s) for s in contigs.values()])[0]
        pos = rng.randint(500, len(contigs[chrom]) - 500)
        if any(abs(pos - p) < 150 for p in taken[chrom]):
            continue
        ref = contigs[chrom][pos - 1]
        alt = rng.choice([b for b in "ACGT" if b != ref])
        genotype = "1/1" if rng.random() < 0.3 else "0/1"
        taken[chrom].append(pos)
        chosen.append((chrom, pos, ref, alt, genotype))
    return sorted(chosen, key=lambda v: (v[0], v[1]))


def cohort_variants(reference: str, samples: list[str], count: int = 24) -> list[tuple[str, int, str, str, dict]]:
    """SNVs shared by a cohort: (chrom, pos, ref, alt, {sample: genotype 0/0, 0/1 or 1/1}), at least 150 bp
    apart. Every site has at least one carrier; the first site is a singleton (one het sample, every other
    hom-ref), the second has every genotype when there are three samples or more, the rest are drawn at an
    allele frequency of 0.1 to 0.6 per site."""
    contigs = genome(reference)
    rng = _rng(reference, "cohort", *samples)
    sites: list[tuple[str, int, str, str, dict]] = []
    taken: dict[str, list[int]] = {c: [] for c in contigs}
    while len(sites) < count:
        chrom = rng.choices(list(contigs), [len(s) for s in contigs.values()])[0]
        pos = rng.randint(500, len(contigs[chrom]) - 500)
        if any(abs(pos - p) < 150 for p in taken[chrom]):
            continue
        ref = contigs[chrom][pos - 1]
        alt = rng.choice([b for b in "ACGT" if b != ref])
        if not sites:
            genotypes = {s: "0/1" if i == 0 else "0/0" for i, s in enumerate(samples)}
        elif len(sites) == 1 and len(samples) >= 3:
            genotypes = {s: ("0/0", "0/1", "1/1")[i % 3] for i, s in enumerate(samples)}
        else:
            freq = rng.uniform(0.1, 0.6)
            genotypes = {s: ("0/0", "0/1", "1/1")[(rng.random() < freq) + (rng.random() < freq)] for s in samples}
        if all(g == "0/0" for g in genotypes.values()):
            continue
        taken[chrom].append(pos)
        sites.append((chrom, pos, ref, alt, genotypes))
    return sorted(sites, key=lambda v: (v[0], v[1]))


def germline_sample(reference: str, sample: str, depth: int = 30,
                    variants: list[tuple[str, int, str, str, str]] | None = None) -> tuple[bytes, bytes, list]:
    """Reads from the two haplotypes of a diploid genome carrying the sample's planted SNVs (``variants``:
    (chrom, pos, ref, alt, genotype 0/1 or 1/1); default ``planted_variants``)."""
    contigs = genome(reference)
    variants = planted_variants(reference, sample) if variants is None else variants
    haplotypes = []
    for copy in (0, 1):
        hap = {c: list(s) for c, s in contigs.items()}
        for chrom, pos, _ref, alt, genotype in variants:
            if genotype == "1/1" or copy == 1:
                hap[chrom][pos - 1] = alt
        haplotypes.append({c: "".join(s) for c, s in hap.items()})
    rng = _rng(reference, sample, "germline")
    pairs: list[tuple[str, str]] = []
    for chrom, seq in contigs.items():
        n = len(seq) * depth // (2 * READ_LENGTH)
        while n > 0:
            pair = _pair(rng, haplotypes[rng.randint(0, 1)][chrom])
            if pair:
                pairs.append(pair)
                n -= 1
    rng.shuffle(pairs)
    r1, r2 = _fastq_pair(sample, pairs)
    return r1, r2, variants


# --- science checks: the pipelines' published results against the truth ------------------------------
def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):  # ties share their average rank
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: list[float], ys: list[float]) -> float:
    rx, ry = _ranks(xs), _ranks(ys)
    n = len(rx)
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / var if var else 0.0


def true_tpm(lake: str, project: str, sample: str) -> dict[str, float]:
    text = read_uri(f"{lake.rstrip('/')}/truth/{project}/{sample}/transcript_tpm.tsv").decode()
    return {t: float(v) for t, v in (line.split("\t") for line in text.splitlines()[1:])}


def true_snvs(lake: str, project: str, sample: str) -> set[tuple[str, int, str, str]]:
    text = read_uri(f"{lake.rstrip('/')}/truth/{project}/{sample}/variants.tsv").decode()
    return {(c, int(p), r, a) for c, p, r, a, _gt in (line.split("\t") for line in text.splitlines()[1:])}


def quantification_spearman(lake: str, project: str, sample: str, estimated: dict[str, float]) -> float:
    """Spearman correlation of estimated and true TPM over every transcript (missing estimates count as 0)."""
    truth = true_tpm(lake, project, sample)
    names = sorted(truth)
    return spearman([truth[t] for t in names], [estimated.get(t, 0.0) for t in names])


def snv_recall(lake: str, project: str, sample: str, called: set[tuple[str, int, str, str]]) -> float:
    """Share of the planted SNVs called with the right position and alleles."""
    truth = true_snvs(lake, project, sample)
    return len(truth & called) / len(truth)


# --- writing --------------------------------------------------------------------------------------
def write_reference(lake: str, reference: str) -> None:
    transcripts, tx2gene = transcriptome(reference)
    base = f"{lake.rstrip('/')}/references/{reference}/"
    write_uri(base + "transcriptome.fa", fasta(transcripts).encode())
    write_uri(base + "tx2gene.tsv", "".join(f"{t}\t{g}\n" for t, g in tx2gene.items()).encode())
    write_uri(base + "genome.fa", fasta(genome(reference)).encode())


def write_sample(lake: str, project: str, reference: str, sample: str, kind: str) -> None:
    r1, r2 = write_truth(lake, project, reference, sample, kind)
    lake = lake.rstrip("/")
    write_uri(f"{lake}/raw/{project}/{sample}_R1.fastq.gz", r1)
    write_uri(f"{lake}/raw/{project}/{sample}_R2.fastq.gz", r2)


def split_lanes(fastq_gz: bytes, lanes: int) -> list[bytes]:
    """The reads of one gzipped FASTQ in ``lanes`` consecutive parts, each gzipped, as a sequencer's lanes hold
    them: the parts joined in order are the same reads in the same order."""
    lines = gzip.decompress(fastq_gz).decode().splitlines(keepends=True)
    records = ["".join(lines[i : i + 4]) for i in range(0, len(lines), 4)]
    size = -(-len(records) // lanes)
    return [gzip.compress("".join(records[i * size : (i + 1) * size]).encode(), compresslevel=4, mtime=0)
            for i in range(lanes)]


def write_truth(lake: str, project: str, reference: str, sample: str, kind: str,
                source: str | None = None) -> tuple[bytes, bytes]:
    """Simulate ``source``'s reads (default: ``sample``'s), write their truth as ``sample``'s; returns R1, R2."""
    truth = f"{lake.rstrip('/')}/truth/{project}/{sample}/"
    if kind == "rnaseq":
        r1, r2, tpm = rnaseq_sample(reference, source or sample)
        write_uri(truth + "transcript_tpm.tsv",
                  ("transcript_id\ttpm\n" + "".join(f"{t}\t{v:.4f}\n" for t, v in tpm.items())).encode())
    elif kind == "germline":
        r1, r2, variants = germline_sample(reference, source or sample)
        write_uri(truth + "variants.tsv", ("chrom\tpos\tref\talt\tgenotype\n"
                                           + "".join("\t".join(map(str, v)) + "\n" for v in variants)).encode())
    else:
        raise ValueError(f"unknown kind {kind!r}: rnaseq or germline")
    return r1, r2


def write_bcl_convert_output(prefix: str, samples: dict[str, tuple[bytes, bytes | None]], *, lanes: int = 4,
                             split: bool = True, project_folder: str = "") -> list[str]:
    """Write ``samples`` (id -> gzipped R1, R2 or None for single-end) under ``prefix`` as BCL Convert names
    them: ``[<project_folder>/]<id>_S<n>_L00<lane>_R1_001.fastq.gz`` (without ``_L00<lane>`` when not
    ``split``), numbered in order from S1, with ``Undetermined_S0_*`` at the top and ``Reports/`` and ``Logs/``
    files. Returns the paths written, relative to ``prefix``."""
    base = prefix if prefix.endswith("/") else prefix + "/"
    folder = f"{project_folder}/" if project_folder else ""
    written: list[str] = []

    def put(path: str, data: bytes) -> None:
        write_uri(base + path, data)
        written.append(path)

    undetermined = gzip.compress(b"@undetermined.1 1:N:0:NNNNNNNN\n" + b"N" * READ_LENGTH + b"\n+\n"
                                 + b"#" * READ_LENGTH + b"\n", mtime=0)
    for number, (sample, mates) in enumerate(samples.items(), 1):
        for read, data in zip(("R1", "R2"), mates):
            if data is None:
                continue
            parts = split_lanes(data, lanes) if split else [data]
            for lane, part in enumerate(parts, 1):
                put(f"{folder}{sample}_S{number}{f'_L{lane:03d}' if split else ''}_{read}_001.fastq.gz", part)
    for lane in range(1, (lanes if split else 1) + 1):
        for read in ("R1", "R2"):
            put(f"Undetermined_S0{f'_L{lane:03d}' if split else ''}_{read}_001.fastq.gz", undetermined)
    put("Reports/Demultiplex_Stats.csv", b"Lane,SampleID,Index,# Reads\n")
    put("Reports/fastq_list.csv", b"RGID,RGSM,RGLB,Lane,Read1File,Read2File\n")
    put("Logs/FastqComplete.txt", b"")
    return written


def write_cohort(lake: str, project: str, reference: str, samples: list[str], depth: int = 30,
                 sites: int = 24) -> list[tuple[str, int, str, str, dict]]:
    """Reads for ``samples`` carrying the shared SNVs of ``cohort_variants`` (and no others), and the truth
    ``<lake>/truth/<project>/cohort.tsv`` (chrom, pos, ref, alt, then one genotype column per sample)."""
    lake = lake.rstrip("/")
    planted = cohort_variants(reference, samples, sites)
    for sample in samples:
        own = [(c, p, r, a, g[sample]) for c, p, r, a, g in planted if g[sample] != "0/0"]
        r1, r2, _ = germline_sample(reference, sample, depth, own)
        write_uri(f"{lake}/raw/{project}/{sample}_R1.fastq.gz", r1)
        write_uri(f"{lake}/raw/{project}/{sample}_R2.fastq.gz", r2)
    body = "\t".join(["chrom", "pos", "ref", "alt", *samples]) + "\n" + "".join(
        "\t".join([c, str(p), r, a, *(g[s] for s in samples)]) + "\n" for c, p, r, a, g in planted)
    write_uri(f"{lake}/truth/{project}/cohort.tsv", body.encode())
    return planted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lake", required=True, help="lake root URI (file:// or s3://)")
    parser.add_argument("--project", required=True)
    parser.add_argument("--reference", default="synthetic-v1")
    parser.add_argument("--kind", choices=["rnaseq", "germline"], required=True)
    parser.add_argument("--samples", nargs="+", required=True)
    args = parser.parse_args(argv)
    write_reference(args.lake, args.reference)
    for sample in args.samples:
        write_sample(args.lake, args.project, args.reference, sample, args.kind)
        print(f"{args.kind} sample {sample}: reads in {args.lake}/raw/{args.project}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
