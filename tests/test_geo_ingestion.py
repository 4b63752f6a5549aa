"""GEO/SRA ingestion: the E-utilities client (rate limits, retries, history paging, parsing recorded responses),
the date windows, the sample registry's transitions on SQLite and DynamoDB, and the DAG end to end on the local
stand-in for NCBI: a backfill of three days run twice, and the review gate answered through Airflow's REST API."""

from __future__ import annotations

import json
import threading
import time
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from geo_ingest import (
    MAX_LOOKUPS,
    IngestConfigError,
    check_params,
    plan_work,
    record_outcomes,
    register,
    retry_series,
    review_body,
    window,
)
from hooks.eutils import (
    EutilsClient,
    EutilsError,
    RateLimiter,
    discover,
    parse_gds_series,
    parse_sra_experiment,
)
from hooks.ncbi_mirror import MirrorTransport
from hooks.sample_registry import DynamoDbSampleRegistry, SqliteSampleRegistry
from tests.conftest import REGION, use_settings

DATA = Path(__file__).parent / "data" / "eutils"
REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real-data" / "eutils"  # read-only, beside the repo
UTC = timezone.utc


def _recorded(name: str) -> bytes:
    return (DATA / name).read_bytes()


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class RecordedNcbi:
    """Serves the recorded responses, checking each request the way NCBI would need it."""

    def __init__(self, clock: FakeClock | None = None):
        self.requests: list[tuple[float, str, dict[str, str]]] = []
        self.clock = clock

    def __call__(self, utility, params):
        self.requests.append((self.clock() if self.clock else 0.0, utility, dict(params)))
        assert params["tool"] and "@" in params["email"] and params["retmode"] == "json"
        if utility == "esearch":
            assert params["usehistory"] == "y"
            return 200, {}, _recorded(f"esearch_{params['db']}.json")
        assert utility == "esummary" and params["WebEnv"].startswith("MCID_") and params["query_key"] == "1"
        if params["db"] == "gds":
            return 200, {}, _recorded("esummary_gds_page1.json" if params["retstart"] == "0"
                                      else "esummary_gds_page2.json")
        document = json.loads(_recorded("esummary_sra.json"))  # one recording, served a page at a time
        start, size = int(params["retstart"]), int(params["retmax"])
        uids = document["result"]["uids"][start : start + size]
        page = {"uids": uids, **{uid: document["result"][uid] for uid in uids}}
        return 200, {}, json.dumps({"header": document["header"], "result": page}).encode()


# --- E-utilities client ---------------------------------------------------------------------------------------
def test_recorded_responses_parse_into_series_samples_and_runs_through_the_history_server():
    ncbi = RecordedNcbi()
    client = EutilsClient(ncbi, tool="genomics-airflow", email="data@example.org", sleep=lambda s: None)
    series, total = discover(client, '"Homo sapiens"[Organism]', date(2026, 11, 16), date(2026, 11, 16), page_size=2)

    assert total == 3 and [s.gse for s in series] == ["GSE271001", "GSE271002"], "the GDS entry is not a series"
    airway = {s.gsm: s for s in series[0].samples}
    assert airway["GSM8100001"].runs == ["SRR31000011", "SRR31000012"], "two runs, found by the experiment name"
    assert airway["GSM8100001"].layout == "PAIRED" and airway["GSM8100001"].bases == 15_600_000_000
    assert airway["GSM8100002"].layout == "SINGLE"
    assert airway["GSM8100003"].runs == ["SRR31000031"], "the controlled-access run is left out"
    organoid = {s.gsm: s for s in series[1].samples}
    assert organoid["GSM8100011"].runs == [], "no SRA experiment: no runs"
    assert series[0].published == "2026-11-16" and series[0].sra_studies == ["SRP540001"]

    calls = [(u, p["db"], p.get("retstart")) for _, u, p in ncbi.requests]
    assert calls == [("esearch", "gds", None), ("esummary", "gds", "0"), ("esummary", "gds", "2"),
                     ("esearch", "sra", None), ("esummary", "sra", "0"), ("esummary", "sra", "2")], \
        "paged by retstart through the history server, no id lists"
    gds_search = ncbi.requests[0][2]
    assert (gds_search["mindate"], gds_search["maxdate"], gds_search["datetype"]) == ("2026/11/16", "2026/11/16", "pdat")
    assert gds_search["term"] == '("Homo sapiens"[Organism]) AND gse[Entry Type]'
    assert ncbi.requests[3][2]["term"] == ("PRJNA1100001[BioProject] OR PRJNA1100002[BioProject] OR "
                                           "SRP540001[Accession] OR SRP540002[Accession]"), \
        "one search over every series' BioProject and SRA study"


