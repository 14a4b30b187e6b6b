"""The expected wait (voicebot/queues/wait.py) on recorded claim sequences
(tests/waiting_data/claim_sequences.yaml), and read from both queue back-ends."""

import math
import time
from pathlib import Path

import pytest
import yaml

from voicebot.queues import RoutedCall
from voicebot.queues.wait import estimate_wait, queue_wait

SEQUENCES = {
    s["name"]: s
    for s in yaml.safe_load(
        (Path(__file__).parent / "waiting_data" / "claim_sequences.yaml").read_text("utf-8")
    )["sequences"]
}
NOW = 1_800_000_000.0  # a frozen clock


def estimate(name: str):
    s = SEQUENCES[name]
    return estimate_wait(s["queue"], s["waiting"], [NOW - a for a in s["claims_ago_s"]], NOW)


def test_steady_pace_gives_position_over_rate():
    e = estimate("steady_morning")  # a claim about every 80 s: 0.75 a minute
    assert 0.6 <= e.claims_per_min <= 0.95
    assert e.position == 7
    assert e.wait_s == pytest.approx(7 / (e.claims_per_min / 60))
    assert 8 <= e.minutes <= 12


def test_a_pause_in_claims_lengthens_the_wait():
    steady, pause = estimate("steady_morning"), estimate("lunch_pause")
    assert pause.claims_per_min < 0.2  # no claims for 20 minutes weigh the pace down
    assert pause.wait_s / pause.position > 3 * steady.wait_s / steady.position


def test_a_burst_right_after_opening_is_floored():
    e = estimate("just_opened")  # four claims within 20 s: not 13 a minute all day
    assert e.claims_per_min <= 1.1
    assert e.minutes >= 10


def test_recent_pace_weighs_more_than_old():
    e = estimate("slowing_down")  # 1.33 a minute, then 0.4 a minute for the last 15 minutes
    s = SEQUENCES["slowing_down"]
    overall = len(s["claims_ago_s"]) / max(s["claims_ago_s"]) * 60
    assert 0.4 < e.claims_per_min < overall


def test_too_few_recent_claims_is_unknown():
    e = estimate("quiet_evening")
    assert e.wait_s is None and e.minutes is None and e.claims_per_min is None
    old = estimate_wait("SOF", 0, [NOW - 4000 - i for i in range(20)], NOW)  # all past 3 tau
    assert old.wait_s is None


def test_minutes_round_up_to_at_least_one():
    e = estimate_wait("KFF", 0, [NOW - 300 + 10 * i for i in range(30)], NOW)
    assert e.minutes == max(1, math.ceil(e.wait_s / 60)) == 1


def routed(call_id: str, forvaltning: str = "KFF") -> RoutedCall:
    return RoutedCall(call_id, forvaltning, "passport", 0.9, "mit pas", ["pas"])


def test_the_store_keeps_claim_times_of_live_calls(store):
    for i in range(5):
        store.enqueue(routed(f"CA{i}"))
    store.request_callback(routed("CB1"), "+4512345678")
    t0 = time.time()
    for i in range(4):
        assert store.claim(f"CA{i}", "bo")
    assert store.claim("CB1", "bo")  # a callback is not a caller in the queue
    times = store.claim_times("KFF", t0 - 1)
    assert len(times) == 4 and times == sorted(times) and times[0] >= t0 - 1
    assert store.claim_times("TMF", 0) == []
    e = queue_wait(store, "KFF", tau_s=600, min_claims=3)
    assert e.position == 2  # CA4 waits; the callback is not counted
    assert e.wait_s is not None
    assert store.forget("CA0")
    assert len(store.claim_times("KFF", t0 - 1)) == 3
