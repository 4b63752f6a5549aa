"""BatchJobOperator, BatchJobEventTrigger and the shared event consumer on the AWS path.

moto provides SQS, the EventBridge rule that routes aws.batch events to it, DynamoDB and S3; the simulated
control plane (tests/doubles) provides what moto lacks: Batch state progression, retries, throttling and the
events themselves.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest
import structlog
import structlog.testing
from airflow.sdk.exceptions import AirflowException, TaskDeferred

from batch_model import JobState, children_by_status, progress_text
from genomics_steps.outcomes import EXCLUDED_EXIT_CODE
from hooks import backend, lake
from operators.batch_job import BatchJobOperator
from tests.conftest import first_event, task_context, use_settings
from triggers.batch_events import BatchJobEventTrigger, EventHub


def make_op(**kwargs):
    args = dict(task_id="align", step="align", project="stoke", pipeline="germline", command=["bwa", "mem", "ref.fa"])
    args.update(kwargs)
    return BatchJobOperator(**args)


def submit(op, context):
    """execute() up to its deferral; returns the trigger."""
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    return deferred.value.trigger


def die_after_submit(aws, monkeypatch, op):
    """A first try whose worker dies between SubmitJob and recording the submission."""

    def worker_killed(*args, **kwargs):
        raise SystemExit("worker killed")

    with monkeypatch.context() as m:
        m.setattr(type(backend.job_state_store(aws.settings)), "put_submission", worker_killed)
        with pytest.raises(SystemExit):
            op.execute(task_context(try_number=1))


def run_to_completion(aws, op, context):
    trigger = submit(op, context)
    aws.sim.run_until_done()
    event = asyncio.run(first_event(trigger))
    return trigger, event


def test_success_returns_a_summary_and_the_wait_makes_no_describe_jobs_call(aws):
    op, context = make_op(sample="NA12878"), task_context()
    trigger, event = run_to_completion(aws, op, context)
    summary = op.execute_complete(context, event)

    assert summary["status"] == "SUCCEEDED"
    assert summary["sample"] == "NA12878"
    assert summary["exit_code"] == 0 and summary["attempts"] == 1
    assert summary["log"].startswith("CloudWatch Logs group /aws/batch/job, stream genomics-step/default/")
    assert aws.sim.calls["SubmitJob"] == 1
    assert aws.sim.calls["DescribeJobs"] == 0
    assert context["ti"].xcom["batch_job_id"] == summary["job_id"] == trigger.job_ids[0]


def test_submitted_job_carries_tags_resources_retry_rules_and_a_deterministic_name(aws):
    op, context = make_op(sample="NA12878", vcpus=4, memory_mib=16000, timeout_seconds=3600), task_context()
    submit(op, context)
    job = next(iter(aws.sim.jobs.values()))
    request = job.request
    assert request["tags"] == {
        "project": "stoke", "pipeline": "germline", "run_id": "manual__2026-11-20T10:00:00+00:00", "step": "align",
        "airflow_dag": "pipeline", "airflow_task": "align", "sample": "NA12878",
    }
    assert request["propagateTags"] is True
    assert {"type": "VCPU", "value": "4"} in request["containerOverrides"]["resourceRequirements"]
    assert {"type": "MEMORY", "value": "16000"} in request["containerOverrides"]["resourceRequirements"]
    assert request["timeout"] == {"attemptDurationSeconds": 3600}
    assert request["retryStrategy"]["evaluateOnExit"] == [
        {"onStatusReason": "Host EC2*", "action": "RETRY"},
        {"onExitCode": "69", "action": "RETRY"},
        {"onStatusReason": "*", "action": "EXIT"},
    ]
    assert job.name.startswith("germline-align-NA12878-") and job.name.endswith("-g0")


def test_a_one_sample_unit_is_a_plain_job_named_and_tagged_after_its_sample(aws):
    """A mapped unit is a list of one sample: its job must be findable in the Batch console by the sample id."""
    op, context = make_op(samples=["NA12878"]), task_context()
    submit(op, context)
    job = next(iter(aws.sim.jobs.values()))
    assert job.name.startswith("germline-align-NA12878-")
    assert "arrayProperties" not in job.request and job.request["tags"]["sample"] == "NA12878"
    assert op.samples == ["NA12878"] and op.sample is None, "the operator's arguments are not rewritten"


def test_a_lake_error_while_staging_job_facts_does_not_fail_a_succeeded_job(aws, monkeypatch):
    from hooks import lake

    op, context = make_op(sample="NA12878"), task_context()
    _, event = run_to_completion(aws, op, context)

    def refused(*args, **kwargs):
        raise PermissionError("AccessDenied: s3:PutObject")

    monkeypatch.setattr(lake, "write_text", refused)
    assert op.execute_complete(context, event)["status"] == "SUCCEEDED"


def test_a_failed_job_fails_with_its_own_reason_when_its_facts_cannot_be_staged(aws, monkeypatch):
    from hooks import lake

    aws.sim.plan("NA12878", ["exit:3"])
    op, context = make_op(sample="NA12878"), task_context()
    _, event = run_to_completion(aws, op, context)
    monkeypatch.setattr(lake, "write_text", lambda *a, **k: (_ for _ in ()).throw(OSError("lake down")))
    with pytest.raises(AirflowException, match="exit code 3"):
        op.execute_complete(context, event)


def test_failure_raises_with_reason_exit_code_and_log_location(aws):
    aws.sim.plan("NA12878", ["exit:3"])
    op, context = make_op(sample="NA12878"), task_context()
    _, event = run_to_completion(aws, op, context)
    assert event["status"] == "failed"
    with pytest.raises(AirflowException) as err:
        op.execute_complete(context, event)
    message = str(err.value)
    assert "FAILED after 1 attempt(s): Essential container in task exited" in message
    assert "exit code 3" in message
    assert "CloudWatch Logs group /aws/batch/job, stream genomics-step/default/" in message


def test_an_oom_kill_is_reported_as_out_of_memory_whatever_its_exit_code(aws):
    aws.sim.plan("NA12878", ["oom:24"])
    op, context = make_op(sample="NA12878", memory_mib=4096), task_context()
    _, event = run_to_completion(aws, op, context)
    assert event["jobs"][0]["out_of_memory"] is True
    with pytest.raises(AirflowException) as err:
        op.execute_complete(context, event)
    message = str(err.value)
    assert "container: OutOfMemoryError: Container killed due to memory usage" in message
    assert "exit code 24 (out of memory: it exceeded its memory_mib=4096" in message


def _array_with(aws, outcomes_by_child: dict[int, str], n: int = 4):
    """An array job over S0..S<n-1> with per-sample outcomes, run to its end; returns (op, context, event)."""
    samples = [f"S{i}" for i in range(n)]
    op, context = make_op(samples=samples, per_sample_outcomes=True), task_context()
    trigger = submit(op, context)
    job = aws.sim.jobs[trigger.job_ids[0]]
    for index, outcome in outcomes_by_child.items():
        job.children[index].outcomes = [outcome]
    aws.sim.run_until_done()
    return op, context, asyncio.run(first_event(trigger))


def _staged_outcomes(aws) -> dict[tuple[str, str], str]:
    import job_facts

    prefix = job_facts.outcome_prefix(aws.settings, "germline", "manual__2026-11-20T10:00:00+00:00", "stoke")
    return {(sample, step): outcome for path in lake.list_files(aws.settings, prefix)
            if (parsed := job_facts.parse_outcome_file(path)) for sample, step, outcome in [parsed]}


def test_an_array_with_failed_children_hands_on_the_survivors_and_records_every_outcome(aws):
    op, context, event = _array_with(aws, {1: "exit:3", 3: f"exit:{EXCLUDED_EXIT_CODE}"})
    assert event["status"] == "failed", "Batch fails the parent when a child fails"
    summary = op.execute_complete(context, event)
    assert summary["survivors"] == ["S0", "S2"]
    assert context["ti"].xcom["survivors"] == ["S0", "S2"]
    assert _staged_outcomes(aws) == {("S0", "align"): "succeeded", ("S1", "align"): "failed",
                                     ("S2", "align"): "succeeded", ("S3", "align"): "excluded"}


def test_a_retry_of_an_array_with_failed_children_settles_from_it_instead_of_running_it_again(aws):
    """A retry (the scheduler's race, a worker lost) must not submit the whole array again: the samples that
    succeeded are done, and the failed ones are for a new run of the version."""
    op, context, event = _array_with(aws, {1: "exit:3"})
    retry = task_context(try_number=2)
    summary = op.execute(retry)  # completes inline: the job is over
    assert aws.sim.calls["SubmitJob"] == 1
    assert summary["survivors"] == ["S0", "S2", "S3"]


def test_a_retry_of_a_unit_where_every_sample_failed_submits_it_again(aws):
    op, context, event = _array_with(aws, {0: "exit:3", 1: "exit:3"}, n=2)
    submit(op, task_context(try_number=2))
    assert aws.sim.calls["SubmitJob"] == 2


def test_a_unit_where_every_sample_failed_fails_its_task(aws):
    op, context, event = _array_with(aws, {0: "exit:3", 1: "exit:3"}, n=2)
    with pytest.raises(AirflowException, match="2 of 2 samples failed"):
        op.execute_complete(context, event)
    assert "survivors" not in context["ti"].xcom
    assert set(_staged_outcomes(aws).values()) == {"failed"}


def test_a_unit_whose_samples_were_all_excluded_hands_on_none_without_failing(aws):
    op, context, event = _array_with(aws, {0: f"exit:{EXCLUDED_EXIT_CODE}", 1: f"exit:{EXCLUDED_EXIT_CODE}"}, n=2)
    assert op.execute_complete(context, event)["survivors"] == []


def test_a_later_step_runs_over_the_samples_the_previous_one_handed_on(aws, monkeypatch):
    from airflow_compat import AirflowSkipException

    context = task_context(task_id="call")
    handed_on = {"survivors": ["S0", "S2"]}
    monkeypatch.setattr(type(context["ti"]), "xcom_pull", lambda self, task_ids, key, map_indexes: handed_on.get(key),
                        raising=False)
    op = make_op(task_id="call", step="call", samples_from="per_sample.align", per_sample_outcomes=True)
    trigger = submit(op, context)
    job = aws.sim.jobs[trigger.job_ids[0]]
    assert job.request["arrayProperties"] == {"size": 2}
    handed_on.clear()
    with pytest.raises(AirflowSkipException, match="no sample of this unit is left"):
        make_op(task_id="stats", step="stats", samples_from="per_sample.call").execute(task_context(task_id="stats"))


def test_an_array_names_the_children_that_ran_out_of_memory(aws):
    samples = ["S0", "S1", "S2"]
    op, context = make_op(samples=samples, memory_mib=4096), task_context()
    trigger = submit(op, context)
    job = aws.sim.jobs[trigger.job_ids[0]]
    job.children[1].outcomes = ["oom"]
    job.children[2].outcomes = ["exit:137"]
    aws.sim.run_until_done()
    with pytest.raises(AirflowException) as err:
        op.execute_complete(context, asyncio.run(first_event(trigger)))
    lines = {line.split(":")[0].strip(): line for line in str(err.value).splitlines() if line.startswith("  S")}
    assert "OutOfMemoryError: Container killed due to memory usage" in lines["S1"]
    assert "(out of memory: it exceeded its memory_mib=4096" in lines["S1"]
    assert "memory" not in lines["S2"] and "exit code 137 (" in lines["S2"]


def test_spot_reclaim_is_retried_by_batch_and_the_task_succeeds(aws):
    aws.sim.plan("NA12878", ["spot", "ok"])
    op, context = make_op(sample="NA12878"), task_context()
    _, event = run_to_completion(aws, op, context)
    summary = op.execute_complete(context, event)
    assert summary["status"] == "SUCCEEDED"
    assert summary["attempts"] == 2
    assert aws.sim.calls["SubmitJob"] == 1


def test_a_host_not_ready_yet_exit_is_retried_by_batch(aws):
    """Exit 69: the run's file system was not mounted on the host when the container started."""
    aws.sim.plan("NA12878", ["exit:69", "ok"])
    op, context = make_op(sample="NA12878"), task_context()
    _, event = run_to_completion(aws, op, context)
    assert op.execute_complete(context, event)["attempts"] == 2


def test_a_non_spot_failure_is_not_retried_by_batch(aws):
    aws.sim.plan("NA12878", ["exit:1", "ok"])
    op, context = make_op(sample="NA12878"), task_context()
    _, event = run_to_completion(aws, op, context)
    assert event["status"] == "failed" and event["jobs"][0]["attempts"] == 1


def test_an_airflow_retry_reattaches_to_the_running_job_instead_of_submitting_again(aws):
    first = submit(make_op(sample="S1"), task_context(try_number=1))
    aws.sim.step()
    second = submit(make_op(sample="S1"), task_context(try_number=2))
    assert second.job_ids == first.job_ids
    assert aws.sim.calls["SubmitJob"] == 1


def test_a_retry_after_the_worker_died_between_submit_and_record_finds_the_job_by_name(aws, monkeypatch):
    die_after_submit(aws, monkeypatch, make_op(sample="S1"))
    assert aws.sim.calls["SubmitJob"] == 1
    trigger = submit(make_op(sample="S1"), task_context(try_number=2))
    assert aws.sim.calls["SubmitJob"] == 1
    assert trigger.job_ids == list(aws.sim.jobs)


def test_a_retry_after_the_job_failed_submits_a_new_generation(aws):
    aws.sim.plan("S1", ["exit:1"])
    op, context = make_op(sample="S1"), task_context(try_number=1)
    _, event = run_to_completion(aws, op, context)
    with pytest.raises(AirflowException):
        op.execute_complete(context, event)
    retry = submit(make_op(sample="S1"), task_context(try_number=2))
    assert aws.sim.calls["SubmitJob"] == 2
    names = sorted(j.name for j in aws.sim.jobs.values())
    assert names[0].endswith("-g0") and names[1].endswith("-g1")
    assert retry.job_ids[0] != event["jobs"][0]["job_id"]


def test_a_new_try_reuses_a_succeeded_job_unless_asked_to_rerun(aws):
    op, context = make_op(sample="S1"), task_context(try_number=1)
    _, event = run_to_completion(aws, op, context)
    first = op.execute_complete(context, event)
    # the job is over: the retry completes with it at once instead of deferring on a trigger that would fire
    # immediately (which Airflow 3.3's scheduler can mistake for a task killed externally)
    reused = make_op(sample="S1").execute(task_context(try_number=2))
    assert aws.sim.calls["SubmitJob"] == 1
    assert reused["job_id"] == first["job_id"] and reused["status"] == "SUCCEEDED" and reused["sample"] == "S1"
    rerun = submit(make_op(sample="S1", rerun_succeeded=True), task_context(try_number=3))
    assert aws.sim.calls["SubmitJob"] == 2 and rerun.job_ids != [first["job_id"]]


def test_a_retry_finding_its_job_ended_unheard_completes_from_one_describe_jobs(aws, monkeypatch):
    """The worker died right after SubmitJob and the job ended before the retry, with no trigger consuming
    its events: the retry finds the job by name, asks Batch once, and ends the task with the job's outcome."""
    aws.sim.plan("S1", ["exit:3"])
    die_after_submit(aws, monkeypatch, make_op(sample="S1"))
    aws.sim.run_until_done()
    with pytest.raises(AirflowException, match=r"(?s)FAILED after 1 attempt.*exit code 3"):
        make_op(sample="S1").execute(task_context(try_number=2))  # no TaskDeferred: it ends here
    assert aws.sim.calls["SubmitJob"] == 1 and aws.sim.calls["DescribeJobs"] == 1
    # the next try sees the failure recorded and submits a new generation
    retry = submit(make_op(sample="S1"), task_context(try_number=3))
    assert aws.sim.calls["SubmitJob"] == 2 and aws.sim.jobs[retry.job_ids[0]].name.endswith("-g1")


def test_throttled_submissions_are_retried_and_never_fail_the_task(aws, monkeypatch):
    from hooks import batch_api

    monkeypatch.setattr(batch_api, "BACKOFF_BASE_SECONDS", 0.001)  # same backoff shape, compressed time
    aws.sim.throttle_fraction = 0.5
    triggers = [submit(make_op(sample=f"S{i}", task_id=f"t{i}"), task_context(task_id=f"t{i}")) for i in range(12)]
    assert len({t.job_ids[0] for t in triggers}) == 12
    assert aws.sim.calls["SubmitJob_throttled"] > 0
    assert aws.sim.calls["SubmitJob"] == 12 + aws.sim.calls["SubmitJob_throttled"]


def test_submissions_stay_under_the_rate_budget(aws, monkeypatch):
    use_settings(monkeypatch, aws.settings, submit_rate_per_second=20)
    for i in range(30):
        submit(make_op(sample=f"S{i}", task_id=f"t{i}"), task_context(task_id=f"t{i}"))
    times = aws.sim.submit_times
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= 20


def test_array_job_reports_every_sample_and_which_failed(aws):
    samples = [f"S{i}" for i in range(6)]
    op, context = make_op(samples=samples), task_context()
    trigger = submit(op, context)
    parent = trigger.job_ids[0]
    job = aws.sim.jobs[parent]
    job.children[2].outcomes = ["exit:4"]
    job.children[5].outcomes = ["exit:4"]
    aws.sim.run_until_done()
    event = asyncio.run(first_event(trigger))
    with pytest.raises(AirflowException) as err:
        op.execute_complete(context, event)
    assert "2 of 6 samples failed" in str(err.value)
    assert "S2: FAILED exit code 4" in str(err.value) and "S5: FAILED exit code 4" in str(err.value)
    assert aws.sim.calls["SubmitJob"] == 1
    # the manifest tells each child its sample
    manifest = job.request["tags"]["manifest"]
    body = aws.s3.get_object(Bucket="genomics-lake", Key=manifest.split("genomics-lake/", 1)[1])["Body"].read()
    assert json.loads(body) == {"samples": samples}
    assert job.request["arrayProperties"] == {"size": 6}


def test_array_summary_lists_samples_when_all_succeed(aws):
    samples = ["A", "B", "C"]
    op, context = make_op(samples=samples), task_context()
    _, event = run_to_completion(aws, op, context)
    summary = op.execute_complete(context, event)
    assert [(c["sample"], c["status"]) for c in summary["samples"]] == [(s, "SUCCEEDED") for s in samples]
    assert summary["failed_samples"] == []


def test_duplicated_and_reordered_events_resolve_to_the_terminal_state(aws):
    aws.sim.max_duplicates = 3
    aws.sim.reorder = True
    op, context = make_op(sample="S1"), task_context()
    trigger = submit(op, context)
    job_id = trigger.job_ids[0]
    aws.sim.run_until_done()
    # replay a stale RUNNING event after the terminal one
    stale = aws.sim.detail(aws.sim.jobs[job_id]) | {"status": "RUNNING", "attempts": []}
    aws.sim.publish_details([stale, stale])
    event = asyncio.run(first_event(trigger))
    assert event["status"] == "success"
    store = backend.job_state_store(aws.settings)
    assert store.get_many([job_id])[job_id].status == "SUCCEEDED"


def test_an_event_consumed_before_the_task_deferred_is_not_lost(aws):
    op, context = make_op(sample="S1"), task_context()
    trigger = submit(op, context)
    aws.sim.run_until_done()

    async def consume_with_someone_else():  # another trigger's consumer drains the queue first
        other = EventHub(aws.settings)
        other.watch(["00000000-0000-0000-0000-000000000000"])
        while aws.queue_depth():
            await asyncio.sleep(0.05)
        other._task.cancel()

    asyncio.run(consume_with_someone_else())
    assert aws.queue_depth() == 0
    event = asyncio.run(first_event(trigger))
    assert event["status"] == "success"


def test_a_triggerer_restart_loses_nothing(aws):
    op, context = make_op(sample="S1"), task_context()
    trigger = submit(op, context)

    async def run_then_die():
        agen = trigger.run()
        task = asyncio.ensure_future(agen.__anext__())
        await asyncio.sleep(0.3)
        task.cancel()  # the triggerer process goes away while the job runs

    asyncio.run(run_then_die())
    aws.sim.run_until_done()  # events arrive while no triggerer runs
    event = asyncio.run(first_event(trigger))  # a new triggerer picks the trigger up
    assert event["status"] == "success"


def test_dropped_events_are_reconciled_with_batched_describe_jobs(aws, monkeypatch):


    settings = use_settings(monkeypatch, aws.settings, reconcile_after_seconds=0.3)
    aws.sim.drop_fraction = 1.0
    triggers = [submit(make_op(sample=f"S{i}", task_id=f"t{i}"), task_context(task_id=f"t{i}")) for i in range(110)]
    aws.sim.run_until_done()
    ids = [t.job_ids[0] for t in triggers]
    combined = BatchJobEventTrigger(job_ids=ids, settings=settings.to_dict())
    event = asyncio.run(first_event(combined))
    assert event["status"] == "success" and len(event["jobs"]) == 110
    assert aws.sim.calls["DescribeJobs"] == 2  # 110 ids: 100 + 10


def test_a_job_batch_no_longer_knows_fails_with_a_clear_reason(aws, monkeypatch):


    use_settings(monkeypatch, aws.settings, reconcile_after_seconds=0.3)
    aws.sim.drop_fraction = 1.0
    op, context = make_op(sample="S1"), task_context()
    trigger = submit(op, context)
    aws.sim.forget(trigger.job_ids[0])
    event = asyncio.run(first_event(trigger))
    assert event["status"] == "failed"
    with pytest.raises(AirflowException, match="AWS Batch no longer knows job"):
        op.execute_complete(context, event)


def test_one_consumer_serves_every_waiting_trigger(aws):
    triggers = [submit(make_op(sample=f"S{i}", task_id=f"t{i}"), task_context(task_id=f"t{i}")) for i in range(100)]
    aws.sim.run_until_done()

    async def wait_all():
        events = await asyncio.gather(*(first_event(t) for t in triggers))
        hubs = [h for (loop_id, *_), h in EventHub._hubs.items() if loop_id == id(asyncio.get_running_loop())]
        return events, hubs

    events, hubs = asyncio.run(wait_all())
    assert all(e["status"] == "success" for e in events)
    assert len(hubs) == 1
    assert hubs[0].stats["describe_jobs_calls"] == 0
    # every job's SUCCEEDED came through the one consumer; SQS may deliver a RUNNING after it, and the hub
    # stops once no trigger waits, so not every RUNNING is necessarily read
    assert hubs[0].stats["events"] >= 100


def test_triggers_share_a_consumer_by_queue_and_store_not_by_every_setting(aws):
    from dataclasses import replace

    async def hubs():
        same = EventHub.for_settings(aws.settings)
        other_timing = EventHub.for_settings(replace(aws.settings, reconcile_after_seconds=60, database="other"))
        other_queue = EventHub.for_settings(replace(aws.settings, event_queue_url=aws.settings.event_queue_url + "-2"))
        return same, other_timing, other_queue

    same, other_timing, other_queue = asyncio.run(hubs())
    assert same is other_timing
    assert other_queue is not same


def test_a_missing_event_queue_fails_the_wait_with_a_clear_message(aws, monkeypatch):


    settings = use_settings(monkeypatch, aws.settings, event_queue_url=aws.settings.event_queue_url + "-gone")
    trigger = BatchJobEventTrigger(job_ids=["11111111-2222-3333-4444-555555555555"], settings=settings.to_dict())
    event = asyncio.run(first_event(trigger))
    assert event["status"] == "error"
    assert "receiving Batch events failed and cannot succeed by waiting" in event["message"]


def test_trigger_serializes_to_its_constructor_arguments(aws):
    trigger = BatchJobEventTrigger(job_ids=["a"], settings=aws.settings.to_dict(), terminate_on_kill=False,
                                   progress_interval_seconds=5, deferred_at=1_796_000_000.5)
    classpath, kwargs = trigger.serialize()
    assert classpath == "triggers.batch_events.BatchJobEventTrigger"
    assert kwargs == {"job_ids": ["a"], "settings": aws.settings.to_dict(), "terminate_on_kill": False,
                      "progress_interval_seconds": 5, "deferred_at": 1_796_000_000.5}
    assert BatchJobEventTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_a_trigger_built_at_deferral_keeps_that_time_through_a_triggerer_restart(aws):
    before = time.time()
    _, kwargs = BatchJobEventTrigger(job_ids=["a"], settings=aws.settings.to_dict()).serialize()
    assert before <= kwargs["deferred_at"] <= time.time()
    time.sleep(0.01)
    assert BatchJobEventTrigger(**kwargs).deferred_at == kwargs["deferred_at"]  # rebuilt in the triggerer


def test_a_job_over_at_once_is_reported_no_sooner_than_min_defer_seconds_after_the_deferral(aws, monkeypatch):
    """Airflow 3.3's scheduler fails a try whose trigger fires before it has processed the deferral
    (apache/airflow#72716): the event of a job that ends within a second waits for the hold."""
    settings = use_settings(monkeypatch, aws.settings, min_defer_seconds=1.5)
    op, context = make_op(sample="S1"), task_context()
    trigger = submit(op, context)
    aws.sim.run_until_done()
    event = asyncio.run(first_event(trigger))
    assert event["status"] == "success"
    assert time.time() - trigger.deferred_at >= settings.min_defer_seconds


def test_a_trigger_logs_progress_once_a_minute_unless_told_otherwise(aws):
    _, kwargs = BatchJobEventTrigger(job_ids=["a"], settings=aws.settings.to_dict()).serialize()
    assert kwargs["progress_interval_seconds"] == 60


@pytest.mark.parametrize("interval", [0, -1, float("nan"), "60", True])
def test_a_progress_interval_that_is_not_a_positive_number_is_refused(aws, interval):
    with pytest.raises(ValueError, match=rf"progress_interval_seconds must be a positive number of seconds, got {re.escape(repr(interval))}"):
        BatchJobEventTrigger(job_ids=["a"], settings=aws.settings.to_dict(), progress_interval_seconds=interval)


# --- progress of a deferred array job ------------------------------------------------------------------
PROGRESS_INTERVAL = 0.4


@pytest.fixture
def progress_log():
    """The progress lines triggers log (Airflow 3's ``self.log`` is a structlog logger), with their times."""
    processors = [structlog.stdlib.PositionalArgumentsFormatter(), structlog.processors.TimeStamper(fmt=None)]
    with structlog.testing.capture_logs(processors=processors) as logged:
        yield ProgressLog(logged)


class ProgressLog:
    def __init__(self, logged: list[dict]):
        self.logged = logged

    def lines(self) -> list[dict]:
        return [e for e in self.logged if str(e["event"]).startswith("array job ")]

    def messages(self) -> list[str]:
        return [e["event"] for e in self.lines()]

    async def until(self, ending: str, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not any(m.endswith(ending) for m in self.messages()):
            assert loop.time() < deadline, f"never logged {ending!r}; logged: {self.messages()}"
            await asyncio.sleep(0.02)


def test_a_deferred_array_job_logs_its_childrens_states_as_they_change(aws, progress_log):
    op, context = make_op(samples=[f"S{i}" for i in range(6)]), task_context()
    deferred = submit(op, context)
    trigger = BatchJobEventTrigger(**{**deferred.serialize()[1], "progress_interval_seconds": PROGRESS_INTERVAL})
    parent = aws.sim.jobs[trigger.job_ids[0]]
    children = [c.job_id for c in parent.children]
    parent.children[5].outcomes = ["exit:4"]

    async def watch_it_move():
        agen = trigger.run()
        outcome = asyncio.ensure_future(agen.__anext__())
        for _ in range(4):  # SUBMITTED -> ... -> RUNNING; the event rule forwards only RUNNING onwards
            aws.sim.step()
        await progress_log.until(": 6 RUNNING of 6 children")
        aws.sim.step(only=set(children[:3]))
        await progress_log.until(": 3 SUCCEEDED, 3 RUNNING of 6 children")
        aws.sim.step(only={children[5]})
        await progress_log.until(": 3 SUCCEEDED, 2 RUNNING, 1 FAILED of 6 children")
        aws.sim.run_until_done()
        event = await asyncio.wait_for(outcome, 10)
        await agen.aclose()
        return event.payload

    event = asyncio.run(watch_it_move())
    assert event["status"] == "failed"
    messages = progress_log.messages()
    assert all(m.startswith(f"array job {parent.job_id}: ") for m in messages)
    assert all(a != b for a, b in zip(messages, messages[1:])), "a line only when the counts changed"
    times = [e["timestamp"] for e in progress_log.lines()]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= PROGRESS_INTERVAL - 0.05, "at most one line per interval"
    assert aws.sim.calls["DescribeJobs"] == 0


def test_an_array_child_not_heard_from_yet_is_counted_apart(aws, progress_log):
    op, context = make_op(samples=[f"S{i}" for i in range(4)]), task_context()
    deferred = submit(op, context)
    trigger = BatchJobEventTrigger(**{**deferred.serialize()[1], "progress_interval_seconds": PROGRESS_INTERVAL})
    first = aws.sim.jobs[trigger.job_ids[0]].children[0].job_id

    async def one_child_runs():
        agen = trigger.run()
        outcome = asyncio.ensure_future(agen.__anext__())
        for _ in range(4):
            aws.sim.step(only={first})
        await progress_log.until(": 1 RUNNING of 4 children (3 not heard from yet)")
        outcome.cancel()
        await asyncio.gather(outcome, return_exceptions=True)
        await agen.aclose()

    asyncio.run(one_child_runs())


def test_a_single_job_logs_no_progress_and_reads_no_children(aws, progress_log):
    deferred = submit(make_op(sample="S1"), task_context())
    trigger = BatchJobEventTrigger(**{**deferred.serialize()[1], "progress_interval_seconds": 0.05})

    async def run_it():
        agen = trigger.run()
        outcome = asyncio.ensure_future(agen.__anext__())
        hub = EventHub.for_settings(aws.settings)
        for _ in range(6):
            aws.sim.step()
            await asyncio.sleep(0.15)
        event = await asyncio.wait_for(outcome, 10)
        await agen.aclose()
        return event.payload, hub

    event, hub = asyncio.run(run_it())
    assert event["status"] == "success"
    assert progress_log.lines() == []
    assert hub.stats["progress_read_calls"] == 0


def test_a_progress_line_counts_each_child_once_at_its_latest_state():
    seen = [
        JobState(job_id="p:0", status="RUNNING"),
        JobState(job_id="p:0", status="SUCCEEDED", attempts=1),
        JobState(job_id="p:1", status="RUNNING"),
        JobState(job_id="p:1", status="RUNNABLE", attempts=1),  # its first attempt was reclaimed: queued again
        JobState(job_id="p:1", status="RUNNING"),  # a late duplicate of the first attempt's RUNNING
        JobState(job_id="p:2", status="FAILED", attempts=1),
    ]
    counts = children_by_status(seen)
    assert counts == {"SUCCEEDED": 1, "RUNNABLE": 1, "FAILED": 1}
    assert progress_text(counts, 5) == "1 SUCCEEDED, 1 RUNNABLE, 1 FAILED of 5 children (2 not heard from yet)"


def test_killing_the_deferred_task_terminates_its_job(aws):
    trigger = submit(make_op(sample="S1"), task_context())
    aws.sim.step()
    asyncio.run(trigger.on_kill())
    job = aws.sim.jobs[trigger.job_ids[0]]
    assert job.status == "FAILED" and job.status_reason == "Airflow task was stopped by a user"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sample="NA12878; rm -rf /"), "sample id"),
        (dict(samples=["S1", "S1"]), "duplicates"),
        (dict(samples=[]), "non-empty list"),
        (dict(samples=["ok", "../etc/passwd"]), "invalid sample id"),
        (dict(samples=[f"S{i}" for i in range(10_001)]), "at most 10000 samples"),
        (dict(sample="S1", samples=["S2", "S3"]), "either sample or samples"),
        (dict(command="bwa mem ref.fa | samtools"), "no shell string"),
        (dict(command=["bwa", 3]), "list of strings"),
        (dict(project="stoke team"), "project"),
        (dict(project="stoke\n"), r"project 'stoke\\n' is not a name"),
        (dict(pipeline="germline\r"), r"pipeline 'germline\\r' is not a name"),
        (dict(sample="NA12878\n"), r"sample 'NA12878\\n' is not a sample id"),
        (dict(samples=["S1", "S2\u2028"]), r"samples: invalid sample id\(s\) \['S2\\u2028'\]"),
        (dict(environment={"THREADS\n": "4"}), "invalid or reserved"),
        (dict(environment={"AWS_BATCH_JOB_ID": "x"}), "reserved"),
        (dict(environment={"THREADS": 4}), "must be a string"),
        (dict(tags={"aws:owner": "x"}), "aws:"),
        (dict(tags={f"k{i}": "v" for i in range(45)}), "at most 50 tags"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_submitted(aws, kwargs, message):
    op = make_op(**kwargs)
    with pytest.raises(ValueError, match=message):
        op.execute(task_context())
    assert aws.sim.calls["SubmitJob"] == 0
    assert aws.s3.list_objects_v2(Bucket="genomics-lake").get("KeyCount", 0) == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(step="align reads"), "step"),
        (dict(vcpus=0), "vcpus"),
        (dict(memory_mib=1.5), "memory_mib"),
        (dict(timeout_seconds=30), "at least 60"),
        (dict(retry_strategy={"attempts": 11}), "from 1 to 10"),
        (dict(retry_strategy={"attempts": 2, "evaluateOnExit": [{"onStatusReason": "*Host", "action": "RETRY"}]}), "only at the end"),
    ],
)
def test_static_mistakes_fail_when_the_dag_is_parsed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_op(**kwargs)


