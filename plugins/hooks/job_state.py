"""The durable job-state store: what every waiting trigger reads, what the event consumer writes.

Six kinds of record live here, each behind methods named for it:
- job state (``record``, ``get_many``, ``children``), one per job and one per array child, merged monotonically
  so duplicated and reordered events settle on the right state (see ``JobState.order``);
- submissions (``get_submission``, ``put_submission``), one per task instance (idempotency key), so an Airflow
  retry reattaches to its job;
- publish records (``get_publish_record``, ``put_publish_record``), one per publish of a table: its generation
  and the statements already done, so a retried publish resumes;
- catalog documents (``get_catalog``, ``put_catalog``), one per published table, versioned and replaced only by
  a writer that read the current version, so concurrent publishes to one table never lose each other's commits;
- instances (``get_instance``, ``put_instance``), plain records of what a container instance ran as;
- the shared SubmitJob budget (``take_submit_slot``), counted in short fixed windows (see rate_window) so that
  every worker of the deployment together stays under the configured rate.

Submissions and publish records are plain keyed records (``_get_record``/``_put_record``), catalogs are
versioned documents (``_get_document``/``_put_document``); each backend implements those four primitives.

DynamoDB on AWS (table with string keys ``pk`` and ``sk``), SQLite locally. Both implement ``JobStateStore``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterable

from batch_model import JobState

RECORD_TTL_SECONDS = 30 * 24 * 3600
DOCUMENT_LIMIT_BYTES = 350_000


def publish_record_key(table: str, publish_key: str) -> str:
    """Where a publish's record is kept (beside the submissions: the same kind of plain record)."""
    return f"publish#{table}#{publish_key}"


