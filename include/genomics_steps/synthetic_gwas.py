"""A tiny synthetic GWAS cohort with planted causal variants, for the demo and the tests.

    python -m genomics_steps.synthetic_gwas --lake URI --project P [--samples 600]

Writes, deterministic from the project name, under ``<lake>/raw/<P>/gwas/``:
- ``cohort.bed``, ``cohort.bim``, ``cohort.fam``: PLINK 1 genotypes (SNP-major .bed) of N samples at
  2,500 variants on chromosomes 1 and 2, allele frequencies 0.05-0.5, in Hardy-Weinberg equilibrium;
- ``phenotypes.tsv``: FID IID trait_a trait_b (quantitative); each trait is a planted causal variant's effect
  plus the covariates' effects plus noise, trait_b with a few values missing (NA);
- ``covariates.tsv``: FID IID age sex;
and ``<lake>/truth/<P>/gwas.json``: the causal variant of each trait, which the science check expects to rank
first. Pure Python (no numpy), like the rest of the step package.

    python -m genomics_steps.synthetic_gwas --lake URI --project P --sequenced [--samples 24] [--reference R]

writes a *sequenced* cohort instead, for the chain germline -> regenie_gwas: paired-end reads
``<lake>/raw/<P>/<sample>_R1.fastq.gz`` and ``_R2`` of samples whose diploid genomes (the synthetic reference,
``synthetic.genome``) carry shared SNVs, one of which drives ``trait_g`` in ``raw/<P>/gwas/phenotypes.tsv``
(FID and IID both the sample id, as regenie_gwas names the samples of a VCF), a covariate file without effect,
and the truth ``<lake>/truth/<P>/gwas_sequenced.json`` (every site's genotypes, and the causal site).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys

from genomics_steps import layout, synthetic
from genomics_steps.runtime import write_uri

CHROMOSOMES = {"1": 1500, "2": 1000}  # variants per chromosome
SPACING = 1000  # bp between variants
CAUSAL = {"trait_a": ("1", 700, 0.45), "trait_b": ("2", 300, 0.40)}  # chromosome, variant index, effect (SD)
BED_CODE = {2: 0b00, 1: 0b10, 0: 0b11}  # copies of allele 1 (the .bim's 5th column) -> 2-bit code


def variant_id(chrom: str, index: int) -> str:
    return f"rs{chrom}_{index + 1:05d}"


def cohort(project: str, samples: int = 600) -> dict:
    """Genotypes (variant -> list of allele-1 counts), phenotypes, covariates and the truth."""
    rng = random.Random(f"gwas:{project}")
    ids = [f"S{i + 1:04d}" for i in range(samples)]
    variants = []  # (chrom, pos, id, a1, a2, counts)
    for chrom, count in CHROMOSOMES.items():
        for i in range(count):
            freq = rng.uniform(0.05, 0.5)
            counts = [(rng.random() < freq) + (rng.random() < freq) for _ in ids]
            a1, a2 = rng.sample("ACGT", 2)
            variants.append((chrom, 10_000 + i * SPACING, variant_id(chrom, i), a1, a2, counts))
    age = [rng.uniform(20, 80) for _ in ids]
    sex = [rng.randint(0, 1) for _ in ids]
    traits: dict[str, list[float | None]] = {}
    by_id = {v[2]: v for v in variants}
    for trait, (chrom, index, effect) in CAUSAL.items():
        counts = by_id[variant_id(chrom, index)][5]
        mean = sum(counts) / len(counts)
        sd = math.sqrt(sum((c - mean) ** 2 for c in counts) / len(counts)) or 1.0
        traits[trait] = [effect * (c - mean) / sd + 0.01 * (a - 50) + 0.3 * s + rng.gauss(0, 1)
                         for c, a, s in zip(counts, age, sex)]
    for i in range(0, samples, 50):  # a few missing values: both engines drop those samples per trait
        traits["trait_b"][i] = None
    return {"ids": ids, "variants": variants, "age": age, "sex": sex, "traits": traits,
            "truth": {t: variant_id(c, i) for t, (c, i, _) in CAUSAL.items()}}


def bed_bytes(variants: list, samples: int) -> bytes:
    out = bytearray(b"\x6c\x1b\x01")  # magic, SNP-major
    for *_, counts in variants:
        for start in range(0, samples, 4):
            byte = 0
            for k, c in enumerate(counts[start : start + 4]):
                byte |= BED_CODE[c] << (2 * k)
            out.append(byte)
    return bytes(out)


def write_cohort(lake: str, project: str, samples: int = 600) -> dict:
    data = cohort(project, samples)
    base = f"{lake.rstrip('/')}/raw/{project}/gwas/"
    ids = data["ids"]
    write_uri(base + "cohort.bed", bed_bytes(data["variants"], len(ids)))
    write_uri(base + "cohort.bim", "".join(f"{c}\t{vid}\t0\t{pos}\t{a1}\t{a2}\n"
                                           for c, pos, vid, a1, a2, _ in data["variants"]).encode())
    write_uri(base + "cohort.fam", "".join(f"{s}\t{s}\t0\t0\t0\t-9\n" for s in ids).encode())
    traits = data["traits"]
    lines = ["FID\tIID\t" + "\t".join(traits)]
    for i, s in enumerate(ids):
        values = ["NA" if traits[t][i] is None else f"{traits[t][i]:.5f}" for t in traits]
        lines.append(f"{s}\t{s}\t" + "\t".join(values))
    write_uri(base + "phenotypes.tsv", ("\n".join(lines) + "\n").encode())
    lines = ["FID\tIID\tage\tsex"] + [f"{s}\t{s}\t{a:.1f}\t{x}" for s, a, x in zip(ids, data["age"], data["sex"])]
    write_uri(base + "covariates.tsv", ("\n".join(lines) + "\n").encode())
    write_uri(f"{lake.rstrip('/')}/truth/{project}/gwas.json", json.dumps(data["truth"], indent=2).encode())
    return data["truth"]


# --- a sequenced cohort: germline calls its genotypes, regenie_gwas associates them ----------------------------
SEQUENCED_TRAIT = "trait_g"
SEQUENCED_EFFECT = 1.5  # trait SDs per standardised genotype at the causal site
SEQUENCED_SITES = 20
SEQUENCED_DEPTH = 20  # 12,000 reads a sample: above germline's default min_reads (10,000), which excludes fewer


def sequenced_cohort(reference: str, project: str, samples: int = 24) -> dict:
    """Sample ids, shared SNV sites (chrom, 1-based pos, ref, alt, copies of alt per sample) at least 400 bp
    apart, each polymorphic in the cohort, the trait and covariate values, and the causal site."""
    contigs = synthetic.genome(reference)
    rng = random.Random(f"gwas-sequenced:{reference}:{project}")
    ids = [f"G{i + 1:03d}" for i in range(samples)]
    sites: list[tuple[str, int, str, str, list[int]]] = []
    taken: dict[str, list[int]] = {c: [] for c in contigs}
    while len(sites) < SEQUENCED_SITES:
        chrom = rng.choices(list(contigs), [len(s) for s in contigs.values()])[0]
        pos = rng.randint(500, len(contigs[chrom]) - 500)
        freq = rng.uniform(0.25, 0.5)
        counts = [(rng.random() < freq) + (rng.random() < freq) for _ in ids]
        if any(abs(pos - p) < 400 for p in taken[chrom]) or len(set(counts)) < 2:
            continue
        ref = contigs[chrom][pos - 1]
        taken[chrom].append(pos)
        sites.append((chrom, pos, ref, rng.choice([b for b in "ACGT" if b != ref]), counts))
    sites.sort(key=lambda site: (site[0], site[1]))
    causal = sites[len(sites) // 2]
    mean = sum(causal[4]) / samples
    sd = math.sqrt(sum((c - mean) ** 2 for c in causal[4]) / samples) or 1.0
    trait = [SEQUENCED_EFFECT * (c - mean) / sd + rng.gauss(0, 1) for c in causal[4]]
    sex = [rng.randint(0, 1) for _ in ids]
    return {"ids": ids, "sites": sites, "trait": trait, "sex": sex,
            "causal": {"chrom": causal[0], "pos": causal[1], "ref": causal[2], "alt": causal[3]}}


def _sequenced_reads(reference: str, sample: str, sites: list[tuple[str, int, str, str, int]],
                     depth: int) -> tuple[bytes, bytes]:
    """Reads of one sample from its two haplotypes: ``sites`` (chrom, pos, ref, alt, copies of alt 0-2); a het
    site's alt allele is on the second haplotype."""
    contigs = synthetic.genome(reference)
    haplotypes = []
    for copy in (0, 1):
        bases = {c: list(seq) for c, seq in contigs.items()}
        for chrom, pos, _ref, alt, copies in sites:
            if copies == 2 or (copies == 1 and copy == 1):
                bases[chrom][pos - 1] = alt
        haplotypes.append({c: "".join(seq) for c, seq in bases.items()})
    rng = random.Random(f"gwas-sequenced-reads:{reference}:{sample}")
    pairs = []
    for chrom, seq in contigs.items():
        wanted = len(seq) * depth // (2 * synthetic.READ_LENGTH)
        while wanted:
            pair = synthetic._pair(rng, haplotypes[rng.randint(0, 1)][chrom])
            if pair:
                pairs.append(pair)
                wanted -= 1
    rng.shuffle(pairs)
    return synthetic._fastq_pair(sample, pairs)


