"""A pipeline run's outcome, sample by sample, once its per-sample steps are over.

The steps' tasks staged one sample_outcomes row per sample and step their jobs ran (``job_facts``); here, in
the run's ``outcomes`` task, one listing of those rows and one listing of the results decide:
- which samples are complete (every step's outputs present, from this run or an earlier one of the same
  version): they are published;
- which failed or were excluded, and at which step; the steps after that are staged as ``not_run``, and a
  step that recorded nothing for a sample (its task failed before its job ended) as ``failed``;
- whether the run stops before publishing: ``on_sample_failure: stop`` and any failure, or more failed
  samples than ``max_failed_fraction`` of those run (something systematic is wrong).
The run's last task (``verdict``) then fails the run when any sample failed, naming them; excluded samples do
not fail it.
"""

from __future__ import annotations

from typing import Any, Callable

from genomics_steps import layout
from genomics_steps.outcomes import EXCLUDED, FAILED, NOT_RUN, SUCCEEDED

import job_facts
from airflow_compat import AirflowFailException
from pipeline_plan import DEFAULT_MAX_FAILED_FRACTION
NO_JOB = job_facts.NO_JOB
_PRECEDENCE = {SUCCEEDED: 3, EXCLUDED: 2, FAILED: 1, NOT_RUN: 0}  # a later generation that succeeded wins


def settle(*, steps: list[str], pipeline: str, planned: dict[str, Any], params: dict[str, Any], run_id: str,
           lake_root: str, list_files: Callable[[str], list[str]],
           outcome_prefix: str, stage: Callable[[str, list[dict[str, Any]]], None]) -> dict[str, Any]:
    """Decide the run's outcome (see the module docstring); ``stage(step, rows)`` stages the rows of the steps
    that recorded nothing. Returns what the publish tasks and the verdict need."""
    project, version = planned["project"], params["pipeline_version"]
    recorded: dict[tuple[str, str], str] = {}
    ran: set[str] = set()  # samples a job ran for (so they have job_runs rows)
    for path in list_files(outcome_prefix):
        parsed = job_facts.parse_outcome_file(path)
        if parsed:
            sample, step, outcome = parsed
            if not path.endswith(f"-{NO_JOB}.tsv"):
                ran.add(sample)
            if _PRECEDENCE[outcome] > _PRECEDENCE.get(recorded.get((sample, step), ""), -1):
                recorded[(sample, step)] = outcome

    first_bad: dict[str, tuple[str, str]] = {}  # sample -> (step, outcome) where it stopped
    missing: dict[str, list[dict[str, Any]]] = {step: [] for step in steps}
    for sample in planned["todo"]:
        stopped_at: tuple[str, str] | None = None
        for step in steps:
            outcome = recorded.get((sample, step))
            if stopped_at:
                if not outcome:
                    missing[step].append({"sample": sample, "outcome": NOT_RUN,
                                          "reason": f"{stopped_at[1]} at {stopped_at[0]}"})
                continue
            if outcome is None:
                outcome = FAILED
                missing[step].append({"sample": sample, "outcome": FAILED,
                                      "reason": "no outcome recorded: the step's task ended without a job result "
                                                "(an upstream task failed, or the task itself: see its log)"})
            if outcome != SUCCEEDED:
                stopped_at = (step, outcome)
        if stopped_at:
            first_bad[sample] = stopped_at
    for step, rows in missing.items():
        if rows:
            stage(step, rows)

    failed = {s: step for s, (step, outcome) in first_bad.items() if outcome == FAILED}
    excluded = {s: step for s, (step, outcome) in first_bad.items() if outcome == EXCLUDED}
    complete = layout.completed_samples(list_files(layout.results_prefix(lake_root, pipeline, version, project)), steps)
    publish = [s for s in planned["samples"] if s in complete]
    stopped = _stop_reason(params, failed, len(planned["todo"]))
    return {
        "publish": [] if stopped else publish,
        "failed": failed,
        "excluded": excluded,
        "stopped": stopped,
        "outcome_units": list(planned["todo"]),
        "job_units": [s for s in planned["todo"] if s in ran],
    }


def _stop_reason(params: dict[str, Any], failed: dict[str, str], run: int) -> str:
    if failed and params.get("on_sample_failure", "continue") == "stop":
        return f"on_sample_failure is stop and {len(failed)} sample(s) failed"
    limit = params.get("max_failed_fraction", DEFAULT_MAX_FAILED_FRACTION)
    if run and len(failed) / run > limit:
        return (f"{len(failed)} of {run} samples failed ({len(failed) / run:.0%}), over max_failed_fraction "
                f"{limit:g}: something systematic is wrong; nothing was published")
    return ""


def verdict(settled: dict[str, Any] | None) -> str:
    """The run's last word: raises AirflowFailException naming the failed samples (or the outcomes task's
    absence), else returns a summary line (excluded samples named, not failing the run)."""
    if settled is None:
        raise AirflowFailException("the run's outcomes were not settled (its outcomes task failed): see its log")
    failed, excluded = settled["failed"], settled["excluded"]
    lines = []
    if settled["stopped"]:
        lines.append(f"stopped before publishing: {settled['stopped']}")
    if failed:
        named = ", ".join(f"{s} (at {step})" for s, step in sorted(failed.items())[:50])
        lines.append(f"{len(failed)} sample(s) failed: {named}{' ...' if len(failed) > 50 else ''}; their "
                     "reasons and logs are in the sample_outcomes table")
    report = f"; run report: {settled['report']}" if settled.get("report") else ""
    if lines:
        raise AirflowFailException("\n".join(lines) + report)
    note = f"; {len(excluded)} excluded by QC gates: {', '.join(sorted(excluded)[:50])}" if excluded else ""
    return f"{len(settled['publish'])} sample(s) published{note}{report}"
