"""SeriesReviewOperator: a person approves or rejects a GEO series' samples after reading its QC report.

A human-in-the-loop task (the standard provider's HITLOperator): on Airflow 3.3 it waits in the
``awaiting_input`` state, holding no worker, pool or triggerer slot, until someone answers in the UI's
Required Actions (or the HITL REST API). The page shows where the series' MultiQC report is and each sample's
QC figures. The answer moves the series' samples that passed QC to approved or rejected in the sample registry,
with who answered, when, and the reason they gave.

An approval starts the pipelines: the task's outlet is the asset alias ``approved_samples``, and an approved
series adds one event per pipeline its samples go to (``approval_routing``: the project's ``pipeline_routes``
setting, else each sample's SRA library strategy), its extra naming the project, the series and the samples.
A rejection, or an approval of samples no pipeline takes, emits none.

It asks only when there is something to decide: a series whose samples were all decided already (an earlier
run's review, a rerun, a backfill) is not put to anyone again, and the registry's conditional transitions mean
a second answer for the same series changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator

from platform_settings import PlatformSettings

APPROVE, REJECT = "Approve", "Reject"


class SeriesReviewOperator(HITLOperator):
    """Ask for a decision on one series of one project.

    :param series: the GEO series accession (GSE...). Templated; map over it for one review per series.
    :param project: the registry project. Templated.
    :param response_timeout: how long to wait for an answer; then the task fails and the samples stay
        qc_passed; a rerun of that day asks again. Default 14 days.
    """

    template_fields: Sequence[str] = ("subject", "body", "series", "project")

    def __init__(self, *, series: str, project: str, response_timeout: timedelta | None = timedelta(days=14),
                 **kwargs: Any) -> None:
        from airflow.sdk import Param
        from airflow.sdk.definitions.param import ParamsDict

        kwargs.setdefault("subject", "QC review of a GEO series")
        # The form's one field. A mapped task is built again with the params it was given (the DAG's
        # included, which HITLOperator leaves out by their source): add the field to those.
        params = kwargs.pop("params", None)
        params = params if isinstance(params, ParamsDict) else ParamsDict(params or {})
        # Optional ("null" in the type): the form would otherwise require a reason before Approve is possible.
        params["reason"] = Param(None, type=["null", "string"], maxLength=2000, title="Reason", source="task",
                                 description="Why (kept with the samples in the registry).")
        super().__init__(options=[APPROVE, REJECT], multiple=False, response_timeout=response_timeout,
                         params=params, **kwargs)
        self.series = series
        self.project = project

    def _registry_and_samples(self) -> tuple[Any, PlatformSettings, list[dict[str, Any]]]:
        from geo_ingest import series_summary
        from hooks import backend

        settings = PlatformSettings.resolve()
        registry = backend.sample_registry(settings)
        return registry, settings, series_summary(registry, self.project, self.series)

    def execute(self, context: Any) -> Any:
        from genomics_steps import layout

        from geo_ingest import review_body

        _, settings, samples = self._registry_and_samples()
        waiting = [s for s in samples if s["status"] == "qc_passed"]
        if not waiting:
            self.log.info("%s: no sample awaits review (%s); not asking", self.series,
                          ", ".join(f"{s['sample_id']}={s['status']}" for s in samples) or "none registered")
            return {"series": self.series, "asked": False}
        failed = sum(s["status"] == "qc_failed" for s in samples)
        report = layout.series_report_prefix(settings.lake_root, self.project, self.series) + "multiqc_report.html"
        self.subject = (f"QC review {self.series} ({self.project}): {len(waiting)} sample(s) passed QC"
                        + (f", {failed} failed" if failed else ""))
        self.body = review_body(self.series, samples, report)
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        answer = super().execute_complete(context, event)
        choice = answer["chosen_options"][0]
        user = answer.get("responded_by_user") or {}
        reason = (answer.get("params_input") or {}).get("reason") or ""
        status = "approved" if choice == APPROVE else "rejected"
        registry, _, samples = self._registry_and_samples()
        moved = [s["sample_id"] for s in samples if s["status"] == "qc_passed" and registry.transition(
            self.project, s["sample_id"], status, reviewed_by=user.get("name"), reviewed_by_id=user.get("id"),
            reviewed_at=str(answer.get("responded_at")), review_reason=reason)]
        self.log.info("%s: %s by %s (%s); %d sample(s) %s: %s", self.series, choice, user.get("name"),
                      reason or "no reason given", len(moved), status, moved)
        if status == "approved" and moved:
            self._start_pipelines(context, [s for s in samples if s["sample_id"] in moved])
        return {"series": self.series, "asked": True, "decision": status, "by": user.get("name"),
                "reason": reason, "samples": moved}

    def _start_pipelines(self, context: Any, approved: list[dict[str, Any]]) -> None:
        """One asset event per pipeline the approved samples go to (through the alias outlet)."""
        from approval_routing import approval_events, approvals_alias, approved_asset

        events, unrouted = approval_events(self.project, self.series, approved,
                                           PlatformSettings.resolve().pipeline_routes)
        for pipeline, extra in events.items():
            context["outlet_events"][approvals_alias()].add(approved_asset(pipeline), extra=extra)
            self.log.info("%s: %d approved sample(s) start %s", self.series, len(extra["samples"]), pipeline)
        if unrouted:
            self.log.warning("%s: %d approved sample(s) go to no pipeline (library strategy not RNA-Seq, WGS or "
                             "WXS, and no pipeline_routes entry for project %r): %s", self.series, len(unrouted),
                             self.project, unrouted)
