"""Which pipelines an approved sample goes to, and the Airflow asset events that start them.

geo_ingestion's review emits, per approved series, one asset event per pipeline its samples go to, through the
asset alias ``approved_samples``: the event is on the asset ``approved_samples_<pipeline>``
(``genomics://approved-samples/<pipeline>``), its extra names the project, the series and the samples. rnaseq
and germline are scheduled on their asset as well as daily, and an asset-triggered run processes the samples its
events name (``run_samples``). A rejected series, or one whose samples go to no pipeline, emits nothing.

Routing, per sample: the project's entry in the platform setting ``pipeline_routes`` (project -> list of
pipelines, ``[]`` for none) when there is one; otherwise the sample's SRA library strategy, which ingestion
records in the registry (``library_strategy``): RNA-Seq -> rnaseq, WGS and WXS (whole exome) -> germline, any
other strategy (or none recorded) -> no pipeline.

No Airflow import at module level: platform_settings checks the setting with ``route_problems``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from genomics_steps.names import GSE, LABEL, SAMPLE_ID, bad_items

PIPELINES = ("rnaseq", "germline")
STRATEGY_PIPELINES: dict[str, tuple[str, ...]] = {"RNA-Seq": ("rnaseq",), "WGS": ("germline",),
                                                  "WXS": ("germline",)}
ALIAS_NAME = "approved_samples"


def asset_uri(pipeline: str) -> str:
    return f"genomics://approved-samples/{pipeline}"


def approved_asset(pipeline: str) -> Any:
    """The asset whose events start ``pipeline`` on newly approved samples."""
    from airflow.sdk import Asset

    return Asset(name=f"approved_samples_{pipeline}", uri=asset_uri(pipeline))


def approvals_alias() -> Any:
    """The outlet of the review step: it adds events for the assets of the pipelines the samples go to."""
    from airflow.sdk import AssetAlias

    return AssetAlias(ALIAS_NAME)


def route_problems(routes: Any) -> list[str]:
    """What is wrong with a ``pipeline_routes`` setting (project -> list of pipeline names)."""
    if not isinstance(routes, dict):
        return [f"pipeline_routes must be an object of project -> list of pipelines, got {routes!r}"]
    problems = []
    for project, pipelines in routes.items():
        if not LABEL.ok(project):
            problems.append(f"pipeline_routes: {LABEL.problem('project', project)}")
        if not isinstance(pipelines, list) or any(p not in PIPELINES for p in pipelines):
            problems.append(f"pipeline_routes[{project!r}] must be a list of {list(PIPELINES)}, got {pipelines!r}")
    return problems


def pipelines_for(project: str, strategy: str | None, routes: Mapping[str, list[str]]) -> tuple[str, ...]:
    """The pipelines a sample of ``project`` with SRA library ``strategy`` goes to (see the module's doc)."""
    if project in routes:
        return tuple(routes[project])
    return STRATEGY_PIPELINES.get(strategy or "", ())


def approval_events(project: str, series: str, approved: list[dict[str, Any]],
                    routes: Mapping[str, list[str]]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The asset events of one approved batch: ``{pipeline: extra}`` for every pipeline some of ``approved``
    (registry rows) go to, and the samples that go to none."""
    by_pipeline: dict[str, list[str]] = {}
    unrouted = []
    for sample in approved:
        pipelines = pipelines_for(project, sample.get("library_strategy"), routes)
        if not pipelines:
            unrouted.append(sample["sample_id"])
        for pipeline in pipelines:
            by_pipeline.setdefault(pipeline, []).append(sample["sample_id"])
    events = {pipeline: {"project": project, "series": series, "samples": sorted(samples)}
              for pipeline, samples in sorted(by_pipeline.items())}
    return events, sorted(unrouted)


def approved_by_events(events: Iterable[Mapping[str, Any]], pipeline: str) -> tuple[dict[str, list[str]], list[str]]:
    """The samples the events on ``pipeline``'s asset name, by project (each ``{"uri", "extra"}``), and the
    problems of extras that do not hold a project and sample ids (an event can be posted through the REST API
    by anyone with the right; its values are checked like run config)."""
    by_project: dict[str, set[str]] = {}
    problems = []
    for event in events:
        if event.get("uri") != asset_uri(pipeline):
            continue
        extra = event.get("extra") or {}
        project, samples = extra.get("project"), extra.get("samples")
        bad = [LABEL.problem("asset event project", project)] if not LABEL.ok(project) else []
        if not isinstance(samples, list):
            bad.append(f"asset event samples must be a list of sample ids, got {samples!r}")
        else:
            bad += [b for b in [bad_items(SAMPLE_ID, "asset event samples", samples)] if b]
        series = extra.get("series")
        if series is not None and not GSE.ok(series):
            bad.append(GSE.problem("asset event series", series))
        if bad:
            problems += bad
            continue
        by_project.setdefault(project, set()).update(samples)
    return {p: sorted(s) for p, s in sorted(by_project.items())}, problems
