"""FSx for Lustre around a run: the operators on the AWS path (moto plus the lifecycle, associations and export
tasks it lacks, tests/doubles/fsx_lifecycle.py), the local stand-in, the teardown, and the sweeper."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from airflow.sdk.exceptions import AirflowException, TaskDeferred

from hooks import backend
from hooks.fsx import TAG_DEPLOYMENT, tag_dict
from operators.fsx import (FsxCreateOperator, FsxDeleteOperator, FsxExportOperator, sweep_decisions)
from tests.conftest import first_event, task_context

INPUTS = ["s3://genomics-lake/lake/raw/p1/gwas/"]
OUTPUT = "s3://genomics-lake/lake/results/regenie_gwas/1.0/project=p1/"


def _create_op(**kwargs):
    return FsxCreateOperator(task_id="fsx_create", project="p1", inputs=kwargs.pop("inputs", INPUTS),
                             output_folder=OUTPUT, poll_seconds=0.01, **kwargs)


def _run_deferred(op, context, call):
    """Run ``call`` and, while it defers, the trigger and the method it names: what the triggerer and a
    worker do in turn. Returns the final result and the number of deferrals."""
    deferrals = 0
    while True:
        try:
            return call(), deferrals
        except TaskDeferred as deferred:
            deferrals += 1
            event = asyncio.run(first_event(deferred.trigger))
            method = getattr(op, deferred.method_name)
            call = lambda method=method, event=event: method(context, event)  # noqa: E731


def test_create_waits_deferred_links_the_folders_and_tags_the_run(aws):
    op, context = _create_op(), task_context(dag_id="regenie_gwas", task_id="fsx_create")
    result, deferrals = _run_deferred(op, context, lambda: op.execute(context))

    assert deferrals == 2, "once until the file system is AVAILABLE, once until its links are"
    fs_id = result["file_system_id"]
    assert result["mount"] == f"/fsx/{fs_id}" and result["output"] == f"/fsx/{fs_id}/output"
    assert result["links"] == {INPUTS[0]: f"/fsx/{fs_id}/input-0/"}
    fs = aws.fsx.describe_file_systems(FileSystemIds=[fs_id])["FileSystems"][0]
    assert fs["Lifecycle"] == "AVAILABLE" and fs["FileSystemTypeVersion"] == "2.15"
    assert fs["LustreConfiguration"]["DeploymentType"] == "SCRATCH_2" and fs["StorageCapacity"] == 1200
    tags = tag_dict(fs)
    assert tags[TAG_DEPLOYMENT] == "genomics" and tags["project"] == "p1"
    assert tags["airflow_dag"] == "regenie_gwas" and tags["run_id"] == context["ti"].run_id
    links = {a["FileSystemPath"]: (a["DataRepositoryPath"], a["BatchImportMetaDataOnCreate"])
             for a in aws.fsx.describe_data_repository_associations()["Associations"]}
    assert links == {"/input-0": (INPUTS[0], True), "/output": (OUTPUT, False)}
    assert aws.fsx.calls["DescribeFileSystems"] <= 6, aws.fsx.calls


def test_a_retried_create_gets_the_same_file_system_not_a_second(aws):
    context = task_context(dag_id="regenie_gwas", task_id="fsx_create")
    op = _create_op()
    with pytest.raises(TaskDeferred):  # the first try dies while waiting (a worker lost mid-way)
        op.execute(context)
    retry = _create_op()
    result, _ = _run_deferred(retry, context, lambda: retry.execute(context))
    assert len(aws.fsx.state) == 1 and result["file_system_id"] in aws.fsx.state

    # Even a try that lost the tags lookup (same token) gets the same file system back from CreateFileSystem.
    again = aws.fsx.create_file_system(ClientRequestToken=next(iter(aws.fsx.tokens)), FileSystemType="LUSTRE",
                                       StorageCapacity=1200, SubnetIds=["subnet-0123456789abcdef0"])
    assert again["FileSystem"]["FileSystemId"] == result["file_system_id"] and len(aws.fsx.state) == 1


def test_create_after_the_teardown_deleted_the_first_makes_a_new_one(aws):
    context = task_context(dag_id="regenie_gwas", task_id="fsx_create")
    op = _create_op()
    first, _ = _run_deferred(op, context, lambda: op.execute(context))
    FsxDeleteOperator(task_id="fsx_delete").execute(task_context(dag_id="regenie_gwas", task_id="fsx_delete"))
    op2 = _create_op()
    second, _ = _run_deferred(op2, context, lambda: op2.execute(context))  # the setup cleared and run again
    assert second["file_system_id"] != first["file_system_id"]


@pytest.mark.parametrize("change, message", [
    ({"capacity_gib": 1800}, "capacity_gib must be 1200, 2400 or a multiple of 2400"),
    ({"deployment_type": "SCRATCH_1"}, "deployment_type 'SCRATCH_1'"),
    ({"deployment_type": "PERSISTENT_2", "throughput": 200}, "throughput must be one of"),
    ({"inputs": ["s3://genomics-lake/lake/results/"]}, "must not contain each other"),
    ({"inputs": ["s3://genomics-lake/x; rm -rf /"]}, "each must be an s3:// or file:// prefix"),
])
def test_bad_requests_are_refused_before_anything_is_created(aws, change, message):
    op = _create_op(**change)
    with pytest.raises(ValueError, match=message):
        op.execute(task_context(dag_id="regenie_gwas", task_id="fsx_create"))
    assert aws.fsx.calls["CreateFileSystem"] == 0


def test_export_waits_for_the_task_and_fails_on_failed_files(aws):
    context = task_context(dag_id="regenie_gwas", task_id="fsx_create")
    op = _create_op()
    fs_id = _run_deferred(op, context, lambda: op.execute(context))[0]["file_system_id"]
    export = FsxExportOperator(task_id="fsx_export", file_system_id=fs_id, paths=["output"], poll_seconds=0.01)
    export_context = task_context(dag_id="regenie_gwas", task_id="fsx_export")
    summary, deferrals = _run_deferred(export, export_context, lambda: export.execute(export_context))
    assert deferrals == 1 and summary["exported_files"] == 3
    task = next(iter(aws.fsx.tasks.values()))
    assert task["Type"] == "EXPORT_TO_REPOSITORY" and task["Paths"] == ["output"]

    again, deferrals = _run_deferred(export, export_context, lambda: export.execute(export_context))
    assert deferrals == 0 and again == summary and len(aws.fsx.tasks) == 1, "a retry gets the same export"

    aws.fsx.fail_exports = True
    other_run = task_context(dag_id="regenie_gwas", task_id="fsx_export", run_id="manual__2")
    failing = FsxExportOperator(task_id="fsx_export", file_system_id=fs_id, paths=["output"], poll_seconds=0.01)
    with pytest.raises(AirflowException, match="1 file could not be exported"):
        _run_deferred(failing, other_run, lambda: failing.execute(other_run))
    aws.fsx.fail_exports = False
    retried, _ = _run_deferred(failing, other_run, lambda: failing.execute(other_run))
    assert retried["exported_files"] == 3 and len(aws.fsx.tasks) == 3, "the retry started a new export"


def test_teardown_deletes_every_file_system_of_its_run_and_only_those(aws):
    mine = task_context(dag_id="regenie_gwas", task_id="fsx_create")
    other = task_context(dag_id="regenie_gwas", task_id="fsx_create", run_id="manual__other")
    for context in (mine, other):
        op = _create_op()
        _run_deferred(op, context, lambda op=op, context=context: op.execute(context))
    deleted = FsxDeleteOperator(task_id="fsx_delete").execute(task_context(dag_id="regenie_gwas"))
    assert len(deleted) == 1
    alive = {fs["FileSystemId"]: tag_dict(fs)["run_id"] for fs in backend.fsx(aws.settings).list_file_systems()
             if fs["Lifecycle"] != "DELETING"}
    assert list(alive.values()) == ["manual__other"]
    assert FsxDeleteOperator(task_id="fsx_delete").execute(task_context(dag_id="regenie_gwas")) == [], \
        "a second teardown finds nothing left to delete"


def _fs(fs_id, lifecycle="AVAILABLE", hours=1.0, deployment="genomics", run="r1"):
    now = datetime(2026, 11, 21, 12, tzinfo=timezone.utc)
    tags = {TAG_DEPLOYMENT: deployment, "airflow_dag": "regenie_gwas", "run_id": run, "project": "p1"}
    return {"FileSystemId": fs_id, "Lifecycle": lifecycle, "CreationTime": now - timedelta(hours=hours),
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}


def test_sweeper_decides_by_run_state_ttl_and_lifecycle_and_leaves_others_alone():
    now = datetime(2026, 11, 21, 12, tzinfo=timezone.utc)
    file_systems = [
        _fs("fs-running", run="running"),
        _fs("fs-ended", run="ended"),
        _fs("fs-old", run="running", hours=50),
        _fs("fs-failed", lifecycle="FAILED", run="running"),
        _fs("fs-deleting", lifecycle="DELETING", run="ended"),
        _fs("fs-not-ours", deployment="someone-else", run="ended"),
    ]
    decisions = sweep_decisions(file_systems, deployment="genomics", now=now, ttl_hours=48,
                                run_active=lambda dag, run: run == "running")
    reasons = {d["file_system_id"]: d["reason"] for d in decisions}
    assert reasons == {"fs-ended": "its run regenie_gwas / ended has ended",
                       "fs-old": "outlived the TTL of 48 h", "fs-failed": "unusable (FAILED)"}


@pytest.mark.e2e
def test_fsx_sweeper_dag_deletes_an_orphan_locally_and_reports_it(local):
    from airflow.dag_processing.dagbag import DagBag

    from tests.test_gwas import ROOT

    api = backend.fsx(local)
    orphan = api.create_file_system(token="t1", deployment_type="SCRATCH_2", capacity_gib=1200, throughput=None,
                                    tags={TAG_DEPLOYMENT: "genomics", "airflow_dag": "regenie_gwas",
                                          "run_id": "manual__gone", "project": "p1"})
    foreign = api.create_file_system(token="t2", deployment_type="SCRATCH_2", capacity_gib=1200, throughput=None,
                                     tags={TAG_DEPLOYMENT: "another-team"})
    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["fsx_sweeper"]
    run = dag.test()
    assert run.state == "success"
    report = run.get_task_instance("sweep").xcom_pull(task_ids="sweep")
    assert [d["file_system_id"] for d in report] == [orphan["FileSystemId"]]
    assert "has ended" in report[0]["reason"]
    assert [fs["FileSystemId"] for fs in api.list_file_systems()] == [foreign["FileSystemId"]]


def test_on_aws_the_sweeper_deletes_the_file_system_of_an_ended_run(aws):
    """Through fsx_sweeper's own connection: tests/test_deploy.py checks its calls against the sweeper role."""
    from operators.fsx import FsxSweepOperator
    from tests.conftest import FakeTI

    context = task_context(dag_id="regenie_gwas", task_id="fsx_create", run_id="manual__ended")
    op = _create_op()
    fs_id = _run_deferred(op, context, lambda: op.execute(context))[0]["file_system_id"]

    class SweepTI(FakeTI):
        def get_dr_count(self, dag_id, run_ids, states):
            return 0  # the run is no longer queued or running

    report = FsxSweepOperator(task_id="sweep").execute({"ti": SweepTI(dag_id="fsx_sweeper", task_id="sweep")})
    assert [(d["file_system_id"], d["reason"]) for d in report] == [
        (fs_id, "its run regenie_gwas / manual__ended has ended")]
    assert backend.fsx(aws.settings).describe(fs_id)["Lifecycle"] == "DELETING"


