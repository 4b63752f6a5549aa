"""What a finished Batch job tells its task: the summary returned to XCom (for an array, every child's sample
and state) and, for a failure, the message: reason, exit code, where the log is and its last lines."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from genomics_steps.outcomes import EXCLUDED, EXCLUDED_EXIT_CODE, FAILED, SUCCEEDED, excluded_reason

from batch_jobs.request import JobSpec
from batch_jobs.submission import described
from platform_settings import PlatformSettings

LOG_TAILS = 3  # failed jobs whose log ends are quoted in the task's failure message
OUTCOME_TAIL_LINES = 20  # lines of a failed or excluded sample's log kept in its sample_outcomes row
MAX_FAILED_LISTED = 50


def summarize(settings: PlatformSettings, job: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    """The task's result: the job's summary, its log's location, and its sample or every child's."""
    summary = {**job, "log": log_location(settings, job.get("log_stream", ""))}
    if spec.samples:
        summary["samples"] = children(settings, job["job_id"], spec.samples)
        summary["failed_samples"] = [c["sample"] for c in summary["samples"] if c["status"] != "SUCCEEDED"]
    elif spec.sample:
        summary["sample"] = spec.sample
    return summary


def failure_message(settings: PlatformSettings, summary: dict[str, Any], memory_mib: int) -> str:
    """Why the job failed, for the task's error: the reason, each failed child, and the end of their logs;
    ``memory_mib``, what the job had, for the advice on an out-of-memory kill."""
    lines = [
        f"Batch job {summary['job_id']} ({summary['job_name']}) FAILED after {summary['attempts']} attempt(s): "
        f"{summary['status_reason'] or 'no reason given'}"
    ]
    if "samples" in summary:
        failed = [c for c in summary["samples"] if c["status"] != "SUCCEEDED"]
        lines.append(f"{len(failed)} of {len(summary['samples'])} samples failed:")
        lines += [
            f"  {c['sample']}: {c['status']} exit code {c['exit_code']} ({_reasons(c)})"
            f"{_memory_hint(c, memory_mib)}; log: {c['log']}"
            for c in failed[:MAX_FAILED_LISTED]
        ]
        streams = [(f"sample {c['sample']}", c["log_stream"]) for c in failed[:LOG_TAILS]]
    else:
        if summary.get("container_reason"):
            lines.append(f"container: {summary['container_reason']}")
        lines.append(f"exit code {summary['exit_code']}{_memory_hint(summary, memory_mib)}; log: {summary['log']}")
        streams = [(f"job {summary['job_id']}", summary.get("log_stream", ""))]
    return "\n".join(lines + log_tails(settings, streams))


def sample_results(settings: PlatformSettings, summary: dict[str, Any], spec: JobSpec) -> list[dict[str, Any]]:
    """What happened to each sample of the job: ``succeeded``, ``excluded`` (its step's QC gate ended it with
    EXCLUDED_EXIT_CODE, the reason on the log's last line) or ``failed`` (reason, exit code and the end of its
    log: the tool's own error). [] for a job of no sample (an index)."""
    if "samples" in summary:
        jobs = summary["samples"]
    elif summary.get("sample"):
        jobs = [{**summary, "sample": summary["sample"]}]
    else:
        return []

    def result(job: dict[str, Any]) -> dict[str, Any]:
        if job["status"] == "SUCCEEDED":
            outcome = SUCCEEDED
        elif job.get("exit_code") == EXCLUDED_EXIT_CODE:
            outcome = EXCLUDED
        else:
            outcome = FAILED
        tail = [] if outcome == SUCCEEDED else _tail(settings, job.get("log_stream", ""))
        if outcome == EXCLUDED:
            reason = (excluded_reason(tail[-1]) if tail else None) or "excluded by a QC gate"
        elif outcome == FAILED:
            why = [r for r in (job.get("container_reason"), job.get("status_reason")) if r]
            reason = f"{'; '.join(why) or 'no reason given'}; exit code {job.get('exit_code')}"
        else:
            reason = ""
        return {"sample": job["sample"], "outcome": outcome, "reason": reason, "job_id": job["job_id"],
                "attempts": job.get("attempts"), "exit_code": job.get("exit_code"),
                "status_reason": job.get("status_reason", ""), "container_reason": job.get("container_reason", ""),
                "out_of_memory": bool(job.get("out_of_memory")) and outcome == FAILED,
                "log": job.get("log") or log_location(settings, job.get("log_stream", "")), "log_tail": tail}

    with ThreadPoolExecutor(max_workers=8) as pool:  # log reads only for the samples that did not succeed
        return list(pool.map(result, jobs))


def hand_on(results: list[dict[str, Any]], step: str, logger: Any) -> list[str] | None:
    """The samples a job that did not wholly succeed hands on to the next step (its succeeded ones, logging
    the others); None when the task must fail: a job of no sample, or no sample succeeded and some failed. A
    unit whose samples were all excluded by a QC gate hands on none, and does not fail."""
    survivors = [r["sample"] for r in results if r["outcome"] == SUCCEEDED]
    if not results or (not survivors and any(r["outcome"] == FAILED for r in results)):
        return None
    for r in results:
        if r["outcome"] != SUCCEEDED:
            logger.warning("sample %s %s at %s: %s; log: %s", r["sample"], r["outcome"], step, r["reason"], r["log"])
    logger.info("%d of %d sample(s) go on to the next step", len(survivors), len(results))
    return survivors


def _tail(settings: PlatformSettings, log_stream: str) -> list[str]:
    from hooks.job_logs import log_tail

    return log_tail(settings, log_stream, lines=OUTCOME_TAIL_LINES)


def children(settings: PlatformSettings, parent_id: str, samples: list[str]) -> list[dict[str, Any]]:
    """Every child's sample and final state: from the store, and DescribeJobs only for children whose
    terminal event never arrived (at most 100 ids a call)."""
    from hooks import backend

    known = {c.array_index: c for c in backend.job_state_store(settings).children(parent_id) if c.terminal}
    missing = [f"{parent_id}:{i}" for i in range(len(samples)) if i not in known]
    if missing:
        for state in described(backend.batch_api(settings), missing):
            known[state.array_index] = state
    out = []
    for index, sample in enumerate(samples):
        state = known.get(index)
        out.append(
            {
                "sample": sample,
                "job_id": f"{parent_id}:{index}",
                "status": state.status if state else "UNKNOWN",
                "attempts": state.attempts if state else 0,
                "exit_code": state.exit_code if state else None,
                "status_reason": state.status_reason if state else "",
                "container_reason": state.container_reason if state else "",
                "out_of_memory": state.out_of_memory if state else False,
                "started_at": state.started_at if state else None,
                "stopped_at": state.stopped_at if state else None,
                "attempt_facts": state.attempt_facts if state else [],
                "log": log_location(settings, state.log_stream if state else ""),
                "log_stream": state.log_stream if state else "",
            }
        )
    return out


def _memory_hint(job: dict[str, Any], memory_mib: int) -> str:
    """What to do about a job (or child) Batch killed over its memory; its exit code proves nothing either
    way (a real OOM kill was exit code 24, and Batch's own kills of a cancelled or timed-out job are 137)."""
    if job.get("out_of_memory"):
        return f" (out of memory: it exceeded its memory_mib={memory_mib}; give the step more memory)"
    if job.get("exit_code") == 137:
        return " (killed by a signal)"
    return ""


def _reasons(child: dict[str, Any]) -> str:
    """A child's status reason, and its container reason when Batch gave one (an OOM kill shows only there)."""
    reasons = [r for r in (child.get("status_reason"), child.get("container_reason")) if r]
    return "; ".join(reasons) or "no reason given"


def log_tails(settings: PlatformSettings, streams: list[tuple[str, str]]) -> list[str]:
    """The end of each failed job's log: the step prints the tool's own error last."""
    from hooks.job_logs import log_tail

    out: list[str] = []
    for label, stream in streams:
        tail = log_tail(settings, stream)
        if tail:
            out.append(f"--- last lines of the log of {label} ---")
            out += [f"  {line}" for line in tail]
    return out


def log_location(settings: PlatformSettings, log_stream: str) -> str:
    if not log_stream:
        return "(no log: the job never started)"
    if settings.backend == "aws":
        return f"CloudWatch Logs group /aws/batch/job, stream {log_stream}"
    return log_stream