def test_job_state_from_a_real_shaped_event_detail():
    detail = {
        "jobArn": "arn:aws:batch:eu-west-1:123456789012:job/j1", "jobName": "n", "jobId": "j1",
        "jobQueue": "arn:aws:batch:eu-west-1:123456789012:job-queue/q", "status": "FAILED",
        "statusReason": "Essential container in task exited",
        "attempts": [
            {"container": {"exitCode": None, "logStreamName": "a/1"}, "statusReason": "Host EC2 (instance i-1) terminated."},
            {"container": {"exitCode": 137, "logStreamName": "a/2", "reason": "OutOfMemoryError"}, "statusReason": "Essential container in task exited"},
        ],
        "container": {"exitCode": 137, "logStreamName": "a/2"},
        "createdAt": 1, "startedAt": 2, "stoppedAt": 3,
    }
    state = JobState.from_detail(detail)
    assert (state.status, state.attempts, state.exit_code, state.log_stream) == ("FAILED", 2, 137, "a/2")
    assert state.attempt_reasons == ["Host EC2 (instance i-1) terminated.", "Essential container in task exited"]


def test_reconciliation_fills_each_call_and_asks_less_often_about_jobs_that_have_not_changed(aws):
    from batch_model import JobState as State

    async def scenario():
        hub = EventHub(aws.settings)
        ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(150)]
        hub.watch(ids)
        hub._task.cancel()
        now = hub._now()
        after = aws.settings.reconcile_after_seconds
        for i, job_id in enumerate(ids):  # 30 jobs silent past the interval, 120 halfway there
            hub.last_heard[job_id] = now - (after + 1 if i < 30 else after / 2 + 1)
            hub.known[job_id] = State(job_id=job_id, status="RUNNING")
        batch = hub._reconcile_batch(now)
        assert len(batch) == 100 and set(ids[:30]) <= set(batch)  # one call, filled up
        for job_id in ids[:30]:  # each was found unchanged before: its patience grew
            hub.patience[job_id] = 2 * after
        assert hub._reconcile_batch(now) == []  # nobody due: no call at all
        return True

    assert asyncio.run(scenario())


