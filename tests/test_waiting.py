"""The waiting state machine (voicebot/waiting.py) at the routing step: a long wait is said
and a callback offered; declining routes as decided; a known caller id books at once;
emergencies are never touched; the waiting prompts are validated."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from pathlib import Path

import pytest

from voicebot import waiting
from voicebot.dialogue import Decision
from voicebot.events import EventBus
from voicebot.hours import TIMEZONE
from voicebot.queues import RoutedCall, SqliteQueueStore
from voicebot.services import Services
from voicebot.waiting_prompts import WaitingPromptsError, load_waiting_prompts, spoken_digits

from .console_helpers import make_settings

WEEKDAY = dt.datetime(2026, 11, 10, 10, 0, tzinfo=TIMEZONE)


@pytest.fixture
def services(tmp_path, catalogue, monkeypatch):
    monkeypatch.setattr(waiting, "now", lambda: WEEKDAY)
    store = SqliteQueueStore(tmp_path / "q.db")
    s = Services(
        make_settings(tmp_path), catalogue, None, None, None, None, store, EventBus(), None
    )
    yield s
    store.close()


def routing(forvaltning: str = "KFF") -> Decision:
    return Decision("route", "Jeg stiller dig videre.", "passport", 0.9, forvaltning, hand_off=True)


def record(call_id: str = "CA9", forvaltning: str = "KFF") -> RoutedCall:
    return RoutedCall(call_id, forvaltning, "passport", 0.9, "mit pas", ["pas"])


def long_queue(store: SqliteQueueStore) -> None:
    """20 callers waiting; a claim every 2 minutes for the last half hour."""
    now = WEEKDAY.timestamp()
    for i in range(15):
        store.enqueue(record(f"OLD{i}", "KFF"))
        store.claim(f"OLD{i}", "bo")
        store._update(
            "UPDATE routed_calls SET claimed_at=? WHERE call_id=?", (now - 120 * i, f"OLD{i}")
        )
    for i in range(20):
        store.enqueue(record(f"W{i}", "KFF"))


def test_a_short_or_unknown_wait_routes_as_decided(services):
    w = waiting.CallWaiting(services)
    assert asyncio.run(w.at_routing(routing(), record(), "+4512345678")) is None


def test_a_long_wait_is_said_and_declining_routes_on(services):
    long_queue(services.store)
    w = waiting.CallWaiting(services)
    offer = asyncio.run(w.at_routing(routing(), record(), "+4512345678"))
    assert offer.action == "callback_offer" and not offer.hand_off
    minutes = int(re.search(r"Der er cirka (\d+) minutters ventetid", offer.say)[1])
    assert 35 <= minutes <= 45  # 21st in line at a claim every 2 minutes
    routed = asyncio.run(w.on_utterance("nej tak jeg venter"))
    assert routed.action == "route" and routed.hand_off and routed.forvaltning == "KFF"
    assert asyncio.run(w.at_routing(routed, record(), "+4512345678")) is None  # asked once


def test_a_known_caller_id_books_at_once(services):
    long_queue(services.store)
    w = waiting.CallWaiting(services)
    asyncio.run(w.at_routing(routing(), record(), "+4512345678"))
    booked = asyncio.run(w.on_utterance("ja tak"))
    assert booked.action == "callback_booked" and booked.hang_up
    got = services.store.get("CA9")
    assert got.kind == "callback" and got.callback_number == "+4512345678"


def test_the_threshold_is_a_setting(services, tmp_path):
    long_queue(services.store)
    services.settings = make_settings(tmp_path, waiting={"announce_wait_above_min": 60})
    assert asyncio.run(waiting.CallWaiting(services).at_routing(routing(), record(), None)) is None


def test_emergency_is_never_diverted(services):
    emergency = Decision("emergency", "Ring 112.", "emergency", 1.0, None, hang_up=True)
    assert asyncio.run(waiting.CallWaiting(services).at_routing(emergency, record(), None)) is None


def test_withheld_number_is_keyed_read_back_and_re_entered(services):
    long_queue(services.store)
    w = waiting.CallWaiting(services)
    asyncio.run(w.at_routing(routing(), record(), "anonymous"))
    assert asyncio.run(w.on_digit("1")).action == "callback_number"
    for d in "1234":
        asyncio.run(w.on_digit(d))
    too_short = asyncio.run(w.on_digit("#"))
    assert too_short.action == "callback_number" and "kunne jeg ikke bruge" in too_short.say
    for d in "87654321#":
        last = asyncio.run(w.on_digit(d))
    assert last.action == "callback_read_back" and "87, 65, 43, 21" in last.say
    assert asyncio.run(w.on_digit("1")).action == "callback_booked"
    assert services.store.get("CA9").callback_number == "87654321"


def test_digits_are_read_back_in_groups():
    assert spoken_digits("12345678") == "12, 34, 56, 78"
    assert spoken_digits("+4512345678") == "plus 45, 12, 34, 56, 78"
    assert spoken_digits("1234567") == "123, 45, 67"
    assert spoken_digits("12345678", "en") == "1 2 3, 4 5 6, 7 8"


def test_bad_waiting_prompts_fail_naming_file_and_entry(tmp_path: Path):
    path = tmp_path / "p.yaml"
    text = (Path(waiting.__file__).parent.parent / "intents" / "waiting_prompts.yaml").read_text()
    path.write_text(text.replace("{minutes} minutters", "{minuter} minutters"), encoding="utf-8")
    with pytest.raises(
        WaitingPromptsError, match=r"p.yaml: da.wait: unknown placeholder \{minuter\}"
    ):
        load_waiting_prompts(path)


def test_an_english_caller_hears_the_queue_named_in_english(services):
    # The callback confirmation used to name the queue by its Danish name in English calls.
    long_queue(services.store)
    w = waiting.CallWaiting(services, "en")
    asyncio.run(w.at_routing(routing(), record(), "+4512345678"))
    booked = asyncio.run(w.on_utterance("yes please"))
    assert booked.action == "callback_booked"
    assert "Citizen Service" in booked.say and "Borgerservice" not in booked.say
