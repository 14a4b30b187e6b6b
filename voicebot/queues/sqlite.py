"""The SQLite queue store (WAL; the embedded default, zero set-up) for one gateway machine."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from voicebot import sqlitedb
from voicebot.queues.records import (
    MAX_CLAIM_TIMES,
    MAX_FIGURES,
    MAX_LISTED,
    RoutedCall,
    callback_record,
    retention_cutoff,
)

log = logging.getLogger("voicebot.queues")

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
    finished_at REAL,
    lease_at REAL,
    kind TEXT NOT NULL DEFAULT 'call',
    callback_number TEXT,
    language TEXT NOT NULL DEFAULT 'da'
);
CREATE INDEX IF NOT EXISTS routed_calls_queue ON routed_calls (forvaltning, status, created_at);
CREATE INDEX IF NOT EXISTS routed_calls_created ON routed_calls (created_at);
CREATE INDEX IF NOT EXISTS routed_calls_claims ON routed_calls (forvaltning, claimed_at);
"""
_COLUMNS = (
    "call_id", "forvaltning", "intent", "confidence", "transcript", "explanation", "reason",
    "caller", "platform", "created_at", "status", "claimed_by", "claimed_at", "finished_at",
    "kind", "callback_number", "language",
)  # fmt: skip
# Columns added after the first release, with their definitions (added in place to old files).
_ADDED_COLUMNS = {
    "lease_at": "REAL",
    "kind": "TEXT NOT NULL DEFAULT 'call'",
    "callback_number": "TEXT",
    "language": "TEXT NOT NULL DEFAULT 'da'",  # calls before languages were Danish
}