@pytest.mark.parametrize("api_key, rate", [(None, 3), ("k3y", 10)])
def test_requests_are_spaced_to_ncbis_rate_limit(api_key, rate):
    clock = FakeClock()
    ncbi = RecordedNcbi(clock)
    client = EutilsClient(ncbi, tool="t", email="a@b.org", api_key=api_key,
                          limiter=RateLimiter(rate, clock=clock, sleep=clock.sleep))
    for _ in range(4):
        discover(client, "rna", date(2026, 11, 16), date(2026, 11, 16), page_size=2)
    times = [t for t, _, _ in ncbi.requests]
    assert len(times) == 24
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 1 / rate - 1e-9, "never faster than the limit"
    assert max(len([t for t in times if s <= t < s + 1]) for s in times) <= rate, "at most `rate` in any second"
    assert all((p.get("api_key") == api_key) for _, _, p in ncbi.requests)


def test_throttling_and_server_errors_are_retried_with_backoff_and_other_errors_are_not():
    answers = [(429, {"Retry-After": "2"}, _recorded("rate_limited.json")), (503, {}, b"busy"),
               (200, {}, _recorded("rate_limited.json")), (200, {}, _recorded("esearch_gds.json"))]
    sleeps: list[float] = []

    def transport(utility, params):
        return answers.pop(0)

    client = EutilsClient(transport, tool="t", email="a@b.org", sleep=sleeps.append,
                          limiter=RateLimiter(1000, sleep=lambda s: None))
    found = client.esearch("gds", "rna")
    assert found["count"] == 3 and client.requests == 4
    assert sleeps[0] == 2.0, "Retry-After is honoured"
    assert 1.0 <= sleeps[1] <= 2.0 and 2.0 <= sleeps[2] <= 4.0, "then exponential backoff with jitter"

    def bad_request(utility, params):
        return 400, {}, b'{"error": "Invalid query"}'

    client = EutilsClient(bad_request, tool="t", email="a@b.org", sleep=sleeps.append,
                          limiter=RateLimiter(1000, sleep=lambda s: None))
    with pytest.raises(EutilsError, match="HTTP 400"):
        client.esearch("gds", "rna")
    assert client.requests == 1

    def always_busy(utility, params):
        raise ConnectionError("reset by peer")

    client = EutilsClient(always_busy, tool="t", email="a@b.org", max_attempts=3, sleep=lambda s: None,
                          limiter=RateLimiter(1000, sleep=lambda s: None))
    with pytest.raises(EutilsError, match="after 3 attempts; last: connection failed: reset by peer"):
        client.esearch("gds", "rna")


def test_a_client_without_a_contact_email_is_refused():
    with pytest.raises(ValueError, match="tool name and a contact email"):
        EutilsClient(RecordedNcbi(), tool="genomics-airflow", email="")


def test_an_experiment_naming_no_geo_sample_is_ignored():
    doc = json.loads(_recorded("esummary_sra.json"))["result"]["31000001"]
    assert parse_sra_experiment({**doc, "expxml": doc["expxml"].replace("GSM8100001", "sample 1")}) is None


# --- real series without SRA relations (GEO since 2024: "extrelations": [], only "bioproject") -------------------
def _real_documents(path: Path) -> list[dict]:
    result = json.loads(path.read_text())["result"]
    return [result[uid] for uid in result["uids"]]


def _mirror(tmp_path: Path, gds: list[dict], sra: list[dict]) -> Path:
    """A local stand-in for NCBI holding these esummary documents."""
    for folder, docs in (("gds", gds), ("sra", sra)):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        for doc in docs:
            (tmp_path / folder / f"{doc['uid']}.json").write_text(json.dumps(doc))
    return tmp_path


def _client(transport) -> EutilsClient:
    return EutilsClient(transport, tool="t", email="a@b.org", sleep=lambda s: None,
                        limiter=RateLimiter(1000, sleep=lambda s: None))


def test_a_real_series_without_sra_relations_finds_its_runs_through_its_bioproject(tmp_path):
    gds = _real_documents(DATA / "real_esummary_gds_GSE236084.json")
    assert gds[0]["extrelations"] == [] and gds[0]["bioproject"] == "PRJNA988806", "the real shape"
    mirror = MirrorTransport(_mirror(tmp_path, gds, _real_documents(DATA / "real_esummary_sra_PRJNA988806.json")))
    series, total = discover(_client(mirror), "rna", date(2024, 10, 4), date(2024, 10, 4))

    assert total == 1 and series[0].gse == "GSE236084" and series[0].bioproject == "PRJNA988806"
    runs = {s.gsm: (s.runs, s.layout, s.organism) for s in series[0].samples}
    assert runs == {"GSM7518065": (["SRR25056229"], "PAIRED", "Mus musculus"),
                    "GSM7518066": (["SRR25056228"], "PAIRED", "Mus musculus"),
                    "GSM7518067": (["SRR25056227"], "PAIRED", "Mus musculus"),
                    "GSM7518068": (["SRR25056226"], "PAIRED", "Mus musculus"),
                    "GSM7518069": (["SRR25056225"], "PAIRED", "Mus musculus")}
    assert {s.gsm: s.bases for s in series[0].samples}["GSM7518069"] == 39_584_152_741
    assert [p["term"] for u, p in mirror.calls if u == "esearch" and p["db"] == "sra"] == ["PRJNA988806[BioProject]"]


