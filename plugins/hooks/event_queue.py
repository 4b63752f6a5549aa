"""Where Batch state-change events arrive: an SQS queue on AWS (target of the EventBridge rule), and a
SQLite-backed queue with the same receive / delete-after-processing contract locally.

Messages are at-least-once on both: a message received and not deleted becomes visible again after the
visibility timeout, so a consumer that dies between receiving and recording loses nothing.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VISIBILITY_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Message:
    receipt: str
    body: str


class EventQueue(ABC):
    @abstractmethod
    def receive(self, max_messages: int = 10, wait_seconds: float = 0.0) -> list[Message]:
        """Up to ``max_messages`` messages, waiting up to ``wait_seconds`` for the first one."""

    @abstractmethod
    def delete(self, receipts: list[str]) -> None:
        """Acknowledge processed messages."""


class SqsEventQueue(EventQueue):
    def __init__(self, client: Any, queue_url: str):
        self.client = client
        self.queue_url = queue_url

    def receive(self, max_messages: int = 10, wait_seconds: float = 0.0) -> list[Message]:
        resp = self.client.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(max_messages, 10),
            WaitTimeSeconds=int(min(wait_seconds, 20)),
            VisibilityTimeout=VISIBILITY_TIMEOUT_SECONDS,
        )
        return [Message(m["ReceiptHandle"], m["Body"]) for m in resp.get("Messages", [])]

    def delete(self, receipts: list[str]) -> None:
        for start in range(0, len(receipts), 10):
            entries = [{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(receipts[start : start + 10])]
            resp = self.client.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            if resp.get("Failed"):
                # Not fatal: the message reappears and is recorded again, which the store ignores.
                failed = ", ".join(f["Id"] for f in resp["Failed"])
                raise RuntimeError(f"SQS DeleteMessageBatch failed for entries {failed}")


class LocalEventQueue(EventQueue):
    """The local stand-in for "EventBridge rule -> SQS queue": the local runner appends, consumers receive."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conn().executescript(
            """CREATE TABLE IF NOT EXISTS events (
                   seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL,
                   visible_at REAL NOT NULL, receipt TEXT, receive_count INTEGER NOT NULL DEFAULT 0);
               CREATE INDEX IF NOT EXISTS events_visible ON events(visible_at);"""
        )

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            self._local.conn = conn
        return conn

    def send(self, body: str) -> None:
        self._conn().execute("INSERT INTO events (body, visible_at) VALUES (?, ?)", (body, time.time()))

    def receive(self, max_messages: int = 10, wait_seconds: float = 0.0) -> list[Message]:
        deadline = time.monotonic() + wait_seconds
        while True:
            got = self._receive_now(max_messages)
            if got or time.monotonic() >= deadline:
                return got
            time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))

    def _receive_now(self, max_messages: int) -> list[Message]:
        conn = self._conn()
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = conn.execute(
                "SELECT seq, body FROM events WHERE visible_at <= ? ORDER BY seq LIMIT ?", (now, max_messages)
            ).fetchall()
            out = []
            for seq, body in rows:
                receipt = f"{seq}:{uuid.uuid4().hex}"
                conn.execute(
                    "UPDATE events SET visible_at = ?, receipt = ?, receive_count = receive_count + 1 WHERE seq = ?",
                    (now + VISIBILITY_TIMEOUT_SECONDS, receipt, seq),
                )
                out.append(Message(receipt, body))
            conn.execute("COMMIT")
            return out
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def delete(self, receipts: list[str]) -> None:
        conn = self._conn()
        conn.executemany("DELETE FROM events WHERE receipt = ?", [(r,) for r in receipts])

    def depth(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM events").fetchone()[0]