class SqliteQueueStore:
    """SQLite in WAL mode; one connection guarded by a lock (writes are tiny and rare)."""

    def __init__(self, path: str | Path, create: bool = True) -> None:
        """create=False opens only an existing queue database (`voicebot forget` never makes one)."""
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlitedb.connect(self.path, "queue database", create=create)
        self._db.execute("PRAGMA synchronous=FULL")  # an enqueued call survives power loss
        self._db.execute(
            "PRAGMA secure_delete=ON"
        )  # a forgotten call's bytes are overwritten, not left free
        self._migrate()
        self._db.executescript(_SCHEMA)

    def _migrate(self) -> None:
        """Databases made before claim leases lack `lease_at`, before callbacks `kind` and
        `callback_number`, before languages `language` (their calls were all Danish); add
        them in place (existing rows are live calls)."""
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(routed_calls)").fetchall()}
        for name, definition in _ADDED_COLUMNS.items():
            if cols and name not in cols:
                self._db.execute(f"ALTER TABLE routed_calls ADD COLUMN {name} {definition}")

    def _row(self, row: tuple[Any, ...]) -> RoutedCall:
        d = dict(zip(_COLUMNS, row, strict=True))
        d["explanation"] = json.loads(d["explanation"])
        return RoutedCall(**d)

    def _select(
        self,
        where: str,
        params: tuple[Any, ...],
        order: str = "created_at",
        limit: int = MAX_LISTED,
    ) -> list[RoutedCall]:
        sql = (
            f"SELECT {', '.join(_COLUMNS)} FROM routed_calls WHERE {where} ORDER BY {order} LIMIT ?"
        )
        with self._lock:
            rows = self._db.execute(sql, (*params, min(limit, MAX_LISTED))).fetchall()
        return [self._row(r) for r in rows]

    @staticmethod
    def _in(forvaltninger: list[str] | None) -> tuple[str, tuple[Any, ...]]:
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

    def claimed(self, forvaltninger: list[str] | None = None) -> list[RoutedCall]:
        where, params = self._in(forvaltninger)
        return self._select(f"status = 'claimed' AND {where}", params, order="claimed_at")

    def calls(self, forvaltninger: list[str] | None = None, limit: int = 200) -> list[RoutedCall]:
        where, params = self._in(forvaltninger)
        return self._select(where, params, order="created_at DESC", limit=limit)

    def _update(self, sql: str, params: tuple[Any, ...]) -> int:
        with self._lock:
            return self._db.execute(sql, params).rowcount

    def claim(self, call_id: str, agent: str, forvaltninger: list[str] | None = None) -> bool:
        where, params = self._in(forvaltninger)
        now = time.time()
        return (
            self._update(
                f"UPDATE routed_calls SET status='claimed', claimed_by=?, claimed_at=?, lease_at=? "
                f"WHERE call_id=? AND status='waiting' AND {where}",
                (agent, now, now, call_id, *params),
            )
            > 0
        )

    def complete(self, call_id: str, agent: str) -> bool:
        return (
            self._update(
                "UPDATE routed_calls SET status='done', finished_at=?, callback_number=NULL "
                "WHERE call_id=? AND status='claimed' AND claimed_by=?",
                (time.time(), call_id, agent),
            )
            > 0
        )

    def release(self, call_id: str, agent: str) -> bool:
        return (
            self._update(
                "UPDATE routed_calls SET status='waiting', claimed_by=NULL, claimed_at=NULL, lease_at=NULL "
                "WHERE call_id=? AND status='claimed' AND claimed_by=?",
                (call_id, agent),
            )
            > 0
        )

    def abandon(self, call_id: str) -> bool:
        return (
            self._update(
                "UPDATE routed_calls SET status='abandoned', finished_at=? "
                "WHERE call_id=? AND status='waiting' AND kind='call'",
                (time.time(), call_id),
            )
            > 0
        )

    def renew_claims(self, agent: str) -> int:
        return self._update(
            "UPDATE routed_calls SET lease_at=? WHERE status='claimed' AND claimed_by=?",
            (time.time(), agent),
        )

    def release_stale_claims(self, older_than_s: float) -> int:
        return self._update(
            "UPDATE routed_calls SET status='waiting', claimed_by=NULL, claimed_at=NULL, lease_at=NULL "
            "WHERE status='claimed' AND COALESCE(lease_at, claimed_at) < ?",
            (time.time() - older_than_s,),
        )

    def stats(self) -> dict[str, dict[str, float]]:
        now = time.time()
        with self._lock:
            rows = self._db.execute(
                "SELECT forvaltning, COUNT(*), MIN(created_at) FROM routed_calls "
                "WHERE status='waiting' GROUP BY forvaltning"
            ).fetchall()
        return {
            f: {"waiting": n, "longest_wait_s": round(now - oldest, 1)} for f, n, oldest in rows
        }

    def purge_older_than(self, days: int) -> int:
        purged = self._update(
            "DELETE FROM routed_calls WHERE created_at < ?", (retention_cutoff(days),)
        )
        if purged:
            self._checkpoint()
        return purged

    def forget(self, call_id: str) -> bool:
        found = self._update("DELETE FROM routed_calls WHERE call_id = ?", (call_id,)) > 0
        if found:
            self._checkpoint()
        return found

    # -- waiting: the wait estimate, callbacks, a day's figures ----------------------------
    def claim_times(
        self, forvaltning: str, since: float, limit: int = MAX_CLAIM_TIMES
    ) -> list[float]:
        """When live calls of a queue were claimed since `since`, oldest first (the latest
        `limit`). Calls put back in the queue lost their claim time: they were not served."""
        with self._lock:
            rows = self._db.execute(
                "SELECT claimed_at FROM routed_calls WHERE forvaltning=? AND kind='call' "
                "AND claimed_at >= ? ORDER BY claimed_at DESC LIMIT ?",
                (forvaltning, since, min(limit, MAX_CLAIM_TIMES)),
            ).fetchall()
        return sorted(r[0] for r in rows)

    def request_callback(self, call: RoutedCall, number: str) -> None:
        self.enqueue(callback_record(call, number))

    def _finish_callback(self, call_id: str, agent: str, status: str) -> bool:
        return (
            self._update(
                "UPDATE routed_calls SET status=?, finished_at=?, callback_number=NULL "
                "WHERE call_id=? AND kind='callback' AND status='claimed' AND claimed_by=?",
                (status, time.time(), call_id, agent),
            )
            > 0
        )

    def complete_callback(self, call_id: str, agent: str) -> bool:
        return self._finish_callback(call_id, agent, "done")

    def fail_callback(self, call_id: str, agent: str) -> bool:
        return self._finish_callback(call_id, agent, "failed")

    def calls_since(self, since: float, limit: int = MAX_FIGURES) -> list[RoutedCall]:
        """Records created since `since`, oldest first (at most `limit`; MAX_FIGURES)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM routed_calls WHERE created_at >= ? "
                "ORDER BY created_at LIMIT ?",
                (since, min(limit, MAX_FIGURES)),
            ).fetchall()
        return [self._row(r) for r in rows]

    def _checkpoint(self) -> None:
        """Copy the WAL into the database and empty it: until then the WAL still holds the
        deleted rows' old pages."""
        with self._lock:
            busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if busy:  # another connection is reading; the next checkpoint finishes the job
            log.info("queue database busy: the WAL is emptied at the next checkpoint")

    def close(self) -> None:
        with self._lock:
            self._db.close()
