"""Which samples a pipeline run takes, by how the run was started (rnaseq and germline; the ``plan`` task):

- the run config names ``samples`` (any run: a manual trigger, a backfill's ``--dag-run-conf``): those, or,
  for ``"all approved"``, every approved sample of the project;
- a scheduled or backfilled run without ``samples`` in its run config: the project's samples approved in the
  run's data interval [start, end), from the registry's approval times. The Param's default ``"all approved"``
  thus means "approved in this interval" for these runs: a daily run takes the day's approvals, a backfill of a
  date range the approvals of each day in its own run;
- a run started by asset events (geo_ingestion's review; ``approval_routing``): the samples the events name.
  The run takes one project: the run config's (the Param's default) if an event names it, else the first
  by name; the samples of other projects are reported and left to that project's run (its scheduled run of
  their approval day takes them, as does any manual or backfilled run);
- any other run (a manual trigger without ``samples``): the Param's default, every approved sample.

A scheduled, backfilled or asset-triggered run may find no sample: it then plans nothing and succeeds.
The plan's log line names the rule it applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from approval_routing import approved_by_events
from pipeline_plan import ALL_APPROVED, RunConfigError

INTERVAL_RUNS = ("scheduled", "backfill")
ASSET_RUNS = ("asset_triggered",)


@dataclass(frozen=True)
class Selection:
    project: str
    samples: list[str] | str  # a list, or ALL_APPROVED for the registry's approved samples of the project
    rule: str  # what the run took, in words (the plan's log line)
    may_be_empty: bool = False  # an interval or asset run with nothing to do succeeds
    elsewhere: dict[str, list[str]] = field(default_factory=dict)  # asset runs: other projects' samples


def select(*, pipeline: str, run_type: str | None, conf: Mapping[str, Any] | None, params: Mapping[str, Any],
           interval: tuple[datetime | None, datetime | None], events: Iterable[Mapping[str, Any]],
           approved_between: Callable[[str, datetime, datetime], list[str]]) -> Selection:
    """The samples of this run (see the module's doc); RunConfigError for what cannot run."""
    project, samples = params.get("project"), params.get("samples")
    # the task's dag_run carries the Execution API's DagRunType, whose str() is "DagRunType.SCHEDULED": its value
    run_type = str(getattr(run_type, "value", run_type) or "manual")
    if "samples" in (conf or {}):
        rule = ("every approved sample of the project (run config)" if samples == ALL_APPROVED
                else "the samples of the run config")
        return Selection(project, samples, rule)
    if run_type in INTERVAL_RUNS:
        start, end = interval
        if start is None or end is None or end <= start:
            raise RunConfigError(f"run config refused:\n - a {run_type} run needs a data interval, got "
                                 f"[{start}, {end})")
        chosen = approved_between(project, start, end)
        return Selection(project, chosen, f"approved in [{start.isoformat()}, {end.isoformat()}) ({run_type} run, "
                                          "no samples in its run config)", may_be_empty=True)
    if run_type in ASSET_RUNS:
        by_project, problems = approved_by_events(events, pipeline)
        if problems:
            raise RunConfigError("asset events refused:\n - " + "\n - ".join(problems))
        if not by_project:
            return Selection(project, [], "approved in geo_ingestion's review (asset events): none for "
                                          f"{pipeline}", may_be_empty=True)
        chosen = project if project in by_project else sorted(by_project)[0]
        elsewhere = {p: s for p, s in by_project.items() if p != chosen}
        return Selection(chosen, by_project[chosen], "approved in geo_ingestion's review (asset events)",
                         may_be_empty=True, elsewhere=elsewhere)
    return Selection(project, samples, "every approved sample of the project (the Param's default)"
                     if samples == ALL_APPROVED else "the samples of the Param's default")


def plan_this_run(spec: Any, params: Mapping[str, Any], dag_run: Any,
                  interval: tuple[datetime | None, datetime | None]) -> dict[str, Any]:
    """The ``plan`` task of rnaseq and germline: select this run's samples, then plan them
    (``pipeline_plan.plan_for_airflow``); an interval or asset run with no sample plans nothing."""
    from hooks import backend
    from pipeline_plan import plan_for_airflow
    from platform_settings import PlatformSettings

    settings = PlatformSettings.resolve()
    events = [{"uri": event.asset.uri, "extra": dict(event.extra or {})}
              for event in getattr(dag_run, "consumed_asset_events", None) or []]
    chosen = select(pipeline=spec.name, run_type=getattr(dag_run, "run_type", None), conf=dag_run.conf,
                    params=params, interval=interval, events=events,
                    # the registry only when the selection needs it: a run given its samples needs none
                    approved_between=lambda *a, **k: backend.sample_registry(settings).approved_between(*a, **k))
    for other, samples in chosen.elsewhere.items():
        print(f"{spec.name}: asset events also named project {other!r}: {samples[:20]}"
              f"{' ...' if len(samples) > 20 else ''}; not run here (one project per run): a run of project "
              f"{other!r} takes them")
    if chosen.may_be_empty and not chosen.samples:
        print(f"{spec.name}: samples {chosen.rule}: none; nothing to run")
        return {"project": chosen.project, "samples": [], "todo": [], "done": [], "units": [], "fan_out": "mapped",
                "input_prefix": "", "index_needed": False, "reads_manifest": "", "inputs": "no samples"}
    return plan_for_airflow(spec, {**params, "project": chosen.project, "samples": chosen.samples},
                            dag_run.run_id, rule=chosen.rule)