def test_the_recorded_series_are_looked_up_by_bioproject_and_study_and_array_series_not_at_all():
    recorded = _real_documents(REAL / "esummary_gds_recorded_2026-10-09_trimmed.json")
    parsed = {s.gse: s for s in (parse_gds_series(d) for d in recorded) if s}
    assert sorted(parsed) == ["GSE226260", "GSE292461", "GSE327255"], "GPL, GSM and GDS entries are not series"
    assert (parsed["GSE292461"].sra_studies, parsed["GSE292461"].bioproject) == ([], "PRJNA1238820")
    assert (parsed["GSE226260"].sra_studies, parsed["GSE226260"].bioproject) == (["SRP424803"], "PRJNA939253")
    assert not parsed["GSE327255"].sequencing and parsed["GSE292461"].sequencing

    sra_terms = []

    def ncbi(utility, params):
        if utility == "esearch" and params["db"] == "gds":
            return 200, {}, (REAL / "esearch_gds_cfs.json").read_bytes()
        if utility == "esearch":
            sra_terms.append(params["term"])
            return 200, {}, (REAL / "esearch_gds_empty.json").read_bytes()  # SRA knows none of them here
        return 200, {}, json.dumps({"result": {"uids": [d["uid"] for d in recorded],
                                               **{d["uid"]: d for d in recorded}}}).encode()

    series, _ = discover(_client(ncbi), "chronic fatigue syndrome", date(2025, 1, 1), date(2026, 6, 30),
                         page_size=50)
    assert sra_terms == ["PRJNA1238820[BioProject] OR PRJNA939253[BioProject] OR SRP424803[Accession]"], \
        "the 2025 series by its BioProject; the array series (PRJNA1450064) is not looked up"
    assert all(not x.runs for s in series for x in s.samples)


def test_a_series_with_neither_bioproject_nor_study_is_looked_up_by_its_accession():
    doc = {**_real_documents(DATA / "real_esummary_gds_GSE236084.json")[0], "bioproject": ""}
    assert parse_gds_series(doc).sra_terms() == ["GSE236084[All Fields]"]
    assert parse_gds_series({**doc, "bioproject": "PRJNA1;DROP"}).bioproject == "", "only an accession is kept"


def test_the_stand_in_for_ncbi_refuses_a_search_term_it_cannot_read(tmp_path):
    client = _client(MirrorTransport(_mirror(tmp_path, [], [])))
    with pytest.raises(EutilsError, match="reads only"):
        client.esearch("sra", "rna-seq AND human")
    assert client.esearch("sra", "PRJNA1[bioproject] OR SRP2[Accession]")["count"] == 0


def _recorded_2025_series() -> list[dict]:
    recorded = _real_documents(REAL / "esummary_gds_recorded_2026-10-09_trimmed.json")
    return [s.to_dict() for s in (parse_gds_series(d) for d in recorded)
            if s and s.gse in ("GSE292461", "GSE327255")]


def test_a_run_whose_series_all_resolve_to_nothing_records_them_unresolved_warns_and_fails(registry):
    records: dict[str, dict] = {}
    registered = register(registry, "geo", _recorded_2025_series(), records.__setitem__)

    assert registered["by_series"] == {} and records == {} and registry.samples("geo") == []
    assert list(registered["unresolved"]) == ["GSE292461"]
    assert "PRJNA1238820[BioProject]" in registered["unresolved"]["GSE292461"]
    assert "not sequencing" in registered["not_looked_up"]["GSE327255"]
    assert "none of the 2 series this run found resolved" in registered["warning"]
    assert "GSE292461" in registered["failure"] and "GSE327255" not in registered["failure"]
    [kept] = registry.unresolved_series("geo")
    assert (kept["series"], kept["attempts"], kept["record"]["bioproject"]) == ("GSE292461", 1, "PRJNA1238820")
    assert kept["reason"] == registered["unresolved"]["GSE292461"]


def test_a_run_of_array_series_only_warns_and_does_not_fail(registry):
    arrays = [s for s in _recorded_2025_series() if s["gse"] == "GSE327255"]
    registered = register(registry, "geo", arrays, lambda gsm, record: None)
    assert registered["warning"] and registered["failure"] is None
    assert registry.unresolved_series("geo") == []


