"""Durable per-forvaltning queues of routed calls.

One interface (QueueStore, in `records`), two back-ends:
- SQLite (`sqlite`; WAL, the embedded default, zero set-up) for one gateway machine;
- Redis Streams (`redis_streams`) with a consumer group, for several gateway processes on
  several machines.

A call is written here before it leaves the bot, so a restart never loses it. Records hold
only masked text: the session masks CPR and phone numbers before it enqueues.

Claims are leases: the agent console renews its agent's claims while it is connected
(`renew_claims`), and the gateway's lifespan runs `maintenance.running`, which returns claims
whose lease ran out to the queue and applies the retention purge. `forget` removes one call's
data wherever it is kept (`voicebot forget`).
"""

from __future__ import annotations

from pathlib import Path

from voicebot.privacy import mask_caller  # noqa: F401  (session.py imports it from here)
from voicebot.queues.records import MAX_LISTED, QueueStore, RoutedCall, StoreError
from voicebot.queues.redis_streams import RedisQueueStore
from voicebot.queues.sqlite import SqliteQueueStore

__all__ = [
    "MAX_LISTED",
    "QueueStore",
    "RedisQueueStore",
    "RoutedCall",
    "SqliteQueueStore",
    "StoreError",
    "open_store",
]


def open_store(
    backend: str, db_path: Path, redis_url: str | None = None, create: bool = True
) -> QueueStore:
    """The configured store. create=False: only a store that already exists (a SQLite file
    that is there, a Redis that answers); nothing is made."""
    if backend == "sqlite":
        return SqliteQueueStore(db_path, create=create)
    if backend == "redis":
        if not redis_url:
            raise ValueError("queue_backend 'redis' needs redis_url")
        return RedisQueueStore(redis_url)
    raise ValueError(f"queue_backend '{backend}' is not available in this build")
