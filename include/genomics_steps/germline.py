"""Germline variant-calling steps (image docker/steps with PIPELINE=germline: bwa, samtools,
bcftools, tabix).

    python -m genomics_steps.germline bwa-index --reference R [--force true]
    python -m genomics_steps.germline bwa-mem --pipeline-version V --reference R
        [--reads-manifest URI | --input-prefix URI]
    python -m genomics_steps.germline markdup --pipeline-version V [--min-reads N] [--min-mapping-rate F]
    python -m genomics_steps.germline call --pipeline-version V --reference R
    python -m genomics_steps.germline stats --pipeline-version V

Project, sample and lake come from the job's environment (GENOMICS_*), as on Batch. bwa mem reads the files
the run's reads manifest names: two (paired-end) or one (single-end), lanes joined in order.

QC gate (gates.py), in markdup, on the figures samtools flagstat gives of the marked BAM (there is no fastp
here): fewer primary reads than --min-reads excludes the sample; a primary mapped rate below
--min-mapping-rate flags it (it is still called and published).
"""

from __future__ import annotations

import sys

from genomics_steps import gates, layout
from genomics_steps.step import Step, begin, gate_args, index_step_args, main_of, sample_step_args, threads

PIPELINE = "germline"
STEPS = ["bwa_mem", "markdup", "call", "stats"]
BWA_INDEX = ["genome.fa", "genome.fa.amb", "genome.fa.ann", "genome.fa.bwt", "genome.fa.pac", "genome.fa.sa",
             "genome.fa.fai"]


def _reference(step: Step, reference: str, files: list[str]) -> str:
    """Stage ``files`` of the reference's bwa index; returns the local genome.fa path."""
    base = layout.index_prefix(step.lake, reference, "bwa")
    for name in files:
        step.input(base + name, f"ref/{name}")
    return str(step.work / "in" / "ref" / "genome.fa")


def bwa_index(args) -> None:
    step = Step.for_index("bwa_index", args, "bwa", BWA_INDEX, ["bwa", "samtools"])
    if not begin(step):
        return
    step.input(step.reference(args.reference) + "genome.fa").replace(step.out("genome.fa"))
    step.run(["bwa", "index", str(step.out("genome.fa"))])
    step.run(["samtools", "faidx", str(step.out("genome.fa"))])
    step.finish()


def bwa_mem(args) -> None:
    step = Step.for_sample(PIPELINE, "bwa_mem", args, ["aligned.bam"], ["bwa", "samtools"])
    if not begin(step):
        return
    sample = step.sample
    ref = _reference(step, args.reference, BWA_INDEX[:-1])
    r1, r2 = step.stage_reads(step.sample_reads(args))
    mates = [str(r1)] if r2 is None else [str(r1), str(r2)]
    read_group = f"@RG\\tID:{sample}\\tSM:{sample}\\tPL:ILLUMINA"  # bwa expands the \t itself
    # bwa's output is grouped by read name, which fixmate needs; markdup later needs fixmate's mate scores.
    step.pipe([["bwa", "mem", "-t", str(threads()), "-R", read_group, ref, *mates],
               ["samtools", "fixmate", "-m", "-O", "bam", "-", str(step.out("aligned.bam"))]])
    step.finish()


def markdup_gate(args) -> list[gates.Minimum]:
    return [
        gates.Minimum("reads", "reads", "the number of primary reads (samtools flagstat)", args.min_reads,
                      gates.EXCLUDE),
        gates.Minimum("mapping_rate", "mapped_rate", "the primary mapped rate (samtools flagstat)",
                      args.min_mapping_rate, gates.FLAG),
    ]


