"""The local Batch control plane: the job table behind the local backend's SubmitJob, DescribeJobs, ListJobs
and TerminateJob, answering in AWS Batch's request and response shapes.

The runner daemon (``runner.py``) moves jobs through their states and emits EventBridge-shaped events; this
module only records requests and answers questions, so any process (an Airflow worker, the triggerer, a test)
can use it while the daemon runs jobs in the background.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from batch_model import MAX_ARRAY_SIZE, TERMINAL, now_ms

REGION = "local"
ACCOUNT = "000000000000"


class LocalBatchError(Exception):
    """Raised for requests AWS Batch would refuse with a ClientException."""


def job_arn(job_id: str) -> str:
    return f"arn:aws:batch:{REGION}:{ACCOUNT}:job/{job_id}"


def queue_arn(name: str) -> str:
    return name if name.startswith("arn:") else f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/{name}"


def machine_capacity() -> tuple[int, int]:
    """vCPUs and memory (MiB) of this machine."""
    vcpus = os.cpu_count() or 1
    memory = 2048
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    memory = int(line.split()[1]) // 1024
                    break
    except OSError:
        pass
    return vcpus, memory


def _resource(request: dict[str, Any], name: str) -> str | None:
    for r in (request.get("containerOverrides") or {}).get("resourceRequirements") or []:
        if r.get("type") == name:
            return r.get("value")
    return None


class ControlPlane:
    def __init__(self, home: str | Path, vcpus: int = 0, memory_mib: int = 0):
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.db_path = self.home / "control_plane.sqlite"
        machine_vcpus, machine_memory = machine_capacity()
        self.vcpus = vcpus or machine_vcpus
        self.memory_mib = memory_mib or machine_memory
        self._local = threading.local()
        self.conn().executescript(
            """
            CREATE TABLE IF NOT EXISTS jobs (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                job_id TEXT UNIQUE NOT NULL, job_name TEXT NOT NULL, job_queue TEXT NOT NULL,
                parent_id TEXT, array_index INTEGER, array_size INTEGER,
                status TEXT NOT NULL, status_reason TEXT NOT NULL DEFAULT '',
                request TEXT NOT NULL, vcpus REAL NOT NULL, memory_mib INTEGER NOT NULL,
                attempts TEXT NOT NULL DEFAULT '[]',
                created_at INTEGER NOT NULL, started_at INTEGER, stopped_at INTEGER,
                pid INTEGER, attempt_dir TEXT, attempt_started REAL,
                terminate_reason TEXT, reclaim INTEGER NOT NULL DEFAULT 0);
            CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
            CREATE INDEX IF NOT EXISTS jobs_parent ON jobs(parent_id);
            CREATE INDEX IF NOT EXISTS jobs_name ON jobs(job_name);
            """
        )

    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    # --- the Batch API --------------------------------------------------------------------------
    def submit_job(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request.get("jobName") or ""
        if not name:
            raise LocalBatchError("jobName is required")
        command = (request.get("containerOverrides") or {}).get("command")
        if not command:
            raise LocalBatchError("the local backend runs containerOverrides.command on this machine; none was given")
        vcpus = float(_resource(request, "VCPU") or 1)
        memory = int(_resource(request, "MEMORY") or 2048)
        if _resource(request, "GPU"):
            raise LocalBatchError("this machine has no GPU: a job asking for one can run only on the aws backend")
        if vcpus > self.vcpus or memory > self.memory_mib:
            raise LocalBatchError(
                f"no local compute environment can run job {name!r}: it asks for {vcpus:g} vCPU and {memory} MiB, "
                f"this machine has {self.vcpus} vCPU and {self.memory_mib} MiB"
            )
        size = (request.get("arrayProperties") or {}).get("size")
        if size is not None and not 2 <= int(size) <= MAX_ARRAY_SIZE:
            raise LocalBatchError(f"arrayProperties.size must be from 2 to {MAX_ARRAY_SIZE}, got {size}")
        job_id = str(uuid.uuid4())
        created = now_ms()
        queue = request.get("jobQueue", "")
        rows = [(job_id, name, queue, None, None, size, "SUBMITTED", json.dumps(request), vcpus, memory, created)]
        for index in range(int(size or 0)):
            rows.append(
                (f"{job_id}:{index}", name, queue, job_id, index, None, "SUBMITTED", "{}", vcpus, memory, created)
            )
        conn = self.conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                """INSERT INTO jobs (job_id, job_name, job_queue, parent_id, array_index, array_size, status,
                                     request, vcpus, memory_mib, created_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                rows,
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return {"jobId": job_id, "jobName": name, "jobArn": job_arn(job_id)}

    def describe_jobs(self, job_ids: list[str]) -> list[dict[str, Any]]:
        if len(job_ids) > 100:
            raise LocalBatchError("DescribeJobs accepts at most 100 job ids")
        if not job_ids:
            return []
        rows = self.conn().execute(
            f"SELECT * FROM jobs WHERE job_id IN ({','.join('?' * len(job_ids))})", job_ids
        ).fetchall()
        return [self.detail(row) for row in rows]

    def list_jobs_by_name(self, job_queue: str, job_name: str) -> list[dict[str, Any]]:
        rows = self.conn().execute(
            "SELECT * FROM jobs WHERE job_name = ? AND job_queue = ? AND parent_id IS NULL ORDER BY seq",
            (job_name, job_queue),
        ).fetchall()
        return [
            {"jobId": r["job_id"], "jobArn": job_arn(r["job_id"]), "jobName": r["job_name"], "status": r["status"],
             "createdAt": r["created_at"]}
            for r in rows
        ]

    def terminate_job(self, job_id: str, reason: str) -> None:
        conn = self.conn()
        conn.execute(
            "UPDATE jobs SET terminate_reason = ? WHERE (job_id = ? OR parent_id = ?) AND status NOT IN (?, ?)",
            (reason, job_id, job_id, *TERMINAL),
        )

    def reclaim(self, job_id: str) -> bool:
        """Fault injection: take the host from under a running attempt, as a Spot reclaim does."""
        cur = self.conn().execute(
            "UPDATE jobs SET reclaim = 1 WHERE job_id = ? AND status = 'RUNNING'", (job_id,)
        )
        return cur.rowcount == 1

    # --- shapes ---------------------------------------------------------------------------------
    def child_rows(self, parent_id: str) -> list[sqlite3.Row]:
        return self.conn().execute(
            "SELECT * FROM jobs WHERE parent_id = ? ORDER BY array_index", (parent_id,)
        ).fetchall()

    def detail(self, row: sqlite3.Row) -> dict[str, Any]:
        """A DescribeJobs JobDetail for one row; also the ``detail`` of the events the runner emits."""
        parent_request = row["request"]
        if row["parent_id"]:
            parent_request = self.conn().execute(
                "SELECT request FROM jobs WHERE job_id = ?", (row["parent_id"],)
            ).fetchone()["request"]
        request = json.loads(parent_request)
        overrides = request.get("containerOverrides") or {}
        attempts = json.loads(row["attempts"])
        detail: dict[str, Any] = {
            "jobArn": job_arn(row["job_id"]),
            "jobName": row["job_name"],
            "jobId": row["job_id"],
            "jobQueue": queue_arn(row["job_queue"]),
            "status": row["status"],
            "statusReason": row["status_reason"],
            "attempts": attempts,
            "createdAt": row["created_at"],
            "dependsOn": [],
            "jobDefinition": request.get("jobDefinition", ""),
            "parameters": request.get("parameters") or {},
            "tags": request.get("tags") or {},
            "propagateTags": bool(request.get("propagateTags")),
            "platformCapabilities": ["EC2"],
            "retryStrategy": request.get("retryStrategy") or {},
            "timeout": request.get("timeout") or {},
            "container": {
                "command": overrides.get("command") or [],
                "environment": overrides.get("environment") or [],
                "resourceRequirements": overrides.get("resourceRequirements") or [],
            },
        }
        if row["started_at"]:
            detail["startedAt"] = row["started_at"]
        if row["stopped_at"]:
            detail["stoppedAt"] = row["stopped_at"]
        if attempts:
            last = attempts[-1]["container"]
            detail["container"].update({k: v for k, v in last.items() if k in ("exitCode", "reason", "logStreamName")})
        elif row["attempt_dir"]:
            detail["container"]["logStreamName"] = str(Path(row["attempt_dir"]) / "job.log")
        if row["array_size"]:
            summary = {s: 0 for s in ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")}
            for child in self.conn().execute(
                "SELECT status, COUNT(*) AS n FROM jobs WHERE parent_id = ? GROUP BY status", (row["job_id"],)
            ):
                summary[child["status"]] = child["n"]
            detail["arrayProperties"] = {"size": row["array_size"], "statusSummary": summary}
        elif row["parent_id"]:
            detail["arrayProperties"] = {"index": row["array_index"]}
        return detail

    def counts(self) -> dict[str, int]:
        rows = self.conn().execute("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
        return {r["status"]: r["n"] for r in rows}

    def active(self) -> int:
        return self.conn().execute(
            "SELECT COUNT(*) FROM jobs WHERE status NOT IN (?, ?)", tuple(TERMINAL)
        ).fetchone()[0]


def wait_for_terminal(plane: ControlPlane, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    """Block until a job ends (for the CLI and tests; Airflow tasks wait on events instead)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = plane.describe_jobs([job_id])
        if jobs and jobs[0]["status"] in TERMINAL:
            return jobs[0]
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} did not end within {timeout}s")