def test_an_unresolved_series_is_looked_up_again_by_later_runs_and_forgotten_once_it_resolves(registry, tmp_path):
    gds = _real_documents(DATA / "real_esummary_gds_GSE236084.json")
    sra = _real_documents(DATA / "real_esummary_sra_PRJNA988806.json")
    records: dict[str, dict] = {}

    def run(day: date, mirror: MirrorTransport) -> dict:
        retry, before = retry_series(registry, "geo")
        series, _ = discover(_client(mirror), "rna", day, day, also=retry)
        retried = [s.gse for s in series if any(s is r for r in retry)]
        return register(registry, "geo", [s.to_dict() for s in series], records.__setitem__, retried=retried,
                        unresolved_before=before)

    first = run(date(2024, 10, 4), MirrorTransport(_mirror(tmp_path, gds, [])))  # SRA has not loaded them yet
    assert first["failure"] and [r["series"] for r in registry.unresolved_series("geo")] == ["GSE236084"]

    second = run(date(2024, 10, 5), MirrorTransport(_mirror(tmp_path, gds, sra)))  # a later day, no new series
    assert sorted(second["by_series"]["GSE236084"]) == ["GSM7518065", "GSM7518066", "GSM7518067", "GSM7518068",
                                                        "GSM7518069"]
    assert second["warning"] is None and second["failure"] is None, "no series in this run's window"
    assert registry.unresolved_series("geo") == [] and len(registry.samples("geo", "discovered")) == 5
    assert records["GSM7518065"] == {"sample_id": "GSM7518065", "series": "GSE236084", "runs": ["SRR25056229"],
                                     "layout": "PAIRED", "organism": "Mus musculus", "published": "2024-10-04"}


def test_a_series_unresolved_after_many_runs_is_no_longer_looked_up_but_stays_recorded(registry):
    [series] = [s for s in _recorded_2025_series() if s["gse"] == "GSE292461"]
    for _ in range(MAX_LOOKUPS - 1):
        registry.unresolved("geo", "GSE292461", "no run", series)
    retry, before = retry_series(registry, "geo")
    assert [s.gse for s in retry] == ["GSE292461"] and retry[0].bioproject == "PRJNA1238820"
    registry.unresolved("geo", "GSE292461", "no run", series)
    assert retry_series(registry, "geo") == ([], ["GSE292461"])


# --- windows and run config ----------------------------------------------------------------------------------
@pytest.mark.parametrize("start, end, days", [
    (datetime(2026, 11, 16, tzinfo=UTC), datetime(2026, 11, 17, tzinfo=UTC), ("2026-11-16", "2026-11-16")),
    (datetime(2026, 11, 9, tzinfo=UTC), datetime(2026, 11, 16, tzinfo=UTC), ("2026-11-09", "2026-11-15")),
    (datetime(2026, 11, 16, 6, tzinfo=UTC), datetime(2026, 11, 17, 6, tzinfo=UTC), ("2026-11-16", "2026-11-17")),
    (datetime(2026, 12, 31, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC), ("2026-12-31", "2026-12-31")),
])
def test_the_window_is_the_whole_days_the_data_interval_touches(start, end, days):
    assert tuple(str(d) for d in window(start, end)) == days


def test_an_empty_or_missing_interval_is_refused():
    with pytest.raises(IngestConfigError, match="empty data interval"):
        window(datetime(2026, 11, 16, tzinfo=UTC), datetime(2026, 11, 16, tzinfo=UTC))
    with pytest.raises(IngestConfigError, match="needs a data interval"):
        window(None, None)
    with pytest.raises(IngestConfigError, match="daily runs"):
        window(datetime(2024, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize("change, message", [
    ({"query": '("rna'}, "unbalanced"),
    ({"query": "rna\x00"}, "control characters"),
    ({"project": "../etc"}, "project"),
    ({"max_series": 0}, "max_series"),
    ({"min_q30_rate": 1.5}, "min_q30_rate"),
])
def test_bad_ingestion_config_is_refused(dagbag_geo, change, message):
    params = {k: v.value if hasattr(v, "value") else v for k, v in dagbag_geo.params.items()}
    with pytest.raises(IngestConfigError, match=message):
        check_params({**params, **change})


@pytest.fixture(scope="module")
def dagbag_geo():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).parent.parent / "dags" / "geo_ingestion.py"))
    assert not bag.import_errors
    return bag.dags["geo_ingestion"]


# --- the sample registry --------------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "dynamodb"])
def registry(request, tmp_path):
    if request.param == "sqlite":
        yield SqliteSampleRegistry(tmp_path / "registry.sqlite")
        return
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        client.create_table(TableName="samples", BillingMode="PAY_PER_REQUEST",
                            KeySchema=[{"AttributeName": "project", "KeyType": "HASH"},
                                       {"AttributeName": "sample_id", "KeyType": "RANGE"}],
                            AttributeDefinitions=[{"AttributeName": "project", "AttributeType": "S"},
                                                  {"AttributeName": "sample_id", "AttributeType": "S"}])
        yield DynamoDbSampleRegistry(client, "samples")


def _one(registry, sample_id: str) -> dict | None:
    return next((s for s in registry.samples("geo") if s["sample_id"] == sample_id), None)


