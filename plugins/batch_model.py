"""The AWS Batch vocabulary shared by every layer: job states, the EventBridge event shape, retry rules,
job names and tags.

The local runner, the simulated control plane used in tests and the event consumer all speak through these
functions, so "what a Batch event looks like" and "which attempt outcome is retried" are defined once.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

EVENT_SOURCE = "aws.batch"
EVENT_DETAIL_TYPE = "Batch Job State Change"

# Order of the states one attempt goes through. A retried job goes back to RUNNABLE with one more
# entry in ``attempts``, so the order of two observations is (attempt count, rank), and a terminal
# state outranks everything: Batch never leaves SUCCEEDED or FAILED.
STATUS_RANK = {
    "SUBMITTED": 0,
    "PENDING": 1,
    "RUNNABLE": 2,
    "STARTING": 3,
    "RUNNING": 4,
    "SUCCEEDED": 5,
    "FAILED": 5,
}
TERMINAL = frozenset({"SUCCEEDED", "FAILED"})
TERMINAL_ORDER = 10**9

SPOT_RECLAIM_REASON = "Host EC2*"
DEFAULT_RETRY_ATTEMPTS = 3
# Exit code of a step whose host lacks what the job needs from it (the run's FSx file system not mounted yet):
# the next attempt gets a new container, which sees the host's mounts as they are then.
HOST_NOT_READY_EXIT_CODE = 69
# Batch's container reason for an attempt the kernel killed at its memory limit. Real events carry it only in
# ``container.reason`` and ``attempts[-1].container.reason``: ``statusReason`` then says "Essential container in
# task exited" and the exit code is whatever the process got (24 in a captured event, not always 137).
OOM_REASON_PREFIX = "OutOfMemoryError"
OOM_REASON = "OutOfMemoryError: Container killed due to memory usage"
# Retry what the infrastructure did to the job (a Spot reclaim shows as "Host EC2 (instance ...) terminated.",
# a host not ready), exit on everything else: a job matching no rule would be retried, so the catch-all EXIT
# comes last.
DEFAULT_EVALUATE_ON_EXIT = (
    {"onStatusReason": SPOT_RECLAIM_REASON, "action": "RETRY"},
    {"onExitCode": str(HOST_NOT_READY_EXIT_CODE), "action": "RETRY"},
    {"onStatusReason": "*", "action": "EXIT"},
)

JOB_NAME_MAX = 128
MAX_TAGS = 50
MAX_ARRAY_SIZE = 10_000


def now_ms() -> int:
    return int(datetime.now(timezone.utc).timestamp() * 1000)


def iso_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class JobState:
    """What we know of one Batch job (or one array child), from an event or from DescribeJobs."""

    job_id: str
    status: str
    job_name: str = ""
    job_queue: str = ""
    status_reason: str = ""
    attempts: int = 0
    exit_code: int | None = None
    log_stream: str = ""
    created_at: int | None = None
    started_at: int | None = None
    stopped_at: int | None = None
    array_size: int | None = None
    status_summary: dict[str, int] = field(default_factory=dict)
    attempt_reasons: list[str] = field(default_factory=list)
    container_reason: str = ""  # the last attempt's container.reason: an OOM kill shows only here
    # per attempt: the container instance it ran on, its start and stop (ms) and status reason (cost per sample)
    attempt_facts: list[dict[str, Any]] = field(default_factory=list)
    source: str = "event"  # event | reconcile | submit

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def order(self) -> int:
        """Monotone position of this observation in the job's life; duplicates compare equal."""
        if self.terminal:
            return TERMINAL_ORDER
        return self.attempts * 10 + STATUS_RANK.get(self.status, 0)

    @property
    def out_of_memory(self) -> bool:
        """The last attempt was killed for exceeding its memory, whatever its exit code and status reason."""
        return self.container_reason.startswith(OOM_REASON_PREFIX)

    @property
    def parent_id(self) -> str:
        return self.job_id.split(":", 1)[0]

    @property
    def array_index(self) -> int | None:
        return int(self.job_id.split(":", 1)[1]) if ":" in self.job_id else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobState:
        return cls(**data)

    @classmethod
    def from_detail(cls, detail: dict[str, Any], *, source: str = "event") -> JobState:
        """Build from an event's ``detail`` or a DescribeJobs JobDetail: the two share one shape."""
        attempts = detail.get("attempts") or []
        container = detail.get("container") or {}
        exit_code = container.get("exitCode")
        log_stream = container.get("logStreamName") or ""
        container_reason = container.get("reason") or ""
        if attempts:
            last = attempts[-1].get("container") or {}
            exit_code = last.get("exitCode", exit_code)
            log_stream = last.get("logStreamName") or log_stream
            container_reason = last.get("reason") or container_reason
        array = detail.get("arrayProperties") or {}
        return cls(
            job_id=detail["jobId"],
            status=detail["status"],
            job_name=detail.get("jobName", ""),
            job_queue=detail.get("jobQueue", ""),
            status_reason=detail.get("statusReason", "") or "",
            attempts=len(attempts),
            exit_code=exit_code,
            log_stream=log_stream,
            created_at=detail.get("createdAt"),
            started_at=detail.get("startedAt"),
            stopped_at=detail.get("stoppedAt"),
            array_size=array.get("size"),
            status_summary=dict(array.get("statusSummary") or {}),
            attempt_reasons=[a.get("statusReason", "") for a in attempts],
            container_reason=container_reason,
            attempt_facts=[attempt_fact(a) for a in attempts],
            source=source,
        )

    def summary(self) -> dict[str, Any]:
        """The part a task returns to XCom and prints on failure."""
        out = {
            "job_id": self.job_id,
            "job_name": self.job_name,
            "status": self.status,
            "status_reason": self.status_reason,
            "attempts": self.attempts,
            "exit_code": self.exit_code,
            "container_reason": self.container_reason,
            "out_of_memory": self.out_of_memory,
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
            "log_stream": self.log_stream,
            "attempt_facts": self.attempt_facts,
        }
        if self.array_size:
            out["array_size"] = self.array_size
            out["status_summary"] = self.status_summary
        return out


