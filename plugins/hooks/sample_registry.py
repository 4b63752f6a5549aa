"""The sample registry: which samples a project has and where each stands (DynamoDB on AWS, SQLite locally).

A sample is keyed by (project, sample_id); its status moves discovered -> downloading -> downloaded ->
qc_passed / qc_failed -> approved / rejected (geo_ingestion drives it). The pipelines read it to resolve
``samples: "all approved"``. Writes are upserts, so a rerun or backfill never duplicates a sample.
"""

from __future__ import annotations

import json
import sqlite3
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

STATUSES = ("discovered", "downloading", "downloaded", "qc_passed", "qc_failed", "approved", "rejected")


class SampleRegistry(ABC):
    @abstractmethod
    def upsert(self, project: str, sample_id: str, status: str, **attributes: Any) -> None:
        """Create the sample or update its status and attributes (others are kept)."""

    @abstractmethod
    def samples(self, project: str, status: str | None = None) -> list[dict[str, Any]]:
        """The project's samples (with ``status`` only, if given), sorted by sample id."""

    def approved(self, project: str) -> list[str]:
        return [s["sample_id"] for s in self.samples(project, "approved")]

    @staticmethod
    def _check(status: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown sample status {status!r}; one of {STATUSES}")


class SqliteSampleRegistry(SampleRegistry):
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with self._conn() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS samples (project TEXT, sample_id TEXT, status TEXT, "
                         "attributes TEXT, updated REAL, PRIMARY KEY (project, sample_id))")

    def _conn(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30)
        conn.row_factory = sqlite3.Row
        return conn

    def upsert(self, project: str, sample_id: str, status: str, **attributes: Any) -> None:
        self._check(status)
        with self._conn() as conn:
            row = conn.execute("SELECT attributes FROM samples WHERE project = ? AND sample_id = ?",
                               (project, sample_id)).fetchone()
            merged = {**(json.loads(row["attributes"]) if row else {}), **attributes}
            conn.execute("INSERT INTO samples VALUES (?, ?, ?, ?, ?) ON CONFLICT (project, sample_id) DO UPDATE "
                         "SET status = excluded.status, attributes = excluded.attributes, updated = excluded.updated",
                         (project, sample_id, status, json.dumps(merged, sort_keys=True), time.time()))

    def samples(self, project: str, status: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM samples WHERE project = ?", [project]
        if status:
            self._check(status)
            sql, args = sql + " AND status = ?", args + [status]
        with self._conn() as conn:
            rows = conn.execute(sql + " ORDER BY sample_id", args).fetchall()
        return [{"project": r["project"], "sample_id": r["sample_id"], "status": r["status"],
                 **json.loads(r["attributes"])} for r in rows]


class DynamoDbSampleRegistry(SampleRegistry):
    """Table with string keys ``project`` (partition) and ``sample_id`` (sort)."""

    def __init__(self, client: Any, table: str):
        self.client = client
        self.table = table

    def upsert(self, project: str, sample_id: str, status: str, **attributes: Any) -> None:
        self._check(status)
        names = {"#status": "status", "#updated": "updated"}
        values: dict[str, Any] = {":status": {"S": status}, ":updated": {"N": repr(time.time())}}
        sets = ["#status = :status", "#updated = :updated"]
        for i, (key, value) in enumerate(sorted(attributes.items())):
            names[f"#a{i}"], values[f":a{i}"] = key, {"S": json.dumps(value)}
            sets.append(f"#a{i} = :a{i}")
        self.client.update_item(TableName=self.table, Key={"project": {"S": project}, "sample_id": {"S": sample_id}},
                                UpdateExpression="SET " + ", ".join(sets), ExpressionAttributeNames=names,
                                ExpressionAttributeValues=values)

    def samples(self, project: str, status: str | None = None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"TableName": self.table, "KeyConditionExpression": "project = :p",
                                  "ExpressionAttributeValues": {":p": {"S": project}}}
        if status:
            self._check(status)
            kwargs["FilterExpression"] = "#status = :s"
            kwargs["ExpressionAttributeNames"] = {"#status": "status"}
            kwargs["ExpressionAttributeValues"][":s"] = {"S": status}
        out = []
        for page in self.client.get_paginator("query").paginate(**kwargs):
            for item in page["Items"]:
                row = {"project": item["project"]["S"], "sample_id": item["sample_id"]["S"],
                       "status": item["status"]["S"]}
                row.update({k: json.loads(v["S"]) for k, v in item.items()
                            if k not in ("project", "sample_id", "status", "updated")})
                out.append(row)
        return sorted(out, key=lambda r: r["sample_id"])