def test_registering_again_changes_nothing_and_transitions_only_move_forward(registry):
    assert registry.register("geo", "GSM1", series="GSE1", runs=["SRR1"]) is True
    assert registry.register("geo", "GSM1", series="GSE-other", runs=[]) is False
    assert _one(registry, "GSM1") == {"project": "geo", "sample_id": "GSM1", "status": "discovered",
                                                "series": "GSE1", "runs": ["SRR1"]}
    assert registry.transition("geo", "GSM1", "qc_passed") is False, "not downloaded yet"
    for status in ("downloading", "downloaded", "qc_passed", "approved"):
        assert registry.transition("geo", "GSM1", status, note=status) is True
    assert registry.register("geo", "GSM1") is False and _one(registry, "GSM1")["status"] == "approved"
    assert registry.transition("geo", "GSM1", "rejected") is False, "a decision is not overwritten"
    assert registry.transition("geo", "GSM404", "downloading") is False, "an unknown sample is not created"
    assert registry.approved("geo") == ["GSM1"] and _one(registry, "GSM1")["note"] == "approved"
    with pytest.raises(ValueError, match="no sample moves to 'discovered'"):
        registry.transition("geo", "GSM1", "discovered")


def _found() -> list[dict]:
    client = EutilsClient(RecordedNcbi(), tool="t", email="a@b.org", sleep=lambda s: None)
    series, _ = discover(client, "rna", date(2026, 11, 16), date(2026, 11, 16), page_size=2)
    return [s.to_dict() for s in series]


def test_a_single_end_sample_is_registered_with_its_layout_for_its_jobs_and_the_registry(registry):
    records: dict[str, dict] = {}
    register(registry, "geo", _found(), records.__setitem__)
    layouts = {s["sample_id"]: s["layout"] for s in registry.samples("geo")}
    assert layouts == {"GSM8100001": "PAIRED", "GSM8100002": "SINGLE", "GSM8100003": "PAIRED",
                       "GSM8100010": "PAIRED"}
    assert records["GSM8100002"]["layout"] == "SINGLE", "the download job reads the layout from the record"


def test_a_sample_of_another_library_layout_is_skipped_with_the_layout_named(registry):
    found = _found()
    found[0]["samples"][1]["layout"] = "unknown"  # an experiment whose LIBRARY_LAYOUT the parser could not read
    registered = register(registry, "geo", found, lambda gsm, record: None)
    assert "GSM8100002" not in registered["by_series"]["GSE271001"]
    assert any(s.startswith("GSM8100002") and "'unknown'" in s for s in registered["skipped"])


def test_outcomes_move_samples_by_their_jobs_metrics_and_pick_series_to_report_and_review(registry):
    records: dict[str, dict] = {}
    registered = register(registry, "geo", _found(), records.__setitem__)
    assert registered["by_series"] == {"GSE271001": ["GSM8100001", "GSM8100002", "GSM8100003"],
                                       "GSE271002": ["GSM8100010"]}
    assert [s.split(" ")[0] for s in registered["skipped"]] == ["GSM8100011"], "no public SRA run"
    assert records["GSM8100001"]["runs"] == ["SRR31000011", "SRR31000012"]
    work = plan_work(registry, "geo", registered["by_series"])
    assert work["todo"] == ["GSM8100001", "GSM8100002", "GSM8100003", "GSM8100010"]
    assert work["units"] == [work["todo"]]
    assert {s["status"] for s in registry.samples("geo")} == {"downloading"}

    def metrics(sample, step):
        if sample == "GSM8100010" and step == "qc":
            return None  # its QC job failed
        verdict = "qc_failed" if sample == "GSM8100003" else "qc_passed"
        return {"metrics": {"runs": ["r"], "verdict": verdict, "reads_after": 10, "q30_rate": 0.9,
                            "gc_content": 0.5, "reason": "too few" if verdict == "qc_failed" else ""}}

    result = record_outcomes(registry, "geo", registered["by_series"], work["todo"], metrics)
    assert result["qc_done"] == ["GSM8100001", "GSM8100002", "GSM8100003"] and result["incomplete"] == ["GSM8100010"]
    assert result["reports"] == [{"series": "GSE271001", "samples": ["GSM8100001", "GSM8100002", "GSM8100003"]}]
    assert result["review"] == ["GSE271001"]
    status = {s["sample_id"]: s["status"] for s in registry.samples("geo")}
    assert status == {"GSM8100001": "qc_passed", "GSM8100002": "qc_passed", "GSM8100003": "qc_failed",
                      "GSM8100010": "downloaded"}
    body = review_body("GSE271001", [s for s in registry.samples("geo") if s["sample_id"] in ("GSM8100001",
                                                                                               "GSM8100003")],
                       "s3://lake/reports/x/multiqc_report.html")
    assert "s3://lake/reports/x/multiqc_report.html" in body and "| GSM8100003 | qc_failed | 10 | 0.900 | too few |" in body

    again = plan_work(registry, "geo", register(registry, "geo", _found(), records.__setitem__)["by_series"])
    assert again["todo"] == ["GSM8100010"], "only the sample whose QC did not finish is picked up again"


