"""Waiting on AWS Batch jobs through their "Batch Job State Change" events instead of DescribeJobs polling.

``BatchJobEventTrigger`` is what a deferred task waits on. It holds no connection of its own: every trigger
in a triggerer process shares one ``EventHub`` (per event loop and platform settings), which runs

- one consumer of the event queue (SQS on AWS, the local event queue otherwise): each event is written to the
  durable job-state store *before* its message is deleted, then handed to the triggers waiting on that job;
- a store reader: a newly waiting trigger's jobs are read in one batched call (an event that arrived before
  the task deferred, or while no triggerer ran, is already in the store), and, every ``store_refresh_seconds``,
  waited jobs are re-read so events consumed by another triggerer process are seen here too;
- a reconciler: a waited job with no news for ``reconcile_after_seconds`` is looked up with DescribeJobs, at
  most 100 ids per call; a job Batch no longer knows fails with a clear reason instead of waiting forever.

While events flow, the waiting side makes no DescribeJobs call at all. Triggers only read; the hub's writes are
idempotent records of what Batch said, so running a trigger twice, or on two triggerers, is harmless.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, ClassVar, Iterable

from airflow.triggers.base import BaseTrigger, TriggerEvent

from batch_model import JobState, children_by_status, completion_event, progress_text
from platform_settings import PlatformSettings
from triggers import hold_until_settled

log = logging.getLogger(__name__)

UNKNOWN_JOB_REASON = (
    "AWS Batch no longer knows job {job_id}: DescribeJobs did not return it after {silence:.0f}s without an event "
    "(Batch keeps finished jobs for about a week; the job may also have been submitted to another account or region)"
)
FATAL_ERROR_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "ResourceNotFoundException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
    }
)
IDLE_LINGER_SECONDS = 5.0
DEFAULT_PROGRESS_INTERVAL = 60.0
MAX_ERROR_BACKOFF = 60.0


class HubError(RuntimeError):
    """The shared consumer cannot work at all (missing queue, no permission): waiting would never end."""


def _is_fatal(exc: BaseException) -> bool:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code") in FATAL_ERROR_CODES
    return False


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Watch:
    """One trigger's view of its jobs in the hub."""

    def __init__(self, hub: EventHub, job_ids: list[str]):
        self.hub = hub
        self.job_ids = list(dict.fromkeys(job_ids))
        self.changed = asyncio.Event()

    def states(self) -> dict[str, JobState | None]:
        return {job_id: self.hub.known.get(job_id) for job_id in self.job_ids}

    def done(self) -> bool:
        return all(s is not None and s.terminal for s in self.states().values())

    async def wait(self) -> None:
        await self.changed.wait()
        self.changed.clear()
        if self.hub.error:
            raise HubError(self.hub.error)

    def close(self) -> None:
        self.hub._unregister(self)


def consumer_identity(settings: PlatformSettings) -> tuple[Any, ...]:
    """What makes two event consumers the same one: the queue they read and the store they write, through the
    same connection and region. Triggers whose settings differ elsewhere (a lake, a database, timing) share it;
    the hub's timing is that of the first trigger that started it."""
    if settings.backend == "aws":
        return ("aws", settings.aws_conn_id, settings.region_name, settings.event_queue_url, settings.job_state_table)
    return ("local", settings.local_home)


