"""GEO/SRA ingestion steps (image docker/steps with PIPELINE=ingest: sra-toolkit, pigz,
fastp, multiqc).

    python -m genomics_steps.ingest download --pipeline-version V [--force true]
    python -m genomics_steps.ingest qc --pipeline-version V --min-reads N --min-q30-rate F [--force true]
    python -m genomics_steps.ingest multiqc --pipeline-version V --series GSE --samples GSM1 GSM2 ...

``download`` fetches each SRA run of the job's GEO sample (``prefetch`` from NCBI; on the local backend a copy
from the mirror directory standing in for SRA, GENOMICS_SRA_MIRROR), unpacks it with ``fasterq-dump`` and
writes the runs joined and compressed as the lake's raw/<project>/<GSM>_R1.fastq.gz and _R2 (a single-end
sample: R1 only), where the pipelines read reads. ``qc`` runs fastp on them, stages its metrics and a verdict (qc_metrics, ingest_qc);
``multiqc`` writes a series' MultiQC report from its samples' fastp reports.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from genomics_steps import layout
from genomics_steps.rnaseq import fastp_figures
from genomics_steps.runtime import current_sample, download as fetch_uri, exists_uri, read_uri
from genomics_steps.step import Step, StepFailed, begin, main_of, sample_step_args, threads

PIPELINE = "geo_ingestion"


LAYOUTS = {"PAIRED": 2, "SINGLE": 1}  # SRA library layout -> FASTQ files per sample (R1 and R2, or R1 only)


def _record() -> dict:
    """The job's sample record, written by the DAG's register task (runs, series, layout)."""
    return json.loads(read_uri(layout.ingest_record_uri(os.environ["GENOMICS_LAKE_URI"],
                                                        os.environ["GENOMICS_PROJECT"], current_sample())))


def _dumped(fastq: Path, run: str, mates: int) -> list[Path]:
    """The FASTQ files fasterq-dump --split-files wrote for ``run``: ``<run>_1`` and ``_2`` for a paired-end run;
    for a single-end run ``<run>_1`` or, when its spots hold one read each, ``<run>.fastq`` (sra-tools 3.x
    names it by what the run was submitted with)."""
    if mates == 2:
        paths = [fastq / f"{run}_{mate}.fastq" for mate in (1, 2)]
        for path in paths:
            if not path.is_file():
                raise StepFailed(f"fasterq-dump wrote no {path.name}: is {run} paired-end?")
        return paths
    if (fastq / f"{run}_2.fastq").is_file():
        raise StepFailed(f"fasterq-dump wrote {run}_2.fastq: {run} has a second read, but SRA says its library "
                         "is single-end")
    found = [path for path in (fastq / f"{run}_1.fastq", fastq / f"{run}.fastq") if path.is_file()]
    if not found:
        raise StepFailed(f"fasterq-dump wrote no {run}_1.fastq or {run}.fastq")
    return found[:1]


def download(args) -> None:
    record = _record()
    if record.get("layout") not in LAYOUTS or not record.get("runs"):
        raise StepFailed(f"{record.get('sample_id')}: ingestion takes paired-end or single-end samples with SRA "
                         f"runs, got {record}")
    mates = LAYOUTS[record["layout"]]
    outputs = ["R1.fastq.gz", "R2.fastq.gz"][:mates]
    step = Step.for_sample(PIPELINE, "download", args, outputs, ["fasterq-dump", "pigz"])
    step.placed = dict(zip(step.outputs, step.reads("")))  # the reads go where the pipelines read them
    if not begin(step):
        return
    mirror = os.environ.get("GENOMICS_SRA_MIRROR", "")
    fastq = step.work / "fastq"
    files: dict[int, list[str]] = {mate: [] for mate in range(1, mates + 1)}
    for run in record["runs"]:
        if mirror:  # the local stand-in for SRA (a directory): the archive prefetch would have fetched
            archive = fetch_uri(Path(layout.mirror_archive(mirror, run)).resolve().as_uri(),
                                step.work / "sra" / f"{run}.sra")
        else:
            step.run(["prefetch", run, "--max-size", "500G", "--output-file", str(step.work / "sra" / f"{run}.sra")])
            archive = step.work / "sra" / f"{run}.sra"
        step.run(["fasterq-dump", str(archive), "--split-files", "--threads", str(threads()),
                  "--outdir", str(fastq), "--temp", str(step.work / "tmp")])
        archive.unlink()  # keep the job's disk to one run's archive at a time
        for mate, path in enumerate(_dumped(fastq, run, mates), 1):
            files[mate].append(str(path))
    for mate, paths in files.items():
        step.pipe([["cat", *paths], ["pigz", "-p", str(threads()), "-c"]], stdout=step.out(f"R{mate}.fastq.gz"))
    shutil.rmtree(fastq)
    step.finish(runs=record["runs"], series=record.get("series"), layout=record["layout"])


def qc(args) -> None:
    step = Step.for_sample(PIPELINE, "qc", args, ["fastp.json", "fastp.html"], ["fastp"])
    if not begin(step):
        return
    record = _record()
    series, paired = record.get("series", ""), record.get("layout") != "SINGLE"
    r1, r2 = step.reads("")
    reads = ["-i", str(step.input(r1))] + (["-I", str(step.input(r2)), "--detect_adapter_for_pe"] if paired else [])
    step.run(["fastp", *reads, "-j", str(step.out("fastp.json")), "-h", str(step.out("fastp.html")),
              "-w", str(threads())])
    metrics = fastp_figures(json.loads(step.out("fastp.json").read_text()))
    metrics["q30_rate"] = metrics.pop("q30_rate_raw")  # judged on the reads as sequenced, not fastp's survivors
    problems = []
    if metrics["reads_after"] < args.min_reads:
        problems.append(f"{metrics['reads_after']} reads pass fastp's filters, fewer than {args.min_reads}")
    if metrics["q30_rate"] < args.min_q30_rate:
        problems.append(f"Q30 rate {metrics['q30_rate']:.3f} is below {args.min_q30_rate}")
    verdict = "qc_failed" if problems else "qc_passed"
    reason = "; ".join(problems)
    step.stage_qc("fastp", metrics)
    library = "paired-end" if paired else "single-end"
    step.stage_rows("ingest_qc", ["series_id", "reads_before", "reads_after", "q30_rate", "gc_content",
                                  "duplication_rate", "verdict", "reason", "layout"],
                    [[series, metrics["reads_before"], metrics["reads_after"], metrics["q30_rate"],
                      metrics["gc_content"], metrics["duplication_rate"], verdict, reason, library]], "fastp.tsv")
    step.finish(**metrics, series=series, layout=library, verdict=verdict, reason=reason, min_reads=args.min_reads,
                min_q30_rate=args.min_q30_rate)


def multiqc(args) -> None:
    lake, project = os.environ["GENOMICS_LAKE_URI"], os.environ["GENOMICS_PROJECT"]
    step = Step("multiqc", output_prefix=layout.series_report_prefix(lake, project, args.series),
                outputs=["multiqc_report.html"], tools=["multiqc"], force=True)
    reports = step.work / "fastp"
    reports.mkdir()
    found = []
    for sample in args.samples:
        uri = layout.step_prefix(lake, PIPELINE, args.pipeline_version, project, sample, "qc") + "fastp.json"
        if exists_uri(uri):  # a sample whose download or QC failed has no report yet
            shutil.copy(step.input(uri, f"{sample}.json"), reports / f"{sample}.fastp.json")
            found.append(sample)
    if not found:
        raise StepFailed(f"no sample of {args.series} has a fastp report yet")
    step.run(["multiqc", str(reports), "--outdir", str(step.work / "mq"), "--filename", "multiqc_report.html",
              "--title", f"{args.series} ({project})", "--fn_as_s_name", "--no-data-dir", "--force"])
    (step.work / "mq" / "multiqc_report.html").replace(step.out("multiqc_report.html"))
    step.finish(series=args.series, samples=found)


def _qc_args(parser) -> None:
    sample_step_args(parser)
    parser.add_argument("--min-reads", type=int, required=True)
    parser.add_argument("--min-q30-rate", type=float, required=True)


def _multiqc_args(parser) -> None:
    parser.add_argument("--pipeline-version", required=True)
    parser.add_argument("--series", required=True)
    parser.add_argument("--samples", nargs="+", required=True)


COMMANDS = {
    "download": (sample_step_args, download),
    "qc": (_qc_args, qc),
    "multiqc": (_multiqc_args, multiqc),
}

if __name__ == "__main__":
    sys.exit(main_of(COMMANDS))
