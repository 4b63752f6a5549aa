"""
### Batch events demo

The event-driven AWS Batch core end to end, on whichever backend the platform settings select (the local
backend by default, which really runs each job on this machine).

For every sample in the run config, a job simulates the sample's reads and writes read statistics to the lake
(`read_stats/project=<project>/sample=<sample>/stats.json`). The same step runs twice, to show both fan-out
modes the pipelines use:

- `read_stats_mapped`: one Batch job per sample, as mapped tasks (small runs);
- `read_stats_array`: one Batch array job over all samples (large runs: one task, one trigger, one SubmitJob).

`wait_for_array_job` shows `BatchJobSensor` waiting on a job id taken from XCom, and `report` prints what each
sample's job did. `publish_qc_metrics` and `publish_job_runs` then publish the staged read statistics and the
jobs' facts as the `qc_metrics` and `job_runs` tables (Snappy Parquet; Athena on AWS, DuckDB locally). Every task defers while its jobs run and wakes on their "Batch Job State Change" events.
Set `fail_sample` to one of the samples to watch a failure name the sample, its exit code and its log.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, chain, cross_downstream, dag, task

from genomics_steps.names import LABEL, SAMPLE_ID, bad_items, problems_in
from operators.batch_job import BatchJobOperator
from operators.publish import PublishTableOperator
from sensors.batch_job import BatchJobSensor

COMMAND = ["python3", "-m", "genomics_steps.read_stats", "--pipeline-version", "{{ params.pipeline_version }}"]


@dag(
    dag_id="batch_events_demo",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["demo", "batch"],
    doc_md=__doc__,
    default_args={"owner": "platform", "retries": 1},
    params={
        "project": Param("demo", type="string", pattern=LABEL.schema(),
                         description="Project, used in tags and lake paths."),
        "samples": Param(
            ["S001", "S002", "S003", "S004"],
            type="array",
            items={"type": "string", "pattern": SAMPLE_ID.schema()},
            minItems=2,
            maxItems=1000,
            uniqueItems=True,
            description="Sample ids.",
        ),
        "pipeline_version": Param("1.0", type="string", pattern=LABEL.schema(),
                                   description="Version the published rows are labelled with."),
        "reads": Param(2000, type="integer", minimum=10, maximum=1_000_000, description="Reads simulated per sample."),
        "fail_sample": Param(None, type=["null", "string"], pattern=SAMPLE_ID.schema(optional=True),
                             description="Make this sample's job fail (to see failure reports)."),
    },
)
def batch_events_demo():
    @task
    def sample_list(params=None, dag_run=None, dag=None) -> list[str]:
        """Check the run config again (the schema is the first check), refusing keys the DAG has no Param
        for, and hand the samples to the fan-outs."""
        from pipeline_plan import RunConfigError, refuse_unknown_keys

        refuse_unknown_keys(dag_run.conf, dag.params)
        problems = problems_in([(LABEL, "project", params["project"]),
                                (LABEL, "pipeline_version", params["pipeline_version"])])
        if params.get("fail_sample"):
            problems += problems_in([(SAMPLE_ID, "fail_sample", params["fail_sample"])])
        if bad := bad_items(SAMPLE_ID, "samples", params["samples"]):
            problems.append(bad)
        if problems:
            raise RunConfigError("run config refused:\n - " + "\n - ".join(problems))
        return list(params["samples"])

    samples = sample_list()

    mapped = BatchJobOperator.partial(
        task_id="read_stats_mapped",
        step="read_stats",
        project="{{ params.project }}",
        pipeline="demo",
        command=COMMAND + ["--reads", "{{ params.reads }}", "--fail-sample", "{{ params.fail_sample or '' }}"],
        vcpus=1,
        memory_mib=256,
        timeout_seconds=600,
    ).expand(sample=samples)

    array = BatchJobOperator(
        task_id="read_stats_array",
        step="read_stats",
        project="{{ params.project }}",
        pipeline="demo",
        command=COMMAND + ["--reads", "{{ params.reads }}", "--fail-sample", "{{ params.fail_sample or '' }}"],
        samples=samples,
        vcpus=1,
        memory_mib=256,
        timeout_seconds=600,
    )

    wait = BatchJobSensor(
        task_id="wait_for_array_job",
        job_ids="{{ ti.xcom_pull(task_ids='read_stats_array', key='batch_job_id') }}",
    )

    @task
    def report(summary: dict) -> None:
        print(f"array job {summary['job_id']}: {summary['status']} ({summary['status_summary']})")
        for child in summary["samples"]:
            print(f"  {child['sample']:<10} {child['status']:<10} attempts={child['attempts']} log={child['log']}")

    publish = [
        PublishTableOperator(
            task_id=f"publish_{table}",
            table=table,
            project="{{ params.project }}",
            pipeline="demo",
            pipeline_version="{{ params.pipeline_version }}",
            units=samples,
        )
        for table in ("qc_metrics", "job_runs")
    ]

    chain(array, wait, report(array.output))
    cross_downstream([mapped, array], publish)


batch_events_demo()
