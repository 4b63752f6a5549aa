"""The germline DAG's cohort tasks, after ``outcomes``: plan (cohort_plan.py), then, when the cohort must be
built, an FSx for Lustre file system on AWS (setup, with the results prefix linked; deleted as teardown), the
region array job, the merge job, the ``cohort_variants`` publish, and the cohort's summary.

    outcomes >> cohort_plan >> cohort_changed >> cohort_fsx_create >> cohort_call_regions >> cohort_merge
             >> publish_cohort_variants >> cohort        (cohort_fsx_delete: the file system's teardown)

``cohort_changed`` skips the build when the cohort's plan is the one already built. ``cohort_fsx_create``
creates nothing on the local backend, where the region jobs read the lake's files. Call inside a ``@dag``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import task

from operators.batch_job import BatchJobOperator
from operators.fsx import FsxCreateOperator, FsxDeleteOperator
from operators.publish import PublishTableOperator
from pipeline_dag import PROJECT_PRODUCTS_POOL, RUN_PROJECT

FSX = "{{ ti.xcom_pull(task_ids='cohort_fsx_create') | tojson }}"


def _cohort_job(task_id: str, subcommand: str, plan_uri: Any, **kwargs: Any) -> BatchJobOperator:
    return BatchJobOperator(
        task_id=task_id, step=task_id, project=RUN_PROJECT, pipeline="germline",
        job_definition="genomics-germline",
        command=["python3", "-m", "genomics_steps.cohort", subcommand, "--pipeline-version",
                 "{{ params.pipeline_version }}", "--reference", "{{ params.reference }}", "--plan", plan_uri,
                 "--force", "{{ params.force }}"],
        rerun_succeeded="{{ params.force }}", timeout_seconds=kwargs.pop("timeout_seconds", 6 * 3600), **kwargs)


def cohort_tasks(settled: Any) -> Any:
    """Add the cohort tasks after ``settled`` (the ``outcomes`` task's output); returns the summary task."""

    @task(multiple_outputs=True)
    def cohort_plan(stopped: str, params=None, ti=None) -> dict:
        from cohort_plan import plan_for_airflow

        # the run's project as its plan chose it (an approval-started run's comes from its asset events)
        return plan_for_airflow({**params, "project": ti.xcom_pull(task_ids="plan", key="project")}, stopped)

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def cohort_changed(plan: dict) -> bool:
        print(plan["reason"])
        return plan["build"]

    @task(trigger_rule="none_failed")
    def cohort(plan: dict) -> dict:
        """The run's cohort summary: where its VCF is and what it holds (from its manifest), or why there is none."""
        from cohort_plan import built_cohort

        summary = {**built_cohort(plan), "built_by_this_run": plan["build"]}
        print(f"germline cohort: {summary}", flush=True)
        return summary

    plan = cohort_plan(settled["stopped"])
    settled >> plan
    changed = cohort_changed(plan)
    fsx = FsxCreateOperator(task_id="cohort_fsx_create", project=RUN_PROJECT, inputs=plan["results"],
                            output_folder=None, capacity_gib="{{ params.cohort_fsx_capacity_gib }}", aws_only=True)
    regions = _cohort_job("cohort_call_regions", "call-region", plan["plan_uri"], samples=plan["regions"],
                          environment={"GENOMICS_FSX": FSX}, vcpus=1, memory_mib=2048)
    merge = _cohort_job("cohort_merge", "merge", plan["plan_uri"], vcpus=1, memory_mib=2048,
                        pool=PROJECT_PRODUCTS_POOL)
    publish = PublishTableOperator(task_id="publish_cohort_variants", table="cohort_variants",
                                   project=RUN_PROJECT, pipeline="germline",
                                   pipeline_version="{{ params.pipeline_version }}", units=plan["units"],
                                   pool=PROJECT_PRODUCTS_POOL)
    delete = FsxDeleteOperator(task_id="cohort_fsx_delete")
    summary = cohort(plan)
    changed >> fsx >> regions
    changed >> regions >> merge >> publish >> summary
    merge >> delete.as_teardown(setups=fsx)
    return summary

