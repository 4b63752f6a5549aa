"""geo_ingestion's tasks, built for dags/geo_ingestion.py, which only wires them (as pipeline_dag.py does for
rnaseq and germline). The decisions they apply are in geo_ingest.py.

Call the builders inside the ``@dag`` function. Nothing here touches the network at parse time: every
client, registry and setting is made inside a task.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import task, task_group

from operators.batch_job import BatchJobOperator
from operators.publish import PublishTableOperator
from operators.review import SeriesReviewOperator

PIPELINE = "geo_ingestion"
MIRROR = "{{ ti.xcom_pull(task_ids='register')['sra_mirror'] }}"
TABLES = ("ingest_qc", "qc_metrics")


def ingestion_dag_args(doc: str) -> dict[str, Any]:
    """The ``@dag`` arguments: daily over whole UTC days, one run at a time, validated Params."""
    from datetime import datetime

    from airflow.timetables.interval import CronDataIntervalTimetable

    from geo_ingest import ingestion_params

    return {
        "dag_id": PIPELINE,
        "schedule": CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),  # [day, next day): whole UTC days
        "start_date": datetime(2026, 1, 1),
        "catchup": False,
        "max_active_runs": 1,  # runs of overlapping series would race on the same samples' status
        "tags": ["ingestion", "geo", "review"],
        "doc_md": doc,
        "default_args": {"owner": "platform", "retries": 2},
        "params": ingestion_params(),
    }


def _job(step: str, command: list[str], **kwargs: Any) -> BatchJobOperator:
    return BatchJobOperator(task_id=step, step=step, project="{{ params.project }}", pipeline=PIPELINE,
                            job_definition="genomics-ingest",
                            command=["python3", "-m", "genomics_steps.ingest", *command],
                            environment={"GENOMICS_SRA_MIRROR": MIRROR}, **kwargs)


@task(pool="ncbi_eutils", retries=3)
def search(params=None, data_interval_start=None, data_interval_end=None, dag_run=None, dag=None) -> dict:
    """The window's series with their samples' SRA runs, and the unresolved series of earlier runs again."""
    from geo_ingest import check_params, eutils_client, retry_series, window
    from hooks import backend
    from hooks.eutils import discover
    from pipeline_plan import refuse_unknown_keys
    from platform_settings import PlatformSettings

    refuse_unknown_keys(dag_run.conf, dag.params)
    conf = check_params(params)
    first, last = window(data_interval_start, data_interval_end)
    settings = PlatformSettings.resolve()
    retry, unresolved_before = retry_series(backend.sample_registry(settings), conf["project"])
    client = eutils_client(settings)
    series, total = discover(client, conf["query"], first, last, max_series=conf["max_series"], also=retry)
    retried = [s.gse for s in series if any(s is r for r in retry)]
    print(f"geo_ingestion: {first}..{last}: {total} series found, {len(series) - len(retried)} looked up, "
          f"{len(retried)} unresolved series of earlier runs looked up again, "
          f"{sum(len(s.samples) for s in series)} sample(s), "
          f"{sum(bool(x.runs) for s in series for x in s.samples)} with SRA runs, "
          f"{client.requests} E-utilities request(s)")
    return {"window": [str(first), str(last)], "series": [s.to_dict() for s in series], "retried": retried,
            "unresolved_before": unresolved_before}


@task
def register(found: dict, params=None) -> dict:
    """New samples into the registry (and their records into the lake), unresolved series recorded, and the
    samples still to download and QC marked downloading."""
    import json
    import logging

    from genomics_steps.layout import ingest_record_uri
    from geo_ingest import plan_work, register as register_samples
    from hooks import backend, lake
    from platform_settings import PlatformSettings

    settings = PlatformSettings.resolve()
    registry = backend.sample_registry(settings)
    project = params["project"]
    registered = register_samples(registry, project, found["series"], lambda gsm, record: lake.write_text(
        settings, ingest_record_uri(settings.lake_root, project, gsm), json.dumps(record, sort_keys=True)),
        retried=found.get("retried", []), unresolved_before=found.get("unresolved_before", []))
    work = plan_work(registry, project, registered["by_series"])
    for line in registered["skipped"]:
        print(f"skipped {line}")
    for gse, reason in {**registered["not_looked_up"], **registered["unresolved"]}.items():
        print(f"series {gse} resolved to nothing: {reason}")
    print(f"geo_ingestion: {registered['new']} new sample(s); {len(work['todo'])} to download and QC; "
          f"{len(registered['unresolved'])} series unresolved")
    if registered["warning"]:
        logging.getLogger("airflow.task").warning("geo_ingestion: %s", registered["warning"])
    mirror = settings.ncbi_mirror_path
    return {**registered, **work, "sra_mirror": str(mirror) if mirror else ""}


@task
def all_series_resolved(registered: dict) -> None:
    """Fails the run, without retries (a retry asks NCBI the same), when every series the window found
    resolved to nothing though one had samples; later runs look those series up again."""
    from airflow_compat import AirflowFailException

    if registered["failure"]:
        raise AirflowFailException(registered["failure"])


@task
def units(registered: dict) -> list[list[str]]:
    return registered["units"]


def download_and_qc(registered: Any) -> Any:
    """Per unit of up to 500 samples: one download array job, then one QC array job (mapped over units)."""

    @task_group(group_id="per_unit")
    def per_unit(unit: list[str]):
        download = _job("download", ["download", "--pipeline-version", "{{ params.pipeline_version }}"],
                        samples=unit, vcpus=2, memory_mib=4096, timeout_seconds=6 * 3600)
        qc = _job("qc", ["qc", "--pipeline-version", "{{ params.pipeline_version }}", "--min-reads",
                         "{{ params.min_reads }}", "--min-q30-rate", "{{ params.min_q30_rate }}"],
                  samples=unit, vcpus=2, memory_mib=2048, timeout_seconds=2 * 3600)
        download >> qc

    return per_unit.expand(unit=units(registered))


@task(trigger_rule="all_done", multiple_outputs=True)  # record what finished even when some jobs failed
def outcomes(registered: dict | None, params=None) -> dict:
    from airflow_compat import AirflowFailException
    from geo_ingest import read_step_metrics, record_outcomes
    from hooks import backend
    from platform_settings import PlatformSettings

    if registered is None:  # search or register failed (a refused run config, say): no job ran
        raise AirflowFailException("register did not finish: no sample was planned, no outcome to record")
    settings = PlatformSettings.resolve()
    result = record_outcomes(backend.sample_registry(settings), params["project"], registered["by_series"],
                             registered["todo"], read_step_metrics(settings, params))
    print(f"geo_ingestion: {len(result['qc_done'])} sample(s) QC'd; {len(result['incomplete'])} incomplete; "
          f"{len(result['review'])} series to review")
    return result


@task
def all_samples_done(incomplete: list[str]) -> None:
    """Fails the run when a sample's download or QC did not finish; the review of the others goes on."""
    if incomplete:
        raise RuntimeError(f"download or QC did not finish for {incomplete}: they keep their registry status "
                           "and a rerun of this day picks them up")


