"""Triggers: they run in the triggerer, are serializable, may run more than once, and only read.

``hold_until_settled`` is what each of them awaits before firing: see ``PlatformSettings.min_defer_seconds``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any


async def hold_until_settled(deferred_at: float, settings: dict[str, Any]) -> None:
    """Wait until ``min_defer_seconds`` have passed since the task deferred (``deferred_at``, epoch seconds,
    taken when the task built its trigger and serialized with it, so a triggerer restart does not wait
    again from the start). The scheduler has then processed the deferring try's exit, and the event cannot
    make it fail that try. A trigger whose wait lasted longer fires at once."""
    floor = float(settings.get("min_defer_seconds", 0.0))
    remaining = min(deferred_at + floor - time.time(), floor)  # a triggerer clock behind the worker's
    if remaining > 0:
        await asyncio.sleep(remaining)