# --- end to end on the local stand-in for NCBI, answering the review through the REST API ----------------------
class Reviewer:
    """Answers the review gate's Required Actions through the same REST endpoint the UI uses, as user ``name``."""

    def __init__(self, name: str, decide):
        from fastapi.testclient import TestClient

        from airflow.api_fastapi.app import create_app, get_auth_manager
        from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

        app = create_app("core")
        token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=name, role="admin"))
        self.client = TestClient(app, headers={"Authorization": f"Bearer {token}"})
        self.decide = decide  # (series) -> (option, reason)
        self.answered: list[tuple[str, str, str]] = []
        self.responses: list[int] = []

    def _answer_waiting(self) -> None:
        from airflow.models.taskinstance import TaskInstance as TI
        from airflow.models.hitl import HITLDetail
        from airflow.utils.session import create_session

        with create_session() as session:
            waiting = [(ti.run_id, ti.task_id, ti.map_index, ti.id) for ti in session.query(TI).filter(
                TI.dag_id == "geo_ingestion", TI.state == "awaiting_input")]
            subjects = {d.ti_id: d.subject for d in session.query(HITLDetail).filter(
                HITLDetail.ti_id.in_([w[3] for w in waiting]))} if waiting else {}
        for run_id, task_id, map_index, ti_id in waiting:
            series = subjects[ti_id].split(" ")[2]  # "QC review GSE... (project): ..."
            option, reason = self.decide(series)
            response = self.client.patch(f"/api/v2/dags/geo_ingestion/dagRuns/{run_id}/taskInstances/{task_id}/"
                                         f"{map_index}/hitlDetails",
                                         json={"chosen_options": [option], "params_input": {"reason": reason}})
            self.responses.append(response.status_code)
            self.answered.append((series, option, reason))

    def run(self, dag, logical_date: datetime, conf: dict):
        """dag.test() for the day before ``logical_date`` (its data interval), answering reviews meanwhile."""
        stop = threading.Event()

        def loop():
            while not stop.is_set():
                self._answer_waiting()
                time.sleep(0.5)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            return dag.test(logical_date=logical_date, run_conf=conf)
        finally:
            stop.set()
            thread.join(10)


def _snapshot(settings) -> dict:
    from hooks import backend

    return {s["sample_id"]: {k: v for k, v in s.items() if k != "updated"}
            for s in backend.sample_registry(settings).samples("geo")}


