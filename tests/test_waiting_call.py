"""A call through the gateway outside opening hours (frozen clock): the caller is told when
the queue opens and offered a callback, accepts with a key, keys in a withheld number, hears
it read back, confirms, and the callback request is in the queue with the number; the
metrics show it, and no event carries the number."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
from prometheus_client import REGISTRY

from tests.fakes import ServedApp, light_services
from voicebot import waiting
from voicebot.config import load_settings
from voicebot.hours import TIMEZONE

HOURS = """
opening_hours:
  SUF:
    weekly: {mon: ["09:00-15:00"], tue: ["09:00-15:00"], wed: ["09:00-15:00"], thu: ["09:00-15:00"], fri: ["09:00-13:00"]}
"""
SATURDAY_EVENING = dt.datetime(2026, 11, 14, 21, 30, tzinfo=TIMEZONE)


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def served(tmp_path, catalogue, classifier, monkeypatch):
    hours = tmp_path / "hours.yaml"
    hours.write_text(HOURS, encoding="utf-8")
    services = light_services(tmp_path, catalogue, classifier)
    services.settings = load_settings(
        None,
        data_dir=tmp_path,
        hours=hours,
        # The simulator waits for a reply after each key (30 s of line time, 1.5 s of wall
        # time at speed 20), and the bot rightly says nothing between the digits of a number.
        endpointing={"no_input_s": 60},
        telephony={"audiosocket_port": 0, "audiohook_playback": True},
    )
    monkeypatch.setattr(waiting, "now", lambda: SATURDAY_EVENING)
    with ServedApp(services) as app:
        yield app


def test_out_of_hours_call_books_a_callback_with_a_keyed_in_number(served):
    from telephony.simulator import SimulatedCall

    before = {
        "requested": sample("voicebot_callbacks_requested_total", forvaltning="SUF"),
        "out_of_hours": sample("voicebot_queue_out_of_hours_total", forvaltning="SUF"),
        "offered": sample("voicebot_queue_offered_total", forvaltning="SUF"),
    }
    call = SimulatedCall(
        served.media_url("twilio"),
        None,
        protocol="twilio",
        speed=20.0,
        caller=None,  # number withheld
        timeout_s=60,
        credentials=served.credentials,
    )
    call.events_url = served.events_url(call.call_id)
    # 3: elder care (SUF, closed on Saturday evening); 1: yes to a callback; the number and #;
    # 1: the number read back is right.
    result = asyncio.run(asyncio.wait_for(call.run([], digits="31" + "12345678#" + "1"), 90))

    said = [e for e in result.events if e["type"] == "decision"]
    actions = [e["action"] for e in said]
    assert actions[0] == "callback_offer" and actions[-1] == "callback_booked"
    assert "callback_number" in actions and "callback_read_back" in actions
    spoken = " ".join(e["text"] for e in result.events if e["type"] == "bot_said")
    assert "Visitationen har lukket nu og har åbent igen mandag klokken 9" in spoken
    assert "ringes op" in spoken and "Tast det nummer" in spoken

    record = served.services.store.get(call.call_id)
    assert record is not None and record.kind == "callback" and record.status == "waiting"
    assert record.forvaltning == "SUF" and record.callback_number == "12345678"
    # The number is on no event: keys masked while it is entered, the read-back not quoted.
    assert "12345678" not in json.dumps(result.events)
    assert not [
        e for e in result.events if e["type"] == "dtmf" and e["digit"] in "245678"
    ]  # 3 and 1 were menu keys

    assert (
        sample("voicebot_callbacks_requested_total", forvaltning="SUF") == before["requested"] + 1
    )
    assert (
        sample("voicebot_queue_out_of_hours_total", forvaltning="SUF") == before["out_of_hours"] + 1
    )
    assert sample("voicebot_queue_offered_total", forvaltning="SUF") == before["offered"] + 1
