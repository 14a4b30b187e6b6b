"""Live call events (partials, transcripts, decisions) for the agent console and for
`voicebot call`. Bounded: a subscriber that does not keep up loses events, it never makes
the call wait or memory grow."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator

Event = dict[str, object]  # {"call_id", "type", "time", and the kind's own fields}
ALL_CALLS = None  # subscribe(ALL_CALLS): every call. Not a string: no call id can alias it.


class EventBus:
    def __init__(self, queue_size: int = 256) -> None:
        self._subscribers: dict[str | None, set[asyncio.Queue[Event]]] = defaultdict(set)
        self._queue_size = queue_size

    def publish(self, call_id: str, kind: str, **data: object) -> None:
        event: Event = {"call_id": call_id, "type": kind, "time": time.time(), **data}
        for key in (call_id, ALL_CALLS):
            for queue in self._subscribers.get(key, ()):
                if queue.full():
                    queue.get_nowait()  # drop the oldest rather than block the call
                queue.put_nowait(event)

    async def subscribe(self, call_id: str | None = ALL_CALLS) -> AsyncIterator[Event]:
        """One call's events, or with ALL_CALLS every call's."""
        queue: asyncio.Queue[Event] = asyncio.Queue(self._queue_size)
        self._subscribers[call_id].add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers[call_id].discard(queue)
            if not self._subscribers[call_id]:
                del self._subscribers[call_id]
