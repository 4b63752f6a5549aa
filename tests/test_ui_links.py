"""The buttons on a task in the Airflow UI (operator extra links): on AWS a Batch task links to its job in
the Batch console (the array parent for an array task) and to its CloudWatch log stream, an FSx task to its
file system, a publish task to its Athena query. Each URL is pushed to its own XCom key as soon as the task
knows the id, and that key is the one the UI reads. On the local backend there is no console: no button, and
the task log names the job's log file instead.
"""

from __future__ import annotations

import asyncio

import pytest
import structlog.testing
from airflow.sdk.exceptions import TaskDeferred

from operators.batch_job import BatchJobOperator
from tests.conftest import REGION, first_event, task_context

CONSOLE = "https://console.aws.amazon.com"


def make_op(**kwargs):
    args = dict(task_id="align", step="align", project="stoke", pipeline="germline", command=["bwa", "mem", "ref.fa"])
    return BatchJobOperator(**{**args, **kwargs})


def deferred_on(op, context):
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    return deferred.value.trigger


def test_a_single_job_task_links_to_its_job_while_it_waits_and_to_its_log_stream_once_over(aws):
    op, context = make_op(sample="NA12878"), task_context()
    trigger = deferred_on(op, context)
    job_id = trigger.job_ids[0]
    links = context["ti"].xcom
    assert links["link_batch_job"] == f"{CONSOLE}/batch/home?region={REGION}#jobs/detail/{job_id}"
    assert "link_job_log" not in links, "no log before the job ran"

    aws.sim.run_until_done()
    summary = op.execute_complete(context, asyncio.run(first_event(trigger)))
    stream = summary["log_stream"]
    assert stream.startswith("genomics-step/default/")
    assert links["link_job_log"] == (
        f"{CONSOLE}/cloudwatch/home?region={REGION}#logsV2:log-groups/log-group/%2Faws%2Fbatch%2Fjob/log-events/"
        + stream.replace("/", "%2F"))


def test_an_array_task_links_to_the_array_parent_job(aws):
    op, context = make_op(samples=["S0", "S1", "S2"], per_sample_outcomes=True), task_context()
    trigger = deferred_on(op, context)
    parent = trigger.job_ids[0]
    assert ":" not in parent
    assert context["ti"].xcom["link_batch_job"] == f"{CONSOLE}/batch/home?region={REGION}#jobs/detail/{parent}"
    aws.sim.run_until_done()
    op.execute_complete(context, asyncio.run(first_event(trigger)))
    assert "link_job_log" not in context["ti"].xcom, "the parent has no log; its children are on its page"


def test_the_sensor_links_to_the_job_it_waits_for(aws):
    from sensors.batch_job import BatchJobSensor

    job_id = deferred_on(make_op(sample="S1"), task_context()).job_ids[0]
    context = task_context(task_id="wait")
    with pytest.raises(TaskDeferred):
        BatchJobSensor(task_id="wait", job_ids=job_id).execute(context)
    assert context["ti"].xcom["link_batch_job"] == f"{CONSOLE}/batch/home?region={REGION}#jobs/detail/{job_id}"


def test_an_fsx_task_links_to_its_file_system(aws):
    from operators.fsx import FsxCreateOperator

    op = FsxCreateOperator(task_id="fsx_create", project="p1", inputs=["s3://genomics-lake/raw/p1/gwas/"],
                           output_folder="s3://genomics-lake/results/gwas/", poll_seconds=0.01)
    context = task_context(dag_id="regenie_gwas", task_id="fsx_create")
    with pytest.raises(TaskDeferred):  # waiting for the file system to become AVAILABLE: the link is there
        op.execute(context)
    fs_id = aws.fsx.describe_file_systems()["FileSystems"][0]["FileSystemId"]
    assert context["ti"].xcom["link_fsx_file_system"] == (
        f"{CONSOLE}/fsx/home?region={REGION}#file-system-details/{fs_id}")