def test_the_sensor_returns_at_once_for_jobs_that_already_ended(aws):
    from sensors.batch_job import BatchJobSensor

    op, context = make_op(sample="S1"), task_context()
    trigger, event = run_to_completion(aws, op, context)
    sensor = BatchJobSensor(task_id="wait", job_ids=trigger.job_ids[0])
    jobs = sensor.execute(task_context(task_id="wait"))
    assert [j["status"] for j in jobs] == ["SUCCEEDED"]


def test_the_sensor_defers_on_running_jobs_and_fails_naming_the_failed_one(aws):
    from sensors.batch_job import BatchJobSensor

    aws.sim.plan("S2", ["exit:9"])
    t1 = submit(make_op(sample="S1", task_id="a"), task_context(task_id="a"))
    t2 = submit(make_op(sample="S2", task_id="b"), task_context(task_id="b"))
    sensor = BatchJobSensor(task_id="wait", job_ids=f"{t1.job_ids[0]}, {t2.job_ids[0]}")
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(task_context(task_id="wait"))
    assert deferred.value.trigger.job_ids == [t1.job_ids[0], t2.job_ids[0]]
    assert deferred.value.trigger.terminate_on_kill is False  # not its jobs to stop
    aws.sim.run_until_done()
    event = asyncio.run(first_event(deferred.value.trigger))
    with pytest.raises(AirflowException, match=f"{t2.job_ids[0]} .*exit code 9"):
        sensor.execute_complete(task_context(task_id="wait"), event)


