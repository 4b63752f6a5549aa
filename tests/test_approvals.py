"""When samples were approved, and what a pipeline run takes because of it: the registry keeps each sample's
approval time (SQLite and DynamoDB with the template's index), lists a project's samples approved in [start,
end), and fills the time once for rows approved before it was kept; a scheduled, backfilled, asset-triggered or
manual run selects its samples by its rule; approved samples are routed to pipelines by library strategy or
the project's setting, and the review emits one asset event per pipeline."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from approval_routing import approval_events, approved_by_events, asset_uri, pipelines_for, route_problems
from hooks.sample_registry import DynamoDbSampleRegistry, SqliteSampleRegistry
from pipeline_plan import ALL_APPROVED, RunConfigError
from run_samples import select
from tests.conftest import REGION, template_resources

UTC = timezone.utc
DAY1 = datetime(2026, 11, 2, tzinfo=UTC)


@pytest.fixture
def dynamodb_registry():
    import boto3
    from moto import mock_aws

    table = template_resources()["SampleRegistryTable"]["Properties"]  # keys and index as deployed
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        client.create_table(TableName="samples", BillingMode="PAY_PER_REQUEST", KeySchema=table["KeySchema"],
                            AttributeDefinitions=table["AttributeDefinitions"],
                            GlobalSecondaryIndexes=table["GlobalSecondaryIndexes"])
        yield DynamoDbSampleRegistry(client, "samples")


@pytest.fixture(params=["sqlite", "dynamodb"])
def registry(request, tmp_path):
    if request.param == "sqlite":
        return SqliteSampleRegistry(tmp_path / "registry.sqlite")
    return request.getfixturevalue("dynamodb_registry")


def _approve(registry, sample: str, project: str = "geo") -> None:
    registry.register(project, sample)
    for status in ("downloading", "downloaded", "qc_passed", "approved"):
        registry.transition(project, sample, status)


def test_the_transition_to_approved_records_when_it_happened(registry):
    before = datetime.now(UTC)
    _approve(registry, "GSM1")
    after = datetime.now(UTC)
    (row,) = registry.samples("geo")
    assert before.timestamp() - 1 <= row["approved_at"] <= after.timestamp() + 1
    assert registry.approved_between("geo", before - timedelta(seconds=1), after + timedelta(seconds=1)) == ["GSM1"]


def test_samples_not_approved_have_no_approval_time_and_are_never_in_a_window(registry):
    registry.register("geo", "GSM1")
    registry.transition("geo", "GSM1", "downloading")
    assert "approved_at" not in registry.samples("geo")[0]
    assert registry.approved_between("geo", DAY1 - timedelta(days=3650), DAY1 + timedelta(days=3650)) == []


def test_approvals_are_listed_by_half_open_window_and_by_project(registry):
    registry.upsert("geo", "GSM1", "approved", approved_at=DAY1)  # exactly at the start: in
    registry.upsert("geo", "GSM2", "approved", approved_at=DAY1 + timedelta(hours=23, minutes=59))
    registry.upsert("geo", "GSM3", "approved", approved_at=DAY1 + timedelta(days=1))  # exactly at the end: out
    registry.upsert("other", "GSM4", "approved", approved_at=DAY1 + timedelta(hours=1))
    registry.upsert("geo", "GSM5", "qc_passed")
    assert registry.approved_between("geo", DAY1, DAY1 + timedelta(days=1)) == ["GSM1", "GSM2"]
    assert registry.approved_between("geo", DAY1 + timedelta(days=1), DAY1 + timedelta(days=2)) == ["GSM3"]
    assert registry.approved_between("other", DAY1, DAY1 + timedelta(days=1)) == ["GSM4"]


def test_a_repair_that_approves_again_keeps_the_first_approval_time_and_another_status_drops_it(registry):
    registry.upsert("geo", "GSM1", "approved", approved_at=DAY1)
    registry.upsert("geo", "GSM1", "approved", note="repaired")
    assert registry.approved_between("geo", DAY1, DAY1 + timedelta(hours=1)) == ["GSM1"]
    registry.upsert("geo", "GSM1", "rejected")
    assert "approved_at" not in registry.samples("geo")[0]
    assert registry.approved_between("geo", DAY1, DAY1 + timedelta(hours=1)) == []


def test_a_window_bound_without_a_time_zone_is_refused(registry):
    with pytest.raises(ValueError, match="no time zone"):
        registry.approved_between("geo", datetime(2026, 11, 2), DAY1)


# --- the one-time fill of rows approved before approval times were kept ----------------------------------------
def _old_sqlite_registry(path, rows) -> None:
    """A registry file as the registry wrote it before approval times: no approved_at column."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE samples (project TEXT, sample_id TEXT, status TEXT, attributes TEXT, "
                     "updated REAL, PRIMARY KEY (project, sample_id))")
        conn.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?)", rows)


