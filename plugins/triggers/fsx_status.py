"""FsxStatusTrigger: wait, in the triggerer, until FSx resources reach a state.

FSx emits no events and boto3 has no waiter for it, so this polls: one Describe call per resource, first after
``first_interval_seconds``, then at intervals growing by half up to ``max_interval_seconds``. A file system
takes 5 to 15 minutes to create: about ten calls. It only reads, so running it again is harmless.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseTrigger, TriggerEvent

from platform_settings import PlatformSettings
from triggers import hold_until_settled

# States from which the wanted one can no longer be reached.
DEAD_END = {"FAILED", "MISCONFIGURED", "MISCONFIGURED_UNAVAILABLE", "DELETING", "CANCELED", "CANCELING"}


class FsxStatusTrigger(BaseTrigger):
    """Fires ``{"status": "success"|"failed"|"error", "kind", "states": {id: Lifecycle}, "reason"}``.

    :param kind: ``file_system``, ``association`` (ids ``<fs id>/<association id>``) or ``task``.
    :param resource_ids: what to wait for; success when every one is in ``target``.
    :param target: the Lifecycle wanted (AVAILABLE, SUCCEEDED).
    :param settings: resolved ``PlatformSettings.to_dict()``.
    :param timeout_seconds: give up after this long (the event says so; the task fails).
    """

    def __init__(self, kind: str, resource_ids: list[str], target: str, settings: dict[str, Any],
                 timeout_seconds: float = 3600.0, first_interval_seconds: float = 30.0,
                 max_interval_seconds: float = 120.0, started_at: float | None = None):
        super().__init__()
        self.kind = kind
        self.resource_ids = list(resource_ids)
        self.target = target
        self.settings = dict(settings)
        self.timeout_seconds = timeout_seconds
        self.first_interval_seconds = first_interval_seconds
        self.max_interval_seconds = max_interval_seconds
        # when the task deferred; serialized, so it survives a triggerer restart (the timeout and the
        # min_defer_seconds hold count from it)
        self.started_at = started_at if started_at is not None else time.time()

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "triggers.fsx_status.FsxStatusTrigger",
            {"kind": self.kind, "resource_ids": self.resource_ids, "target": self.target,
             "settings": self.settings, "timeout_seconds": self.timeout_seconds,
             "first_interval_seconds": self.first_interval_seconds,
             "max_interval_seconds": self.max_interval_seconds, "started_at": self.started_at},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        event = await self._wait()
        await hold_until_settled(self.started_at, self.settings)
        yield TriggerEvent(event)

    async def _wait(self) -> dict[str, Any]:
        from hooks import backend

        event: dict[str, Any] = {"kind": self.kind, "target": self.target}
        try:
            api = await asyncio.to_thread(backend.fsx, PlatformSettings.from_dict(self.settings))
            delay = self.first_interval_seconds
            while True:
                states = {}
                for resource_id in self.resource_ids:
                    found = await asyncio.to_thread(api.status, self.kind, resource_id)
                    states[resource_id] = found["Lifecycle"] if found else "NOT_FOUND"
                    if found and found["Lifecycle"] in ("FAILED", "MISCONFIGURED"):
                        details = found.get("FailureDetails", {}).get("Message")
                        event["reason"] = f"{resource_id} is {found['Lifecycle']}" + (f": {details}" if details else "")
                event["states"] = states
                if all(s == self.target for s in states.values()):
                    return {**event, "status": "success"}
                stuck = {r: s for r, s in states.items() if s in DEAD_END or s == "NOT_FOUND"}
                if stuck:
                    event.setdefault("reason", f"cannot reach {self.target}: {stuck}")
                    return {**event, "status": "failed"}
                if time.time() - self.started_at > self.timeout_seconds:
                    return {**event, "status": "failed",
                            "reason": f"not {self.target} after {self.timeout_seconds:.0f} s: {states}"}
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, self.max_interval_seconds)
        except Exception as exc:  # the wait itself failed (credentials, network): the task says so
            return {**event, "status": "error", "reason": f"{type(exc).__name__}: {exc}"}