def write_sequenced_cohort(lake: str, project: str, reference: str = "synthetic-v1", samples: int = 24,
                           depth: int = SEQUENCED_DEPTH) -> dict:
    """Reads, phenotypes, covariates and truth of ``sequenced_cohort`` (the reference itself is
    ``synthetic.write_reference``'s). Returns the truth."""
    data = sequenced_cohort(reference, project, samples)
    lake = lake.rstrip("/")
    for i, sample in enumerate(data["ids"]):
        r1, r2 = _sequenced_reads(reference, sample, [(c, p, r, a, counts[i]) for c, p, r, a, counts in data["sites"]],
                                  depth)
        write_uri(f"{lake}/raw/{project}/{sample}_R1.fastq.gz", r1)
        write_uri(f"{lake}/raw/{project}/{sample}_R2.fastq.gz", r2)
    base = layout.gwas_input_prefix(lake, project)
    write_uri(base + "phenotypes.tsv", (f"FID\tIID\t{SEQUENCED_TRAIT}\n" + "".join(
        f"{s}\t{s}\t{v:.5f}\n" for s, v in zip(data["ids"], data["trait"]))).encode())
    write_uri(base + "covariates.tsv", ("FID\tIID\tsex\n" + "".join(
        f"{s}\t{s}\t{x}\n" for s, x in zip(data["ids"], data["sex"]))).encode())
    truth = {"samples": data["ids"], "trait": SEQUENCED_TRAIT, "causal": data["causal"],
             "sites": [{"chrom": c, "pos": p, "ref": r, "alt": a, "genotypes": counts}
                       for c, p, r, a, counts in data["sites"]]}
    write_uri(f"{lake}/truth/{project}/gwas_sequenced.json", json.dumps(truth, indent=1).encode())
    return truth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lake", required=True, help="lake root URI (file:// or s3://)")
    parser.add_argument("--project", required=True)
    parser.add_argument("--samples", type=int, default=None, help="600; 24 with --sequenced")
    parser.add_argument("--sequenced", action="store_true", help="reads of a sequenced cohort for germline")
    parser.add_argument("--reference", default="synthetic-v1", help="with --sequenced: the genome's reference")
    args = parser.parse_args(argv)
    if args.sequenced:
        truth = write_sequenced_cohort(args.lake, args.project, args.reference, args.samples or 24)
        print(f"sequenced cohort of {len(truth['samples'])} samples in {args.lake}/raw/{args.project}/; "
              f"{truth['trait']} is driven by {truth['causal']}")
        return 0
    args.samples = args.samples or 600
    truth = write_cohort(args.lake, args.project, args.samples)
    print(f"GWAS cohort of {args.samples} samples in {args.lake}/raw/{args.project}/gwas/; causal: {truth}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