def test_opening_an_old_sqlite_registry_fills_approval_times_from_the_review_else_the_last_write(tmp_path):
    reviewed = DAY1 + timedelta(hours=5)
    last_write = (DAY1 + timedelta(days=1, hours=2)).timestamp()
    _old_sqlite_registry(tmp_path / "r.sqlite", [
        ("geo", "GSM1", "approved", json.dumps({"reviewed_at": str(reviewed)}), last_write),
        ("geo", "GSM2", "approved", json.dumps({}), last_write),
        ("geo", "GSM3", "qc_passed", json.dumps({}), last_write),
    ])
    registry = SqliteSampleRegistry(tmp_path / "r.sqlite")
    assert registry.approved_between("geo", DAY1, DAY1 + timedelta(days=1)) == ["GSM1"]
    assert registry.approved_between("geo", DAY1 + timedelta(days=1), DAY1 + timedelta(days=2)) == ["GSM2"]
    assert registry.fill_approved_at("geo") == 0, "filled once; opening or filling again changes nothing"


def test_the_dynamodb_fill_gives_old_approved_items_a_time_once_and_keeps_recorded_ones(dynamodb_registry):
    registry = dynamodb_registry
    reviewed = DAY1 + timedelta(hours=5)
    # items as the registry wrote them before approval times: status approved, no approved_at
    registry.client.put_item(TableName="samples", Item={
        "project": {"S": "geo"}, "sample_id": {"S": "GSM1"}, "status": {"S": "approved"},
        "updated": {"N": repr((DAY1 + timedelta(days=3)).timestamp())},
        "reviewed_at": {"S": json.dumps(str(reviewed))}})
    registry.client.put_item(TableName="samples", Item={
        "project": {"S": "geo"}, "sample_id": {"S": "GSM2"}, "status": {"S": "approved"},
        "updated": {"N": repr((DAY1 + timedelta(days=1, hours=1)).timestamp())}})
    registry.upsert("geo", "GSM3", "approved", approved_at=DAY1 + timedelta(days=2))
    assert registry.fill_approved_at("geo") == 2
    assert registry.fill_approved_at("geo") == 0
    assert registry.approved_between("geo", DAY1, DAY1 + timedelta(days=1)) == ["GSM1"]
    assert registry.approved_between("geo", DAY1 + timedelta(days=1), DAY1 + timedelta(days=2)) == ["GSM2"]
    assert registry.approved_between("geo", DAY1 + timedelta(days=2), DAY1 + timedelta(days=3)) == ["GSM3"]


# --- which samples a pipeline run takes (run_samples.select) --------------------------------------------------

PARAMS = {"project": "geo", "samples": ALL_APPROVED, "pipeline_version": "2.0"}


def _select(run_type, conf=None, params=PARAMS, interval=(None, None), events=(), approvals=None):
    asked = []

    def approved_between(project, start, end):
        asked.append((project, start, end))
        return (approvals or {}).get((project, start.date()), [])

    return select(pipeline="rnaseq", run_type=run_type, conf=conf, params=params, interval=interval,
                  events=events, approved_between=approved_between), asked


def test_a_scheduled_or_backfilled_run_without_samples_takes_the_approvals_of_its_data_interval():
    day = (DAY1, DAY1 + timedelta(days=1))
    for run_type in ("scheduled", "backfill"):
        chosen, asked = _select(run_type, conf={"pipeline_version": "2.0"}, interval=day,
                                approvals={("geo", DAY1.date()): ["GSM1", "GSM2"]})
        assert chosen.samples == ["GSM1", "GSM2"] and chosen.project == "geo"
        assert asked == [("geo", *day)]
        assert "approved in [2026-11-02T00:00:00+00:00, 2026-11-03T00:00:00+00:00)" in chosen.rule


