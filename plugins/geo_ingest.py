"""GEO/SRA ingestion's decisions, outside Airflow so they are tested directly: the date window of a run, which
samples to register, download and QC, and what each job's outcome does to the sample registry.

A run covers the whole UTC days of its data interval. Everything it does is keyed by accession and guarded by
the registry's conditional transitions, so running a day again (a retry, a rerun, a backfill) registers,
downloads and QCs nothing twice and never undoes a review:

    search     series published in the window, their samples and SRA runs (E-utilities); series earlier runs
               could not resolve are looked up again with them
    register   new paired-end and single-end samples -> discovered (with their layout); each sample's record
               (runs, series, layout) for its jobs; a sequencing series none of whose samples has a public SRA
               run -> unresolved (with the reason) in the registry, looked up again by later runs; a run whose
               series all resolved to nothing warns, and fails if one of them had samples
    plan       samples not yet QC'd -> downloading; units of up to ARRAY_CHUNK samples for array jobs
    outcomes   download done -> downloaded; QC verdict -> qc_passed / qc_failed; which series to report on
               and which to put to a reviewer (those with samples that passed QC and await review)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

from genomics_steps.names import ARRAY_CHUNK, GSE, GSM, LABEL, problems_in
from hooks.eutils import GeoSeries, check_query
from hooks.sample_registry import SampleRegistry
from pipeline_plan import RunConfigError

DEFAULT_QUERY = '"expression profiling by high throughput sequencing"[DataSet Type] AND "Homo sapiens"[Organism]'
MAX_SERIES = 2000
MAX_LOOKUPS = 30  # runs that look an unresolved series up again; then it waits for a person (registry record)
UNDECIDED = ("discovered", "downloading", "downloaded")
LAYOUTS = ("PAIRED", "SINGLE")  # SRA library layouts ingested: R1 and R2, or R1 only


class IngestConfigError(RunConfigError):
    """The run config or the data interval cannot run (failed at once, without retries)."""


def ingestion_params() -> dict[str, Any]:
    from airflow.sdk import Param

    return {
        "project": Param("geo", type="string", pattern=LABEL.schema(), title="Project",
                         description="Registry project and lake folder (raw/<project>/) the samples go to."),
        "query": Param(DEFAULT_QUERY, type="string", minLength=1, maxLength=500, title="GEO search term",
                       description="Entrez term for GEO DataSets; the run adds its date window and "
                                   "'gse[Entry Type]'."),
        "max_series": Param(200, type="integer", minimum=1, maximum=MAX_SERIES, title="Series per run",
                            description="At most this many series per run (oldest accession first)."),
        "min_reads": Param(1000, type="integer", minimum=1, title="QC: minimum reads",
                           description="Reads that pass fastp's filters; fewer fails QC. Raise it for "
                                       "production (millions for RNA-seq)."),
        "min_q30_rate": Param(0.8, type="number", minimum=0, maximum=1, title="QC: minimum Q30 rate",
                              description="Fraction of bases at Q30 or better; lower fails QC."),
        "pipeline_version": Param("1.0", type="string", pattern=LABEL.schema(), title="Ingestion version",
                                  description="Download and QC outputs are keyed by it."),
    }


def window(start: datetime | None, end: datetime | None) -> tuple[date, date]:
    """The whole UTC days a data interval [start, end) touches: (first day, last day), both inclusive."""
    if start is None or end is None:
        raise IngestConfigError("geo_ingestion needs a data interval: run it on its schedule, by backfill, or "
                                "trigger it with a logical date")
    if end <= start:
        raise IngestConfigError(f"empty data interval [{start}, {end})")
    first, last = start.date(), (end - timedelta(microseconds=1)).date()
    if (last - first).days > 366:
        raise IngestConfigError(f"data interval of {(last - first).days + 1} days: backfill a long range as "
                                "daily runs instead")
    return first, last


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    """Everything the tasks use from the run config, checked (the trigger form checks the same schemas)."""
    problems = []
    problems += problems_in([(LABEL, name, params.get(name)) for name in ("project", "pipeline_version")])
    try:
        check_query(params.get("query"))
    except ValueError as exc:
        problems.append(str(exc))
    if not (isinstance(params.get("max_series"), int) and 1 <= params["max_series"] <= MAX_SERIES):
        problems.append(f"max_series must be an integer from 1 to {MAX_SERIES}")
    if not (isinstance(params.get("min_reads"), int) and params["min_reads"] >= 1):
        problems.append("min_reads must be a positive integer")
    if not (isinstance(params.get("min_q30_rate"), (int, float)) and 0 <= params["min_q30_rate"] <= 1):
        problems.append("min_q30_rate must be a number from 0 to 1")
    if problems:
        raise IngestConfigError("run config refused:\n - " + "\n - ".join(problems))
    return dict(params)


def retry_series(registry: SampleRegistry, project: str) -> tuple[list[GeoSeries], list[str]]:
    """The unresolved series of earlier runs to look up again (fewer than MAX_LOOKUPS tries so far), and every
    unresolved series' accession (a series that resolves now has its record removed)."""
    records = registry.unresolved_series(project)
    retry = [GeoSeries.from_dict(r["record"]) for r in records if r["attempts"] < MAX_LOOKUPS]
    return retry, [r["series"] for r in records]


