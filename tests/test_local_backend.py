"""The local backend really runs jobs: real processes, real logs, real events, the same trigger code."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowException, TaskDeferred

from batch_model import EVENT_DETAIL_TYPE, EVENT_SOURCE, OOM_REASON, JobState, default_retry_strategy
from hooks import backend
from hooks.event_queue import LocalEventQueue
from local_batch.control_plane import ControlPlane, LocalBatchError, wait_for_terminal
from local_batch.runner import HOST_LOST_REASON, TIMEOUT_REASON, ensure_runner, runner_running, stop_runner
from operators.batch_job import BatchJobOperator
from tests.conftest import first_event, task_context, use_settings

PY = sys.executable


def request(command, name="job", **extra):
    return {"jobName": name, "jobQueue": "genomics-spot", "jobDefinition": "genomics-step",
            "containerOverrides": {"command": command, **extra.pop("overrides", {})}, **extra}


def shell(script: str) -> list[str]:
    return ["sh", "-c", script]


@pytest.fixture
def plane(local):
    ensure_runner(local.local_home)
    return backend.batch_api(local).plane


def test_a_job_runs_its_command_and_the_log_holds_its_output(plane):
    job = plane.submit_job(request(shell("echo hello from $AWS_BATCH_JOB_ID attempt $AWS_BATCH_JOB_ATTEMPT")))
    detail = wait_for_terminal(plane, job["jobId"])
    assert detail["status"] == "SUCCEEDED"
    assert detail["container"]["exitCode"] == 0
    log = Path(detail["container"]["logStreamName"]).read_text()
    assert f"hello from {job['jobId']} attempt 1" in log


def test_a_failing_job_reports_its_exit_code_and_keeps_the_tools_error(plane):
    job = plane.submit_job(request(shell("echo 'samtools: truncated file' >&2; exit 3")))
    detail = wait_for_terminal(plane, job["jobId"])
    assert (detail["status"], detail["container"]["exitCode"]) == ("FAILED", 3)
    assert detail["statusReason"] == "Essential container in task exited"
    assert "samtools: truncated file" in Path(detail["container"]["logStreamName"]).read_text()


def test_a_missing_executable_fails_like_a_container_that_cannot_start(plane):
    job = plane.submit_job(request(["no-such-tool-here", "--version"]))
    detail = wait_for_terminal(plane, job["jobId"])
    assert detail["status"] == "FAILED"
    assert detail["container"]["reason"].startswith("CannotStartContainerError")


def test_events_have_the_eventbridge_shape_and_follow_the_job(plane, local):
    job = plane.submit_job(request(shell("true")))
    wait_for_terminal(plane, job["jobId"])
    queue = LocalEventQueue(Path(local.local_home) / "events.sqlite")
    events = [json.loads(m.body) for m in queue.receive(50)]
    mine = [e for e in events if e["detail"]["jobId"] == job["jobId"]]
    assert [e["detail"]["status"] for e in mine] == ["PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED"]
    first = mine[0]
    assert first["source"] == EVENT_SOURCE and first["detail-type"] == EVENT_DETAIL_TYPE
    assert first["resources"] == [first["detail"]["jobArn"]]
    assert {"version", "id", "account", "time", "region"} <= set(first)
    assert first["detail"]["jobQueue"].startswith("arn:aws:batch:local:")


def test_a_lost_host_is_retried_by_the_retry_strategy(plane):
    job = plane.submit_job(request(shell("if [ $AWS_BATCH_JOB_ATTEMPT = 1 ]; then sleep 30; fi; echo done"),
                                   retryStrategy=default_retry_strategy()))
    deadline = time.monotonic() + 20
    while not plane.reclaim(job["jobId"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    detail = wait_for_terminal(plane, job["jobId"])
    assert detail["status"] == "SUCCEEDED"
    assert [a["statusReason"] for a in detail["attempts"]] == [HOST_LOST_REASON, "Essential container in task exited"]


def test_a_non_zero_exit_is_not_retried_by_the_default_strategy(plane):
    job = plane.submit_job(request(shell("exit 1"), retryStrategy=default_retry_strategy()))
    assert len(wait_for_terminal(plane, job["jobId"])["attempts"]) == 1


def test_a_job_over_its_timeout_is_stopped_and_not_retried(plane):
    job = plane.submit_job(request(shell("sleep 30"), timeout={"attemptDurationSeconds": 1},
                                   retryStrategy=default_retry_strategy()))
    detail = wait_for_terminal(plane, job["jobId"], timeout=30)
    assert detail["status"] == "FAILED" and detail["statusReason"] == TIMEOUT_REASON
    assert len(detail["attempts"]) == 1


def test_terminate_stops_a_running_job(plane):
    job = plane.submit_job(request(shell("sleep 30")))
    deadline = time.monotonic() + 20
    while plane.describe_jobs([job["jobId"]])[0]["status"] != "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    plane.terminate_job(job["jobId"], "stopped by test")
    detail = wait_for_terminal(plane, job["jobId"])
    assert (detail["status"], detail["statusReason"]) == ("FAILED", "stopped by test")


def test_jobs_wait_for_capacity_instead_of_overcommitting(local, monkeypatch):


    settings = use_settings(monkeypatch, local, local_vcpus=1)
    api = backend.batch_api(settings)
    ensure_runner(settings.local_home, vcpus=1)
    jobs = [api.submit_job(request(shell("sleep 0.5"), name=f"j{i}")) for i in range(3)]
    details = [wait_for_terminal(api.plane, j["jobId"]) for j in jobs]
    spans = sorted((d["startedAt"], d["stoppedAt"]) for d in details)
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(2)), spans  # one vCPU: one job at a time


def test_a_job_larger_than_the_machine_is_refused_at_submit(plane):
    with pytest.raises(LocalBatchError, match="no local compute environment can run"):
        plane.submit_job(request(["true"], overrides={"resourceRequirements": [{"type": "VCPU", "value": "512"}]}))


def test_a_job_that_outgrows_its_memory_is_killed(plane):
    grow = "x = bytearray(400 * 1024 * 1024); import time; time.sleep(5)"
    job = plane.submit_job(request([PY, "-c", grow], overrides={
        "resourceRequirements": [{"type": "MEMORY", "value": "100"}]}))
    detail = wait_for_terminal(plane, job["jobId"], timeout=30)
    assert detail["status"] == "FAILED"
    # where real Batch puts it: the container's reason and the last attempt's, beside a plain status reason
    assert detail["container"]["reason"] == detail["attempts"][-1]["container"]["reason"] == OOM_REASON
    assert detail["statusReason"] == "Essential container in task exited"
    assert JobState.from_detail(detail).out_of_memory


def test_a_job_that_exits_by_itself_has_no_container_reason(plane):
    job = plane.submit_job(request(shell("exit 3")))
    detail = wait_for_terminal(plane, job["jobId"])
    assert detail["attempts"][-1]["container"]["exitCode"] == 3
    assert "reason" not in detail["attempts"][-1]["container"] and "reason" not in detail["container"]
    assert not JobState.from_detail(detail).out_of_memory


def test_array_children_find_their_index_and_the_parent_ends_when_they_do(plane):
    job = plane.submit_job(request(shell("echo child $AWS_BATCH_JOB_ARRAY_INDEX; test $AWS_BATCH_JOB_ARRAY_INDEX != 2"),
                                   arrayProperties={"size": 4}))
    detail = wait_for_terminal(plane, job["jobId"])
    assert detail["status"] == "FAILED"
    assert detail["arrayProperties"]["statusSummary"]["SUCCEEDED"] == 3
    assert detail["arrayProperties"]["statusSummary"]["FAILED"] == 1
    child = plane.describe_jobs([f"{job['jobId']}:1"])[0]
    assert "child 1" in Path(child["container"]["logStreamName"]).read_text()


def test_running_jobs_survive_a_runner_restart(plane, local):
    marker = Path(local.local_home) / "marker"
    job = plane.submit_job(request(shell(f"sleep 1.5; echo survived > {marker}")))
    deadline = time.monotonic() + 20
    while plane.describe_jobs([job["jobId"]])[0]["status"] != "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    lock = Path(local.local_home) / "runner.lock"
    os.kill(int(lock.read_text()), signal.SIGKILL)  # the runner dies hard; the job's process does not
    while runner_running(local.local_home):
        time.sleep(0.05)
    ensure_runner(local.local_home)
    detail = wait_for_terminal(plane, job["jobId"])
    assert detail["status"] == "SUCCEEDED" and len(detail["attempts"]) == 1
    assert marker.read_text().strip() == "survived"


def test_the_operator_waits_on_local_events_and_reports_success(local):
    op = BatchJobOperator(task_id="stats", step="read_stats", project="demo", pipeline="demo", sample="S1",
                          command=["python3", "-m", "genomics_steps.read_stats", "--reads", "100"], memory_mib=256)
    context = task_context(task_id="stats")
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    event = asyncio.run(first_event(deferred.value.trigger, timeout=60))
    summary = op.execute_complete(context, event)
    assert summary["status"] == "SUCCEEDED"
    stats = Path(local.local_home) / "lake" / "read_stats" / "project=demo" / "sample=S1" / "stats.json"
    assert json.loads(stats.read_text())["reads"] == 100
    assert Path(summary["log"]).exists()


def test_an_oom_killed_job_is_published_in_job_runs_with_its_container_reason(local):
    from operators.publish import PublishTableOperator

    grow = "x = bytearray(400 * 1024 * 1024); import time; time.sleep(5)"
    op = BatchJobOperator(task_id="grow", step="grow", project="demo", pipeline="demo", sample="S1",
                          command=[PY, "-c", grow], memory_mib=100, retry_strategy={"attempts": 1})
    context = task_context(task_id="grow")
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    event = asyncio.run(first_event(deferred.value.trigger, timeout=60))
    with pytest.raises(AirflowException, match=r"out of memory: it exceeded its memory_mib=100"):
        op.execute_complete(context, event)
    PublishTableOperator(task_id="publish_job_runs", table="job_runs", project="demo", pipeline="demo",
                         pipeline_version="1", units=["S1"]).execute(task_context(task_id="publish_job_runs"))
    _, rows = backend.query_engine(local).fetch("SELECT step, status, container_reason FROM job_runs")
    assert rows == [("grow", "FAILED", OOM_REASON)]


def test_an_array_failure_names_the_sample_and_shows_the_tools_own_error(local):
    samples = ["S1", "S2", "S3"]
    op = BatchJobOperator(task_id="stats", step="read_stats", project="demo", pipeline="demo", samples=samples,
                          command=["python3", "-m", "genomics_steps.read_stats", "--reads", "50", "--fail-sample", "S2"],
                          memory_mib=256)
    context = task_context(task_id="stats")
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    event = asyncio.run(first_event(deferred.value.trigger, timeout=60))
    with pytest.raises(AirflowException) as err:
        op.execute_complete(context, event)
    message = str(err.value)
    assert "1 of 3 samples failed" in message and "S2: FAILED exit code 2" in message
    failed_line = next(line for line in message.splitlines() if "S2: FAILED" in line)
    assert "refusing sample S2" in Path(failed_line.split("log: ")[-1].strip()).read_text()
    tail = message.split("--- last lines of the log of sample S2 ---", 1)[1]
    assert "error: refusing sample S2 as asked by --fail-sample" in tail, "the tool's own error, quoted"


def test_stop_runner_stops_it(local):
    ensure_runner(local.local_home)
    assert runner_running(local.local_home)
    assert stop_runner(local.local_home)
    assert not runner_running(local.local_home)
    assert ControlPlane(local.local_home).counts() == {}


def test_jobs_outlive_the_airflow_process_that_submitted_them(local):
    import subprocess

    marker = Path(local.local_home) / "outlived"
    submitter = (
        "from hooks import backend; from platform_settings import PlatformSettings;"
        "api = backend.batch_api(PlatformSettings.resolve(use_airflow_variable=False));"
        f"print(api.submit_job({request(shell(f'sleep 1; echo ok > {marker}'))!r})['jobId'])"
    )
    # a worker submits and exits at once, as a task process does when it defers or is killed
    out = subprocess.run([PY, "-c", submitter], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    job_id = out.stdout.strip()
    detail = wait_for_terminal(ControlPlane(local.local_home), job_id)
    assert detail["status"] == "SUCCEEDED" and marker.read_text().strip() == "ok"
    queue = LocalEventQueue(Path(local.local_home) / "events.sqlite")
    statuses = [json.loads(m.body)["detail"]["status"] for m in queue.receive(50)
                if json.loads(m.body)["detail"]["jobId"] == job_id]
    assert statuses[-1] == "SUCCEEDED"  # its events were kept for whoever waits next