def test_the_run_type_is_read_from_the_execution_apis_enum_as_a_task_gets_it():
    from airflow.sdk.api.datamodels._generated import DagRunType

    day = (DAY1, DAY1 + timedelta(days=1))
    for run_type in (DagRunType("scheduled"), DagRunType("backfill")):
        chosen, asked = _select(run_type, conf={}, interval=day, approvals={("geo", DAY1.date()): ["GSM1"]})
        assert chosen.samples == ["GSM1"] and asked == [("geo", *day)]


def test_a_day_without_approvals_is_an_empty_run_not_a_refused_one():
    chosen, _ = _select("scheduled", interval=(DAY1, DAY1 + timedelta(days=1)))
    assert chosen.samples == [] and chosen.may_be_empty


def test_samples_named_in_the_run_config_win_over_the_interval_even_in_a_backfill():
    chosen, asked = _select("backfill", conf={"samples": ["S1"]}, params={**PARAMS, "samples": ["S1"]},
                            interval=(DAY1, DAY1 + timedelta(days=1)))
    assert chosen.samples == ["S1"] and asked == [] and not chosen.may_be_empty
    chosen, _ = _select("backfill", conf={"samples": ALL_APPROVED}, interval=(DAY1, DAY1 + timedelta(days=1)))
    assert chosen.samples == ALL_APPROVED and "every approved sample" in chosen.rule


def test_a_manual_run_without_samples_takes_every_approved_sample_as_before():
    chosen, asked = _select("manual", conf={}, interval=(DAY1, DAY1))
    assert chosen.samples == ALL_APPROVED and asked == [] and not chosen.may_be_empty


def test_an_asset_triggered_run_takes_the_samples_its_events_name_for_its_pipeline():
    events = [{"uri": asset_uri("rnaseq"), "extra": {"project": "geo", "series": "GSE1", "samples": ["GSM2", "GSM1"]}},
              {"uri": asset_uri("rnaseq"), "extra": {"project": "geo", "series": "GSE2", "samples": ["GSM3"]}},
              {"uri": asset_uri("germline"), "extra": {"project": "geo", "series": "GSE3", "samples": ["GSM9"]}}]
    chosen, asked = _select("asset_triggered", conf={}, events=events)
    assert chosen.project == "geo" and chosen.samples == ["GSM1", "GSM2", "GSM3"] and asked == []


def test_an_asset_run_takes_the_events_project_and_reports_the_samples_of_other_projects():
    events = [{"uri": asset_uri("rnaseq"), "extra": {"project": "zeta", "samples": ["Z1"]}},
              {"uri": asset_uri("rnaseq"), "extra": {"project": "alpha", "samples": ["A1"]}}]
    chosen, _ = _select("asset_triggered", conf={}, params={**PARAMS, "project": "demo"}, events=events)
    assert (chosen.project, chosen.samples, chosen.elsewhere) == ("alpha", ["A1"], {"zeta": ["Z1"]})
    chosen, _ = _select("asset_triggered", conf={}, params={**PARAMS, "project": "zeta"}, events=events)
    assert (chosen.project, chosen.samples) == ("zeta", ["Z1"]), "the run config's project first"


def test_an_asset_event_with_a_bad_project_or_sample_id_refuses_the_run_naming_the_value():
    events = [{"uri": asset_uri("rnaseq"), "extra": {"project": "geo\n", "samples": ["GSM1"]}},
              {"uri": asset_uri("rnaseq"), "extra": {"project": "geo", "samples": ["../etc"]}}]
    with pytest.raises(RunConfigError, match=r"'geo\\n'[\s\S]*'\.\./etc'"):
        _select("asset_triggered", conf={}, events=events)


def test_a_scheduled_run_without_a_data_interval_is_refused():
    with pytest.raises(RunConfigError, match="needs a data interval"):
        _select("scheduled", interval=(None, None))


