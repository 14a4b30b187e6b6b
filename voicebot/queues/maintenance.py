"""The queues' periodic duties, run by the gateway for as long as it runs (its lifespan enters
`running`), whether or not an agent ever opens the console:

- claims whose lease ran out (no connected console renewed them) go back to their queue;
- the retention purge deletes call records older than `retention_days` (a privacy duty);
- the queue-length gauges are refreshed between scrapes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from voicebot import metrics
from voicebot.queues.records import QueueStore

if TYPE_CHECKING:
    from voicebot.config import Settings

log = logging.getLogger("voicebot.queues")

CLAIM_LEASE_S = 120.0  # a claim not renewed by a connected console this long goes back
INTERVAL_S = 15.0  # stale claims, queue gauges
PURGE_INTERVAL_S = 3600.0  # retention purge


@dataclass(frozen=True)
class RoundResult:
    released: int
    purged: int


def maintenance_round(
    store: QueueStore,
    retention_days: int,
    queues: Iterable[str] = (),
    lease_s: float = CLAIM_LEASE_S,
    purge: bool = True,
) -> RoundResult:
    """Return stale claims to their queue, apply retention (if `purge`), refresh the gauges
    of the known `queues` (and of every queue that holds calls)."""
    released = store.release_stale_claims(lease_s)
    if released:
        metrics.STALE_CLAIMS.inc(released)
        log.info(
            "%d claimed calls went back to their queue (no console renewed them for %.0f s)",
            released,
            lease_s,
        )
    purged = store.purge_older_than(retention_days) if purge else 0
    if purged:
        metrics.PURGED.inc(purged)
        log.info("retention: deleted %d call records older than %d days", purged, retention_days)
    metrics.set_queue_lengths(store.stats(), queues)
    return RoundResult(released, purged)


async def maintain(
    store: QueueStore,
    retention_days: int,
    queues: Iterable[str] = (),
    interval_s: float = INTERVAL_S,
    lease_s: float = CLAIM_LEASE_S,
) -> None:
    """Rounds every `interval_s`, the purge in the first one and then hourly."""
    known = tuple(queues)
    last_purge = -math.inf
    while True:
        purge = time.monotonic() - last_purge >= PURGE_INTERVAL_S
        try:
            await asyncio.to_thread(maintenance_round, store, retention_days, known, lease_s, purge)
            if purge:
                last_purge = time.monotonic()
        except Exception:  # e.g. Redis unreachable for a moment: try again next round
            log.exception("queue maintenance failed; retrying in %.0f s", interval_s)
        await asyncio.sleep(interval_s)


@contextlib.asynccontextmanager
async def running(
    store: QueueStore, settings: Settings, queues: Iterable[str] = ()
) -> AsyncIterator[asyncio.Task[None]]:
    """Maintain `store` in a background task until the block ends."""
    task = asyncio.create_task(
        maintain(store, settings.retention_days, queues), name="queue-maintenance"
    )
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