@task
def report_commands(result: dict, params=None) -> list[list[str]]:
    return [["python3", "-m", "genomics_steps.ingest", "multiqc", "--pipeline-version",
             params["pipeline_version"], "--series", r["series"], "--samples", *r["samples"]]
            for r in result["reports"]]


def multiqc(result: Any) -> Any:
    """One MultiQC job per series with new QC results."""
    return BatchJobOperator.partial(task_id="multiqc", step="multiqc", project="{{ params.project }}",
                                    pipeline=PIPELINE, job_definition="genomics-ingest", vcpus=1,
                                    memory_mib=2048, timeout_seconds=3600).expand(command=report_commands(result))


def publish(result: Any) -> list[PublishTableOperator]:
    """ingest_qc and qc_metrics for the samples QC'd in this run (skipped when there are none)."""
    return [PublishTableOperator(task_id=f"publish_{table}", table=table, project="{{ params.project }}",
                                 pipeline=PIPELINE, pipeline_version="{{ params.pipeline_version }}",
                                 units=result["qc_done"], skip_if_no_units=True)
            for table in TABLES]


@task
def review_series(result: dict) -> list[str]:
    return result["review"]


def review(result: Any) -> Any:
    """One Required Action per series with samples awaiting review; an approval emits asset events."""
    from approval_routing import approvals_alias

    # the outlet through which an approval adds the asset events that start the pipelines (approval_routing)
    return SeriesReviewOperator.partial(task_id="review", project="{{ params.project }}", trigger_rule="none_failed",
                                        outlets=[approvals_alias()]).expand(series=review_series(result))
