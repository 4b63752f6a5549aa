"""The last lines of a job's log, so a failed task's message shows the tool's own error.

On AWS, Batch writes each attempt's stdout/stderr to CloudWatch Logs (group /aws/batch/job by default); one
GetLogEvents call reads the end of it, and only for jobs that failed. Locally the log is a file.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

from hooks import aws_clients
from platform_settings import PlatformSettings

BATCH_LOG_GROUP = "/aws/batch/job"


def log_tail(settings: PlatformSettings, log_stream: str, lines: int = 25) -> list[str]:
    """At most ``lines`` last lines of the log; [] when there is no log (the job never started)."""
    if not log_stream:
        return []
    try:
        if settings.backend == "aws":
            events = aws_clients.aws_client(settings, "logs").get_log_events(
                logGroupName=BATCH_LOG_GROUP, logStreamName=log_stream, startFromHead=False, limit=lines
            )["events"]
            return [e["message"].rstrip("\n") for e in events]
        with open(Path(log_stream), errors="replace") as fh:
            return [line.rstrip("\n") for line in deque(fh, maxlen=lines)]
    except Exception as exc:  # the failure being reported matters more than its log
        return [f"(could not read the log {log_stream}: {exc})"]
