"""The sample registry: which samples a project has and where each stands (DynamoDB on AWS, SQLite locally).

A sample is keyed by (project, sample_id); its status moves discovered -> downloading -> downloaded ->
qc_passed / qc_failed -> approved / rejected (geo_ingestion drives it). The pipelines read it to resolve
``samples: "all approved"``.

- ``register`` creates a sample as discovered only if it is absent: registering again (a rerun, a backfill)
  changes nothing, so an approved sample never falls back to discovered;
- ``transition`` moves a sample only from the statuses the caller names (a conditional write on both
  backends), so two runs racing on one sample cannot both move it, and a late writer cannot undo a review;
- ``upsert`` sets a status unconditionally (for operators' repairs and tests).

Each approved sample keeps when it was approved (``approved_at``, seconds since the epoch, UTC): set by the
transition to approved, never changed after, so ``approved_between(project, start, end)`` lists the samples a
pipeline's scheduled or backfilled run of [start, end) takes. SQLite finds them through an index on
(project, approved_at); DynamoDB through the sparse global secondary index ``by_approval`` (partition
``project``, sort ``approved_at``: only approved samples have the attribute, so the index holds nothing else).
Rows approved before the registry kept the time get it once from ``fill_approved_at``: the review's answer time
(``reviewed_at``, which the review step records) when there is one, else the row's last write (``updated``).
SQLite fills when it first opens a registry file without the column; on DynamoDB run
``scripts/fill_approved_at.py PROJECT...`` once after deploying the index.

Beside the samples it keeps the series whose samples could not be resolved to SRA runs (no public run found
yet): one record per (project, series) with the reason, the series as found (so a later run looks it up again
without searching GEO) and how many runs tried; ``resolved`` removes it once its samples are registered. On
DynamoDB these records live in the same table under the partition key ``<project>#unresolved-series``, which
no project can collide with (a project label has no ``#``).
"""

from __future__ import annotations

import json
import sqlite3
import time
from abc import ABC, abstractmethod
from datetime import datetime
from pathlib import Path
from typing import Any

STATUSES = ("discovered", "downloading", "downloaded", "qc_passed", "qc_failed", "approved", "rejected")
# The statuses a sample may move to each status from (geo_ingestion's transitions).
MOVES_TO: dict[str, tuple[str, ...]] = {
    "downloading": ("discovered", "downloading"),
    "downloaded": ("discovered", "downloading"),
    "qc_passed": ("downloaded",),
    "qc_failed": ("downloaded",),
    "approved": ("qc_passed",),
    "rejected": ("qc_passed",),
}