def _why_unresolved(series: GeoSeries) -> str:
    return (f"none of its {len(series.samples)} sample(s) named by an SRA experiment with a public run "
            f"(looked up by {' OR '.join(series.sra_terms())})")


def register(registry: SampleRegistry, project: str, series: list[dict[str, Any]],
             write_record: Callable[[str, dict[str, Any]], None], *, retried: list[str] = (),
             unresolved_before: list[str] = ()) -> dict[str, Any]:
    """Register the paired-end and single-end samples (new ones as discovered, with their layout; known ones
    untouched) and write each sample's record for its jobs; record a sequencing series none of whose samples
    resolved to a public SRA run as unresolved (and forget a series of ``unresolved_before`` that resolved
    now). ``retried``: the series of ``series`` that earlier runs found (not this run's window). Returns the
    samples by series, what was skipped and why, the unresolved series, and the run's ``warning`` and
    ``failure``: when every series the window found resolved to nothing, a warning, and a failure if one of
    them had samples."""
    by_series: dict[str, list[str]] = {}
    skipped: list[str] = []
    unresolved: dict[str, str] = {}
    not_looked_up: dict[str, str] = {}
    resolved_in_window: list[str] = []
    new = 0
    for s in series:
        if not GSE.ok(s["gse"]):
            continue
        found = GeoSeries.from_dict(s)
        if not found.sequencing:
            not_looked_up[s["gse"]] = f"not sequencing ({found.series_type or 'no series type'}): no SRA runs"
            continue
        if not found.samples:
            not_looked_up[s["gse"]] = "GEO lists no samples for it"
            continue
        if not any(sample["runs"] for sample in s["samples"]):
            unresolved[s["gse"]] = _why_unresolved(found)
            registry.unresolved(project, s["gse"], unresolved[s["gse"]], s)
            continue
        if s["gse"] not in retried:
            resolved_in_window.append(s["gse"])
        if s["gse"] in unresolved_before:
            registry.resolved(project, s["gse"])
        kept = []
        for sample in s["samples"]:
            if not GSM.ok(sample["gsm"]):
                continue
            if sample["layout"] not in LAYOUTS or not sample["runs"]:
                skipped.append(f"{sample['gsm']} ({s['gse']}): "
                               + ("no public SRA run" if not sample["runs"] else f"library layout "
                                  f"{sample['layout']!r}; the pipelines take PAIRED or SINGLE"))
                continue
            record = {"sample_id": sample["gsm"], "series": s["gse"], "runs": sample["runs"],
                      "layout": sample["layout"], "organism": sample["organism"], "published": s["published"]}
            write_record(sample["gsm"], record)  # the same content every time: rewriting is harmless
            # library_strategy decides which pipelines the sample starts once approved (approval_routing)
            new += registry.register(project, sample["gsm"], series=s["gse"], title=sample["title"],
                                     runs=sample["runs"], organism=sample["organism"], published=s["published"],
                                     series_title=s["title"], bases=sample["bases"], layout=sample["layout"],
                                     library_strategy=sample.get("strategy", ""))
            kept.append(sample["gsm"])
        if kept:
            by_series[s["gse"]] = kept
    window = [s["gse"] for s in series if GSE.ok(s["gse"]) and s["gse"] not in retried]
    warning = failure = None
    if window and not resolved_in_window:
        reasons = {**not_looked_up, **unresolved}
        warning = (f"none of the {len(window)} series this run found resolved to an SRA run: "
                   + "; ".join(f"{gse}: {reasons[gse]}" for gse in window if gse in reasons))
        had_samples = [gse for gse in window if gse in unresolved]
        if had_samples:
            failure = (f"{len(had_samples)} series had samples but none resolved to a public SRA run: "
                       + ", ".join(had_samples) + ". They are recorded in the sample registry as unresolved "
                       "(with the reason) and looked up again by the next runs.")
    return {"by_series": by_series, "skipped": skipped, "new": new, "unresolved": unresolved,
            "not_looked_up": not_looked_up, "warning": warning, "failure": failure}


