"""
### GEO/SRA ingestion with a QC review gate (daily)

Each run covers the whole UTC days of its data interval (one day on the schedule; a backfill re-runs past days
exactly):

1. **search** (pool `ncbi_eutils`): GEO series published in the window that match `query`, their samples and
   SRA runs, through NCBI E-utilities (3 requests/s, 10 with the API key of the `ncbi_eutils` connection).
2. **register**: new paired-end samples enter the sample registry as *discovered*; samples already there
   keep their status. Single-end samples and samples without public runs are listed and skipped.
3. **download** (one Batch array job per unit of up to 500 samples): `prefetch` + `fasterq-dump`, runs joined
   and compressed into `raw/<project>/<GSM>_R1.fastq.gz` and `_R2`, where the pipelines read reads.
4. **qc**: fastp per sample; below `min_reads` or `min_q30_rate` a sample fails QC.
5. **outcomes** moves each sample to *downloaded* and then *qc_passed* / *qc_failed*; **multiqc** writes a
   report per series with new QC results; `ingest_qc` and `qc_metrics` are published.
6. **review**: one Required Action per series with samples awaiting review: **Approve** makes them *approved*
   (eligible for `samples: "all approved"` in rnaseq and germline), **Reject** records who and why.

A rerun or backfill of the same days registers, downloads, QCs and asks nothing twice. On the local backend a
directory (`.local-platform/ncbi-mirror`, filled by `genomics_steps.synthetic_geo`) stands in for NCBI and SRA.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task, task_group
from airflow.timetables.interval import CronDataIntervalTimetable

from operators.batch_job import BatchJobOperator
from operators.publish import PublishTableOperator
from operators.review import SeriesReviewOperator

PIPELINE = "geo_ingestion"
MIRROR = "{{ ti.xcom_pull(task_ids='register')['sra_mirror'] }}"


def _job(step: str, command: list[str], **kwargs) -> BatchJobOperator:
    return BatchJobOperator(task_id=step, step=step, project="{{ params.project }}", pipeline=PIPELINE,
                            job_definition="genomics-ingest",
                            command=["python3", "-m", "genomics_steps.ingest", *command],
                            environment={"GENOMICS_SRA_MIRROR": MIRROR}, **kwargs)


@dag(
    dag_id=PIPELINE,
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),  # [day, next day): whole UTC days
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # runs of overlapping series would race on the same samples' status
    tags=["ingestion", "geo", "review"],
    doc_md=__doc__,
    default_args={"owner": "platform", "retries": 2},
    params=__import__("geo_ingest").ingestion_params(),
)
def geo_ingestion():
    @task(pool="ncbi_eutils", retries=3)
    def search(params=None, data_interval_start=None, data_interval_end=None, dag_run=None, dag=None) -> dict:
        from hooks.eutils import discover
        from geo_ingest import check_params, eutils_client, window
        from pipeline_plan import refuse_unknown_keys
        from platform_settings import PlatformSettings

        refuse_unknown_keys(dag_run.conf, dag.params)
        conf = check_params(params)
        first, last = window(data_interval_start, data_interval_end)
        settings = PlatformSettings.resolve()
        client = eutils_client(settings)
        series, total = discover(client, conf["query"], first, last, max_series=conf["max_series"])
        print(f"geo_ingestion: {first}..{last}: {total} series found, {len(series)} resolved, "
              f"{sum(len(s.samples) for s in series)} sample(s), {client.requests} E-utilities request(s)")
        return {"window": [str(first), str(last)], "series": [s.to_dict() for s in series]}

    @task
    def register(found: dict, params=None) -> dict:
        import json

        from genomics_steps.layout import ingest_record_uri
        from geo_ingest import plan_work, register as register_samples
        from hooks import backend, lake
        from platform_settings import PlatformSettings

        settings = PlatformSettings.resolve()
        registry = backend.sample_registry(settings)
        project = params["project"]
        registered = register_samples(registry, project, found["series"], lambda gsm, record: lake.write_text(
            settings, ingest_record_uri(settings.lake_root, project, gsm), json.dumps(record, sort_keys=True)))
        work = plan_work(registry, project, registered["by_series"])
        for line in registered["skipped"]:
            print(f"skipped {line}")
        print(f"geo_ingestion: {registered['new']} new sample(s); {len(work['todo'])} to download and QC")
        mirror = settings.ncbi_mirror_path
        return {**registered, **work, "sra_mirror": str(mirror) if mirror else ""}

    @task
    def units(registered: dict) -> list[list[str]]:
        return registered["units"]

    @task_group(group_id="per_unit")
    def per_unit(unit: list[str]):
        """Up to 500 samples: one download array job, then one QC array job."""
        download = _job("download", ["download", "--pipeline-version", "{{ params.pipeline_version }}"],
                        samples=unit, vcpus=2, memory_mib=4096, timeout_seconds=6 * 3600)
        qc = _job("qc", ["qc", "--pipeline-version", "{{ params.pipeline_version }}", "--min-reads",
                         "{{ params.min_reads }}", "--min-q30-rate", "{{ params.min_q30_rate }}"],
                  samples=unit, vcpus=2, memory_mib=2048, timeout_seconds=2 * 3600)
        download >> qc

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

    @task
    def review_series(result: dict) -> list[str]:
        return result["review"]

    registered = register(search())
    done = per_unit.expand(unit=units(registered))
    result = outcomes(registered)
    done >> result
    multiqc = BatchJobOperator.partial(task_id="multiqc", step="multiqc", project="{{ params.project }}",
                                       pipeline=PIPELINE, job_definition="genomics-ingest", vcpus=1,
                                       memory_mib=2048, timeout_seconds=3600).expand(command=report_commands(result))
    published = [
        PublishTableOperator(task_id=f"publish_{table}", table=table, project="{{ params.project }}",
                             pipeline=PIPELINE, pipeline_version="{{ params.pipeline_version }}",
                             units=result["qc_done"],
                             skip_if_no_units=True)
        for table in ("ingest_qc", "qc_metrics")
    ]
    review = SeriesReviewOperator.partial(task_id="review", project="{{ params.project }}",
                                          trigger_rule="none_failed").expand(series=review_series(result))
    all_samples_done(result["incomplete"])
    result >> published
    [multiqc, *published] >> review


geo_ingestion()
