"""When samples were approved, and what a pipeline run takes because of it: the registry keeps each sample's
approval time (SQLite and DynamoDB with the template's index), lists a project's samples approved in [start,
end), and fills the time once for rows approved before it was kept."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from hooks.sample_registry import DynamoDbSampleRegistry, SqliteSampleRegistry
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
