"""The local Batch runner: a daemon that really runs submitted jobs on this machine.

It honours the compute environment's vCPU and memory capacity (jobs wait in RUNNABLE until they fit), the
retry strategy (evaluateOnExit rules, shared with AWS semantics in batch_model), per-attempt timeouts, array
jobs and per-attempt logs, and emits an EventBridge-shaped "Batch Job State Change" event for every
transition into the local event queue that the Airflow triggers read.

It is detached from Airflow: one daemon per local home, started on demand by the first submission. Job
processes run in their own sessions under a shim that writes the exit code to a file, so an Airflow restart
never touches them and a runner restart picks up where it left off.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from batch_model import OOM_REASON, build_event, now_ms, retry_action
from hooks.event_queue import LocalEventQueue
from local_batch import containers, pid_alive
from local_batch.control_plane import ACCOUNT, REGION, ControlPlane

log = logging.getLogger("local_batch.runner")

PLUGINS_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = PLUGINS_DIR.parent
TIMEOUT_REASON = "Job attempt duration exceeded timeout"
HOST_LOST_REASON = "Host EC2 (instance i-local) terminated."
CONTAINER_EXIT_REASON = "Essential container in task exited"


def event_queue_path(home: Path) -> Path:
    return home / "events.sqlite"


class Runner:
    def __init__(self, home: str | Path, vcpus: int = 0, memory_mib: int = 0):
        self.home = Path(home)
        self.plane = ControlPlane(self.home, vcpus, memory_mib)
        self.events = LocalEventQueue(event_queue_path(self.home))
        self.jobs_dir = self.home / "jobs"
        self._memory_checked: dict[str, float] = {}

    # --- one pass ---------------------------------------------------------------------------
    def tick(self) -> None:
        self._reap_children()
        self._terminate_waiting()
        self._admit_submitted()
        self._watch_running()
        self._start_runnable()
        self._settle_arrays()

    def _rows(self, sql: str, *args: Any):
        return self.plane.conn().execute(sql, args).fetchall()

    def _update(self, job_id: str, emit: bool = True, **fields: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        self.plane.conn().execute(f"UPDATE jobs SET {cols} WHERE job_id = ?", (*fields.values(), job_id))
        if emit:
            row = self._rows("SELECT * FROM jobs WHERE job_id = ?", job_id)[0]
            event = build_event(self.plane.detail(row), region=REGION, account=ACCOUNT)
            self.events.send(json.dumps(event))

    def _request_of(self, row) -> dict[str, Any]:
        if row["parent_id"]:
            row = self._rows("SELECT request FROM jobs WHERE job_id = ?", row["parent_id"])[0]
        return json.loads(row["request"])

    def _terminate_waiting(self) -> None:
        for row in self._rows(
            "SELECT * FROM jobs WHERE terminate_reason IS NOT NULL AND status IN ('SUBMITTED','PENDING','RUNNABLE')"
        ):
            if row["array_size"]:
                continue  # the parent ends when its children have
            self._update(row["job_id"], status="FAILED", status_reason=row["terminate_reason"], stopped_at=now_ms())

    def _admit_submitted(self) -> None:
        for row in self._rows("SELECT * FROM jobs WHERE status = 'SUBMITTED' ORDER BY seq"):
            if row["array_size"]:
                self._update(row["job_id"], status="PENDING")
            elif row["parent_id"]:
                self._update(row["job_id"], status="RUNNABLE")
            else:
                self._update(row["job_id"], status="PENDING")
                self._update(row["job_id"], status="RUNNABLE")

    def _start_runnable(self) -> None:
        used = self._rows(
            "SELECT COALESCE(SUM(vcpus), 0) AS v, COALESCE(SUM(memory_mib), 0) AS m FROM jobs "
            "WHERE status IN ('STARTING', 'RUNNING') AND array_size IS NULL"
        )[0]
        free_vcpus = self.plane.vcpus - used["v"]
        free_memory = self.plane.memory_mib - used["m"]
        for row in self._rows("SELECT * FROM jobs WHERE status = 'RUNNABLE' AND array_size IS NULL ORDER BY seq"):
            if row["vcpus"] > free_vcpus or row["memory_mib"] > free_memory:
                continue
            free_vcpus -= row["vcpus"]
            free_memory -= row["memory_mib"]
            self._start(row)

    def _start(self, row) -> None:
        request = self._request_of(row)
        overrides = request.get("containerOverrides") or {}
        attempt = len(json.loads(row["attempts"])) + 1
        attempt_dir = self.jobs_dir / row["job_id"].replace(":", "/") / f"attempt-{attempt}"
        attempt_dir.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")]),
            "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": "C.UTF-8",
            "TMPDIR": str(attempt_dir / "tmp"),
            # On Batch the step package is installed in the image; here it is put on the path.
            "PYTHONPATH": str(REPO_ROOT / "include"),
        }
        env.update({e["name"]: e["value"] for e in overrides.get("environment") or []})
        env.update(
            {
                "AWS_BATCH_JOB_ID": row["job_id"],
                "AWS_BATCH_JOB_ATTEMPT": str(attempt),
                "AWS_BATCH_JQ_NAME": row["job_queue"],
                "AWS_BATCH_CE_NAME": "local",
            }
        )
        if row["parent_id"]:
            env["AWS_BATCH_JOB_ARRAY_INDEX"] = str(row["array_index"])
        command = overrides["command"]
        if containers.mode() == "buildah":  # the job's image runs the command, as on Batch (local_batch.containers)
            job_env = {k: v for k, v in env.items() if k not in ("PATH", "PYTHONPATH", "HOME")}
            spec = containers.write_spec(attempt_dir, image=containers.image_for(request["jobDefinition"]),
                                         job_env=job_env, workdir=attempt_dir / "work")
            command = [sys.executable, "-m", "local_batch.containers", str(spec), "--", *command]
            env = {**env, "PYTHONPATH": str(PLUGINS_DIR)}
        (attempt_dir / "spec.json").write_text(json.dumps({"command": command, "env": env}))
        self._update(row["job_id"], status="STARTING", attempt_dir=str(attempt_dir))
        proc = subprocess.Popen(
            [sys.executable, "-m", "local_batch.shim", str(attempt_dir)],
            cwd=attempt_dir,
            env={**os.environ, "PYTHONPATH": str(PLUGINS_DIR)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(attempt_dir / "shim.err", "ab"),
            start_new_session=True,
        )
        self._update(
            row["job_id"],
            status="RUNNING",
            pid=proc.pid,
            attempt_started=time.time(),
            started_at=row["started_at"] or now_ms(),
        )

    def _watch_running(self) -> None:
        for row in self._rows("SELECT * FROM jobs WHERE status = 'RUNNING' AND array_size IS NULL"):
            attempt_dir = Path(row["attempt_dir"])
            exit_file = attempt_dir / "exit_code"
            if exit_file.exists():
                result = json.loads(exit_file.read_text())
                self._finish_attempt(row, result["exitCode"], CONTAINER_EXIT_REASON, result.get("reason", ""))
                continue
            request = self._request_of(row)
            timeout = (request.get("timeout") or {}).get("attemptDurationSeconds")
            if row["terminate_reason"]:
                self._kill(row)
                self._finish_attempt(row, None, row["terminate_reason"], "", retryable=False)
            elif row["reclaim"]:
                self._kill(row)
                self._finish_attempt(row, None, HOST_LOST_REASON, "")
            elif timeout and time.time() - row["attempt_started"] > timeout:
                self._kill(row)
                self._finish_attempt(row, None, TIMEOUT_REASON, "", retryable=False)
            elif self._over_memory(row):
                self._kill(row)
                self._finish_attempt(row, 137, CONTAINER_EXIT_REASON, OOM_REASON)
            elif not pid_alive(row["pid"]) and not exit_file.exists():
                self._finish_attempt(row, None, HOST_LOST_REASON + " The job process was lost.", "")

    def _finish_attempt(self, row, exit_code, status_reason: str, reason: str, retryable: bool = True) -> None:
        request = self._request_of(row)
        strategy = request.get("retryStrategy") or {"attempts": 1}
        attempts = json.loads(row["attempts"])
        stopped = now_ms()
        container = {"exitCode": exit_code, "logStreamName": str(Path(row["attempt_dir"]) / "job.log")}
        if reason:  # as on Batch: the key is there only when the container has a reason (an OOM kill, a failed start)
            container["reason"] = reason
        attempts.append(
            {
                "container": container,
                "startedAt": int(row["attempt_started"] * 1000),
                "stoppedAt": stopped,
                "statusReason": status_reason,
            }
        )
        self.plane.conn().execute("UPDATE jobs SET reclaim = 0 WHERE job_id = ?", (row["job_id"],))
        if exit_code == 0:
            self._update(row["job_id"], status="SUCCEEDED", status_reason=status_reason,
                         attempts=json.dumps(attempts), stopped_at=stopped, pid=None)
            return
        again = (
            retryable
            and len(attempts) < int(strategy.get("attempts", 1))
            and retry_action(strategy, status_reason=status_reason, reason=reason, exit_code=exit_code) == "RETRY"
        )
        if again:
            self._update(row["job_id"], status="RUNNABLE", status_reason=status_reason,
                         attempts=json.dumps(attempts), pid=None)
        else:
            self._update(row["job_id"], status="FAILED", status_reason=status_reason,
                         attempts=json.dumps(attempts), stopped_at=stopped, pid=None)

    def _settle_arrays(self) -> None:
        for parent in self._rows("SELECT * FROM jobs WHERE array_size IS NOT NULL AND status IN ('PENDING','RUNNING')"):
            counts = {
                r["status"]: r["n"]
                for r in self._rows(
                    "SELECT status, COUNT(*) AS n FROM jobs WHERE parent_id = ? GROUP BY status", parent["job_id"]
                )
            }
            done = counts.get("SUCCEEDED", 0) + counts.get("FAILED", 0)
            if done == parent["array_size"]:
                failed = counts.get("FAILED", 0)
                self._update(
                    parent["job_id"],
                    status="FAILED" if failed else "SUCCEEDED",
                    status_reason=f"Array Child Job failed: {failed} of {parent['array_size']}" if failed else "",
                    stopped_at=now_ms(),
                )
            elif parent["status"] == "PENDING" and (counts.get("RUNNING") or done):
                self._update(parent["job_id"], status="RUNNING", started_at=now_ms())

    # --- processes ----------------------------------------------------------------------------
    def _kill(self, row) -> None:
        try:
            os.killpg(row["pid"], signal.SIGKILL)
        except (ProcessLookupError, PermissionError, TypeError):
            pass

    def _over_memory(self, row) -> bool:
        now = time.monotonic()
        if now - self._memory_checked.get(row["job_id"], 0) < 1.0:
            return False
        self._memory_checked[row["job_id"]] = now
        return _group_rss_mib(row["pid"]) > row["memory_mib"]

    @staticmethod
    def _reap_children() -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    # --- daemon -------------------------------------------------------------------------------
    def serve(self, idle_exit_seconds: float = 600.0, poll_seconds: float = 0.1) -> None:
        lock = open(self.home / "runner.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another runner holds %s; exiting", self.home)
            return
        lock.write(str(os.getpid()))
        lock.flush()
        stop = False

        def _stop(*_):
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, _stop)
        idle_since = time.monotonic()
        log.info("local batch runner serving %s with %s vCPU, %s MiB", self.home, self.plane.vcpus, self.plane.memory_mib)
        while not stop:
            try:
                self.tick()
            except Exception:  # keep serving: one bad row must not stop every job on the machine
                log.exception("runner tick failed")
            if self.plane.active():
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > idle_exit_seconds:
                log.info("idle for %ss; exiting", idle_exit_seconds)
                break
            time.sleep(poll_seconds)


def _group_rss_mib(pgid: int) -> float:
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 of /proc/PID/stat: process group
            total += int(fields[21]) * page  # field 24: resident set size in pages
    return total / (1024 * 1024)


def runner_running(home: str | Path) -> bool:
    path = Path(home) / "runner.lock"
    if not path.exists():
        return False
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def ensure_runner(home: str | Path, vcpus: int = 0, memory_mib: int = 0, timeout: float = 10.0) -> None:
    """Start the runner daemon for ``home`` unless one is serving it already."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    containers.mode()  # a bad GENOMICS_LOCAL_CONTAINERS is refused here, by name, not by the daemon later
    if runner_running(home):
        return
    idle = os.environ.get("GENOMICS_LOCAL_RUNNER_IDLE_SECONDS", "600")
    subprocess.Popen(
        [sys.executable, "-m", "local_batch.cli", "serve", "--home", str(home), "--vcpus", str(vcpus),
         "--memory-mib", str(memory_mib), "--idle-exit-seconds", idle],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGINS_DIR), os.environ.get("PYTHONPATH", "")])},
        stdin=subprocess.DEVNULL,
        stdout=open(home / "runner.log", "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        close_fds=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if runner_running(home):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the local batch runner did not start; see {home / 'runner.log'}")


def stop_runner(home: str | Path, timeout: float = 10.0) -> bool:
    path = Path(home) / "runner.lock"
    if not runner_running(home):
        return False
    pid = int(path.read_text() or 0)
    if pid:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and runner_running(home):
        time.sleep(0.05)
    return True
