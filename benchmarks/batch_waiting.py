"""Benchmark: waiting on one NovaSeq run (1,536 Batch jobs), ours against the amazon provider's
BatchOperator(deferrable=True), on the same simulated Batch control plane; and how many concurrent waits one
triggerer process holds with one event consumer.

    ./dev bench                      # both parts, default sizes
    ./dev bench --jobs 200 --waits 2000

Part 1 runs in virtual time: an asyncio loop whose clock jumps to the next timer, so hours of Batch work take
seconds, and every 30 s poll or 20 s long poll happens exactly as it would. Both sides run their real code:
our BatchJobOperator.execute -> BatchJobEventTrigger -> EventHub, and the provider's BatchOperator.execute ->
BatchJobTrigger (aiobotocore waiter). Batch calls of both go through botocore clients answered by the
simulation (tests/doubles/simulated_batch.py); its events pass the same EventBridge rule filter
(RUNNING/SUCCEEDED/FAILED) into an in-memory SQS queue. Submission is timed in real time (the shared rate
budget is a wall-clock limiter).

Part 2 runs in real time on the local backend's event queue and job-state store: N triggers wait at once in
one loop, then N terminal events are written, and we time until every trigger has fired.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import tempfile
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT)]
os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-1")
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "ERROR")

import boto3  # noqa: E402

from batch_model import build_event, default_retry_strategy  # noqa: E402
from hooks.event_queue import EventQueue, LocalEventQueue, Message  # noqa: E402
from hooks.job_state import SqliteJobStateStore  # noqa: E402
from platform_settings import PlatformSettings  # noqa: E402
from tests.doubles.simulated_batch import SimulatedBatch  # noqa: E402

REGION, ACCOUNT = "eu-west-1", "123456789012"
RULE_STATUSES = {"RUNNING", "SUCCEEDED", "FAILED"}
# Tasks defer as they submit: at 40 submissions a second, the i-th wait starts i/40 s into the run (both sides).
SUBMIT_RATE = 40.0


# --- virtual time -----------------------------------------------------------------------------------
class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next scheduled timer whenever nothing is ready to run."""

    def __init__(self) -> None:
        super().__init__()
        self._virtual_now = 0.0

    def time(self) -> float:
        return self._virtual_now

    def _run_once(self) -> None:
        if not self._ready and self._scheduled:
            self._virtual_now = max(self._virtual_now, self._scheduled[0].when())
        super()._run_once()


def run_virtual(coro):
    """Run ``coro`` on a virtual-time loop, then cancel what is left (the hub's loops) and close it."""
    loop = VirtualTimeLoop()
    asyncio.set_event_loop(loop)
    try:
        result = loop.run_until_complete(coro)
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.wait(pending))
        loop.run_until_complete(loop.shutdown_asyncgens())
        return result
    finally:
        asyncio.set_event_loop(None)
        loop.close()


class VirtualSqs(EventQueue):
    """SQS in memory. Long polls take virtual time (see virtual_to_thread)."""

    def __init__(self) -> None:
        self.messages: deque[tuple[str, str]] = deque()
        self.inflight: dict[str, str] = {}
        self.receive_calls = 0
        self._seq = 0

    def send(self, body: str) -> None:
        self._seq += 1
        self.messages.append((str(self._seq), body))

    def take(self, max_messages: int) -> list[Message]:
        out = []
        while self.messages and len(out) < max_messages:
            receipt, body = self.messages.popleft()
            self.inflight[receipt] = body
            out.append(Message(receipt, body))
        return out

    def receive(self, max_messages: int = 10, wait_seconds: float = 0.0) -> list[Message]:
        self.receive_calls += 1
        return self.take(max_messages)

    def delete(self, receipts: list[str]) -> None:
        for r in receipts:
            self.inflight.pop(r, None)


async def virtual_to_thread(fn, *args, **kwargs):
    """Run blocking calls inline (all are in-memory here) so virtual time stays exact; an empty SQS receive
    waits out its long poll, returning early if a message arrives, like SQS."""
    target = getattr(fn, "__self__", None)
    if isinstance(target, VirtualSqs) and fn.__name__ == "receive":
        target.receive_calls += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args[1]
        while True:
            got = target.take(args[0])
            if got or loop.time() >= deadline:
                return got
            await asyncio.sleep(min(0.2, deadline - loop.time()))
    return fn(*args, **kwargs)


class RuleToQueue:
    """EventBridge PutEvents with our rule: Batch job state changes in RUNNING/SUCCEEDED/FAILED -> the queue."""

    def __init__(self, queue: VirtualSqs):
        self.queue = queue

    def put_events(self, Entries):  # noqa: N803 (boto3 argument name)
        for entry in Entries:
            detail = json.loads(entry["Detail"])
            if detail["status"] in RULE_STATUSES:
                self.queue.send(json.dumps(build_event(detail, region=REGION, account=ACCOUNT)))
        return {"FailedEntryCount": 0}


