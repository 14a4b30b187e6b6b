"""Removing one call's data everywhere it is kept (`voicebot forget`, a data subject's request).

A call's data is its queue record: in the configured back-end (SQLite row, or the Redis hash,
its stream entry and index entries), and in a SQLite queue file left from before a switch to
Redis. The agent console shows only what the queue holds (its accounts database keeps no call
data); live events and metrics keep none either. Logs hold call ids but no transcripts unless
log_transcripts is on (SECURITY.md: what an operator must still do).

Only stores that exist are searched: a missing database is an error (the operator pointed at
the wrong one, and "nothing held" would be a false answer), and none is ever created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from voicebot.queues import open_store
from voicebot.queues.records import QueueStore, StoreError
from voicebot.queues.sqlite import SqliteQueueStore

if TYPE_CHECKING:
    from voicebot.config import Settings


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _configured_store(settings: Settings) -> QueueStore:
    if settings.queue_backend == "sqlite" and not settings.db_path.is_file():
        raise StoreError(
            f"no queue database at {settings.db_path}: give the --db, --config or data_dir "
            "the gateway was started with"
        )
    try:
        return open_store(
            settings.queue_backend, settings.db_path, settings.redis_url, create=False
        )
    except StoreError:
        raise
    except Exception as exc:  # Redis unreachable: nothing can be said about what it holds
        if settings.queue_backend != "redis":
            raise
        raise StoreError(
            f"the Redis queue at {_without_password(settings.redis_url)} cannot be reached: {exc}"
        ) from exc


def forget_call(settings: Settings, call_id: str) -> list[str]:
    """Remove `call_id`'s record from every store; returns where it was found (empty: held
    nowhere). Raises StoreError when the configured store does not exist or cannot be reached,
    DatabaseFileError when a database file is not one."""
    found: list[str] = []
    store = _configured_store(settings)
    try:
        if store.forget(call_id):
            found.append(f"{settings.queue_backend} queue")
    finally:
        store.close()
    if settings.queue_backend != "sqlite" and settings.db_path.is_file():
        old = SqliteQueueStore(settings.db_path, create=False)
        try:
            if old.forget(call_id):
                found.append(f"SQLite queue file {settings.db_path}")
        finally:
            old.close()
    return found