def test_the_sensor_says_which_job_ran_out_of_memory(aws):
    from sensors.batch_job import BatchJobSensor

    aws.sim.plan("S1", ["oom:24"])
    job_id = submit(make_op(sample="S1", task_id="a"), task_context(task_id="a")).job_ids[0]
    sensor = BatchJobSensor(task_id="wait", job_ids=job_id)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(task_context(task_id="wait"))
    aws.sim.run_until_done()
    event = asyncio.run(first_event(deferred.value.trigger))
    with pytest.raises(AirflowException, match=r"exit code 24, out of memory \(OutOfMemoryError: Container killed"):
        sensor.execute_complete(task_context(task_id="wait"), event)


def test_the_sensor_refuses_values_that_are_not_job_ids(aws):
    from sensors.batch_job import BatchJobSensor

    with pytest.raises(ValueError, match="not Batch job ids"):
        BatchJobSensor(task_id="wait", job_ids=["$(reboot)"]).execute(task_context(task_id="wait"))


def test_aws_clients_are_reused_within_a_process_for_a_while(monkeypatch):
    """An array job stages a row per sample: building a client (connection lookup, botocore session) per
    file made 500 of them in one task."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    from hooks import aws_clients
    from platform_settings import PlatformSettings

    made = []
    monkeypatch.setattr(AwsBaseHook, "get_conn", lambda self: made.append(self.aws_conn_id) or object())
    monkeypatch.setattr(aws_clients, "_clients", {})
    settings = PlatformSettings(region_name="eu-west-1")
    first = aws_clients.aws_client(settings, "s3")
    assert aws_clients.aws_client(settings, "s3") is first
    assert aws_clients.aws_client(settings, "s3", "aws_fsx_sweeper") is not first  # another connection
    assert made == ["aws_default", "aws_fsx_sweeper"]
    monkeypatch.setattr(aws_clients, "CLIENT_REUSE_SECONDS", 0.0)
    assert aws_clients.aws_client(settings, "s3") is not first  # rebuilt once it is old: a changed connection shows
