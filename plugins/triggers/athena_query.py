"""AthenaQueryTrigger: wait, in the triggerer, for one Athena query to finish.

A publish has a handful of long statements (CTAS, INSERT INTO), not thousands of jobs, so GetQueryExecution
with a growing interval (2 s, doubling to 30 s) is cheap here; it only reads, so it is safe to run again.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseTrigger, TriggerEvent

from platform_settings import PlatformSettings
from triggers import hold_until_settled


class AthenaQueryTrigger(BaseTrigger):
    """Fires with ``{"status": "success"|"failed"|"error", "query_id", "state", "reason", "step"}``.

    :param query_id: the QueryExecutionId to wait for.
    :param step: the publish step it belongs to (handed back in the event).
    :param settings: resolved ``PlatformSettings.to_dict()``.
    :param max_interval_seconds: longest pause between two GetQueryExecution calls.
    :param deferred_at: when the task deferred (epoch seconds; now if not given): the event is held until
        ``min_defer_seconds`` after it (``triggers.hold_until_settled``).
    """

    def __init__(self, query_id: str, step: str, settings: dict[str, Any], max_interval_seconds: float = 30.0,
                 deferred_at: float | None = None):
        super().__init__()
        self.query_id = query_id
        self.step = step
        self.settings = dict(settings)
        self.max_interval_seconds = max_interval_seconds
        self.deferred_at = deferred_at if deferred_at is not None else time.time()

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "triggers.athena_query.AthenaQueryTrigger",
            {"query_id": self.query_id, "step": self.step, "settings": self.settings,
             "max_interval_seconds": self.max_interval_seconds, "deferred_at": self.deferred_at},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from hooks import backend

        event = {"query_id": self.query_id, "step": self.step}
        try:
            engine = await asyncio.to_thread(backend.query_engine, PlatformSettings.from_dict(self.settings))
            delay = 2.0
            while not (status := await asyncio.to_thread(engine.status, self.query_id)).terminal:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_interval_seconds)
        except Exception as exc:  # the wait itself failed (credentials, network): the task says so
            event.update(status="error", state="UNKNOWN", reason=str(exc))
        else:
            event.update(status="success" if status.state == "SUCCEEDED" else "failed", state=status.state,
                         reason=status.reason)
        await hold_until_settled(self.deferred_at, self.settings)
        yield TriggerEvent(event)
