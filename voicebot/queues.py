"""Durable per-forvaltning queues of routed calls.

One interface (QueueStore), an SQLite back-end (WAL; the embedded default, zero set-up).
A call is written here before it leaves the bot, so a restart never loses it. Records hold
only masked text: the session masks CPR and phone numbers before it enqueues.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

STATUSES = ("waiting", "claimed", "done", "abandoned")


@dataclass
class RoutedCall:
    call_id: str
    forvaltning: str
    intent: str | None
    confidence: float
    transcript: str  # CPR- and phone-masked
    explanation: list[str] = field(default_factory=list)
    reason: str = ""
    caller: str | None = None  # masked caller number
    platform: str = ""
    created_at: float = field(default_factory=time.time)
    status: str = "waiting"
    claimed_by: str | None = None
    claimed_at: float | None = None
    finished_at: float | None = None

    @property
    def wait_s(self) -> float:
        end = self.claimed_at or self.finished_at or time.time()
        return max(0.0, end - self.created_at)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["wait_s"] = round(self.wait_s, 1)
        return d


class QueueStore(Protocol):
    def enqueue(self, call: RoutedCall) -> None: ...
    def get(self, call_id: str) -> RoutedCall | None: ...
    def waiting(self, forvaltninger: list[str] | None = None) -> list[RoutedCall]: ...
    def calls(self, forvaltninger: list[str] | None = None, limit: int = 200) -> list[RoutedCall]: ...
    def claim(self, call_id: str, agent: str, forvaltninger: list[str] | None = None) -> bool: ...
    def complete(self, call_id: str, agent: str) -> bool: ...
    def abandon(self, call_id: str) -> bool: ...
    def release_stale_claims(self, older_than_s: float) -> int: ...
    def stats(self) -> dict[str, dict[str, float]]: ...
    def purge_older_than(self, days: int) -> int: ...
    def forget(self, call_id: str) -> bool: ...
    def close(self) -> None: ...


def mask_caller(number: str | None) -> str | None:
    """Keep the country code and the last two digits: '+45 •• •• •• 78'."""
    if not number:
        return None
    digits = "".join(ch for ch in number if ch.isdigit())
    if len(digits) < 4:
        return "••"
    prefix = "+" + digits[:2] + " " if number.strip().startswith("+") else ""
    rest = digits[2:] if prefix else digits
    return prefix + "•" * (len(rest) - 2) + rest[-2:]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS routed_calls (
    call_id TEXT PRIMARY KEY,
    forvaltning TEXT NOT NULL,
    intent TEXT,
    confidence REAL NOT NULL,
    transcript TEXT NOT NULL,
    explanation TEXT NOT NULL,
    reason TEXT NOT NULL,
    caller TEXT,
    platform TEXT NOT NULL,
    created_at REAL NOT NULL,
    status TEXT NOT NULL,
    claimed_by TEXT,
    claimed_at REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS routed_calls_queue ON routed_calls (forvaltning, status, created_at);
"""
_COLUMNS = (
    "call_id", "forvaltning", "intent", "confidence", "transcript", "explanation", "reason",
    "caller", "platform", "created_at", "status", "claimed_by", "claimed_at", "finished_at",
)  # fmt: skip


class SqliteQueueStore:
    """SQLite in WAL mode; one connection guarded by a lock (writes are tiny and rare)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an enqueued call survives power loss
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def _row(self, row: tuple) -> RoutedCall:
        d = dict(zip(_COLUMNS, row, strict=True))
        d["explanation"] = json.loads(d["explanation"])
        return RoutedCall(**d)

    def _select(self, where: str, params: tuple, order: str = "created_at", limit: int = 1000) -> list[RoutedCall]:
        sql = f"SELECT {', '.join(_COLUMNS)} FROM routed_calls WHERE {where} ORDER BY {order} LIMIT ?"
        with self._lock:
            return [self._row(r) for r in self._db.execute(sql, (*params, limit)).fetchall()]

    @staticmethod
    def _in(forvaltninger: list[str] | None) -> tuple[str, tuple]:
        if forvaltninger is None:
            return "1=1", ()
        if not forvaltninger:
            return "0=1", ()
        return f"forvaltning IN ({', '.join('?' * len(forvaltninger))})", tuple(forvaltninger)

    def enqueue(self, call: RoutedCall) -> None:
        values = asdict(call)
        values["explanation"] = json.dumps(call.explanation, ensure_ascii=False)
        with self._lock:
            self._db.execute(
                f"INSERT OR IGNORE INTO routed_calls ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_COLUMNS))})",
                tuple(values[c] for c in _COLUMNS),
            )

    def get(self, call_id: str) -> RoutedCall | None:
        found = self._select("call_id = ?", (call_id,))
        return found[0] if found else None

    def waiting(self, forvaltninger: list[str] | None = None) -> list[RoutedCall]:
        where, params = self._in(forvaltninger)
        return self._select(f"status = 'waiting' AND {where}", params)

    def calls(self, forvaltninger: list[str] | None = None, limit: int = 200) -> list[RoutedCall]:
        where, params = self._in(forvaltninger)
        return self._select(where, params, order="created_at DESC", limit=limit)

    def _update(self, sql: str, params: tuple) -> bool:
        with self._lock:
            return self._db.execute(sql, params).rowcount > 0

    def claim(self, call_id: str, agent: str, forvaltninger: list[str] | None = None) -> bool:
        where, params = self._in(forvaltninger)
        return self._update(
            f"UPDATE routed_calls SET status='claimed', claimed_by=?, claimed_at=? "
            f"WHERE call_id=? AND status='waiting' AND {where}",
            (agent, time.time(), call_id, *params),
        )

    def complete(self, call_id: str, agent: str) -> bool:
        return self._update(
            "UPDATE routed_calls SET status='done', finished_at=? WHERE call_id=? AND status='claimed' AND claimed_by=?",
            (time.time(), call_id, agent),
        )

    def abandon(self, call_id: str) -> bool:
        return self._update(
            "UPDATE routed_calls SET status='abandoned', finished_at=? WHERE call_id=? AND status='waiting'",
            (time.time(), call_id),
        )

    def release_stale_claims(self, older_than_s: float) -> int:
        with self._lock:
            return self._db.execute(
                "UPDATE routed_calls SET status='waiting', claimed_by=NULL, claimed_at=NULL "
                "WHERE status='claimed' AND claimed_at < ?",
                (time.time() - older_than_s,),
            ).rowcount

    def stats(self) -> dict[str, dict[str, float]]:
        now = time.time()
        with self._lock:
            rows = self._db.execute(
                "SELECT forvaltning, COUNT(*), MIN(created_at) FROM routed_calls "
                "WHERE status='waiting' GROUP BY forvaltning"
            ).fetchall()
        return {f: {"waiting": n, "longest_wait_s": round(now - oldest, 1)} for f, n, oldest in rows}

    def purge_older_than(self, days: int) -> int:
        with self._lock:
            return self._db.execute(
                "DELETE FROM routed_calls WHERE created_at < ?", (time.time() - days * 86400,)
            ).rowcount

    def forget(self, call_id: str) -> bool:
        return self._update("DELETE FROM routed_calls WHERE call_id = ?", (call_id,))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_store(backend: str, db_path: Path, redis_url: str | None = None) -> QueueStore:
    if backend == "sqlite":
        return SqliteQueueStore(db_path)
    raise ValueError(f"queue_backend '{backend}' is not available in this build")
