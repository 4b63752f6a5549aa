"""What rnaseq and germline hand over once a run's samples are settled, beside the tables: the run's MultiQC
report (both pipelines) and the project's gene x sample count matrices (rnaseq). Each is one Batch job after
the ``outcomes`` task, published in a table of its own; the run's ``verdict`` waits for them.

Call these inside the ``@dag`` function, with what ``pipeline_dag`` returned. Nothing here touches the
network at parse time.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import task

from operators.batch_job import BatchJobOperator
from operators.publish import PublishTableOperator
from pipeline_dag import PROJECT_PRODUCTS_POOL, RUN_PROJECT, RunEnd
from pipeline_plan import PipelineSpec

VERSION = "{{ params.pipeline_version }}"


def run_report(spec: PipelineSpec, planned: Any, end: RunEnd) -> BatchJobOperator:
    """``report_samples`` (the run's sample list, written beside the report for its job) -> ``multiqc`` (one job:
    the report, every sample named, failed and excluded ones marked; genomics_steps.run_report) ->
    ``publish_run_reports``; all before ``verdict``, the job before ``costs`` (its cost is the run's)."""
    settled = end.settled

    @task(multiple_outputs=True)
    def report_samples(project: str, samples: list[str], settled: dict, params=None, dag_run=None) -> dict:
        import json

        from genomics_steps import layout
        from hooks import lake
        from platform_settings import PlatformSettings

        settings = PlatformSettings.resolve()
        prefix = layout.run_report_prefix(settings.lake_root, spec.name, params["pipeline_version"],
                                          project, dag_run.run_id)
        lake.write_text(settings, prefix + "samples.json", json.dumps({"samples": sorted(samples)}))
        return {"uri": prefix + "multiqc_report.html", "units": [layout.run_key(dag_run.run_id)]}

    # a run that ran no job (every sample done before: a repeated backfill) has nothing new to report and
    # submits nothing; only the report's tasks are skipped, the verdict still runs
    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def report_wanted(settled: dict) -> bool:
        return bool(settled["job_units"])

    listed = report_samples(planned["project"], planned["samples"], settled)
    report_wanted(settled) >> listed
    report = BatchJobOperator(
        task_id="multiqc", step="multiqc", project=RUN_PROJECT, pipeline=spec.name,
        job_definition=f"genomics-{spec.name}",
        command=["python3", "-m", "genomics_steps.run_report", "multiqc", "--pipeline-version", VERSION],
        vcpus=1, memory_mib=4096, timeout_seconds=3600,
    )
    publish = PublishTableOperator(task_id="publish_run_reports", table="run_reports",
                                   project=RUN_PROJECT, pipeline=spec.name, pipeline_version=VERSION,
                                   units=listed["units"])
    listed["uri"] >> report >> publish >> end.verdict
    report >> end.costs
    return report


def count_matrices(spec: PipelineSpec, end: RunEnd) -> BatchJobOperator:
    """``matrices_wanted`` (not when the run stopped or has no complete sample) -> ``merge`` (one job: the
    project's matrices over every complete sample of the version; genomics_steps.matrices) ->
    ``publish_rnaseq_matrices``; all before ``verdict``, the job before ``costs`` (its cost is the run's)."""

    # only merge and its publish are skipped: the verdict still runs (and fails a run with a failed sample)
    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def matrices_wanted(settled: dict) -> bool:
        # a run whose samples were all done before (a repeated backfill) changes no matrix: nothing is submitted
        return bool(settled["publish"]) and not settled["stopped"] and bool(settled["job_units"])

    merge = BatchJobOperator(
        task_id="merge", step="merge", project=RUN_PROJECT, pipeline=spec.name,
        job_definition=f"genomics-{spec.name}",
        command=["python3", "-m", f"genomics_steps.{spec.name}", "merge", "--pipeline-version", VERSION,
                 "--reference", "{{ params.reference }}", "--force", "{{ params.force }}"],
        vcpus=2, memory_mib=4096, timeout_seconds=4 * 3600, pool=PROJECT_PRODUCTS_POOL,
    )
    publish = PublishTableOperator(task_id="publish_rnaseq_matrices", table="rnaseq_matrices",
                                   project=RUN_PROJECT, pipeline=spec.name, pipeline_version=VERSION,
                                   units=[VERSION], pool=PROJECT_PRODUCTS_POOL)
    matrices_wanted(end.settled) >> merge >> publish >> end.verdict
    merge >> end.costs
    return merge
