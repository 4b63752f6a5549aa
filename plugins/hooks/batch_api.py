"""The four Batch calls the project makes (SubmitJob, DescribeJobs, ListJobs by name, TerminateJob), on AWS or on
the local control plane, plus submission under the deployment-wide rate budget with throttling absorbed.
"""

from __future__ import annotations

import logging
import random
import time
from abc import ABC, abstractmethod
from typing import Any, Callable

from hooks.job_state import JobStateStore

log = logging.getLogger(__name__)

THROTTLE_CODES = frozenset({"TooManyRequestsException", "ThrottlingException", "Throttling", "RequestLimitExceeded"})
MAX_BACKOFF_SECONDS = 30.0
BACKOFF_BASE_SECONDS = 0.2


class BatchApi(ABC):
    @abstractmethod
    def submit_job(self, request: dict[str, Any]) -> dict[str, Any]:
        """SubmitJob; returns jobId, jobName, jobArn."""

    @abstractmethod
    def describe_jobs(self, job_ids: list[str]) -> list[dict[str, Any]]:
        """DescribeJobs for at most 100 ids; ids Batch does not know are absent from the answer."""

    @abstractmethod
    def find_jobs_by_name(self, job_queue: str, job_name: str) -> list[dict[str, Any]]:
        """Jobs of any status in ``job_queue`` whose name is exactly ``job_name``."""

    @abstractmethod
    def terminate_job(self, job_id: str, reason: str) -> None:
        """TerminateJob (also cancels a job that has not started)."""


class AwsBatchApi(BatchApi):
    def __init__(self, client: Any):
        self.client = client

    def submit_job(self, request: dict[str, Any]) -> dict[str, Any]:
        resp = self.client.submit_job(**request)
        return {"jobId": resp["jobId"], "jobName": resp["jobName"], "jobArn": resp.get("jobArn", "")}

    def describe_jobs(self, job_ids: list[str]) -> list[dict[str, Any]]:
        if len(job_ids) > 100:
            raise ValueError("DescribeJobs accepts at most 100 job ids")
        return self.client.describe_jobs(jobs=job_ids).get("jobs", []) if job_ids else []

    def find_jobs_by_name(self, job_queue: str, job_name: str) -> list[dict[str, Any]]:
        # With a filter, ListJobs returns jobs of every status; the JOB_NAME filter is a prefix match.
        out: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "jobQueue": job_queue,
            "filters": [{"name": "JOB_NAME", "values": [job_name]}],
        }
        while True:
            resp = self.client.list_jobs(**kwargs)
            out.extend(j for j in resp.get("jobSummaryList", []) if j.get("jobName") == job_name)
            if not resp.get("nextToken"):
                return out
            kwargs["nextToken"] = resp["nextToken"]

    def terminate_job(self, job_id: str, reason: str) -> None:
        self.client.terminate_job(jobId=job_id, reason=reason)


class LocalBatchApi(BatchApi):
    def __init__(self, home: str, vcpus: int = 0, memory_mib: int = 0):
        from local_batch.control_plane import ControlPlane

        self.home = home
        self.vcpus = vcpus
        self.memory_mib = memory_mib
        self.plane = ControlPlane(home, vcpus, memory_mib)

    def submit_job(self, request: dict[str, Any]) -> dict[str, Any]:
        from local_batch.runner import ensure_runner

        out = self.plane.submit_job(request)
        ensure_runner(self.home, self.vcpus, self.memory_mib)
        return out

    def describe_jobs(self, job_ids: list[str]) -> list[dict[str, Any]]:
        return self.plane.describe_jobs(job_ids)

    def find_jobs_by_name(self, job_queue: str, job_name: str) -> list[dict[str, Any]]:
        return self.plane.list_jobs_by_name(job_queue, job_name)

    def terminate_job(self, job_id: str, reason: str) -> None:
        self.plane.terminate_job(job_id, reason)


def is_throttle(exc: BaseException) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = response.get("Error", {}).get("Code", "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in THROTTLE_CODES or status == 429


def submit_within_budget(
    api: BatchApi,
    store: JobStateStore,
    request: dict[str, Any],
    *,
    rate_per_second: float,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[dict[str, Any], int]:
    """Submit once the shared budget allows; a throttled call waits (exponential backoff, full jitter) and tries
    again, indefinitely: throttling is the account being busy, never a reason to fail a task.

    Returns the SubmitJob answer and how many throttled calls it took.
    """
    throttled = 0
    while True:
        store.take_submit_slot(rate_per_second, sleep=sleep)
        try:
            return api.submit_job(request), throttled
        except Exception as exc:
            if not is_throttle(exc):
                raise
            throttled += 1
            delay = random.uniform(0, min(MAX_BACKOFF_SECONDS, BACKOFF_BASE_SECONDS * 2 ** min(throttled, 10)))
            log.warning("SubmitJob throttled (%s time(s)); trying again in %.2fs", throttled, delay)
            sleep(delay)
