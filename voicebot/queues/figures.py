"""A day's figures per queue for the console's admin view, from the queue records themselves
(so every gateway process sharing a store shows the same numbers, and a restart loses none).

Prometheus (voicebot/metrics.py) has the running totals; these are "today" in Copenhagen.
Calls out of hours that asked for no callback leave no record, so they are counted only in
Prometheus (voicebot_queue_out_of_hours_total).
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Iterable
from typing import Any

from voicebot.hours import TIMEZONE
from voicebot.queues.records import MAX_FIGURES, QueueStore, RoutedCall


def start_of_day(now: dt.datetime | None = None) -> float:
    """Midnight in Copenhagen of the day `now` falls on, as a Unix time."""
    now = now.astimezone(TIMEZONE) if now else dt.datetime.now(TIMEZONE)
    return now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def figures(calls: Iterable[RoutedCall]) -> dict[str, dict[str, Any]]:
    """Per forvaltning: offered, answered (claimed), abandoned, waiting, callbacks requested,
    done and failed, and the median wait to a claim of the live calls."""
    out: dict[str, dict[str, Any]] = {}
    waits: dict[str, list[float]] = {}
    for c in calls:
        f = out.setdefault(
            c.forvaltning,
            {
                "offered": 0, "answered": 0, "abandoned": 0, "waiting": 0,
                "callbacks_requested": 0, "callbacks_done": 0, "callbacks_failed": 0,
                "median_wait_s": None,
            },
        )  # fmt: skip
        if c.kind == "callback":
            f["callbacks_requested"] += 1
            f["callbacks_done"] += c.status == "done"
            f["callbacks_failed"] += c.status == "failed"
            continue
        f["offered"] += 1
        f["abandoned"] += c.status == "abandoned"
        f["waiting"] += c.status == "waiting"
        if c.claimed_at is not None:
            f["answered"] += 1
            waits.setdefault(c.forvaltning, []).append(c.claimed_at - c.created_at)
    for forvaltning, found in waits.items():
        out[forvaltning]["median_wait_s"] = round(statistics.median(found), 1)
    return out


def today(store: QueueStore, now: dt.datetime | None = None) -> dict[str, Any]:
    calls = store.calls_since(start_of_day(now), MAX_FIGURES)
    return {
        "since": start_of_day(now),
        "complete": len(calls) < MAX_FIGURES,  # False: more records than were read
        "queues": figures(calls),
    }