def attempt_fact(attempt: dict[str, Any]) -> dict[str, Any]:
    """What cost per sample needs of one ``attempts[]`` entry: where and how long it ran, and why it ended."""
    container = attempt.get("container") or {}
    return {"instance": container.get("containerInstanceArn") or "", "started_at": attempt.get("startedAt"),
            "stopped_at": attempt.get("stoppedAt"), "reason": attempt.get("statusReason") or ""}


def completion_event(states: list[JobState]) -> dict[str, Any]:
    """What a task resumes with once its jobs have ended (BatchJobEventTrigger fires it; the operator builds it
    itself for a job that had already ended when a retry reattached): ``status`` "success" if every job
    succeeded, else "failed", one summary per job, and the failures' reasons."""
    failed = [s for s in states if s.status == "FAILED"]
    return {
        "status": "failed" if failed else "success",
        "jobs": [s.summary() for s in states],
        "message": "; ".join(
            f"{s.job_id}: {s.status_reason}" + (f" ({s.container_reason})" if s.container_reason else "")
            for s in failed
        ),
    }


# The order a progress line lists children's states in: done first, then the way to it, failures last.
PROGRESS_ORDER = ("SUCCEEDED", "RUNNING", "STARTING", "RUNNABLE", "PENDING", "SUBMITTED", "FAILED")


def children_by_status(children: Iterable[JobState]) -> Counter[str]:
    """How many of an array job's children are in each state, each child counted once at its latest state
    (a child seen twice, say RUNNING and then SUCCEEDED, counts only as SUCCEEDED)."""
    latest: dict[str, JobState] = {}
    for child in children:
        seen = latest.get(child.job_id)
        if seen is None or child.order > seen.order:
            latest[child.job_id] = child
    return Counter(child.status for child in latest.values())


def progress_text(counts: Mapping[str, int], size: int) -> str:
    """One line of an array job's progress, e.g. "412 SUCCEEDED, 80 RUNNING, 2 FAILED of 500 children (6 not
    heard from yet)". Children with no recorded event yet are named apart: on AWS the event rule forwards only
    RUNNING, SUCCEEDED and FAILED, so a child still queued has said nothing."""
    ordered = [s for s in PROGRESS_ORDER if counts.get(s)] + sorted(s for s in counts if s not in PROGRESS_ORDER)
    heard = sum(counts.values())
    line = ", ".join(f"{counts[s]} {s}" for s in ordered if counts[s]) or "0"
    line += f" of {size} children"
    if size > heard:
        line += f" ({size - heard} not heard from yet)"
    return line


