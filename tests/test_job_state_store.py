"""The job-state store settles duplicated and reordered events on the right state, on both backends."""

from __future__ import annotations

import boto3
import pytest

from batch_model import JobState
from hooks import job_state
from hooks.job_state import DynamoDbJobStateStore, SqliteJobStateStore, rate_window
from tests.conftest import REGION, create_aws_resources


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request, tmp_path):
    if request.param == "sqlite":
        yield SqliteJobStateStore(tmp_path / "state.sqlite")
        return
    from moto import mock_aws

    with mock_aws():
        names = create_aws_resources()
        yield DynamoDbJobStateStore(boto3.client("dynamodb", region_name=REGION), names["job_state_table"])


def state(status, attempts=0, job_id="11111111-2222-3333-4444-555555555555", reason=""):
    return JobState(job_id=job_id, status=status, attempts=attempts, status_reason=reason)


def test_later_states_replace_earlier_ones(store):
    assert store.record(state("RUNNABLE"))
    assert store.record(state("RUNNING"))
    assert store.record(state("SUCCEEDED", attempts=1))
    assert store.get_many([state("X").job_id])[state("X").job_id].status == "SUCCEEDED"


def test_an_event_older_than_the_stored_state_is_ignored(store):
    store.record(state("SUCCEEDED", attempts=1))
    assert not store.record(state("RUNNING"))
    assert not store.record(state("RUNNABLE"))
    assert store.get_many([state("X").job_id])[state("X").job_id].status == "SUCCEEDED"


def test_a_duplicate_event_changes_nothing(store):
    assert store.record(state("RUNNING"))
    assert not store.record(state("RUNNING"))


def test_a_terminal_state_is_final_even_against_a_later_attempt_count(store):
    store.record(state("FAILED", attempts=1, reason="Essential container in task exited"))
    assert not store.record(state("RUNNING", attempts=3))
    assert store.get_many([state("X").job_id])[state("X").job_id].status == "FAILED"


def test_a_retried_attempt_outranks_the_previous_attempts_running_state(store):
    store.record(state("RUNNING", attempts=0))
    assert store.record(state("RUNNABLE", attempts=1, reason="Host EC2 (instance i-1) terminated."))
    assert store.get_many([state("X").job_id])[state("X").job_id].status == "RUNNABLE"


def test_get_many_reads_more_than_one_batch_of_ids(store):
    ids = [f"00000000-0000-0000-0000-{i:012d}" for i in range(230)]
    for job_id in ids[:-5]:
        store.record(state("RUNNING", job_id=job_id))
    found = store.get_many(ids)
    assert set(found) == set(ids[:-5])


def test_array_children_are_listed_in_index_order(store):
    parent = "aaaaaaaa-0000-0000-0000-000000000000"
    for index in (2, 0, 1):
        store.record(state("SUCCEEDED", attempts=1, job_id=f"{parent}:{index}"))
    store.record(state("SUCCEEDED", attempts=0, job_id=parent))
    assert [c.array_index for c in store.children(parent)] == [0, 1, 2]


def test_submission_records_round_trip_and_newer_generations_replace_older(store):
    assert store.get_submission("k1") is None
    store.put_submission("k1", {"job_id": "a", "generation": 0})
    store.put_submission("k1", {"job_id": "b", "generation": 1})
    assert store.get_submission("k1") == {"job_id": "b", "generation": 1}


def test_submit_slots_run_out_within_a_window_and_say_how_long_to_wait(store, monkeypatch):
    now = 1_800_000_000.03  # 30 ms into a 100 ms window
    monkeypatch.setattr(job_state.time, "time", lambda: now)
    seconds, budget = rate_window(40)
    waits = [store.try_take_submit_slot(40) for _ in range(budget + 2)]
    assert waits[:budget] == [0.0] * budget
    assert waits[budget:] == pytest.approx([0.07, 0.07], abs=1e-3)  # until the next window opens
    now += seconds
    assert store.try_take_submit_slot(40) == 0.0


def test_no_one_second_interval_can_exceed_the_rate_budget():
    for rate in range(2, 51):
        seconds, budget = rate_window(rate)
        # a one-second interval overlaps at most 1/seconds + 1 windows
        assert budget * (round(1 / seconds) + 1) <= rate, rate
