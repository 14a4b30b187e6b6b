"""What a queue holds (RoutedCall) and what every back-end offers (QueueStore)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

MAX_LISTED = 1000  # no listing returns more than this many calls
DAY_S = 86400


def retention_cutoff(days: int) -> float:
    """The creation time before which a record is past `days` of retention."""
    return time.time() - days * DAY_S


class StoreError(Exception):
    """A queue store that cannot be opened as configured; the message names the file or URL."""


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
    language: str = "da"  # the language the caller was served in (Whisper code)
    created_at: float = field(default_factory=time.time)
    status: str = "waiting"  # waiting, claimed, done or abandoned
    claimed_by: str | None = None
    claimed_at: float | None = None
    finished_at: float | None = None

    @property
    def wait_s(self) -> float:
        end = self.claimed_at or self.finished_at or time.time()
        return max(0.0, end - self.created_at)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["wait_s"] = round(self.wait_s, 1)
        return d


class QueueStore(Protocol):
    def enqueue(self, call: RoutedCall) -> None: ...
    def get(self, call_id: str) -> RoutedCall | None: ...
    def waiting(self, forvaltninger: list[str] | None = None) -> list[RoutedCall]: ...
    def claimed(self, forvaltninger: list[str] | None = None) -> list[RoutedCall]: ...
    def calls(
        self, forvaltninger: list[str] | None = None, limit: int = 200
    ) -> list[RoutedCall]: ...
    def claim(self, call_id: str, agent: str, forvaltninger: list[str] | None = None) -> bool: ...
    def complete(self, call_id: str, agent: str) -> bool: ...
    def release(self, call_id: str, agent: str) -> bool: ...
    def abandon(self, call_id: str) -> bool: ...
    def renew_claims(self, agent: str) -> int: ...
    def release_stale_claims(self, older_than_s: float) -> int: ...
    def stats(self) -> dict[str, dict[str, float]]: ...
    def purge_older_than(self, days: int) -> int: ...
    def forget(self, call_id: str) -> bool: ...
    def close(self) -> None: ...
