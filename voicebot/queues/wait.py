"""The expected wait of a caller about to join a queue, from the queue's length and its recent
pace of claims.

The estimator (stated here so an operator can judge what the bot says):

- The claim rate is exponentially weighted: each of the queue's recent claims (live calls
  taken by an agent; at most MAX_CLAIM_TIMES, none older than 3 tau) counts
  w = exp(-age / tau). For claims at a steady rate r over a history of length H that sum
  is r * tau * (1 - exp(-H / tau)), so the rate is

      rate = sum(w) / (tau * (1 - exp(-H / tau)))

  where H is the age of the oldest claim counted, floored at `min_history_s` (a queue that
  served three calls in the last ten seconds is not taken to serve one every three seconds
  all afternoon). Recent claims weigh most, so a pause (lunch, a meeting) shows within
  minutes, and older history fades instead of dropping off a cliff.
- The new caller is at position p = (live calls waiting) + 1, and waits about p / rate.
- With fewer than `min_claims` claims in the last 3 tau the pace is not known: the wait is
  "unknown" (None), and the bot says nothing about it rather than a guess.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from voicebot.queues.records import MAX_CLAIM_TIMES, QueueStore

TAU_S = 600.0
MIN_CLAIMS = 3
MIN_HISTORY_S = 300.0


@dataclass(frozen=True)
class WaitEstimate:
    forvaltning: str
    position: int  # the new caller's place in the queue (1 = next)
    claims_per_min: float | None  # None: too few recent claims to know the pace
    wait_s: float | None  # None: unknown

    @property
    def minutes(self) -> int | None:
        """Whole minutes as said to a caller: rounded up, at least 1."""
        return None if self.wait_s is None else max(1, math.ceil(self.wait_s / 60))


def claim_rate(
    claim_times: list[float],
    now: float,
    tau_s: float = TAU_S,
    min_claims: int = MIN_CLAIMS,
    min_history_s: float = MIN_HISTORY_S,
) -> float | None:
    """Claims per second by the estimator above; None when fewer than `min_claims` are recent."""
    recent = [t for t in claim_times if 0.0 <= now - t <= 3 * tau_s][-MAX_CLAIM_TIMES:]
    if len(recent) < min_claims:
        return None
    weight = sum(math.exp(-(now - t) / tau_s) for t in recent)
    history_s = max(min_history_s, now - min(recent))
    return weight / (tau_s * (1.0 - math.exp(-history_s / tau_s)))


def estimate_wait(
    forvaltning: str,
    waiting: int,
    claim_times: list[float],
    now: float,
    tau_s: float = TAU_S,
    min_claims: int = MIN_CLAIMS,
    min_history_s: float = MIN_HISTORY_S,
) -> WaitEstimate:
    """The wait of a caller joining behind `waiting` live calls, from the queue's claim times."""
    rate = claim_rate(claim_times, now, tau_s, min_claims, min_history_s)
    position = waiting + 1
    if rate is None or rate <= 0.0:
        return WaitEstimate(forvaltning, position, None, None)
    return WaitEstimate(forvaltning, position, rate * 60.0, position / rate)


def queue_wait(
    store: QueueStore,
    forvaltning: str,
    now: float | None = None,
    tau_s: float = TAU_S,
    min_claims: int = MIN_CLAIMS,
) -> WaitEstimate:
    """The estimate for one queue, read from the store (live calls only: callback requests
    are worked when the line is quiet and do not hold up a caller)."""
    now = time.time() if now is None else now
    waiting = sum(1 for c in store.waiting([forvaltning]) if c.kind == "call")
    times = store.claim_times(forvaltning, now - 3 * tau_s)
    return estimate_wait(forvaltning, waiting, times, now, tau_s, min_claims)