class SampleRegistry(ABC):
    @abstractmethod
    def upsert(self, project: str, sample_id: str, status: str, *, approved_at: datetime | None = None,
               **attributes: Any) -> None:
        """Create the sample or update its status and attributes (others are kept). As approved it keeps the
        approval time it has (``approved_at``, if given, replaces it; absent, now); another status drops it."""

    @abstractmethod
    def samples(self, project: str, status: str | None = None) -> list[dict[str, Any]]:
        """The project's samples (with ``status`` only, if given), sorted by sample id."""

    @abstractmethod
    def register(self, project: str, sample_id: str, **attributes: Any) -> bool:
        """Create the sample as discovered with ``attributes`` if it is absent; True if it was created."""

    @abstractmethod
    def transition(self, project: str, sample_id: str, status: str, **attributes: Any) -> bool:
        """Move the sample to ``status`` (and merge ``attributes``) only if its status is one that
        MOVES_TO[status] allows; True if it moved, False if it was absent or elsewhere."""

    @abstractmethod
    def unresolved(self, project: str, series: str, reason: str, record: dict[str, Any]) -> None:
        """Record (or record again, counting the attempt) that ``series`` resolved to no SRA run, and why."""

    @abstractmethod
    def unresolved_series(self, project: str) -> list[dict[str, Any]]:
        """The project's unresolved series: ``series``, ``reason``, ``record``, ``attempts``, by accession."""

    @abstractmethod
    def resolved(self, project: str, series: str) -> bool:
        """Forget that ``series`` was unresolved; True if it was."""

    @abstractmethod
    def approved_between(self, project: str, start: datetime, end: datetime) -> list[str]:
        """The project's samples approved at or after ``start`` and before ``end`` (aware datetimes), by id."""

    @abstractmethod
    def fill_approved_at(self, project: str) -> int:
        """Give the project's approved samples that lack ``approved_at`` one (see the module's doc); returns
        how many were filled. Running it again fills nothing."""

    def approved(self, project: str) -> list[str]:
        return [s["sample_id"] for s in self.samples(project, "approved")]

    @staticmethod
    def _epoch(moment: datetime) -> float:
        if moment.tzinfo is None:
            raise ValueError(f"approval window bound {moment!r} has no time zone")
        return moment.timestamp()

    @staticmethod
    def _fill_time(attributes: dict[str, Any], updated: float) -> float:
        """When an approved sample without ``approved_at`` was approved: the review's answer, else the row's
        last write."""
        reviewed = attributes.get("reviewed_at")
        if isinstance(reviewed, str):
            try:
                moment = datetime.fromisoformat(reviewed)
            except ValueError:
                moment = None
            if moment is not None and moment.tzinfo is not None:
                return moment.timestamp()
        return float(updated)

    @staticmethod
    def _check(status: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown sample status {status!r}; one of {STATUSES}")

    @staticmethod
    def _sources(status: str) -> tuple[str, ...]:
        if status not in MOVES_TO:
            raise ValueError(f"no sample moves to {status!r} by a transition; one of {sorted(MOVES_TO)}")
        return MOVES_TO[status]


class SqliteSampleRegistry(SampleRegistry):
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with self._conn() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS samples (project TEXT, sample_id TEXT, status TEXT, "
                         "attributes TEXT, updated REAL, PRIMARY KEY (project, sample_id))")
            conn.execute("CREATE TABLE IF NOT EXISTS unresolved_series (project TEXT, series TEXT, reason TEXT, "
                         "record TEXT, attempts INTEGER, updated REAL, PRIMARY KEY (project, series))")
            columns = {row["name"] for row in conn.execute("PRAGMA table_info(samples)")}
            added = "approved_at" not in columns
            if added:  # a registry from before approval times were kept
                conn.execute("ALTER TABLE samples ADD COLUMN approved_at REAL")
            conn.execute("CREATE INDEX IF NOT EXISTS samples_by_approval ON samples (project, approved_at)")
        if added:
            with self._conn() as conn:
                projects = [r["project"] for r in conn.execute("SELECT DISTINCT project FROM samples "
                                                               "WHERE status = 'approved'")]
            for project in projects:
                self.fill_approved_at(project)

    def _conn(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30)
        conn.row_factory = sqlite3.Row
        return conn

    def upsert(self, project: str, sample_id: str, status: str, *, approved_at: datetime | None = None,
               **attributes: Any) -> None:
        self._check(status)
        with self._conn() as conn:
            row = conn.execute("SELECT attributes FROM samples WHERE project = ? AND sample_id = ?",
                               (project, sample_id)).fetchone()
            merged = {**(json.loads(row["attributes"]) if row else {}), **attributes}
            now = time.time()
            when = None if status != "approved" else (self._epoch(approved_at) if approved_at else now)
            conn.execute("INSERT INTO samples (project, sample_id, status, attributes, updated, approved_at) "
                         "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (project, sample_id) DO UPDATE "
                         "SET status = excluded.status, attributes = excluded.attributes, updated = excluded.updated, "
                         "approved_at = CASE WHEN excluded.status != 'approved' THEN NULL "
                         "WHEN ? THEN excluded.approved_at ELSE coalesce(samples.approved_at, excluded.approved_at) END",
                         (project, sample_id, status, json.dumps(merged, sort_keys=True), now, when,
                          approved_at is not None))

    def register(self, project: str, sample_id: str, **attributes: Any) -> bool:
        with self._conn() as conn:
            cursor = conn.execute("INSERT INTO samples (project, sample_id, status, attributes, updated) "
                                  "VALUES (?, ?, 'discovered', ?, ?) ON CONFLICT DO NOTHING",
                                  (project, sample_id, json.dumps(attributes, sort_keys=True), time.time()))
            return cursor.rowcount == 1

    def transition(self, project: str, sample_id: str, status: str, **attributes: Any) -> bool:
        sources = self._sources(status)
        with self._conn() as conn:
            conn.execute("BEGIN IMMEDIATE")  # read and write as one: no other writer in between
            row = conn.execute("SELECT status, attributes FROM samples WHERE project = ? AND sample_id = ?",
                               (project, sample_id)).fetchone()
            if row is None or row["status"] not in sources:
                return False
            merged = {**json.loads(row["attributes"]), **attributes}
            now = time.time()
            conn.execute("UPDATE samples SET status = ?, attributes = ?, updated = ?, approved_at = ? "
                         "WHERE project = ? AND sample_id = ?",
                         (status, json.dumps(merged, sort_keys=True), now, now if status == "approved" else None,
                          project, sample_id))
            return True

    def approved_between(self, project: str, start: datetime, end: datetime) -> list[str]:
        with self._conn() as conn:
            rows = conn.execute("SELECT sample_id FROM samples WHERE project = ? AND approved_at >= ? AND "
                                "approved_at < ? AND status = 'approved' ORDER BY sample_id",
                                (project, self._epoch(start), self._epoch(end))).fetchall()
        return [r["sample_id"] for r in rows]

    def fill_approved_at(self, project: str) -> int:
        with self._conn() as conn:
            conn.execute("BEGIN IMMEDIATE")
            rows = conn.execute("SELECT sample_id, attributes, updated FROM samples WHERE project = ? AND "
                                "status = 'approved' AND approved_at IS NULL", (project,)).fetchall()
            for r in rows:
                conn.execute("UPDATE samples SET approved_at = ? WHERE project = ? AND sample_id = ?",
                             (self._fill_time(json.loads(r["attributes"]), r["updated"]), project, r["sample_id"]))
            return len(rows)

    def samples(self, project: str, status: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM samples WHERE project = ?", [project]
        if status:
            self._check(status)
            sql, args = sql + " AND status = ?", args + [status]
        with self._conn() as conn:
            rows = conn.execute(sql + " ORDER BY sample_id", args).fetchall()
        return [{"project": r["project"], "sample_id": r["sample_id"], "status": r["status"],
                 **json.loads(r["attributes"]),
                 **({"approved_at": r["approved_at"]} if r["approved_at"] is not None else {})} for r in rows]


    def unresolved(self, project: str, series: str, reason: str, record: dict[str, Any]) -> None:
        with self._conn() as conn:
            conn.execute("INSERT INTO unresolved_series VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT (project, series) DO "
                         "UPDATE SET reason = excluded.reason, record = excluded.record, "
                         "attempts = attempts + 1, updated = excluded.updated",
                         (project, series, reason, json.dumps(record, sort_keys=True), time.time()))

    def unresolved_series(self, project: str) -> list[dict[str, Any]]:
        with self._conn() as conn:
            rows = conn.execute("SELECT * FROM unresolved_series WHERE project = ? ORDER BY series",
                                (project,)).fetchall()
        return [{"series": r["series"], "reason": r["reason"], "record": json.loads(r["record"]),
                 "attempts": r["attempts"]} for r in rows]

    def resolved(self, project: str, series: str) -> bool:
        with self._conn() as conn:
            return conn.execute("DELETE FROM unresolved_series WHERE project = ? AND series = ?",
                                (project, series)).rowcount == 1


class DynamoDbSampleRegistry(SampleRegistry):
    """Table with string keys ``project`` (partition) and ``sample_id`` (sort), and the global secondary index
    ``by_approval`` (``project``, number ``approved_at``; infra/genomics.yaml)."""

    APPROVAL_INDEX = "by_approval"
    OWN = ("project", "sample_id", "status", "updated", "approved_at")  # attributes not stored as JSON

    def __init__(self, client: Any, table: str):
        self.client = client
        self.table = table

    def _key(self, project: str, sample_id: str) -> dict[str, Any]:
        return {"project": {"S": project}, "sample_id": {"S": sample_id}}

    @staticmethod
    def _update(status: str, attributes: dict[str, Any], approved: str | None = None,
                at: float | None = None) -> tuple[str, dict[str, str], dict[str, Any]]:
        """SET status, updated and each attribute (JSON in a string), through placeholders only; ``approved``:
        "set" (approved_at = ``at`` or now), "keep" (set only if absent) or "remove"."""
        names = {"#status": "status", "#updated": "updated"}
        now = time.time()
        values: dict[str, Any] = {":status": {"S": status}, ":updated": {"N": repr(now)}}
        sets = ["#status = :status", "#updated = :updated"]
        for i, (key, value) in enumerate(sorted(attributes.items())):
            if key in DynamoDbSampleRegistry.OWN:
                raise ValueError(f"attribute {key!r} is the registry's own")
            names[f"#a{i}"], values[f":a{i}"] = key, {"S": json.dumps(value)}
            sets.append(f"#a{i} = :a{i}")
        remove = ""
        if approved:
            names["#approved_at"] = "approved_at"
        if approved in ("set", "keep"):
            values[":approved_at"] = {"N": repr(now if at is None else at)}
            sets.append("#approved_at = :approved_at" if approved == "set"
                        else "#approved_at = if_not_exists(#approved_at, :approved_at)")
        elif approved == "remove":
            remove = " REMOVE #approved_at"
        return "SET " + ", ".join(sets) + remove, names, values

    def upsert(self, project: str, sample_id: str, status: str, *, approved_at: datetime | None = None,
               **attributes: Any) -> None:
        self._check(status)
        mode = "remove" if status != "approved" else ("set" if approved_at else "keep")
        expression, names, values = self._update(status, attributes, mode,
                                                 self._epoch(approved_at) if approved_at else None)
        self.client.update_item(TableName=self.table, Key=self._key(project, sample_id), UpdateExpression=expression,
                                ExpressionAttributeNames=names, ExpressionAttributeValues=values)

    def register(self, project: str, sample_id: str, **attributes: Any) -> bool:
        item = {**self._key(project, sample_id), "status": {"S": "discovered"},
                "updated": {"N": repr(time.time())},
                **{k: {"S": json.dumps(v)} for k, v in attributes.items()}}
        try:
            self.client.put_item(TableName=self.table, Item=item,
                                 ConditionExpression="attribute_not_exists(sample_id)")
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def transition(self, project: str, sample_id: str, status: str, **attributes: Any) -> bool:
        sources = self._sources(status)
        expression, names, values = self._update(status, attributes, "set" if status == "approved" else None)
        values.update({f":from{i}": {"S": s} for i, s in enumerate(sources)})
        condition = "#status IN (" + ", ".join(f":from{i}" for i in range(len(sources))) + ")"
        try:
            self.client.update_item(TableName=self.table, Key=self._key(project, sample_id),
                                    UpdateExpression=expression, ConditionExpression=condition,
                                    ExpressionAttributeNames=names, ExpressionAttributeValues=values)
        except self.client.exceptions.ConditionalCheckFailedException:
            return False  # absent (the condition fails on a missing status too) or in another status
        return True

    def _query(self, project: str, status: str | None = None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"TableName": self.table, "KeyConditionExpression": "project = :p",
                                  "ExpressionAttributeValues": {":p": {"S": project}}}
        if status:
            kwargs["FilterExpression"] = "#status = :s"
            kwargs["ExpressionAttributeNames"] = {"#status": "status"}
            kwargs["ExpressionAttributeValues"][":s"] = {"S": status}
        return [item for page in self.client.get_paginator("query").paginate(**kwargs) for item in page["Items"]]

    def samples(self, project: str, status: str | None = None) -> list[dict[str, Any]]:
        if status:
            self._check(status)
        out = []
        for item in self._query(project, status):
            row = {"project": item["project"]["S"], "sample_id": item["sample_id"]["S"],
                   "status": item["status"]["S"]}
            row.update({k: json.loads(v["S"]) for k, v in item.items() if k not in self.OWN})
            if "approved_at" in item:
                row["approved_at"] = float(item["approved_at"]["N"])
            out.append(row)
        return sorted(out, key=lambda r: r["sample_id"])

    def approved_between(self, project: str, start: datetime, end: datetime) -> list[str]:
        low, high = self._epoch(start), self._epoch(end)
        if high <= low:
            return []
        found = set()
        # BETWEEN is inclusive at both ends; the interval is [start, end): a sample approved at ``end`` exactly
        # belongs to the next interval
        for page in self.client.get_paginator("query").paginate(
                TableName=self.table, IndexName=self.APPROVAL_INDEX,
                KeyConditionExpression="project = :p AND approved_at BETWEEN :low AND :high",
                ExpressionAttributeValues={":p": {"S": project}, ":low": {"N": repr(low)},
                                           ":high": {"N": repr(high)}}):
            found |= {item["sample_id"]["S"] for item in page["Items"] if float(item["approved_at"]["N"]) < high}
        return sorted(found)

    def fill_approved_at(self, project: str) -> int:
        filled = 0
        for item in self._query(project, "approved"):
            if "approved_at" in item:
                continue
            attributes = {k: json.loads(v["S"]) for k, v in item.items() if k not in self.OWN}
            at = self._fill_time(attributes, float(item.get("updated", {}).get("N", time.time())))
            try:
                self.client.update_item(
                    TableName=self.table, Key=self._key(project, item["sample_id"]["S"]),
                    UpdateExpression="SET #approved_at = :at",
                    ConditionExpression="attribute_not_exists(#approved_at) AND #status = :approved",
                    ExpressionAttributeNames={"#approved_at": "approved_at", "#status": "status"},
                    ExpressionAttributeValues={":at": {"N": repr(at)}, ":approved": {"S": "approved"}})
            except self.client.exceptions.ConditionalCheckFailedException:
                continue  # approved (with its time) or moved meanwhile
            filled += 1
        return filled

    @staticmethod
    def _series_key(project: str, series: str) -> dict[str, Any]:
        return {"project": {"S": f"{project}#unresolved-series"}, "sample_id": {"S": series}}

    def unresolved(self, project: str, series: str, reason: str, record: dict[str, Any]) -> None:
        self.client.update_item(
            TableName=self.table, Key=self._series_key(project, series),
            UpdateExpression="SET #reason = :reason, #record = :record, #updated = :updated ADD #attempts :one",
            ExpressionAttributeNames={"#reason": "reason", "#record": "record", "#updated": "updated",
                                      "#attempts": "attempts"},
            ExpressionAttributeValues={":reason": {"S": reason}, ":record": {"S": json.dumps(record, sort_keys=True)},
                                       ":updated": {"N": repr(time.time())}, ":one": {"N": "1"}})

    def unresolved_series(self, project: str) -> list[dict[str, Any]]:
        out = []
        for page in self.client.get_paginator("query").paginate(
                TableName=self.table, KeyConditionExpression="project = :p",
                ExpressionAttributeValues={":p": {"S": f"{project}#unresolved-series"}}):
            out += [{"series": item["sample_id"]["S"], "reason": item["reason"]["S"],
                     "record": json.loads(item["record"]["S"]), "attempts": int(item["attempts"]["N"])}
                    for item in page["Items"]]
        return sorted(out, key=lambda r: r["series"])

    def resolved(self, project: str, series: str) -> bool:
        answer = self.client.delete_item(TableName=self.table, Key=self._series_key(project, series),
                                         ReturnValues="ALL_OLD")
        return "Attributes" in answer
