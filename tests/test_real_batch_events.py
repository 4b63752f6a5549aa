"""Real "Batch Job State Change" events, captured from AWS accounts by others (shared/real-data/batch-events,
SOURCES.md there), read by the event parser, kept by the job-state store and reported by the operator.

The facts expected of each file were read off the file itself. Three of calcloud's "memory error" captures
(06, 08, 10) are the application's own exit codes for memory trouble it noticed; Batch says nothing of memory in
them, so they are not out-of-memory kills to us. Only 07 is, and only its container reason says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowException

from batch_model import OOM_REASON, JobState, completion_event, parse_event
from operators.batch_job import BatchJobOperator
from tests.conftest import task_context
from tests.test_job_state_store import store  # noqa: F401 (the fixture: SQLite, and DynamoDB on moto)

EVENTS = Path(__file__).resolve().parents[1].parent / "shared" / "real-data" / "batch-events"
EXITED = "Essential container in task exited"

# file: (job id, status, attempts, exit code, status reason, container reason, log stream, array index)
FACTS = {
    "01_awsdocs_runnable.json": (
        "4c7599ae-0a82-49aa-ba5a-4727fcce14a8", "RUNNABLE", 0, None, "", "", "", None),
    "02_qiita2017_succeeded.json": (
        "fddb88dd-33f0-478b-933e-27799c94d1b0", "SUCCEEDED", 1, 0, EXITED, "",
        "mybatchjob/default/xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxx", None),
    "03_fargate_failed.json": (
        "a7c17e65-6eb9-4d5c-ad20-90ae910f6660", "FAILED", 1, 1, EXITED, "",
        "ecs/default/332089cce2794bfeb27186563687041f", None),
    "04_array_child_succeeded.json": (
        "740ee3ee-f235-4670-b19f-84da1bda6e76:12", "SUCCEEDED", 1, 0, EXITED, "",
        "core_arm64_model_run/default/770a2f9cd4bb407c84227223b775ca25", 12),
    "05_umccr_sqs_record_succeeded.json": (
        "bbbBB8ce-b82d-4235-a878-72735337110e", "SUCCEEDED", 1, 0, EXITED, "", "Nextflowoncoanalyser<snip>", None),
    "06_calcloud_caldp-memory-error.json": (
        "cfec40dd-dcd4-4b65-aab8-d237a8a18214", "FAILED", 1, 32, EXITED, "",
        "calcloud-jobdef-02g-sb-jmiller/default/cbc000750b8e43cebdf9448d710b85e5", None),
    "07_calcloud_container-memory-error.json": (
        "ef9e8d6c-f480-418a-87e0-3cf72f3d3eb7", "FAILED", 1, 24, EXITED, OOM_REASON,
        "calcloud-jobdef-02g-test/default/6c2a097f4261465392ff63aea14928cc", None),
    "08_calcloud_log-memory-error.json": (
        "cfec40dd-dcd4-4b65-aab8-d237a8a18214", "FAILED", 1, 31, EXITED, "",
        "calcloud-jobdef-02g-sb-jmiller/default/cbc000750b8e43cebdf9448d710b85e5", None),
    "09_calcloud_operator-cancelled.json": (
        "5c202a35-06d6-4afd-b2f4-168a6430ceda", "FAILED", 1, 137, "Operator cancelled", "",
        "calcloud-jobdef-02g-test/default/c60f908e49e5482dad28513b9dddec8f", None),
    "10_calcloud_os-memory-error.json": (
        "5b202ca1-bfd0-4c9f-b2a0-f396843ef639", "FAILED", 1, 34, EXITED, "",
        "calcloud-jobdef-02g-sb-jmiller/default/e803b146d3a14c9a8c1d2ad0ae0acaeb", None),
    "11_calcloud_timeout-error.json": (
        "91945767-e5e0-4420-8e54-1e0b18e3d011", "FAILED", 1, 137, "Job attempt duration exceeded timeout", "",
        "calcloud-jobdef-16g-ops/default/cf00768d95af4b7e8bd24b4f70d16367", None),
}


def body(name: str) -> str:
    """The message body the event consumer receives: 05 is an SQS record, whose body is the event."""
    text = (EVENTS / name).read_text()
    if name.startswith("05_"):
        return json.loads(text)["Records"][0]["body"]
    return text


def test_every_captured_event_has_its_expected_facts_here():
    assert sorted(p.name for p in EVENTS.glob("*.json")) == sorted(FACTS)


@pytest.mark.parametrize("name", sorted(FACTS))
def test_the_parser_reads_each_real_event(name):
    job_id, status, attempts, exit_code, status_reason, container_reason, log_stream, index = FACTS[name]
    state = parse_event(body(name))
    assert state is not None
    assert (state.job_id, state.status, state.attempts, state.exit_code) == (job_id, status, attempts, exit_code)
    assert (state.status_reason, state.container_reason, state.log_stream) == (status_reason, container_reason,
                                                                               log_stream)
    assert state.array_index == index
    assert state.attempt_reasons == ([status_reason] if attempts else [])
    assert state.out_of_memory is (name == "07_calcloud_container-memory-error.json")


def test_an_array_childs_event_names_its_parent_and_index():
    state = parse_event(body("04_array_child_succeeded.json"))
    assert (state.parent_id, state.array_index) == ("740ee3ee-f235-4670-b19f-84da1bda6e76", 12)


def test_the_oom_kill_is_known_from_the_last_attempts_container_reason_alone():
    """07's top-level container repeats the reason; Batch's attempt record is what tells it, so it must suffice."""
    detail = json.loads(body("07_calcloud_container-memory-error.json"))["detail"]
    del detail["container"]["reason"]
    state = JobState.from_detail(detail)
    assert state.out_of_memory and state.container_reason == OOM_REASON and state.exit_code == 24


def test_a_summary_and_a_failure_message_carry_the_container_reason():
    state = parse_event(body("07_calcloud_container-memory-error.json"))
    summary = state.summary()
    assert summary["container_reason"] == OOM_REASON and summary["out_of_memory"] is True
    assert completion_event([state])["message"] == f"{state.job_id}: {EXITED} ({OOM_REASON})"


@pytest.mark.parametrize("name", sorted(FACTS))
def test_the_store_gives_back_each_real_event_as_parsed(store, name):
    state = parse_event(body(name))
    assert store.record(state)
    assert store.get_many([state.job_id])[state.job_id] == state
    if state.array_index is not None:
        assert store.children(state.parent_id) == [state]


def test_the_oom_reason_survives_the_monotonic_merge(store):
    failed = parse_event(body("07_calcloud_container-memory-error.json"))
    running = JobState(job_id=failed.job_id, status="RUNNING", job_name=failed.job_name)
    assert store.record(running)
    assert store.record(failed)
    assert not store.record(running), "a late RUNNING event changes nothing"
    assert not store.record(JobState.from_detail(json.loads(body("07_calcloud_container-memory-error.json"))["detail"],
                                                 source="reconcile")), "nor does the same state from DescribeJobs"
    stored = store.get_many([failed.job_id])[failed.job_id]
    assert stored.out_of_memory and stored.container_reason == OOM_REASON and stored.exit_code == 24


def test_the_operator_says_a_real_oom_kill_was_out_of_memory_whatever_its_exit_code(aws):
    op = BatchJobOperator(task_id="align", step="align", project="stoke", pipeline="germline", sample="S1",
                          command=["bwa", "mem"], memory_mib=1792)
    event = completion_event([parse_event(body("07_calcloud_container-memory-error.json"))])
    with pytest.raises(AirflowException) as err:
        op.execute_complete(task_context(), event)
    message = str(err.value)
    assert f"FAILED after 1 attempt(s): {EXITED}" in message
    assert f"container: {OOM_REASON}" in message
    assert "exit code 24 (out of memory: it exceeded its memory_mib=1792" in message


@pytest.mark.parametrize("name", ["09_calcloud_operator-cancelled.json", "11_calcloud_timeout-error.json"])
def test_a_job_batch_killed_for_another_reason_is_not_called_out_of_memory(aws, name):
    op = BatchJobOperator(task_id="align", step="align", project="stoke", pipeline="germline", sample="S1",
                          command=["bwa", "mem"])
    with pytest.raises(AirflowException) as err:
        op.execute_complete(task_context(), completion_event([parse_event(body(name))]))
    assert "exit code 137 (killed by a signal)" in str(err.value)
    assert "memory" not in str(err.value)