def markdup(args) -> None:
    outputs = ["sample.bam", "sample.bam.bai", "markdup.txt", "flagstat.tsv"]
    step = Step.for_sample(PIPELINE, "markdup", args, outputs, ["samtools"])
    if not begin(step, markdup_gate(args)):
        return
    aligned = step.input(step.sibling("bwa_mem") + "aligned.bam")
    sorted_bam = step.work / "sorted.bam"
    n = str(threads())
    step.run(["samtools", "sort", "-@", n, "-o", str(sorted_bam), "-T", str(step.work / "sort"), str(aligned)])
    step.run(["samtools", "markdup", "-@", n, "-s", "-f", str(step.out("markdup.txt")), str(sorted_bam),
              str(step.out("sample.bam"))])
    step.run(["samtools", "index", str(step.out("sample.bam"))])
    step.run(["samtools", "flagstat", "-O", "tsv", str(step.out("sample.bam"))], stdout=step.out("flagstat.tsv"))
    flags = {}
    for line in step.out("flagstat.tsv").read_text().splitlines():
        passed, _failed, what = line.split("\t")[:3]
        flags[what] = passed
    total = int(flags.get("primary", flags.get("total (QC-passed reads + QC-failed reads)", "0")) or 0)
    qc = {
        "reads": total,
        "mapped_rate": int(flags.get("primary mapped", 0)) / total if total else 0.0,
        "properly_paired_rate": int(flags.get("properly paired", 0)) / total if total else 0.0,
        "duplicate_rate": int(flags.get("primary duplicates", 0)) / total if total else 0.0,
    }
    step.stage_qc("samtools", qc)
    verdict = step.judge(markdup_gate(args), qc)
    step.finish(**qc)
    if verdict.excluded:
        step.exclude(verdict.excluded)


def call(args) -> None:
    step = Step.for_sample(PIPELINE, "call", args, ["calls.vcf.gz", "calls.vcf.gz.tbi"], ["bcftools"])
    if not begin(step):
        return
    ref = _reference(step, args.reference, ["genome.fa", "genome.fa.fai"])
    bam = step.input(step.sibling("markdup") + "sample.bam")
    step.input(step.sibling("markdup") + "sample.bam.bai")
    vcf = step.out("calls.vcf.gz")
    step.pipe([["bcftools", "mpileup", "-f", ref, "-a", "AD,DP", "-Ou", str(bam)],
               ["bcftools", "call", "-m", "-v", "-Oz", "-o", str(vcf)]])
    step.run(["bcftools", "index", "-t", str(vcf)])
    table = step.work / "calls.tsv"
    step.run(["bcftools", "query", "-f", r"%CHROM\t%POS\t%REF\t%ALT\t%QUAL\t%FILTER\t[%GT]\t[%DP]\n", str(vcf)],
             stdout=table)
    rows = [line.split("\t") for line in table.read_text().splitlines() if line]
    step.stage_rows("variant_calls", ["chrom", "pos", "ref", "alt", "qual", "filter", "genotype", "depth"],
                    [[c if c != "." else "" for c in row] for row in rows], "bcftools.tsv")
    step.finish(variants=len(rows))


def stats(args) -> None:
    step = Step.for_sample(PIPELINE, "stats", args, ["stats.txt"], ["bcftools"])
    if not begin(step):
        return
    vcf = step.input(step.sibling("call") + "calls.vcf.gz")
    step.run(["bcftools", "stats", str(vcf)], stdout=step.out("stats.txt"))
    qc = stats_qc(step.out("stats.txt").read_text())
    step.stage_qc("bcftools", qc)
    step.finish(**qc)


def stats_qc(text: str) -> dict[str, float | None]:
    """The QC numbers of a ``bcftools stats`` report of one VCF.

    Transitions and transversions are given as counts, and ``ts_tv`` is their ratio, or None when it is
    undefined (no transversions): bcftools prints that case as "0.00", which would read as "all transversions".
    """
    names = {"number of records:": "records", "number of SNPs:": "snvs", "number of indels:": "indels",
             "number of multiallelic sites:": "multiallelic_sites"}
    qc: dict[str, float | None] = {}
    for line in text.splitlines():
        fields = line.split("\t")
        if fields[0] == "SN" and fields[2] in names:
            qc[names[fields[2]]] = float(fields[3])
        elif fields[0] == "TSTV":  # [2]id [3]ts [4]tv [5]ts/tv rounded to two decimals, then the same for 1st ALTs
            transitions, transversions = int(fields[2]), int(fields[3])
            qc["transitions"], qc["transversions"] = transitions, transversions
            qc["ts_tv"] = transitions / transversions if transversions else None
    return qc


COMMANDS = {
    "bwa-index": (index_step_args, bwa_index),
    "bwa-mem": (lambda p: sample_step_args(p, reads=True, reference=True), bwa_mem),
    "markdup": (lambda p: (sample_step_args(p), gate_args(p, "reads", "mapping_rate")), markdup),
    "call": (lambda p: sample_step_args(p, reference=True), call),
    "stats": (lambda p: sample_step_args(p), stats),
}

if __name__ == "__main__":
    sys.exit(main_of(COMMANDS))