class Scenario:
    """Drives a SimulatedBatch through realistic timings on the virtual clock, identically for both sides."""

    def __init__(self, sim: SimulatedBatch, seed: int, spot_fraction: float):
        self.sim = sim
        self.rng = random.Random(seed)
        self.spot_fraction = spot_fraction
        self.due: dict[str, float] = {}
        self.ended_at: dict[str, float] = {}
        self.describe_times: list[float] = []

    def plan_new_jobs(self, now: float) -> None:
        for job in self.sim.jobs.values():
            if job.job_id not in self.due and not job.children:
                self.due[job.job_id] = now + 5
                if self.rng.random() < self.spot_fraction:
                    job.outcomes = ["spot", "ok"]

    def next_delay(self, status: str) -> float:
        if status == "RUNNABLE":
            return self.rng.uniform(0, 20 * 60)  # waiting for capacity
        if status == "RUNNING":
            return self.rng.uniform(20 * 60, 60 * 60)  # the step itself
        return self.rng.uniform(5, 40)  # PENDING, STARTING

    async def drive(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            now = loop.time()
            self.plan_new_jobs(now)
            ready = {j for j, t in self.due.items() if t <= now and self.sim.jobs[j].status not in ("SUCCEEDED", "FAILED")}
            moved = self.sim.step(seconds=int(now - last), only=ready)
            last = now
            for job in moved:
                if job.status in ("SUCCEEDED", "FAILED"):
                    if job.parent is None:  # an array's end is its parent's end, recorded below
                        self.ended_at.setdefault(job.job_id, now)
                else:
                    self.due[job.job_id] = now + self.next_delay(job.status)
            for job in self.sim.jobs.values():
                if job.children and job.status in ("SUCCEEDED", "FAILED"):
                    self.ended_at.setdefault(job.job_id, now)
            await asyncio.sleep(5)


def wait_all(triggers: list, scenario: Scenario, job_id_of) -> tuple[list[dict], dict[str, float]]:
    """Start each trigger as its task would defer (i / SUBMIT_RATE s in), run the scenario until every trigger
    has fired; returns the events and when each job's wait ended (virtual seconds)."""
    from tests.conftest import first_event

    fired_at: dict[str, float] = {}

    async def wait(trigger, start_after):
        await asyncio.sleep(start_after)
        event = await first_event(trigger, timeout=10**7)
        fired_at[job_id_of(trigger)] = asyncio.get_running_loop().time()
        return event

    async def main():
        driver = asyncio.ensure_future(scenario.drive())
        events = await asyncio.gather(*(wait(t, i / SUBMIT_RATE) for i, t in enumerate(triggers)))
        driver.cancel()
        return events

    return run_virtual(main()), fired_at


def count_describe(sim: SimulatedBatch, scenario: Scenario) -> None:
    original = sim._op_DescribeJobs

    def counted(params):
        scenario.describe_times.append(asyncio.get_event_loop().time())
        return original(params)

    sim._op_DescribeJobs = counted


def peak_per_second(times: list[float]) -> int:
    buckets = Counter(int(t) for t in times)
    return max(buckets.values()) if buckets else 0


# --- our side ---------------------------------------------------------------------------------------------
def run_ours(jobs: int, seed: int, spot: float, array: bool, tmp: Path) -> dict[str, Any]:
    from hooks import backend
    from hooks.batch_api import AwsBatchApi

    queue = VirtualSqs()
    sim = SimulatedBatch(RuleToQueue(queue), region=REGION, account=ACCOUNT, seed=seed)
    client = sim.attach(boto3.client("batch", region_name=REGION))
    store = SqliteJobStateStore(tmp / f"ours-{'array' if array else 'mapped'}.sqlite")
    os.environ.update({"GENOMICS_BACKEND": "aws", "GENOMICS_AWS_CONN_ID": "", "GENOMICS_EVENT_QUEUE_URL": "virtual",
                       "GENOMICS_JOB_STATE_TABLE": "virtual", "GENOMICS_LAKE_URI": str(tmp / "lake")})
    import hooks.lake

    saved = (backend.batch_api, backend.job_state_store, backend.event_queue, hooks.lake.write_text)
    backend.batch_api = lambda s: AwsBatchApi(client)
    backend.job_state_store = lambda s: store
    backend.event_queue = lambda s: queue
    hooks.lake.write_text = lambda s, uri, text: None  # the manifest is not what is measured here
    try:
        return _run_ours(jobs, seed, spot, array, queue, sim, client)
    finally:
        backend.batch_api, backend.job_state_store, backend.event_queue, hooks.lake.write_text = saved


def _run_ours(jobs, seed, spot, array, queue, sim, client) -> dict[str, Any]:
    from airflow.sdk.exceptions import TaskDeferred

    from operators.batch_job import BatchJobOperator
    from tests.conftest import task_context

    samples = [f"S{i:04d}" for i in range(jobs)]
    started = time.perf_counter()
    triggers = []
    if array:
        op = BatchJobOperator(task_id="quant", step="quant", project="bench", pipeline="rnaseq", samples=samples,
                              command=["salmon", "quant"])
        try:
            op.execute(task_context(task_id="quant"))
        except TaskDeferred as d:
            triggers.append(d.trigger)
    else:
        for i, sample in enumerate(samples):
            op = BatchJobOperator(task_id="quant", step="quant", project="bench", pipeline="rnaseq", sample=sample,
                                  command=["salmon", "quant"])
            try:
                op.execute(task_context(task_id="quant", map_index=i))
            except TaskDeferred as d:
                triggers.append(d.trigger)
    submit_seconds = time.perf_counter() - started

    scenario = Scenario(sim, seed, spot)
    count_describe(sim, scenario)
    original_to_thread = asyncio.to_thread
    asyncio.to_thread = virtual_to_thread
    try:
        events, fired_at = wait_all(triggers, scenario, lambda t: t.job_ids[0])
    finally:
        asyncio.to_thread = original_to_thread
    delays = [fired_at[j] - scenario.ended_at[j] for j in fired_at]
    return {
        "side": f"ours, {'one array job' if array else 'one job per sample'}",
        "jobs": jobs,
        "succeeded": sum(1 for e in events if e["status"] == "success"),
        "submit_job_calls": sim.calls["SubmitJob"],
        "submit_seconds": submit_seconds,
        "describe_jobs_calls": sim.calls["DescribeJobs"],
        "describe_peak_per_second": peak_per_second(scenario.describe_times),
        "sqs_receive_calls": queue.receive_calls,
        "triggers": len(triggers),
        "virtual_hours": max(fired_at.values()) / 3600,
        "mean_wake_delay_s": sum(delays) / len(delays),
    }


# --- the amazon provider's side ---------------------------------------------------------------------------
def run_provider(jobs: int, seed: int, spot: float) -> dict[str, Any]:
    from aiobotocore.session import get_session
    from airflow.providers.amazon.aws.hooks.batch_client import BatchClientHook
    from airflow.providers.amazon.aws.operators.batch import BatchOperator
    from airflow.sdk.exceptions import TaskDeferred

    from tests.conftest import task_context

    queue = VirtualSqs()  # unused by the provider: it never reads events
    sim = SimulatedBatch(RuleToQueue(queue), region=REGION, account=ACCOUNT, seed=seed)
    sync_client = sim.attach(boto3.client("batch", region_name=REGION))
    aio_session = get_session()
    aio_session.register("before-parameter-build.batch.*", sim._capture)
    aio_session.register("before-call.batch.*", sim._answer)

    async def simulated_async_conn(self):
        return aio_session.create_client("batch", region_name=REGION, aws_access_key_id="bench",
                                         aws_secret_access_key="bench")

    BatchClientHook.get_async_conn = simulated_async_conn

    class SimulatedHook(BatchClientHook):
        @property
        def client(self):
            return sync_client

    started = time.perf_counter()
    triggers = []
    for i in range(jobs):
        op = BatchOperator(task_id=f"quant_{i}", job_name=f"rnaseq-quant-S{i:04d}", job_queue="genomics-spot",
                           job_definition="genomics-step", container_overrides={"command": ["salmon", "quant"]},
                           deferrable=True, aws_conn_id=None, region_name=REGION,
                           # the provider sets no retry strategy by default (a Spot reclaim fails the job);
                           # give it ours so both sides run the same jobs
                           retry_strategy=default_retry_strategy())
        op.__dict__["hook"] = SimulatedHook(aws_conn_id=None, region_name=REGION)
        op._persist_links = lambda context, op=op: sync_client.describe_jobs(jobs=[op.job_id])["jobs"][0]
        try:
            op.execute(task_context(task_id=f"quant_{i}"))
        except TaskDeferred as d:
            triggers.append(d.trigger)
    submit_seconds = time.perf_counter() - started

    scenario = Scenario(sim, seed, spot)
    count_describe(sim, scenario)
    describe_at_submit = sim.calls["DescribeJobs"]
    events, fired_at = wait_all(triggers, scenario, lambda t: t.serialize()[1]["job_id"])
    delays = [fired_at[j] - scenario.ended_at[j] for j in fired_at]
    return {
        "side": "amazon provider BatchOperator(deferrable=True), poll_interval 30 s",
        "jobs": jobs,
        "succeeded": sum(1 for e in events if e["status"] == "success"),
        "submit_job_calls": sim.calls["SubmitJob"],
        "submit_seconds": submit_seconds,
        "describe_jobs_calls": sim.calls["DescribeJobs"],
        "describe_at_submit": describe_at_submit,
        "describe_peak_per_second": peak_per_second(scenario.describe_times),
        "sqs_receive_calls": 0,
        "triggers": len(triggers),
        "virtual_hours": max(fired_at.values()) / 3600,
        "mean_wake_delay_s": sum(delays) / len(delays),
    }


# --- part 2: concurrent waits in one triggerer process ------------------------------------------------------
def run_capacity(waits: int, tmp: Path) -> dict[str, Any]:
    from triggers.batch_events import BatchJobEventTrigger, EventHub

    home = tmp / "capacity"
    settings = PlatformSettings(backend="local", local_home=str(home), event_wait_seconds=1.0,
                                store_refresh_seconds=30.0, reconcile_after_seconds=3600)
    queue = LocalEventQueue(home / "events.sqlite")
    job_ids = [f"{i:08d}-0000-4000-8000-000000000000" for i in range(waits)]

    async def main():
        hub = EventHub.for_settings(settings)
        rss_before = _rss_mib()
        agens = [BatchJobEventTrigger(job_ids=[j], settings=settings.to_dict()).run() for j in job_ids]
        tasks = [asyncio.ensure_future(a.__anext__()) for a in agens]
        await asyncio.sleep(3)  # every trigger registered and its store read done
        rss_waiting = _rss_mib()
        consumers = [t for t in asyncio.all_tasks() if t.get_name() == "batch-event-hub-consume"]
        started = time.perf_counter()
        for start in range(0, waits, 500):
            queue._conn().execute("BEGIN")
            for j in job_ids[start : start + 500]:
                detail = {"jobArn": f"arn:aws:batch:local:0:job/{j}", "jobId": j, "jobName": "bench",
                          "jobQueue": "q", "status": "SUCCEEDED", "statusReason": "", "attempts": [
                              {"container": {"exitCode": 0}}], "createdAt": 1}
                queue._conn().execute("INSERT INTO events (body, visible_at) VALUES (?, ?)",
                                      (json.dumps(build_event(detail, region="local", account="0")), time.time()))
            queue._conn().execute("COMMIT")
        events = await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        for a in agens:
            await a.aclose()
        return {
            "waits": waits,
            "consumer_tasks": len(consumers),
            "fired": sum(1 for e in events if e.payload["status"] == "success"),
            "seconds_from_first_event_to_last_wake": elapsed,
            "rss_mib_per_1000_waits": (rss_waiting - rss_before) * 1000 / waits,
            "event_receive_calls": hub.stats["event_receive_calls"],
            "store_writes": hub.stats["store_writes"],
        }

    return asyncio.run(main())


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- report -------------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1536)
    parser.add_argument("--waits", type=int, default=10_000)
    parser.add_argument("--spot", type=float, default=0.10, help="fraction of jobs reclaimed once")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--skip-provider", action="store_true")
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_ours(args.jobs, args.seed, args.spot, array=False, tmp=Path(tmp)),
                run_ours(args.jobs, args.seed, args.spot, array=True, tmp=Path(tmp))]
        if not args.skip_provider:
            rows.append(run_provider(args.jobs, args.seed, args.spot))
        capacity = run_capacity(args.waits, Path(tmp))

    print(f"\n## Waiting on {args.jobs} Batch jobs (virtual time; {args.spot:.0%} reclaimed once as Spot)\n")
    print("| | SubmitJob | DescribeJobs (peak/s) | SQS receives | triggerer slots | wake-up after job end (mean) | succeeded |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['side']} | {r['submit_job_calls']} | {r['describe_jobs_calls']} ({r['describe_peak_per_second']}) "
              f"| {r['sqs_receive_calls']} | {r['triggers']} | {r['mean_wake_delay_s']:.1f} s | {r['succeeded']}/{r['triggers']} |")
    print(f"\nVirtual run length: {rows[0]['virtual_hours']:.2f} h. Submission wall time (real): "
          + ", ".join(f"{r['side'].split(',')[0] if 'provider' in r['side'] else r['side']}: {r['submit_seconds']:.1f} s" for r in rows))
    if not args.skip_provider:
        p, o = rows[-1], rows[0]
        print(f"DescribeJobs ratio provider/ours (one job per sample): {p['describe_jobs_calls'] / max(o['describe_jobs_calls'], 1):.0f}x"
              f" (provider: {p['describe_at_submit']} at submission, the rest polling)")
    print("\n## Concurrent waits in one triggerer process (real time, local event queue and store)\n")
    print(json.dumps(capacity, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
