"""The parts rnaseq and germline share: their @dag arguments, the planning tasks and index gate, the Batch
steps in their job image, and the publish tasks.

Call these inside a ``@dag`` function. Nothing here touches the network at parse time.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import task

from operators.batch_job import BatchJobOperator
from operators.publish import PublishTableOperator
from pipeline_plan import PipelineSpec


def plan_and_index(spec: PipelineSpec, index: BatchJobOperator) -> tuple[Any, Any]:
    """Add ``plan`` (checks the run config, lists what is done; fails before any submission), ``units`` (the
    fan-out units as a return value, which a mapped task group needs) and ``index_missing`` (skips the
    ``index`` job when the reference's index exists). Returns (plan output, units output)."""

    @task(multiple_outputs=True)
    def plan(params=None, dag_run=None, dag=None) -> dict:
        from pipeline_plan import plan_for_airflow, refuse_unknown_keys

        refuse_unknown_keys(dag_run.conf, dag.params)
        return plan_for_airflow(spec, params)

    @task
    def units(planned: dict) -> list[list[str]]:
        return planned["units"]

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def index_missing(index_needed: bool) -> bool:
        return index_needed

    planned = plan()
    index_missing(planned["index_needed"]) >> index
    return planned, units(planned)


def publish(pipeline: str, planned: Any, tables: list[str]) -> list[PublishTableOperator]:
    """One publish task per table, for every sample of the run (done before or now); job_runs for the
    samples that ran. They run when no upstream failed, so a run with nothing to do still publishes."""
    return [
        PublishTableOperator(
            task_id=f"publish_{table}",
            table=table,
            project="{{ params.project }}",
            pipeline=pipeline,
            pipeline_version="{{ params.pipeline_version }}",
            units=planned["todo"] if table == "job_runs" else planned["samples"],
            skip_if_no_units=table == "job_runs",
            trigger_rule="none_failed",
        )
        for table in tables
    ]


def pipeline_dag_args(pipeline: str, doc: str) -> dict[str, Any]:
    """The ``@dag`` arguments both pipelines share: triggered runs only, validated Params."""
    from datetime import datetime

    from pipeline_plan import pipeline_params

    return {
        "dag_id": pipeline,
        "schedule": None,
        "start_date": datetime(2026, 1, 1),
        "catchup": False,
        "max_active_runs": 4,
        "tags": ["pipeline", pipeline],
        "doc_md": doc,
        "default_args": {"owner": "platform", "retries": 2},
        "params": pipeline_params(),
    }


def _job(pipeline: str, step: str, command: list[str], **kwargs: Any) -> BatchJobOperator:
    """A step of ``pipeline`` as a Batch job of its image (job definition ``genomics-<pipeline>``)."""
    return BatchJobOperator(
        task_id=step,
        step=step,
        project="{{ params.project }}",
        pipeline=pipeline,
        job_definition=f"genomics-{pipeline}",
        command=["python3", "-m", f"genomics_steps.{pipeline}", *command],
        timeout_seconds=kwargs.pop("timeout_seconds", 3600),
        **kwargs,
    )


def sample_step(pipeline: str, step: str, subcommand: list[str], unit: Any, **kwargs: Any) -> BatchJobOperator:
    """A per-sample step: one job (a one-sample unit) or one array job over the unit's samples."""
    return _job(pipeline, step, [*subcommand, "--pipeline-version", "{{ params.pipeline_version }}",
                                 "--force", "{{ params.force }}"],
                samples=unit, rerun_succeeded="{{ params.force }}", **kwargs)


def index_step(pipeline: str, step: str, subcommand: str, **kwargs: Any) -> BatchJobOperator:
    """The reference index of a pipeline, built once per reference."""
    return _job(pipeline, step, [subcommand, "--reference", "{{ params.reference }}"], **kwargs)