@pytest.mark.e2e
def test_backfilling_three_days_twice_leaves_the_same_registry_and_downloads_nothing_twice(local, dagbag_geo,
                                                                                            monkeypatch):
    from genomics_steps import synthetic_geo
    from hooks import backend, lake
    from pipeline_plan import PipelineSpec, plan_run

    settings = use_settings(monkeypatch, local)
    synthetic_geo.write_mirror(settings.ncbi_mirror_path, date(2026, 11, 16), date(2026, 11, 18), fragments=1500)
    decisions = {"GSE13200": ("Reject", "library prep notes missing")}
    reviewer = Reviewer("ana", lambda series: decisions.get(series, ("Approve", "QC fine")))
    conf = {"project": "geo", "min_reads": 1000}
    days = [datetime(2026, 11, d, tzinfo=UTC) for d in (17, 18, 19)]  # data intervals: the 16th to the 18th

    first = [reviewer.run(dagbag_geo, day, conf) for day in days]
    assert [r.state for r in first] == ["success"] * 3
    snapshot, jobs = _snapshot(settings), _downloads(settings)
    assert sorted({s["series"] for s in snapshot.values()}) == ["GSE13190", "GSE13191", "GSE13200", "GSE13210",
                                                               "GSE13211"]
    assert len(snapshot) == 13, "every sample in the mirror, the 3 single-end ones too"
    assert jobs == 13, "each sample downloaded once"
    single = sorted(g for g, s in snapshot.items() if s["layout"] == "SINGLE")
    assert single == ["GSM131902", "GSM132002", "GSM132102"]
    status = {g: s["status"] for g, s in snapshot.items()}
    assert status["GSM131911"] == "qc_failed" and status["GSM132111"] == "qc_failed", "the low-quality samples"
    assert status["GSM132000"] == status["GSM132001"] == "rejected"
    assert snapshot["GSM132000"]["reviewed_by"] == "ana"
    assert snapshot["GSM132000"]["review_reason"] == "library prep notes missing"
    approved = sorted(g for g, s in status.items() if s == "approved")
    assert approved == ["GSM131900", "GSM131901", "GSM131902", "GSM131910", "GSM132100", "GSM132101",
                        "GSM132102", "GSM132110"], "the single-end samples passed QC and were approved too"
    raw = lake.list_files(settings, settings.lake_root + "/raw/geo/")
    assert {u.rsplit("/", 1)[-1] for u in raw if "GSM131902" in u} == {"GSM131902_R1.fastq.gz"}, "R1 only"
    assert {u.rsplit("/", 1)[-1] for u in raw if "GSM131900" in u} == {"GSM131900_R1.fastq.gz",
                                                                         "GSM131900_R2.fastq.gz"}
    assert sorted(a[0] for a in reviewer.answered) == ["GSE13190", "GSE13191", "GSE13200", "GSE13210", "GSE13211"]
    assert set(reviewer.responses) == {200}

    second = [reviewer.run(dagbag_geo, day, conf) for day in days]
    assert [r.state for r in second] == ["success"] * 3
    assert _snapshot(settings) == snapshot, "the same registry"
    assert _downloads(settings) == jobs, "nothing downloaded again"
    assert len(reviewer.answered) == 5, "and nobody asked again"
    review = {ti.map_index: ti.state for ti in second[0].get_task_instances() if ti.task_id == "review"}
    assert review == {} or set(review.values()) == {"skipped"}

    engine = backend.query_engine(settings)
    _, rows = engine.fetch("SELECT sample_id, series_id, verdict, layout FROM ingest_qc ORDER BY sample_id")
    assert len(rows) == 13 and ("GSM132111", "GSE13211", "qc_failed", "paired-end") in rows
    assert ("GSM131902", "GSE13190", "qc_passed", "single-end") in rows
    _, reads = engine.fetch("SELECT reads_before FROM ingest_qc WHERE sample_id IN ('GSM131900', 'GSM131902') "
                            "ORDER BY sample_id")
    assert reads == [(3000,), (1500,)], "1500 fragments: two mates each when paired, one read when single-end"
    report = lake.read_head(settings, settings.lake_root + "/reports/geo_ingestion/geo/GSE13190/multiqc_report.html",
                            1 << 24)
    assert b"MultiQC" in report and b"GSM131900" in report and b"GSM131902" in report

    # what approval is for: rnaseq's "all approved" resolves to them, reads in the lake's raw/geo/
    spec = PipelineSpec("rnaseq", ["fastp", "salmon_quant"], ["transcriptome.fa", "tx2gene.tsv"], "salmon")
    from genomics_steps.synthetic import write_reference

    write_reference(settings.lake_root, "synthetic-v1")
    plan = plan_run(spec, {"project": "geo", "samples": "all approved", "reference": "synthetic-v1",
                           "pipeline_version": "1.0"}, lake_root=settings.lake_root, backend="local",
                    list_files=lambda prefix: lake.list_files(settings, prefix),
                    approved_samples=backend.sample_registry(settings).approved, max_map_length=1024)
    assert plan["samples"] == approved and plan["todo"] == approved

    # and an approved single-end sample runs through rnaseq from there, on the local backend
    from airflow.dag_processing.dagbag import DagBag

    rnaseq = DagBag(dag_folder=str(Path(__file__).parent.parent / "dags" / "rnaseq.py")).dags["rnaseq"]
    run = rnaseq.test(run_conf={"project": "geo", "samples": ["GSM131902"], "reference": "synthetic-v1",
                                "min_reads": 1000})  # 1500 reads: below the production default
    assert run.state == "success"
    engine = backend.query_engine(settings)  # one that sees the tables rnaseq published
    _, quant = engine.fetch("SELECT count(*), round(sum(tpm)) FROM transcript_quant WHERE sample_id = 'GSM131902'")
    assert quant[0][0] > 0 and quant[0][1] == 1_000_000
    _, qc = engine.fetch("SELECT tool, metric, value FROM qc_metrics WHERE sample_id = 'GSM131902' AND metric IN "
                         "('reads_before', 'percent_mapped')")
    figures = {(tool, metric): float(value) for tool, metric, value in qc}
    assert figures[("fastp", "reads_before")] == 1500, "R1's reads only"
    assert figures[("salmon", "percent_mapped")] > 90


@pytest.mark.e2e
def test_a_day_whose_real_series_has_no_sra_runs_found_fails_and_leaves_the_series_unresolved(local, dagbag_geo,
                                                                                               monkeypatch):
    """The issue's run: before, it logged "no public SRA run" for every sample, registered none, and succeeded."""
    from hooks import backend

    settings = use_settings(monkeypatch, local)
    recorded = _real_documents(REAL / "esummary_gds_recorded_2026-10-09_trimmed.json")
    [doc] = [d for d in recorded if d["accession"] == "GSE292461"]
    # re-dated from 2025/08/25 into the DAG's schedule (it starts 2026-01-01); the rest is NCBI's answer
    _mirror(settings.ncbi_mirror_path, [{**doc, "pdat": "2026/11/16"}], [])

    run = dagbag_geo.test(logical_date=datetime(2026, 11, 17, tzinfo=UTC), run_conf={"project": "geo"})

    states = {ti.task_id: ti.state for ti in run.get_task_instances() if ti.map_index == -1}
    assert run.state == "failed" and states["all_series_resolved"] == "failed"
    assert states["search"] == states["register"] == "success"
    registry = backend.sample_registry(settings)
    assert registry.samples("geo") == []
    assert [(r["series"], r["attempts"]) for r in registry.unresolved_series("geo")] == [("GSE292461", 1)]


def _downloads(settings) -> int:
    """Download jobs that ran: array children, or single jobs (one-sample units)."""
    from local_batch.control_plane import ControlPlane

    return ControlPlane(settings.local_home).conn().execute(
        "SELECT COUNT(*) FROM jobs WHERE job_name LIKE 'geo_ingestion-download-%' "
        "AND (parent_id IS NOT NULL OR array_size IS NULL)").fetchone()[0]


