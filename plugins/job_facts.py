"""Job facts: the rows of the ``job_runs`` table, one per Batch job (one per array child), staged for publishing.

The facts are what the job-state store recorded from Batch's events (status, attempts, start and stop times,
the container reason that tells an out-of-memory kill) and what the job asked for (vCPUs, memory, queue, job
definition, earlier results it reused). They are staged when a job's outcome is known, under the
DAG run's scope, one file per job, for ``PublishTableOperator(table="job_runs")`` to publish with the results.
Staging them is reporting: it never fails a job that succeeded (see ``stage_quietly``).

COLUMNS is the staged file's header; include/sql/staging/job_runs.sql declares the same columns, in order
(a test keeps the two equal).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from batch_jobs.request import JobSpec, safe_name
from platform_settings import PlatformSettings

COLUMNS = ("job_id", "step", "status", "attempts", "started_ms", "stopped_ms", "vcpus", "memory_mib", "job_queue",
           "capacity_type", "instance_type", "container_reason", "job_definition", "reused_from")


def rows(summary: dict[str, Any], spec: JobSpec) -> list[dict[str, Any]]:
    """One row per job of a finished task: every child of an array; a job of a whole run (an index, GWAS step
    1 or merge) is staged under its step's name as the unit."""
    return summary.get("samples") or [{**summary, "sample": summary.get("sample") or spec.step}]


def stage(settings: PlatformSettings, run_id: str, spec: JobSpec, summary: dict[str, Any]) -> None:
    """Stage the task's job facts under ``staging/job_runs/<pipeline>/<run>/project=<p>/sample_id=<unit>/``."""
    from hooks.lake import write_text
    from publishing import run_scope, staging_uri

    prefix = staging_uri(settings.lake_root, "job_runs", spec.pipeline, run_scope(run_id), spec.project)
    capacity = settings.capacity_type(spec.queue)
    header = "\t".join(COLUMNS) + "\n"

    def one(row: dict[str, Any]) -> None:
        values = [row["job_id"], spec.step, row["status"], row["attempts"], row.get("started_at"),
                  row.get("stopped_at"), spec.vcpus, spec.memory_mib, spec.queue_name, capacity, None,
                  " ".join((row.get("container_reason") or "").split()) or None, spec.job_definition,
                  spec.reused_from or None]
        line = "\t".join("" if v is None else str(v).replace("\t", " ") for v in values)
        name = f"{spec.step}-{safe_name(row['job_id'])}.tsv"  # one file per job: a resubmission is another fact
        write_text(settings, f"{prefix}sample_id={row['sample']}/{name}", header + line + "\n")

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, rows(summary, spec)))


def stage_quietly(settings: PlatformSettings, run_id: str, spec: JobSpec, summary: dict[str, Any],
                  logger: logging.Logger) -> None:
    """``stage``, logging instead of raising when the lake refuses the write: the job's outcome stands (a
    succeeded step stays succeeded, a failed one fails with its own reason), and the run's job_runs publish
    then names the units whose facts are missing."""
    try:
        stage(settings, run_id, spec, summary)
    except Exception as exc:  # reporting must not change what happened to the job
        logger.warning("could not stage the job_runs facts of job %s: %s", summary.get("job_id"), exc)