def test_the_local_stand_in_has_the_same_lifecycle_and_copies_linked_folders_in_and_out(local, monkeypatch):
    from dataclasses import replace

    from hooks.lake import write_text
    from tests.conftest import use_settings

    settings = use_settings(monkeypatch, replace(local, local_fsx_create_seconds=0.3))
    inputs, output = f"{settings.lake_root}/raw/p1/gwas/", f"{settings.lake_root}/results/gwas/p1/"
    write_text(settings, inputs + "cohort.fam", "S1 S1 0 0 0 -9\n")
    op = FsxCreateOperator(task_id="fsx_create", project="p1", inputs=[inputs], output_folder=output,
                           poll_seconds=0.05)
    context = task_context(dag_id="regenie_gwas", task_id="fsx_create")
    result, deferrals = _run_deferred(op, context, lambda: op.execute(context))
    assert deferrals == 1, "CREATING first, then AVAILABLE"
    mounted = result["links"][inputs]
    assert open(mounted + "cohort.fam").read() == "S1 S1 0 0 0 -9\n"

    with open(result["output"] + "/top_hits.json", "w") as fh:
        fh.write("{}")
    export = FsxExportOperator(task_id="fsx_export", file_system_id=result["file_system_id"], paths=["output"])
    assert export.execute(task_context(dag_id="regenie_gwas", task_id="fsx_export"))["exported_files"] == 1
    assert open(output.removeprefix("file://") + "top_hits.json").read() == "{}"
    FsxDeleteOperator(task_id="fsx_delete").execute(task_context(dag_id="regenie_gwas"))
    assert backend.fsx(settings).list_file_systems() == []