# --- the review operator on the AWS path (DynamoDB registry) --------------------------------------------------
def _aws_registry(aws, monkeypatch):
    from hooks import backend

    aws.dynamodb.create_table(TableName="samples", BillingMode="PAY_PER_REQUEST",
                              KeySchema=[{"AttributeName": "project", "KeyType": "HASH"},
                                         {"AttributeName": "sample_id", "KeyType": "RANGE"}],
                              AttributeDefinitions=[{"AttributeName": "project", "AttributeType": "S"},
                                                    {"AttributeName": "sample_id", "AttributeType": "S"}])
    settings = use_settings(monkeypatch, aws.settings, sample_registry_table="samples")
    registry = backend.sample_registry(settings)
    for gsm, status in (("GSM1", "qc_passed"), ("GSM2", "qc_passed"), ("GSM3", "qc_failed")):
        registry.register("geo", gsm, series="GSE9", series_title="Synthetic series")
        for step in ("downloading", "downloaded", status):
            registry.transition("geo", gsm, step, reads=5000, q30_rate=0.95)
    return registry


def test_a_rejection_records_who_and_why_and_a_second_answer_changes_nothing(aws, monkeypatch):
    from operators.review import SeriesReviewOperator

    registry = _aws_registry(aws, monkeypatch)
    op = SeriesReviewOperator(task_id="review", series="GSE9", project="geo")
    at = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    answer = op.execute_complete({}, {"chosen_options": ["Reject"], "params_input": {"reason": "wrong tissue"},
                                      "responded_at": at, "responded_by_user": {"id": "7", "name": "ana"}})
    assert answer["decision"] == "rejected" and answer["samples"] == ["GSM1", "GSM2"]
    rows = {s["sample_id"]: s for s in registry.samples("geo")}
    assert [rows[g]["status"] for g in ("GSM1", "GSM2", "GSM3")] == ["rejected", "rejected", "qc_failed"]
    assert (rows["GSM1"]["reviewed_by"], rows["GSM1"]["reviewed_by_id"], rows["GSM1"]["review_reason"]) == \
        ("ana", "7", "wrong tissue")
    assert rows["GSM1"]["reviewed_at"] == str(at)

    late = op.execute_complete({}, {"chosen_options": ["Approve"], "params_input": {"reason": ""},
                                    "responded_at": at, "responded_by_user": {"id": "8", "name": "bo"}})
    assert late["samples"] == [] and registry.approved("geo") == []


def test_a_series_with_nothing_to_decide_is_not_put_to_anyone(aws, monkeypatch):
    from operators import review
    from operators.review import SeriesReviewOperator

    registry = _aws_registry(aws, monkeypatch)
    for gsm in ("GSM1", "GSM2"):
        registry.transition("geo", gsm, "approved")
    asked = []
    monkeypatch.setattr(review.HITLOperator, "execute", lambda self, context: asked.append(self.subject))
    op = SeriesReviewOperator(task_id="review", series="GSE9", project="geo")
    assert op.execute({}) == {"series": "GSE9", "asked": False} and asked == []

    registry.upsert("geo", "GSM2", "qc_passed")
    op.execute({})
    assert asked == ["QC review GSE9 (geo): 1 sample(s) passed QC, 1 failed"]
    assert "s3://genomics-lake/lake/reports/geo_ingestion/geo/GSE9/multiqc_report.html" in op.body


# --- what fasterq-dump --split-files writes for a run -------------------------------------------------------------
@pytest.mark.parametrize("written", [["SRR1_1.fastq"], ["SRR1.fastq"]])
def test_a_single_end_runs_one_fastq_is_its_r1_whichever_name_fasterq_dump_gave_it(tmp_path, written):
    from genomics_steps.ingest import _dumped

    for name in written:
        (tmp_path / name).write_text("@r\nA\n+\nI\n")
    assert _dumped(tmp_path, "SRR1", 1) == [tmp_path / written[0]]


def test_a_single_end_run_that_dumps_a_second_read_fails_naming_the_run(tmp_path):
    from genomics_steps.ingest import _dumped
    from genomics_steps.step import StepFailed

    for name in ("SRR1_1.fastq", "SRR1_2.fastq"):
        (tmp_path / name).write_text("@r\nA\n+\nI\n")
    with pytest.raises(StepFailed, match="SRR1_2.fastq: SRR1 has a second read"):
        _dumped(tmp_path, "SRR1", 1)


def test_a_paired_end_run_without_its_second_file_fails_naming_it(tmp_path):
    from genomics_steps.ingest import _dumped
    from genomics_steps.step import StepFailed

    (tmp_path / "SRR1.fastq").write_text("@r\nA\n+\nI\n")
    with pytest.raises(StepFailed, match="no SRR1_1.fastq: is SRR1 paired-end"):
        _dumped(tmp_path, "SRR1", 2)