def plan_work(registry: SampleRegistry, project: str, by_series: dict[str, list[str]]) -> dict[str, Any]:
    """The window's samples still to download or QC, marked downloading, in units for array jobs."""
    status = {s["sample_id"]: s["status"] for s in registry.samples(project)}
    todo = sorted(g for samples in by_series.values() for g in samples if status.get(g) in UNDECIDED)
    for gsm in todo:
        if status[gsm] != "downloaded":
            registry.transition(project, gsm, "downloading")
    return {"todo": todo, "units": [todo[i : i + ARRAY_CHUNK] for i in range(0, len(todo), ARRAY_CHUNK)]}


def record_outcomes(registry: SampleRegistry, project: str, by_series: dict[str, list[str]], todo: list[str],
                    read_metrics: Callable[[str, str], dict[str, Any] | None]) -> dict[str, Any]:
    """Move each sample of ``todo`` as its jobs' metrics.json say (``read_metrics(sample, step)``, None if the
    step did not finish). Returns the samples QC'd now, the series to report on and the series to review."""
    qc_done, failed = [], []
    for gsm in todo:
        downloaded = read_metrics(gsm, "download")
        if downloaded is None:
            failed.append(gsm)
            continue
        registry.transition(project, gsm, "downloaded", downloaded_runs=downloaded["metrics"].get("runs"))
        qc = read_metrics(gsm, "qc")
        if qc is None:
            failed.append(gsm)
            continue
        m = qc["metrics"]
        registry.transition(project, gsm, m["verdict"], reads=m["reads_after"], q30_rate=m["q30_rate"],
                            gc_content=m["gc_content"], qc_reason=m["reason"])
        qc_done.append(gsm)
    status = {s["sample_id"]: s["status"] for s in registry.samples(project)}
    report = sorted(gse for gse, samples in by_series.items() if set(samples) & set(qc_done))
    review = sorted(gse for gse, samples in by_series.items() if any(status.get(g) == "qc_passed" for g in samples))
    return {"qc_done": qc_done, "incomplete": failed,
            "reports": [{"series": gse, "samples": by_series[gse]} for gse in report],
            "review": review}


def series_summary(registry: SampleRegistry, project: str, series: str) -> list[dict[str, Any]]:
    """The samples of one series in the registry (for the reviewer), by sample id."""
    return [s for s in registry.samples(project) if s.get("series") == series]


def review_body(series: str, samples: list[dict[str, Any]], report_uri: str) -> str:
    """The reviewer's page: where the MultiQC report is, and each sample's QC figures (Markdown)."""
    title = next((s.get("series_title") for s in samples if s.get("series_title")), "")
    lines = [f"**{series}**: {title}", "", f"MultiQC report: `{report_uri}`", "",
             "| sample | status | reads | Q30 rate | note |", "|---|---|---|---|---|"]
    for s in samples:
        q30 = s.get("q30_rate")
        lines.append(f"| {s['sample_id']} | {s['status']} | {s.get('reads', '')} | "
                     f"{'' if q30 is None else f'{q30:.3f}'} | {s.get('qc_reason', '')} |")
    lines += ["", "**Approve** makes the samples that passed QC eligible for the pipelines "
                  '(`samples: "all approved"`); **Reject** marks them rejected. Say why in *reason*. '
                  "Samples that failed QC stay qc_failed either way."]
    return "\n".join(lines)


def eutils_client(settings: Any, **kwargs: Any) -> Any:
    """The E-utilities client of this deployment: NCBI with the ``ncbi_conn_id`` connection's email and API
    key, or, on the local backend, the mirror directory standing in for NCBI (same client, same limits)."""
    from hooks.eutils import EutilsClient, HttpTransport
    from hooks.ncbi_mirror import MirrorTransport

    email, api_key, tool = settings.ncbi_email, None, "genomics-airflow"
    try:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(settings.ncbi_conn_id)
    except Exception:  # no such connection: the ncbi_email setting and no API key (3 requests/s)
        conn = None
    if conn is not None:
        email = conn.login or email
        api_key = conn.password or None
        tool = (conn.extra_dejson or {}).get("tool", tool)
    mirror = settings.ncbi_mirror_path
    if mirror is not None:
        return EutilsClient(MirrorTransport(mirror), tool=tool, email=email or "local-mirror@localhost",
                            api_key=api_key, **kwargs)
    return EutilsClient(HttpTransport(), tool=tool, email=email or "", api_key=api_key, **kwargs)


def read_step_metrics(settings: Any, params: dict[str, Any]) -> Callable[[str, str], dict[str, Any] | None]:
    """``(sample, step) -> metrics.json`` of that step of this ingestion version, or None if it did not finish."""
    from genomics_steps import layout

    from hooks import lake

    def read(sample: str, step: str) -> dict[str, Any] | None:
        uri = layout.step_prefix(settings.lake_root, "geo_ingestion", params["pipeline_version"],
                                 params["project"], sample, step) + layout.METRICS
        try:
            return json.loads(lake.read_head(settings, uri, 1024 * 1024))
        except FileNotFoundError:
            return None

    return read