def test_a_publish_task_links_to_the_athena_query_it_waits_for(aws):
    from hooks import lake
    from operators.publish import PublishTableOperator
    from publishing import staging_uri

    prefix = staging_uri(aws.settings.lake_root, "qc_metrics", "rnaseq", "1.0", "P1")
    lake.write_text(aws.settings, f"{prefix}sample_id=A1/fastp.tsv", "tool\tmetric\tvalue\nfastp\treads\t1\n")
    op = PublishTableOperator(task_id="publish_qc", table="qc_metrics", project="P1", pipeline="rnaseq",
                              pipeline_version="1.0", units=["A1"])
    context = task_context(task_id="publish_qc")
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    query_id = deferred.value.trigger.query_id
    assert context["ti"].xcom["link_athena_query"] == (
        f"{CONSOLE}/athena/home?region={REGION}#/query-editor/history/{query_id}")


@pytest.mark.parametrize("region, console", [
    ("eu-west-1", "https://console.aws.amazon.com"),
    ("cn-north-1", "https://console.amazonaws.cn"),
    ("us-gov-west-1", "https://console.amazonaws-us-gov.com"),
])
def test_links_open_the_console_of_the_regions_partition(region, console):
    import ui_links

    assert ui_links.batch_job_url(region, "a1b2") == f"{console}/batch/home?region={region}#jobs/detail/a1b2"


def test_an_id_cannot_change_the_page_a_link_opens():
    import ui_links

    url = ui_links.fsx_url("eu-west-1", "fs-1/../../iam#x?y")
    assert url.endswith("#file-system-details/fs-1%2F..%2F..%2Fiam%23x%3Fy")


def test_the_ui_reads_each_link_from_the_key_the_task_pushes_it_to(monkeypatch):
    """Through Airflow 3.3's DAG serialization, as the API server gets the tasks: each link is its name and an
    XCom key, and that key must be the one the task pushed the URL to."""
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    # The API server loads DAGs with their links; the scheduler does not, and Airflow keeps that choice in a
    # class attribute that the last SerializedDagModel load (any earlier test's scheduler code) left behind.
    monkeypatch.setattr(DagSerialization, "_load_operator_extra_links", True)

    from operators.fsx import FsxCreateOperator, FsxExportOperator
    from operators.publish import PublishTableOperator
    from sensors.batch_job import BatchJobSensor

    with DAG("links", schedule=None) as dag:
        make_op(task_id="job", sample="S1")
        BatchJobSensor(task_id="sensor", job_ids="x")
        FsxCreateOperator(task_id="fsx_create", project="p1", inputs=["s3://genomics-lake/raw/"],
                          output_folder="s3://genomics-lake/results/")
        FsxExportOperator(task_id="fsx_export", file_system_id="fs-0123456789abcdef0", paths=["output"])
        PublishTableOperator(task_id="publish", table="qc_metrics", project="P1", pipeline="rnaseq",
                             pipeline_version="1.0", units=["A1"])
    served = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    batch = {"AWS Batch job": "link_batch_job", "CloudWatch log": "link_job_log"}
    fsx = {"FSx file system": "link_fsx_file_system"}
    expected = {"job": batch, "sensor": batch, "fsx_create": fsx, "fsx_export": fsx,
                "publish": {"Athena query": "link_athena_query"}}
    for task_id, keys in expected.items():
        links = served.get_task(task_id).operator_extra_link_dict
        assert {name: link.xcom_key for name, link in links.items()} == keys, task_id


def test_on_the_local_backend_there_is_no_button_and_the_task_log_names_the_jobs_log_file(local):
    op = BatchJobOperator(task_id="stats", step="read_stats", project="demo", pipeline="demo", sample="S1",
                          command=["python3", "-m", "genomics_steps.read_stats", "--reads", "100"], memory_mib=256)
    context = task_context(task_id="stats")
    trigger = deferred_on(op, context)
    event = asyncio.run(first_event(trigger, timeout=60))
    with structlog.testing.capture_logs() as logged:
        summary = op.execute_complete(context, event)
    assert not [k for k in context["ti"].xcom if k.startswith("link_")]
    assert f"job {summary['job_id']} log on this machine: {summary['log_stream']}" in [e["event"] for e in logged]
