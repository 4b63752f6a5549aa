"""Reattach or submit: the submission record of a task instance and the job it stands for.

An Airflow retry must find the job its earlier try submitted instead of submitting a second one. Each task
instance has an idempotency key (dag, run, task, map index); the job-state store keeps, per key, the job last
submitted for it (its *submission record*), and the job's name is deterministic (label, key, generation), so a
try that died between SubmitJob and writing the record is still found, by name. A running or succeeded job is
reattached; only a job that itself FAILED (or a succeeded one the caller asks to run again) is submitted again,
as the next generation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batch_model import JobState, job_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attached:
    """The job a task instance waits for; ``ended`` is its final state when a reattached job is already over."""

    job_id: str
    ended: JobState | None = None


def reattach_or_submit(
    store: Any,
    api: Any,
    *,
    key: str,
    queue: str,
    label_parts: list[str],
    array_size: int | None,
    rerun_succeeded: bool,
    earlier_try: bool,
    build_request: Callable[[str], dict[str, Any]],
    submit: Callable[[dict[str, Any]], tuple[dict[str, Any], int]],
    logger: logging.Logger = log,
    keep_partial: bool = False,
) -> Attached:
    """The job of the task instance ``key``: the one an earlier try submitted if it may still serve, else a new
    submission. ``earlier_try``: this is not the first try (a job may exist that no record names).
    ``build_request(name)`` makes the SubmitJob request (and whatever it needs in the lake) only when a job is
    really submitted; ``submit(request)`` returns the response and how many calls were throttled. ``logger``:
    the task's own, so its log says which job it waits for and why. ``keep_partial``: the task settles per
    sample, so a FAILED job of which some samples succeeded (an array with failed children, or a round of
    out-of-memory samples) is settled from, not submitted again whole: only a job where nothing succeeded
    is."""
    prior = store.get_submission(key)
    generation = 0
    if prior:
        state = store.get_many([prior["job_id"]]).get(prior["job_id"])
        status = state.status if state else "SUBMITTED"
        if status == "FAILED" and keep_partial and _some_samples_settled(store, prior):
            logger.info("Job %s of an earlier try FAILED for some samples only; settling from it", prior["job_id"])
            return Attached(prior["job_id"], ended(store, api, prior["job_id"], state))
        if status == "FAILED" or (status == "SUCCEEDED" and rerun_succeeded):
            generation = prior["generation"] + 1
            logger.info("Job %s of an earlier try %s; submitting generation %s", prior["job_id"], status, generation)
        else:
            logger.info("Reattaching to job %s (%s) submitted by an earlier try", prior["job_id"], status)
            return Attached(prior["job_id"], ended(store, api, prior["job_id"], state))

    name = job_name(label_parts=label_parts, key=key, generation=generation)
    if earlier_try or prior:
        # An earlier try may have died between SubmitJob and recording it: find its job by name.
        existing = api.find_jobs_by_name(queue, name)
        if existing:
            job_id = existing[-1]["jobId"]
            logger.info("Found job %s named %s from an earlier try; reattaching", job_id, name)
            _remember(store, key, job_id, name, generation, queue, array_size)
            return Attached(job_id, ended(store, api, job_id))

    return Attached(_submit(store, key=key, name=name, generation=generation, queue=queue, array_size=array_size,
                            request=build_request(name), submit=submit, logger=logger))


def _some_samples_settled(store: Any, prior: dict[str, Any]) -> bool:
    """Did the earlier try's work succeed for some samples? An out-of-memory round carries the others'
    outcomes; an array job, its children's states."""
    if prior.get("settled"):
        return True
    if prior.get("array_size"):
        return any(child.status == "SUCCEEDED" for child in store.children(prior["job_id"]))
    return False


def _remember(store: Any, key: str, job_id: str, name: str, generation: int, queue: str,
              array_size: int | None, **extra: Any) -> None:
    store.put_submission(key, {"job_id": job_id, "job_name": name, "generation": generation, "job_queue": queue,
                               "array_size": array_size, **extra})


def submit_round(store: Any, *, key: str, prior: dict[str, Any], queue: str, label_parts: list[str],
                 array_size: int | None, build_request: Callable[[str], dict[str, Any]],
                 submit: Callable[[dict[str, Any]], tuple[dict[str, Any], int]], round_record: dict[str, Any],
                 logger: logging.Logger = log) -> str:
    """Submit a further round of a task instance's work (some of its samples again, with other resources) as
    the next generation, and record it with ``round_record`` (which samples, what memory, what earlier rounds
    settled), so a retry of the task reattaches to this round and knows what it covers."""
    generation = prior["generation"] + 1
    name = job_name(label_parts=label_parts, key=key, generation=generation)
    return _submit(store, key=key, name=name, generation=generation, queue=queue, array_size=array_size,
                   request=build_request(name), submit=submit, logger=logger, **round_record)


def _submit(store: Any, *, key: str, name: str, generation: int, queue: str, array_size: int | None,
            request: dict[str, Any], submit: Callable[[dict[str, Any]], tuple[dict[str, Any], int]],
            logger: logging.Logger, **extra: Any) -> str:
    """SubmitJob, then the submission record and the job's first state; returns the job id."""
    submitted, throttled = submit(request)
    job_id = submitted["jobId"]
    _remember(store, key, job_id, name, generation, queue, array_size, **extra)
    store.record(JobState(job_id=job_id, status="SUBMITTED", job_name=name, job_queue=queue,
                          array_size=array_size, source="submit"))
    logger.info("Submitted job %s (%s)%s", job_id, name, f" after {throttled} throttled call(s)" if throttled else "")
    return job_id


def ended(store: Any, api: Any, job_id: str, stored: JobState | None = None) -> JobState | None:
    """A reattached job's final state if it has ended: ``stored`` (what the job-state store holds) when that is
    final, else one DescribeJobs call (its events not consumed yet, or dropped), recorded in the store as the
    reconciler would, so the next try sees a failure and submits a new generation."""
    if stored is not None and stored.terminal:
        return stored
    state = next(iter(described(api, [job_id])), None)
    if state is None or not state.terminal:
        return None
    store.record(state)
    return state


def described(api: Any, job_ids: list[str]) -> list[JobState]:
    """DescribeJobs for ``job_ids``, at most 100 ids a call; jobs Batch does not know are left out."""
    return [
        JobState.from_detail(detail, source="reconcile")
        for start in range(0, len(job_ids), 100)
        for detail in api.describe_jobs(job_ids[start : start + 100])
    ]