def rate_window(rate_per_second: float) -> tuple[float, int]:
    """The counting window (seconds) and how many submissions each window allows for a rate budget.

    Windows are fixed, so a one-second interval overlaps at most 1/window + 1 of them; the budget per window is
    chosen so that even then no second holds more than the rate: 40 TPS gives 3 per 100 ms (at most 33 in
    any second, 30 on average), never a burst over AWS's 50 TPS quota at a window edge.
    """
    if rate_per_second >= 11:
        return 0.1, int(rate_per_second // 11)
    return 1.0, max(1, int(rate_per_second // 2))


class JobStateStore(ABC):
    # May record() run in several threads at once? Each record is one conditional write, so a remote store
    # (DynamoDB) takes them in parallel; SQLite serialises writers anyway.
    concurrent_writes: bool = False

    @abstractmethod
    def record(self, state: JobState) -> bool:
        """Store ``state`` unless a later (or equal) observation is already stored. True if it was applied."""

    @abstractmethod
    def get_many(self, job_ids: Iterable[str]) -> dict[str, JobState]:
        """Current state of each known job id (unknown ids are absent)."""

    @abstractmethod
    def children(self, parent_id: str) -> list[JobState]:
        """States of an array job's children, in index order."""

    # --- submissions: which job a task instance submitted --------------------------------------------------
    def get_submission(self, key: str) -> dict[str, Any] | None:
        """The latest job submitted for a task instance's idempotency key."""
        return self._get_record(key)

    def put_submission(self, key: str, record: dict[str, Any]) -> None:
        """Remember which job a task instance submitted (overwrites an older generation)."""
        self._put_record(key, record)

    # --- publish records: where a publish of a table stands ------------------------------------------------
    def get_publish_record(self, table: str, publish_key: str) -> dict[str, Any] | None:
        """The record of publish ``publish_key`` of ``table`` (``database.table``), None before its first try."""
        return self._get_record(publish_record_key(table, publish_key))

    def put_publish_record(self, table: str, publish_key: str, record: dict[str, Any]) -> None:
        self._put_record(publish_record_key(table, publish_key), record)

    # --- catalog documents: a published table's live run tables ---------------------------------------------
    def get_catalog(self, table: str) -> tuple[int, dict[str, Any] | None]:
        """The catalog document of ``table`` (``database.table``) and its version (0 and None if none yet)."""
        return self._get_document(f"catalog#{table}")

    def put_catalog(self, table: str, doc: dict[str, Any], expected_version: int) -> bool:
        """Write version ``expected_version + 1`` if the stored version is still ``expected_version``."""
        return self._put_document(f"catalog#{table}", doc, expected_version)

    # --- instances: what a container instance (or an instance type) is, for cost per sample -----------------
    def get_instance(self, key: str) -> dict[str, Any] | None:
        """A resolved container instance (by ARN) or instance type (``type#<type>``), None if not yet known."""
        return self._get_record(f"instance#{key}")

    def put_instance(self, key: str, record: dict[str, Any]) -> None:
        self._put_record(f"instance#{key}", record)

    # --- the primitives each backend implements ---------------------------------------------------------------
    @abstractmethod
    def _get_record(self, key: str) -> dict[str, Any] | None:
        """A keyed record (None if absent)."""

    @abstractmethod
    def _put_record(self, key: str, record: dict[str, Any]) -> None:
        """Write a keyed record, replacing what was there."""

    @abstractmethod
    def _get_document(self, key: str) -> tuple[int, dict[str, Any] | None]:
        """A versioned document and its version (0 and None if there is none yet)."""

    @abstractmethod
    def _put_document(self, key: str, doc: dict[str, Any], expected_version: int) -> bool:
        """Write version ``expected_version + 1`` if the stored version is still ``expected_version``."""

    @abstractmethod
    def try_take_submit_slot(self, rate_per_second: float) -> float:
        """Take one SubmitJob slot from the shared budget: 0.0 if taken, else seconds to wait before asking again."""

    def take_submit_slot(self, rate_per_second: float, sleep=time.sleep) -> float:
        """Block until a slot is taken; returns the seconds spent waiting."""
        waited = 0.0
        while (delay := self.try_take_submit_slot(rate_per_second)) > 0:
            sleep(delay)
            waited += delay
        return waited


# --- SQLite ------------------------------------------------------------------------------------------
class SqliteJobStateStore(JobStateStore):
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._conn() as conn:
            conn.executescript(
                """
                CREATE TABLE IF NOT EXISTS job_state (
                    job_id TEXT PRIMARY KEY, parent_id TEXT NOT NULL, array_index INTEGER,
                    ord INTEGER NOT NULL, data TEXT NOT NULL, updated REAL NOT NULL);
                CREATE INDEX IF NOT EXISTS job_state_parent ON job_state(parent_id, array_index);
                CREATE TABLE IF NOT EXISTS submission (key TEXT PRIMARY KEY, data TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS document (key TEXT PRIMARY KEY, version INTEGER NOT NULL, data TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS submit_rate (window INTEGER PRIMARY KEY, n INTEGER NOT NULL);
                """
            )

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def record(self, state: JobState) -> bool:
        cur = self._conn().execute(
            """INSERT INTO job_state (job_id, parent_id, array_index, ord, data, updated)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT(job_id) DO UPDATE SET ord = excluded.ord, data = excluded.data, updated = excluded.updated
               WHERE excluded.ord > job_state.ord""",
            (
                state.job_id,
                state.parent_id,
                state.array_index,
                state.order,
                json.dumps(state.to_dict()),
                time.time(),
            ),
        )
        return cur.rowcount == 1

    def get_many(self, job_ids: Iterable[str]) -> dict[str, JobState]:
        ids = list(dict.fromkeys(job_ids))
        out: dict[str, JobState] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = self._conn().execute(
                f"SELECT data FROM job_state WHERE job_id IN ({','.join('?' * len(chunk))})", chunk
            )
            for (data,) in rows:
                state = JobState.from_dict(json.loads(data))
                out[state.job_id] = state
        return out

    def children(self, parent_id: str) -> list[JobState]:
        rows = self._conn().execute(
            "SELECT data FROM job_state WHERE parent_id = ? AND array_index IS NOT NULL ORDER BY array_index",
            (parent_id,),
        )
        return [JobState.from_dict(json.loads(d)) for (d,) in rows]

    def _get_record(self, key: str) -> dict[str, Any] | None:
        row = self._conn().execute("SELECT data FROM submission WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def _put_record(self, key: str, record: dict[str, Any]) -> None:
        self._conn().execute(
            "INSERT INTO submission (key, data) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET data = excluded.data",
            (key, json.dumps(record)),
        )

    def _get_document(self, key: str) -> tuple[int, dict[str, Any] | None]:
        row = self._conn().execute("SELECT version, data FROM document WHERE key = ?", (key,)).fetchone()
        return (row[0], json.loads(row[1])) if row else (0, None)

    def _put_document(self, key: str, doc: dict[str, Any], expected_version: int) -> bool:
        conn = self._conn()
        if expected_version == 0:
            cur = conn.execute("INSERT OR IGNORE INTO document (key, version, data) VALUES (?, 1, ?)",
                               (key, json.dumps(doc)))
        else:
            cur = conn.execute("UPDATE document SET version = version + 1, data = ? WHERE key = ? AND version = ?",
                               (json.dumps(doc), key, expected_version))
        return cur.rowcount == 1

    def try_take_submit_slot(self, rate_per_second: float) -> float:
        now = time.time()
        seconds, budget = rate_window(rate_per_second)
        window = int(now / seconds)
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT n FROM submit_rate WHERE window = ?", (window,)).fetchone()
            if row and row[0] >= budget:
                conn.execute("COMMIT")
                return max((window + 1) * seconds - now, 0.001)
            conn.execute(
                "INSERT INTO submit_rate (window, n) VALUES (?, 1) ON CONFLICT(window) DO UPDATE SET n = n + 1",
                (window,),
            )
            conn.execute("DELETE FROM submit_rate WHERE window < ?", (window - 100,))
            conn.execute("COMMIT")
            return 0.0
        except BaseException:
            conn.execute("ROLLBACK")
            raise


# --- DynamoDB ----------------------------------------------------------------------------------------
def _job_key(job_id: str) -> dict[str, Any]:
    parent, _, index = job_id.partition(":")
    sk = f"child#{int(index):06d}" if index else "#"
    return {"pk": {"S": f"job#{parent}"}, "sk": {"S": sk}}


class DynamoDbJobStateStore(JobStateStore):
    concurrent_writes = True

    def __init__(self, client: Any, table: str):
        self.client = client
        self.table = table

    def record(self, state: JobState) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.update_item(
                TableName=self.table,
                Key=_job_key(state.job_id),
                UpdateExpression="SET #ord = :ord, #data = :data, #upd = :upd, #exp = :exp",
                ConditionExpression="attribute_not_exists(#ord) OR #ord < :ord",
                ExpressionAttributeNames={"#ord": "ord", "#data": "data", "#upd": "updated", "#exp": "expires"},
                ExpressionAttributeValues={
                    ":ord": {"N": str(state.order)},
                    ":data": {"S": json.dumps(state.to_dict())},
                    ":upd": {"N": repr(time.time())},
                    ":exp": {"N": str(int(time.time()) + RECORD_TTL_SECONDS)},
                },
            )
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise

    def get_many(self, job_ids: Iterable[str]) -> dict[str, JobState]:
        ids = list(dict.fromkeys(job_ids))
        out: dict[str, JobState] = {}
        for start in range(0, len(ids), 100):  # BatchGetItem takes at most 100 keys
            pending: dict[str, Any] = {
                self.table: {"Keys": [_job_key(i) for i in ids[start : start + 100]], "ProjectionExpression": "#d",
                             "ExpressionAttributeNames": {"#d": "data"}}
            }
            delay = 0.05
            while pending:
                resp = self.client.batch_get_item(RequestItems=pending)
                for item in resp.get("Responses", {}).get(self.table, []):
                    state = JobState.from_dict(json.loads(item["data"]["S"]))
                    out[state.job_id] = state
                pending = resp.get("UnprocessedKeys") or {}
                if pending:
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
        return out

    def children(self, parent_id: str) -> list[JobState]:
        out: list[JobState] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :child)",
            "ExpressionAttributeValues": {":pk": {"S": f"job#{parent_id}"}, ":child": {"S": "child#"}},
        }
        while True:
            resp = self.client.query(**kwargs)
            out.extend(JobState.from_dict(json.loads(i["data"]["S"])) for i in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                return out
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def _get_record(self, key: str) -> dict[str, Any] | None:
        resp = self.client.get_item(
            TableName=self.table, Key={"pk": {"S": f"submission#{key}"}, "sk": {"S": "#"}}, ConsistentRead=True
        )
        item = resp.get("Item")
        return json.loads(item["data"]["S"]) if item else None

    def _put_record(self, key: str, record: dict[str, Any]) -> None:
        self.client.put_item(
            TableName=self.table,
            Item={
                "pk": {"S": f"submission#{key}"},
                "sk": {"S": "#"},
                "data": {"S": json.dumps(record)},
                "expires": {"N": str(int(time.time()) + RECORD_TTL_SECONDS)},
            },
        )

    def _get_document(self, key: str) -> tuple[int, dict[str, Any] | None]:
        resp = self.client.get_item(
            TableName=self.table, Key={"pk": {"S": f"doc#{key}"}, "sk": {"S": "#"}}, ConsistentRead=True
        )
        item = resp.get("Item")
        return (int(item["version"]["N"]), json.loads(item["data"]["S"])) if item else (0, None)

    def _put_document(self, key: str, doc: dict[str, Any], expected_version: int) -> bool:
        from botocore.exceptions import ClientError

        data = json.dumps(doc)
        if len(data) > DOCUMENT_LIMIT_BYTES:
            raise ValueError(f"document {key!r} is {len(data)} bytes, over DynamoDB's item limit with headroom "
                             f"({DOCUMENT_LIMIT_BYTES}); see README 'Publishing' on compacting a table")
        condition = "attribute_not_exists(#v)" if expected_version == 0 else "#v = :expected"
        values: dict[str, Any] = {":data": {"S": data}, ":one": {"N": "1"}}
        if expected_version:
            values[":expected"] = {"N": str(expected_version)}
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"pk": {"S": f"doc#{key}"}, "sk": {"S": "#"}},
                UpdateExpression="SET #data = :data ADD #v :one",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#v": "version", "#data": "data"},
                ExpressionAttributeValues=values,
            )
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise

    def try_take_submit_slot(self, rate_per_second: float) -> float:
        from botocore.exceptions import ClientError

        now = time.time()
        seconds, budget = rate_window(rate_per_second)
        window = int(now / seconds)
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"pk": {"S": f"submit-rate#{seconds}#{window}"}, "sk": {"S": "#"}},
                UpdateExpression="ADD #n :one SET #exp = :exp",
                ConditionExpression="attribute_not_exists(#n) OR #n < :budget",
                ExpressionAttributeNames={"#n": "n", "#exp": "expires"},
                ExpressionAttributeValues={
                    ":one": {"N": "1"},
                    ":budget": {"N": str(budget)},
                    ":exp": {"N": str(int(now) + 3600)},
                },
            )
            return 0.0
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return max((window + 1) * seconds - now, 0.001)
            raise