def build_event(detail: dict[str, Any], *, region: str, account: str) -> dict[str, Any]:
    """Wrap a JobDetail in the envelope EventBridge delivers for a Batch state change."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": EVENT_DETAIL_TYPE,
        "source": EVENT_SOURCE,
        "account": account,
        "time": iso_now(),
        "region": region,
        "resources": [detail["jobArn"]],
        "detail": detail,
    }


def parse_event(body: str | dict[str, Any]) -> JobState | None:
    """Read a Batch state-change event; anything else on the queue gives None (and is dropped)."""
    try:
        event = json.loads(body) if isinstance(body, str) else body
    except json.JSONDecodeError:
        return None
    if not isinstance(event, dict):
        return None
    if event.get("source") != EVENT_SOURCE or event.get("detail-type") != EVENT_DETAIL_TYPE:
        return None
    detail = event.get("detail")
    if not isinstance(detail, dict) or "jobId" not in detail or "status" not in detail:
        return None
    return JobState.from_detail(detail, source="event")


# --- retry strategy ---------------------------------------------------------------------------------
_RULE_KEYS = {"onStatusReason", "onReason", "onExitCode", "action"}


def default_retry_strategy(attempts: int = DEFAULT_RETRY_ATTEMPTS) -> dict[str, Any]:
    return {"attempts": attempts, "evaluateOnExit": [dict(r) for r in DEFAULT_EVALUATE_ON_EXIT]}


def validate_retry_strategy(strategy: dict[str, Any]) -> None:
    attempts = strategy.get("attempts")
    if not isinstance(attempts, int) or not 1 <= attempts <= 10:
        raise ValueError(f"retry_strategy.attempts must be an integer from 1 to 10, got {attempts!r}")
    rules = strategy.get("evaluateOnExit", [])
    if len(rules) > 5:
        raise ValueError("retry_strategy.evaluateOnExit takes at most 5 rules")
    for rule in rules:
        extra = set(rule) - _RULE_KEYS
        if extra:
            raise ValueError(f"unknown evaluateOnExit key(s): {sorted(extra)}")
        if str(rule.get("action", "")).upper() not in ("RETRY", "EXIT"):
            raise ValueError(f"evaluateOnExit action must be RETRY or EXIT, got {rule.get('action')!r}")
        for key in ("onStatusReason", "onReason", "onExitCode"):
            pattern = rule.get(key)
            if pattern is not None and "*" in pattern[:-1]:
                raise ValueError(f"{key} pattern {pattern!r}: '*' is allowed only at the end")


def _glob_match(pattern: str | None, value: str) -> bool:
    if pattern is None:
        return True
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def retry_action(strategy: dict[str, Any] | None, *, status_reason: str, reason: str, exit_code: int | None) -> str:
    """What Batch does after a failed attempt: 'RETRY' or 'EXIT' (the attempt budget is checked separately)."""
    rules = (strategy or {}).get("evaluateOnExit") or []
    code = "" if exit_code is None else str(exit_code)
    for rule in rules:
        if (
            _glob_match(rule.get("onStatusReason"), status_reason)
            and _glob_match(rule.get("onReason"), reason)
            and _glob_match(rule.get("onExitCode"), code)
        ):
            return str(rule["action"]).upper()
    return "RETRY"  # Batch retries an attempt that matches no rule


# --- names and tags ----------------------------------------------------------------------------------
_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]+")
_TAG_BAD = re.compile(r"[^\w\s.:/=+\-@]+", re.UNICODE)


def idempotency_key(*parts: Any) -> str:
    """A short stable hash of what identifies one task instance (dag, run, task, map index)."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:16]


def job_name(*, label_parts: list[str], key: str, generation: int) -> str:
    """Deterministic Batch job name: readable label, then the idempotency key and generation.

    The key and generation always survive truncation, because a retried task finds its job by this name.
    """
    suffix = f"-{key}-g{generation}"
    label = "-".join(p for p in (_NAME_BAD.sub("_", str(x)).strip("_-") for x in label_parts) if p)
    label = label[: JOB_NAME_MAX - len(suffix)] or "job"
    if not label[0].isalnum():
        label = "j" + label[1:]
    return label + suffix


def tag_value(value: Any) -> str:
    """Make a value acceptable as a Batch/ECS tag value (256 characters of a limited alphabet)."""
    return _TAG_BAD.sub("_", str(value))[:256]