# --- routing approved samples to pipelines ---------------------------------------------------------------------
def test_library_strategy_routes_rna_seq_to_rnaseq_and_wgs_or_wxs_to_germline_and_others_nowhere():
    assert pipelines_for("geo", "RNA-Seq", {}) == ("rnaseq",)
    assert pipelines_for("geo", "WGS", {}) == ("germline",) and pipelines_for("geo", "WXS", {}) == ("germline",)
    assert pipelines_for("geo", "ChIP-Seq", {}) == () and pipelines_for("geo", None, {}) == ()


def test_a_project_route_in_the_settings_overrides_the_library_strategy():
    routes = {"cohort": ["germline", "rnaseq"], "archive": []}
    assert pipelines_for("cohort", "RNA-Seq", routes) == ("germline", "rnaseq")
    assert pipelines_for("archive", "RNA-Seq", routes) == ()
    assert pipelines_for("geo", "RNA-Seq", routes) == ("rnaseq",)


def test_an_approved_batch_makes_one_event_per_pipeline_and_lists_the_samples_no_pipeline_takes():
    approved = [{"sample_id": "GSM1", "library_strategy": "RNA-Seq"},
                {"sample_id": "GSM2", "library_strategy": "WXS"},
                {"sample_id": "GSM3", "library_strategy": "RNA-Seq"},
                {"sample_id": "GSM4", "library_strategy": "Bisulfite-Seq"}]
    events, unrouted = approval_events("geo", "GSE7", approved, {})
    assert events == {"germline": {"project": "geo", "series": "GSE7", "samples": ["GSM2"]},
                      "rnaseq": {"project": "geo", "series": "GSE7", "samples": ["GSM1", "GSM3"]}}
    assert unrouted == ["GSM4"]
    by_project, problems = approved_by_events([{"uri": asset_uri(p), "extra": e} for p, e in events.items()],
                                              "rnaseq")
    assert by_project == {"geo": ["GSM1", "GSM3"]} and problems == []


def test_a_route_setting_naming_an_unknown_pipeline_or_a_bad_project_is_refused():
    from platform_settings import PlatformSettings, SettingsError

    assert route_problems({"geo": ["rnaseq"]}) == []
    with pytest.raises(SettingsError, match=r"pipeline_routes\['geo'\] must be a list of \['rnaseq', 'germline'\], "
                                            r"got \['regenie_gwas'\]"):
        PlatformSettings(pipeline_routes={"geo": ["regenie_gwas"]})
    with pytest.raises(SettingsError, match=r"project 'bad project'"):
        PlatformSettings(pipeline_routes={"bad project": ["rnaseq"]})


def test_ingestion_reads_the_library_strategy_of_real_sra_experiments():
    from hooks.eutils import parse_sra_experiment

    real = json.loads((Path(__file__).parent / "data" / "eutils" / "real_esummary_sra_PRJNA988806.json").read_text())
    docs = [real["result"][uid] for uid in real["result"]["uids"]]
    assert {parse_sra_experiment(d)["strategy"] for d in docs} == {"RNA-Seq"}


def test_the_review_adds_an_asset_event_per_pipeline_through_its_alias_outlet(monkeypatch):
    from airflow.sdk.execution_time.context import OutletEventAccessors

    from approval_routing import approvals_alias
    from operators.review import SeriesReviewOperator

    monkeypatch.setenv("GENOMICS_PIPELINE_ROUTES", json.dumps({"cohort": ["germline"]}))
    outlet_events = OutletEventAccessors()
    review = SeriesReviewOperator(task_id="review", series="GSE7", project="geo")
    review._start_pipelines({"outlet_events": outlet_events}, [{"sample_id": "GSM1", "library_strategy": "RNA-Seq"}])
    (event,) = outlet_events[approvals_alias()].asset_alias_events
    assert event.dest_asset_key.uri == asset_uri("rnaseq")
    assert event.extra == {"project": "geo", "series": "GSE7", "samples": ["GSM1"]}
    routed = OutletEventAccessors()
    SeriesReviewOperator(task_id="review", series="GSE8", project="cohort")._start_pipelines(
        {"outlet_events": routed}, [{"sample_id": "GSM2", "library_strategy": "RNA-Seq"}])
    (event,) = routed[approvals_alias()].asset_alias_events
    assert event.dest_asset_key.uri == asset_uri("germline"), "the project's route, not the strategy"
