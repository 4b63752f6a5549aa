"""The parts rnaseq and germline share: their @dag arguments, the planning tasks and index gate, the Batch
steps in their job image, and the tasks after the steps (outcomes, publishing, the verdict).

Call these inside a ``@dag`` function. Nothing here touches the network at parse time.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from airflow.sdk import task

from operators.batch_job import BatchJobOperator
from operators.publish import PublishTableOperator
from pipeline_plan import PipelineSpec

# The run's project as plan chose it: the run config's, or, for a run started by asset events, the events'
RUN_PROJECT = "{{ ti.xcom_pull(task_ids='plan', key='project') }}"
# What every sample of a project and version shares (rnaseq's count matrices, germline's cohort) is built and
# published by one run at a time: runs of a backfill go side by side, and two of them would write the same
# files and publish the same unit at once. One slot, held while the job's task waits deferred (pools.json).
PROJECT_PRODUCTS_POOL = "project_products"


def plan_and_index(spec: PipelineSpec, index: BatchJobOperator) -> tuple[Any, Any]:
    """Add ``plan`` (checks the run config, lists what is done; fails before any submission), ``units`` (the
    fan-out units as a return value, which a mapped task group needs) and ``index_missing`` (skips the
    ``index`` job when the reference's index exists). Returns (plan output, units output)."""

    @task(multiple_outputs=True)
    def plan(params=None, dag_run=None, dag=None, data_interval_start=None, data_interval_end=None) -> dict:
        from pipeline_plan import refuse_unknown_keys
        from run_samples import plan_this_run

        refuse_unknown_keys(dag_run.conf, dag.params)
        return plan_this_run(spec, params, dag_run, (data_interval_start, data_interval_end))

    @task
    def units(planned: dict) -> list[list[str]]:
        return planned["units"]

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def index_missing(index_needed: bool) -> bool:
        return index_needed

    planned = plan()
    index_missing(planned["index_needed"]) >> index
    return planned, units(planned)


class RunEnd(NamedTuple):
    """The tasks after a pipeline's per-sample steps (``settle_and_publish``)."""

    settled: Any  # outcomes: wire ``per_sample >> settled``
    costs: Any  # the run's jobs that are not a sample's (a report, a merge) go before it: ``job >> costs``
    verdict: Any  # the run's last task: every publish goes before it


def settle_and_publish(spec: PipelineSpec, planned: Any, tables: list[str]) -> RunEnd:
    """After the per-sample steps: ``outcomes`` (each sample's outcome, what to publish, whether to stop;
    ``run_outcomes.settle``), one publish task per table (the results for every complete sample, done before
    or now; sample_outcomes for every sample of the run; job_runs for every job of the run and sample_costs,
    after ``costs`` allocated the run's spend to the samples whose jobs ran, the run's own jobs (index build,
    report, merge) split among them) and ``verdict``, the run's last task, which fails the run naming the
    samples that failed."""

    @task(trigger_rule="all_done", multiple_outputs=True)  # also when some samples' tasks failed
    def outcomes(project: str, samples: list[str], todo: list[str], params=None, dag_run=None) -> dict:
        import job_facts
        from hooks import lake
        from platform_settings import PlatformSettings
        from run_outcomes import settle

        if project is None or todo is None:  # plan failed (a refused run config): nothing ran, nothing to settle
            from airflow_compat import AirflowFailException

            raise AirflowFailException("plan did not finish: no sample was planned, no outcome to settle")
        settings = PlatformSettings.resolve()
        result = settle(
            steps=spec.steps, pipeline=spec.name, planned={"project": project, "samples": samples, "todo": todo},
            params=params, run_id=dag_run.run_id, lake_root=settings.lake_root,
            list_files=lambda prefix: lake.list_files(settings, prefix),
            outcome_prefix=job_facts.outcome_prefix(settings, spec.name, dag_run.run_id, project),
            stage=lambda step, rows: job_facts.stage_outcome_rows(settings, pipeline=spec.name,
                                                                  run_id=dag_run.run_id, project=project,
                                                                  step=step, rows=rows),
        )
        from genomics_steps import layout

        result["report"] = layout.run_report_prefix(settings.lake_root, spec.name, params["pipeline_version"],
                                                    project, dag_run.run_id) + "multiqc_report.html" \
            if result["job_units"] else ""  # a run that ran no job writes no report (run_products)
        print(f"{spec.name}: {len(result['publish'])} sample(s) to publish; {len(result['failed'])} failed "
              f"{sorted(result['failed'])[:20]}; {len(result['excluded'])} excluded {sorted(result['excluded'])[:20]}"
              f"{'; stopped: ' + result['stopped'] if result['stopped'] else ''}; run report: {result['report'] or 'none'}")
        return result

    # after the run's own jobs too (a report, a merge), whether they ran, were skipped or failed
    @task(trigger_rule="all_done")
    def costs(project: str, job_units: list[str] | None, dag_run=None) -> dict:
        from airflow_compat import AirflowSkipException
        from platform_settings import PlatformSettings
        from run_costs import stage_run_costs, summary_line

        if job_units is None:  # outcomes did not settle (see its log): the verdict fails the run
            raise AirflowSkipException("the run's outcomes were not settled: no cost to allocate")
        costed = stage_run_costs(PlatformSettings.resolve(), pipeline=spec.name, run_id=dag_run.run_id,
                                 project=project, units=job_units)
        print(summary_line(spec.name, costed))
        return costed

    @task(trigger_rule="none_failed")
    def verdict(settled: dict, costed: dict | None = None) -> str:
        from run_costs import summary_line
        from run_outcomes import verdict as decide

        print(summary_line(spec.name, costed))
        return f"{decide(settled)}; {summary_line(spec.name, costed)}"

    settled = outcomes(planned["project"], planned["samples"], planned["todo"])
    costed = costs(planned["project"], settled["job_units"])
    units_of = {"job_runs": costed["job_run_units"], "sample_outcomes": settled["outcome_units"],
                "sample_costs": costed["units"]}
    publishes = [
        PublishTableOperator(
            task_id=f"publish_{table}",
            table=table,
            project=RUN_PROJECT,
            pipeline=spec.name,
            pipeline_version="{{ params.pipeline_version }}",
            units=units_of.get(table, settled["publish"]),
            skip_if_no_units=True,  # nothing complete (or a stopped run): nothing to publish
        )
        for table in [*tables, "sample_outcomes", "sample_costs"]
    ]
    last = verdict(settled, costed)
    publishes >> last
    return RunEnd(settled, costed, last)


def pipeline_dag_args(pipeline: str, doc: str) -> dict[str, Any]:
    """The ``@dag`` arguments both pipelines share: daily over whole UTC days (so Airflow can backfill them)
    and on the asset events of newly approved samples, manual runs with run config as well, validated Params.
    Paused when created: a new deployment processes nothing on its own until someone unpauses the pipeline.
    No catchup: unpausing runs the latest day only; earlier days are a backfill (run_samples says what each
    kind of run takes)."""
    from datetime import datetime

    from airflow_compat import AssetOrTimeSchedule, CronDataIntervalTimetable
    from approval_routing import approved_asset
    from pipeline_plan import pipeline_params

    return {
        "dag_id": pipeline,
        "schedule": AssetOrTimeSchedule(timetable=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
                                        assets=[approved_asset(pipeline)]),
        "start_date": datetime(2026, 1, 1),
        "catchup": False,
        "is_paused_upon_creation": True,
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
        project=RUN_PROJECT,
        pipeline=pipeline,
        job_definition=f"genomics-{pipeline}",
        command=["python3", "-m", f"genomics_steps.{pipeline}", *command],
        timeout_seconds=kwargs.pop("timeout_seconds", 3600),
        **kwargs,
    )


def sample_step(pipeline: str, step: str, subcommand: list[str], unit: Any = None, *,
                after: BatchJobOperator | None = None, **kwargs: Any) -> BatchJobOperator:
    """A per-sample step: one job (a one-sample unit) or one array job over the unit's samples. The first
    step takes the unit; each later one runs ``after`` the previous step, over the samples it handed on (a
    sample that failed or was excluded goes no further; with none left the task is skipped)."""
    if after is not None:
        kwargs.update(samples_from=after.task_id, trigger_rule="all_done")
    else:
        kwargs["samples"] = unit
    task = _job(pipeline, step, [*subcommand, "--pipeline-version", "{{ params.pipeline_version }}",
                                 "--force", "{{ params.force }}"],
                rerun_succeeded="{{ params.force }}", per_sample_outcomes=True, **kwargs)
    if after is not None:
        after >> task
    return task


def index_step(pipeline: str, step: str, subcommand: str, **kwargs: Any) -> BatchJobOperator:
    """The reference index of a pipeline, built once per reference."""
    return _job(pipeline, step, [subcommand, "--reference", "{{ params.reference }}"], **kwargs)
