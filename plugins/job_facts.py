"""Job facts: the rows of the ``job_runs`` table, one per Batch job (one per array child), and of the
``sample_outcomes`` table, one per sample and step, staged for publishing.

The facts are what the job-state store recorded from Batch's events (status, attempts, start and stop times,
the container reason that tells an out-of-memory kill) and what the job asked for (vCPUs, memory, queue, job
definition, earlier results it reused). They are staged when a job's outcome is known, under the
DAG run's scope, one file per job, for ``PublishTableOperator(table="job_runs")`` to publish with the results.
Staging them is reporting: it never fails a job that succeeded (see ``stage_quietly``).

COLUMNS and OUTCOME_COLUMNS are the staged files' headers; include/sql/staging/job_runs.sql and
sample_outcomes.sql declare the same columns, in order (a test keeps them equal). An outcome file is named
``<step>-<outcome>-<job>.tsv``, so one listing of a run's staging tells every sample's outcome at every step.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from batch_jobs.request import JobSpec, safe_name
from platform_settings import PlatformSettings

COLUMNS = ("job_id", "step", "status", "attempts", "started_ms", "stopped_ms", "vcpus", "memory_mib", "job_queue",
           "capacity_type", "instance_type", "container_reason", "job_definition", "reused_from")
NO_JOB = "none"  # the job part of the file name of an outcome no job reported (staged by the run's outcomes task)
OUTCOME_COLUMNS = ("run_id", "step", "outcome", "reason", "job_id", "attempts", "exit_code", "status_reason",
                   "container_reason", "memory_mib", "log", "log_tail", "recorded_ms")


def rows(summary: dict[str, Any], spec: JobSpec) -> list[dict[str, Any]]:
    """One row per job of a finished task: every child of an array; a job of a whole run (an index, GWAS step
    1 or merge) is staged under its step's name as the unit."""
    return summary.get("samples") or [{**summary, "sample": summary.get("sample") or spec.step}]


def stage(settings: PlatformSettings, run_id: str, spec: JobSpec, summary: dict[str, Any]) -> None:
    """Stage the task's job facts under ``staging/job_runs/<pipeline>/<run>/project=<p>/sample_id=<unit>/``."""
    from publishing import run_scope, staging_uri

    import run_costs

    prefix = staging_uri(settings.lake_root, "job_runs", spec.pipeline, run_scope(run_id), spec.project)
    capacity = settings.capacity_type(spec.queue)
    job_rows = rows(summary, spec)
    # what each attempt ran on, resolved now while the instances exist (batched, cached per instance)
    instances = run_costs.resolve_instances(settings, [f for r in job_rows for f in r.get("attempt_facts") or []])
    _write_rows(settings, COLUMNS, {
        # one file per job: a resubmission is another fact
        f"{prefix}sample_id={row['sample']}/{spec.step}-{safe_name(row['job_id'])}.tsv": [
            row["job_id"], spec.step, row["status"], row["attempts"], row.get("started_at"), row.get("stopped_at"),
            spec.vcpus, spec.memory_mib, spec.queue_name, capacity,
            run_costs.last_instance_type(settings, row, instances), row.get("container_reason"),
            spec.job_definition, spec.reused_from]
        for row in job_rows
    })
    run_costs.stage_job_attempts(settings, pipeline=spec.pipeline, run_id=run_id, project=spec.project,
                                 step=spec.step, vcpus=spec.vcpus, memory_mib=spec.memory_mib, job_rows=job_rows,
                                 instances=instances)


def _write_rows(settings: PlatformSettings, columns: tuple[str, ...], files: dict[str, list[Any]]) -> None:
    """Write each ``uri: values`` as a one-row TSV file with the ``columns`` header, in parallel. Empty values
    and None are empty fields; tabs and line breaks in a value become spaces."""
    from hooks.lake import write_text

    header = "\t".join(columns) + "\n"

    def one(item: tuple[str, list[Any]]) -> None:
        uri, values = item
        write_text(settings, uri, header + "\t".join("" if v is None or v == "" else _one_line(str(v))
                                                     for v in values) + "\n")

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, files.items()))


def outcome_prefix(settings: PlatformSettings, pipeline: str, run_id: str, project: str) -> str:
    """Where a run's sample_outcomes rows are staged (one folder per sample)."""
    from publishing import run_scope, staging_uri

    return staging_uri(settings.lake_root, "sample_outcomes", pipeline, run_scope(run_id), project)


def outcome_file(step: str, outcome: str, job_id: str) -> str:
    return f"{step}-{outcome}-{safe_name(job_id)}.tsv"


def parse_outcome_file(path: str) -> tuple[str, str, str] | None:
    """(sample, step, outcome) of a staged outcome file's path below the run's prefix; None for other files."""
    from genomics_steps.outcomes import OUTCOMES

    folder, _, name = path.partition("/")
    if not folder.startswith("sample_id=") or not name.endswith(".tsv"):
        return None
    for outcome in OUTCOMES:
        step, sep, _ = name.partition(f"-{outcome}-")
        if sep:
            return folder[len("sample_id="):], step, outcome
    return None


def stage_outcome_rows(settings: PlatformSettings, *, pipeline: str, run_id: str, project: str, step: str,
                       rows: list[dict[str, Any]], memory_mib: int | None = None) -> None:
    """Stage sample_outcomes rows (dicts with sample, outcome, reason and, for a job's samples, its facts)."""
    prefix = outcome_prefix(settings, pipeline, run_id, project)
    now = int(time.time() * 1000)
    _write_rows(settings, OUTCOME_COLUMNS, {
        f"{prefix}sample_id={row['sample']}/{outcome_file(step, row['outcome'], row.get('job_id') or NO_JOB)}": [
            run_id, step, row["outcome"], row.get("reason"), row.get("job_id"), row.get("attempts"),
            row.get("exit_code"), row.get("status_reason"), row.get("container_reason"), memory_mib, row.get("log"),
            " | ".join(row.get("log_tail") or []), now]
        for row in rows
    })


def _one_line(value: str) -> str:
    """A value as one TSV field: tabs and line breaks become spaces."""
    return " ".join(value.replace("\t", " ").splitlines())


def stage_quietly(settings: PlatformSettings, run_id: str, spec: JobSpec, summary: dict[str, Any],
                  logger: logging.Logger, results: list[dict[str, Any]] = ()) -> None:
    """Stage the job's job_runs rows and, given ``results`` (batch_jobs.completion.sample_results), its
    samples' outcome rows, logging instead of raising when the lake refuses a write: the job's outcome
    stands (a succeeded step stays succeeded, a failed one fails with its own reason), and the run's publish
    then names the units whose facts are missing."""
    try:
        stage(settings, run_id, spec, summary)
        if results:
            stage_outcome_rows(settings, pipeline=spec.pipeline, run_id=run_id, project=spec.project,
                               step=spec.step, rows=list(results), memory_mib=spec.memory_mib)
    except Exception as exc:  # reporting must not change what happened to the job
        logger.warning("could not stage the job facts of job %s: %s", summary.get("job_id"), exc)
