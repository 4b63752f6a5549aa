"""A pipeline run's MultiQC report (images docker/steps with PIPELINE=rnaseq or germline: multiqc).

    python -m genomics_steps.run_report multiqc --pipeline-version V

Runs once per rnaseq or germline run, after its ``outcomes`` task. It reads, from the lake:
- the run's samples, ``samples.json`` in the report's folder (``layout.run_report_prefix``; Airflow writes it);
- each sample's outcome at each step, from the ``sample_outcomes`` rows the run staged (one listing; the file
  names say the outcome, and the rows of the samples that did not succeed give the reason);
- the tools' own reports of the samples that have them: rnaseq fastp's JSON and salmon's ``meta_info.json``
  and ``lib_format_counts.json``; germline bcftools stats. MultiQC 1.14 (Debian bookworm) reads samtools
  flagstat's text output, not the ``-O tsv`` the markdup step keeps, and has no samtools markdup module, so
  germline's samtools figures (what markdup recorded in its metrics.json from flagstat) are a table of ours.

and writes ``multiqc_report.html`` to the report's folder, where every sample of the run is named: a
"Sample outcomes" table (outcome, the step where a sample stopped, the reason) and an ``outcome`` column in
the general statistics mark failed and excluded samples. It stages the run's ``run_reports`` row.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

from genomics_steps import layout
from genomics_steps.names import SAMPLE_ID
from genomics_steps.outcomes import OUTCOMES, SUCCEEDED
from genomics_steps.runtime import exists_uri, list_uri, read_uri, staging_uri, write_uri
from genomics_steps.step import Step, StepFailed, main_of

REPORT = "multiqc_report.html"
SAMPLES = "samples.json"
# per pipeline: (step, file, where MultiQC finds it: a path template below the work folder)
TOOL_REPORTS = {
    "rnaseq": [("fastp", "fastp.json", "fastp/{sample}.fastp.json"),
               ("salmon_quant", "meta_info.json", "salmon/{sample}/aux_info/meta_info.json"),
               ("salmon_quant", "lib_format_counts.json", "salmon/{sample}/lib_format_counts.json")],
    "germline": [("stats", "stats.txt", "bcftools/{sample}.bcftools_stats.txt")],
}
# per pipeline: figures a step recorded in its metrics.json, shown as a table of ours
RECORDED = {"germline": ("markdup", "samtools", ["reads", "mapped_rate", "properly_paired_rate", "duplicate_rate"])}
RUN_REPORT_COLUMNS = ["run_id", "uri", "samples", "failed", "excluded", "failed_samples", "excluded_samples"]


def outcomes_of(listing: dict[str, str]) -> dict[str, dict[str, str]]:
    """sample -> {step: outcome} from the names of a run's staged outcome files (``<step>-<outcome>-<job>.tsv``
    under ``sample_id=<sample>/``); a step recorded twice (a resubmission) keeps its best outcome."""
    rank = {"succeeded": 3, "excluded": 2, "failed": 1, "not_run": 0}
    found: dict[str, dict[str, str]] = {}
    for path in listing:
        folder, _, name = path.partition("/")
        if not folder.startswith("sample_id=") or not name.endswith(".tsv"):
            continue
        for outcome in OUTCOMES:
            step, sep, _ = name.partition(f"-{outcome}-")
            if sep:
                steps = found.setdefault(folder[len("sample_id="):], {})
                if rank[outcome] > rank.get(steps.get(step, ""), -1):
                    steps[step] = outcome
    return found


def verdict(steps: list[str], recorded: dict[str, str]) -> tuple[str, str]:
    """(outcome, step) of a sample in this run: where it stopped, or succeeded; ``done before`` when no job of
    this run touched it (it was complete from an earlier run)."""
    if not recorded:
        return "done before", ""
    for step in steps:
        outcome = recorded.get(step)
        if outcome != SUCCEEDED:
            return (outcome or "failed"), step
    return SUCCEEDED, ""


def multiqc(args) -> None:
    lake, project, pipeline = (os.environ[k] for k in ("GENOMICS_LAKE_URI", "GENOMICS_PROJECT", "GENOMICS_PIPELINE"))
    run_id, version = os.environ["GENOMICS_RUN_ID"], args.pipeline_version
    if pipeline not in TOOL_REPORTS:
        raise StepFailed(f"no run report for pipeline {pipeline!r}; reports exist for {sorted(TOOL_REPORTS)}", 64)
    steps = {"rnaseq": ["fastp", "salmon_quant"], "germline": ["bwa_mem", "markdup", "call", "stats"]}[pipeline]
    prefix = layout.run_report_prefix(lake, pipeline, version, project, run_id)
    step = Step("multiqc", output_prefix=prefix, outputs=[REPORT], tools=["multiqc"], force=True,
                pipeline=pipeline, pipeline_version=version)
    samples = [SAMPLE_ID.check("samples.json", s) for s in json.loads(read_uri(prefix + SAMPLES))["samples"]]
    outcome_prefix = staging_uri("sample_outcomes", layout.run_key(run_id))
    outcome_files = list_uri(outcome_prefix)
    recorded = outcomes_of(outcome_files)
    table: dict[str, dict[str, str]] = {}
    for sample in samples:
        outcome, at = verdict(steps, recorded.get(sample, {}))
        table[sample] = {"outcome": outcome, "step": at, "reason": ""}
        if outcome not in (SUCCEEDED, "done before"):
            table[sample]["reason"] = _reason(outcome_prefix, outcome_files, sample, at, outcome)

    inputs = step.work / "mqc"
    for sample in samples:
        for from_step, file, target in TOOL_REPORTS[pipeline]:
            uri = layout.step_prefix(lake, pipeline, version, project, sample, from_step) + file
            if exists_uri(uri):  # a sample that failed before this step has no such report
                path = inputs / target.format(sample=sample)
                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(step.input(uri, f"{sample}/{from_step}/{file}"), path)
    if pipeline in RECORDED:
        from_step, tool, figures = RECORDED[pipeline]
        rows = {}
        for sample in samples:
            uri = layout.step_prefix(lake, pipeline, version, project, sample, from_step) + layout.METRICS
            if exists_uri(uri):
                metrics = json.loads(read_uri(uri)).get("metrics") or {}
                rows[sample] = {k: metrics[k] for k in figures if k in metrics}
        _custom(inputs / f"{tool}_figures_mqc.json", f"{tool}_figures", f"{tool} ({from_step})",
                f"Figures {tool} gave of each sample's marked BAM, as the {from_step} step recorded them.", rows)
    _custom(inputs / "sample_outcomes_mqc.json", "sample_outcomes", "Sample outcomes",
            "Each sample of this run: succeeded, failed or excluded (and the step where it stopped), or done "
            "before (complete from an earlier run of this version; no job ran for it now).", table)
    _custom(inputs / "outcome_mqc.json", "run_outcome", "Outcome", "", {s: {"outcome": r["outcome"]}
                                                                          for s, r in table.items()},
            plot_type="generalstats")
    config = step.work / "multiqc_config.json"  # MultiQC reads YAML, of which JSON is a part
    config.write_text(json.dumps(_names_config(samples)))
    failed = sorted(s for s, r in table.items() if r["outcome"] == "failed")
    excluded = sorted(s for s, r in table.items() if r["outcome"] == "excluded")
    step.run(["multiqc", str(inputs), "--outdir", str(step.work / "out-mqc"), "--filename", REPORT, "--title",
              f"{pipeline} {version}: {project}", "--comment",
              f"Run {run_id}: {len(samples)} samples, {len(failed)} failed {failed[:20]}, "
              f"{len(excluded)} excluded {excluded[:20]}", "--config", str(config), "--no-data-dir", "--force"])
    (step.work / "out-mqc" / REPORT).replace(step.out(REPORT))
    step.finish(samples=len(samples), failed=failed, excluded=excluded)
    run = layout.run_key(run_id)
    write_uri(staging_uri("run_reports", run) + f"run_label={run}/report.tsv",
              ("\t".join(RUN_REPORT_COLUMNS) + "\n" + "\t".join(
                  [" ".join(run_id.split()), step.uri(REPORT), str(len(samples)), str(len(failed)),
                   str(len(excluded)), ",".join(failed), ",".join(excluded)]) + "\n").encode())


def _names_config(samples: list[str]) -> dict:
    """MultiQC settings that show each sample under its id in every section: no trimming of names (a sample id
    may end like a file extension), bcftools stats named by their file (inside, every sample's VCF is
    calls.vcf.gz), and the tools' names mapped back to the id, exactly: fastp names a sample after its first
    reads file."""
    renames = {}
    for sample in samples:
        renames[f"{sample}_R1.fastq.gz"] = sample
        renames[f"{sample}.bcftools_stats.txt"] = sample
    return {"fn_clean_sample_names": False, "use_filename_as_sample_name": ["bcftools/stats"],
            "sample_names_replace": renames, "sample_names_replace_exact": True}


def _reason(prefix: str, listing: dict[str, str], sample: str, step: str, outcome: str) -> str:
    """The reason the staged outcome row of ``sample`` at ``step`` gives."""
    for path in sorted(listing):
        if path.startswith(f"sample_id={sample}/{step}-{outcome}-"):
            lines = read_uri(prefix + path).decode().splitlines()
            if len(lines) >= 2:
                row = dict(zip(lines[0].split("\t"), lines[1].split("\t")))
                return row.get("reason", "")
    return ""


def _custom(path, section_id: str, name: str, description: str, data: dict, plot_type: str = "table") -> None:
    """A MultiQC custom-content file (JSON, so MultiQC needs no YAML parser of ours)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {"id": section_id, "section_name": name, "description": description, "plot_type": plot_type,
               "data": data}
    if plot_type == "table":  # for generalstats, pconfig would be the columns' headers
        content["pconfig"] = {"id": f"{section_id}_table"}
    path.write_text(json.dumps(content))


def _multiqc_args(parser) -> None:
    parser.add_argument("--pipeline-version", required=True)


COMMANDS = {"multiqc": (_multiqc_args, multiqc)}

if __name__ == "__main__":
    sys.exit(main_of(COMMANDS))