class EventHub:
    """The per-process consumer shared by every BatchJobEventTrigger that reads the same queue into the same
    store (see ``consumer_identity``)."""

    _hubs: ClassVar[dict[tuple[Any, ...], EventHub]] = {}

    def __init__(self, settings: PlatformSettings, *, store=None, queue=None, batch=None):
        self.settings = settings
        self.store = store
        self.queue = queue
        self.batch = batch
        self.known: dict[str, JobState] = {}
        self.last_heard: dict[str, float] = {}
        self.patience: dict[str, float] = {}  # per-job silence allowed before the next DescribeJobs
        self.watches: dict[str, set[Watch]] = defaultdict(set)
        self.pending_reads: set[str] = set()
        self.stats: Counter[str] = Counter()
        self.error: str | None = None
        self._wake_reader = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._idle_since: float | None = None

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()  # monotonic, and the event loop's own notion of time

    # --- lifecycle ------------------------------------------------------------------------------
    @classmethod
    def for_settings(cls, settings: PlatformSettings) -> EventHub:
        loop = asyncio.get_running_loop()
        key = (id(loop), *consumer_identity(settings))
        hub = cls._hubs.get(key)
        if hub is None or hub.closed:
            hub = cls(settings)
            cls._hubs[key] = hub
        return hub

    @property
    def closed(self) -> bool:
        return self._task is not None and self._task.done()

    def watch(self, job_ids: list[str]) -> Watch:
        watch = Watch(self, job_ids)
        for job_id in watch.job_ids:
            self.watches[job_id].add(watch)
            self.last_heard.setdefault(job_id, self._now())
            if job_id not in self.known:
                self.pending_reads.add(job_id)
        self._idle_since = None
        self._wake_reader.set()
        if self.error:
            watch.changed.set()
        elif watch.done():
            watch.changed.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="batch-event-hub")
        return watch

    def _unregister(self, watch: Watch) -> None:
        for job_id in watch.job_ids:
            holders = self.watches.get(job_id)
            if holders is None:
                continue
            holders.discard(watch)
            if not holders:
                del self.watches[job_id]
                self.known.pop(job_id, None)
                self.last_heard.pop(job_id, None)
                self.patience.pop(job_id, None)
        if not self.watches:
            self._idle_since = self._now()

    def _connect(self) -> None:
        from hooks import backend

        if self.store is None:
            self.store = backend.job_state_store(self.settings)
        if self.queue is None:
            self.queue = backend.event_queue(self.settings)
        if self.batch is None:
            self.batch = backend.batch_api(self.settings)

    async def _run(self) -> None:
        workers: list[asyncio.Task] = []
        try:
            await asyncio.to_thread(self._connect)
            workers = [
                asyncio.create_task(self._consume(), name="batch-event-hub-consume"),
                asyncio.create_task(self._read_store(), name="batch-event-hub-read"),
                asyncio.create_task(self._reconcile(), name="batch-event-hub-reconcile"),
            ]
            while True:
                done = [w for w in workers if w.done()]
                if done:
                    done[0].result()  # a worker only ends by raising
                if self._idle_since is not None and self._now() - self._idle_since > IDLE_LINGER_SECONDS:
                    return
                await asyncio.sleep(0.2)
        except HubError as exc:
            self._fail_all(str(exc))
        except Exception as exc:
            log.exception("batch event hub failed")
            self._fail_all(f"the Batch event consumer failed: {exc!r}")
        finally:
            for w in workers:
                w.cancel()
            for key, hub in list(EventHub._hubs.items()):
                if hub is self:
                    del EventHub._hubs[key]

    def _fail_all(self, message: str) -> None:
        self.error = message
        for holders in self.watches.values():
            for watch in holders:
                watch.changed.set()

    async def _guarded(self, what: str, failures: int, exc: Exception) -> int:
        if _is_fatal(exc):
            raise HubError(f"{what} failed and cannot succeed by waiting: {exc}") from exc
        delay = min(MAX_ERROR_BACKOFF, 0.5 * 2**failures)
        log.warning("%s failed (%s); trying again in %.1fs", what, exc, delay)
        await asyncio.sleep(delay)
        return failures + 1

    # --- learning -------------------------------------------------------------------------------
    def _learn(self, state: JobState, *, heard: bool) -> None:
        job_id = state.job_id
        if job_id not in self.watches:
            return
        if heard:
            self.last_heard[job_id] = self._now()
        current = self.known.get(job_id)
        if current is not None and current.order >= state.order:
            return
        self.known[job_id] = state
        self.last_heard[job_id] = self._now()
        self.patience.pop(job_id, None)  # news again: back to the normal reconcile interval
        for watch in self.watches[job_id]:
            watch.changed.set()

    async def read_children(self, parent_id: str) -> list[JobState]:
        """The recorded states of an array job's children, for a waiting trigger's progress line.

        Read from the store, not counted from the events this hub consumed: the triggerers sharing a queue
        each receive part of the children's events, and those received before a triggerer restart were
        consumed by a hub that is gone; the store holds every one of them. One Query (paged at 1 MB) per array
        job per progress interval (a minute by default) is the whole cost: nothing per event, no Batch call."""
        if self.store is None:  # not connected yet: nothing to say this time
            return []
        children = await asyncio.to_thread(self.store.children, parent_id)
        self.stats["progress_read_calls"] += 1
        return children

    # --- the three loops ----------------------------------------------------------------------------
    async def _consume(self) -> None:
        failures = 0
        while True:
            try:
                messages = await asyncio.to_thread(self.queue.receive, 10, self.settings.event_wait_seconds)
                self.stats["event_receive_calls"] += 1
                if not messages:
                    failures = 0
                    continue
                states = [s for s in map(_parse, messages) if s is not None]
                await asyncio.to_thread(self._record_all, states)
                await asyncio.to_thread(self.queue.delete, [m.receipt for m in messages])
                self.stats["events"] += len(states)
                failures = 0
            except Exception as exc:
                failures = await self._guarded("receiving Batch events", failures, exc)
                continue
            for state in states:
                self._learn(state, heard=True)

    def _record_all(self, states: list[JobState]) -> None:
        """Record one receive's states before their messages are deleted: per job only the latest (duplicates
        and superseded states need no write). Against DynamoDB the writes go out together, one job each: the
        consumer's pace is one write's latency per receive, not ten."""
        latest: dict[str, JobState] = {}
        for state in states:
            if state.job_id not in latest or state.order > latest[state.job_id].order:
                latest[state.job_id] = state
        if self.store.concurrent_writes and len(latest) > 1:
            with ThreadPoolExecutor(max_workers=len(latest)) as pool:
                list(pool.map(self.store.record, latest.values()))
        else:
            for state in latest.values():
                self.store.record(state)
        self.stats["store_writes"] += len(latest)

    async def _read_store(self) -> None:
        failures = 0
        refresh = self.settings.store_refresh_seconds or None
        while True:
            periodic = False
            try:
                await asyncio.wait_for(self._wake_reader.wait(), timeout=refresh)
            except (asyncio.TimeoutError, TimeoutError):
                periodic = True
            self._wake_reader.clear()
            await asyncio.sleep(0.02)  # let a burst of new triggers register, then read them together
            ids = set(self.pending_reads)
            if periodic:
                ids |= {j for j in self.watches if not (j in self.known and self.known[j].terminal)}
            ids &= set(self.watches)
            if not ids:
                continue
            self.pending_reads -= ids
            try:
                states = await asyncio.to_thread(self.store.get_many, sorted(ids))
                self.stats["store_read_calls"] += -(-len(ids) // 100)
                failures = 0
            except Exception as exc:
                self.pending_reads |= ids
                self._wake_reader.set()
                failures = await self._guarded("reading the job-state store", failures, exc)
                continue
            for state in states.values():
                self._learn(state, heard=False)

    def _reconcile_batch(self, now: float) -> list[str]:
        """Jobs to look up now: those silent past their patience, plus, to fill the calls (one id costs as much
        as 100), those halfway there, longest-silent first."""
        after = self.settings.reconcile_after_seconds
        silence = {
            j: now - self.last_heard.get(j, now)
            for j in self.watches
            if not (j in self.known and self.known[j].terminal)
        }
        due = {j for j, s in silence.items() if s >= self.patience.get(j, after)}
        if not due:
            return []
        room = -(-len(due) // 100) * 100 - len(due)
        riders = sorted((j for j, s in silence.items() if s >= after / 2 and j not in due),
                        key=lambda j: -silence[j])
        return sorted(due) + riders[:room]

    async def _reconcile(self) -> None:
        after = self.settings.reconcile_after_seconds
        failures = 0
        while True:
            await asyncio.sleep(min(max(after / 4, 0.05), 60.0))
            now = self._now()
            for chunk in _chunks(self._reconcile_batch(now), 100):
                try:
                    details = await asyncio.to_thread(self.batch.describe_jobs, chunk)
                    self.stats["describe_jobs_calls"] += 1
                    found = {d["jobId"]: JobState.from_detail(d, source="reconcile") for d in details}
                    states = [
                        found.get(job_id)
                        or JobState(
                            job_id=job_id,
                            status="FAILED",
                            status_reason=UNKNOWN_JOB_REASON.format(job_id=job_id, silence=now - self.last_heard[job_id]),
                            source="reconcile",
                        )
                        for job_id in chunk
                        if job_id in self.last_heard
                    ]
                    await asyncio.to_thread(self._record_all, states)
                    failures = 0
                except Exception as exc:
                    failures = await self._guarded("reconciling jobs with DescribeJobs", failures, exc)
                    break
                for state in states:
                    known = self.known.get(state.job_id)
                    if known is not None and known.order >= state.order:
                        # Nothing new: a long step is silent by nature. Ask less often, up to 4x the interval,
                        # so a long run costs few calls while a lost event is still found within that bound.
                        self.patience[state.job_id] = min(self.patience.get(state.job_id, after) * 2, 4 * after)
                    self._learn(state, heard=True)  # a new state resets the patience


def _parse(message) -> JobState | None:
    from batch_model import parse_event

    state = parse_event(message.body)
    if state is None:
        log.warning("ignoring a message that is not a Batch Job State Change event: %.200s", message.body)
    return state


class BatchJobEventTrigger(BaseTrigger):
    """Fires when every job in ``job_ids`` has reached SUCCEEDED or FAILED.

    The event's payload: ``status`` ("success" if all succeeded, "failed" if any failed, "error" if waiting
    itself is impossible), ``jobs`` (one summary per job) and ``message``.

    While it waits on an array job, it logs the children's states (which the task's log shows), at most once
    per ``progress_interval_seconds`` and only when they changed.

    :param job_ids: Batch job ids (an array job counts as one: its parent id).
    :param settings: resolved ``PlatformSettings.to_dict()``; the triggerer needs no Variable lookup.
    :param terminate_on_kill: terminate the jobs when a user marks the deferred task failed or clears it.
    :param progress_interval_seconds: the least time between two progress lines of an array job.
    :param deferred_at: when the task deferred (epoch seconds; now if not given): the event is held until
        ``min_defer_seconds`` after it (``triggers.hold_until_settled``).
    """

    def __init__(
        self,
        job_ids: list[str],
        settings: dict[str, Any],
        terminate_on_kill: bool = True,
        progress_interval_seconds: float = DEFAULT_PROGRESS_INTERVAL,
        deferred_at: float | None = None,
    ):
        super().__init__()
        if (
            isinstance(progress_interval_seconds, bool)
            or not isinstance(progress_interval_seconds, (int, float))
            or not progress_interval_seconds > 0
        ):
            raise ValueError(
                f"progress_interval_seconds must be a positive number of seconds, got {progress_interval_seconds!r}"
            )
        self.job_ids = list(job_ids)
        self.settings = dict(settings)
        self.terminate_on_kill = terminate_on_kill
        self.progress_interval_seconds = progress_interval_seconds
        self.deferred_at = deferred_at if deferred_at is not None else time.time()

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "triggers.batch_events.BatchJobEventTrigger",
            {
                "job_ids": self.job_ids,
                "settings": self.settings,
                "terminate_on_kill": self.terminate_on_kill,
                "progress_interval_seconds": self.progress_interval_seconds,
                "deferred_at": self.deferred_at,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hub = EventHub.for_settings(PlatformSettings.from_dict(self.settings))
        watch = hub.watch(self.job_ids)
        loop = asyncio.get_running_loop()
        reported: dict[str, Counter[str]] = {}
        next_progress = loop.time() + self.progress_interval_seconds
        try:
            while not watch.done():
                try:
                    await asyncio.wait_for(watch.wait(), timeout=max(0.0, next_progress - loop.time()))
                except (asyncio.TimeoutError, TimeoutError):
                    pass
                if loop.time() >= next_progress and not watch.done():
                    await self._log_progress(hub, watch, reported)
                    next_progress = loop.time() + self.progress_interval_seconds
            event = completion_event([s for s in watch.states().values() if s is not None])
        except HubError as exc:
            event = {"status": "error", "message": str(exc), "job_ids": self.job_ids, "jobs": []}
        finally:
            watch.close()
        await hold_until_settled(self.deferred_at, self.settings)
        yield TriggerEvent(event)

    async def _log_progress(self, hub: EventHub, watch: Watch, reported: dict[str, Counter[str]]) -> None:
        """A line per waited array job whose children's states changed since its last line. Logged here, in
        the trigger's own task, so the triggerer routes it to this task's log (the hub's loops run in the
        context of whichever trigger started the hub)."""
        for job_id, state in watch.states().items():
            if state is None or not state.array_size or state.terminal:
                continue
            try:
                counts = children_by_status(await hub.read_children(job_id))
            except Exception as exc:  # progress is for a person watching: it never ends the wait
                self.log.warning("could not read the progress of array job %s: %s", job_id, exc)
                continue
            if counts == reported.get(job_id, Counter()):
                continue
            reported[job_id] = counts
            self.log.info("array job %s: %s", job_id, progress_text(counts, state.array_size))

    async def on_kill(self) -> None:
        """A user acted on the deferred task: stop paying for its jobs."""
        if not self.terminate_on_kill:
            return
        from hooks import backend

        settings = PlatformSettings.from_dict(self.settings)
        api = await asyncio.to_thread(backend.batch_api, settings)
        for job_id in self.job_ids:
            await asyncio.to_thread(api.terminate_job, job_id, "Airflow task was stopped by a user")
