"""What a queue holds (RoutedCall) and what every back-end offers (QueueStore)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

MAX_LISTED = 1000  # no listing returns more than this many calls
MAX_CLAIM_TIMES = 500  # claim times kept per queue for the wait estimate (voicebot/queues/wait.py)
MAX_FIGURES = 20000  # records read for a day's figures per queue (console admin view)
DAY_S = 86400
KINDS = ("call", "callback")


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
    status: str = "waiting"  # waiting, claimed, done or abandoned; a callback: done or failed
    claimed_by: str | None = None
    claimed_at: float | None = None
    finished_at: float | None = None
    # "call": a caller handed on live; "callback": a caller who asked to be called back.
    kind: str = "call"
    # The number to call back, unmasked: kept for that call only, shown only on the claiming
    # agent's card (voicebot/console.py), erased when the callback is done or failed, deleted
    # with the record. Never in as_dict, repr, events or logs.
    callback_number: str | None = field(default=None, repr=False)

    @property
    def wait_s(self) -> float:
        end = self.claimed_at or self.finished_at or time.time()
        return max(0.0, end - self.created_at)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        del d["callback_number"]
        d["wait_s"] = round(self.wait_s, 1)
        return d


def callback_record(call: RoutedCall, number: str) -> RoutedCall:
    """The callback request made of `call`: kind "callback" with the number to call."""
    digits = "".join(ch for ch in number if ch.isdigit())
    if not 3 <= len(digits) <= 15:  # E.164 holds at most 15 digits
        raise ValueError("a callback number has 3 to 15 digits")
    return replace(call, kind="callback", callback_number=number.strip(), status="waiting")


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
    # -- waiting: the wait estimate, callbacks, a day's figures ----------------------------
    def claim_times(
        self, forvaltning: str, since: float, limit: int = MAX_CLAIM_TIMES
    ) -> list[float]: ...
    def request_callback(self, call: RoutedCall, number: str) -> None: ...
    def complete_callback(self, call_id: str, agent: str) -> bool: ...
    def fail_callback(self, call_id: str, agent: str) -> bool: ...
    def calls_since(self, since: float, limit: int = MAX_FIGURES) -> list[RoutedCall]: ...
    def close(self) -> None: ...
