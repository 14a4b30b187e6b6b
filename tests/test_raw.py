"""The plain raw-PCM WebSocket (/raw) as documented in telephony/raw.py."""

import asyncio
import json

import numpy as np
import pytest

from telephony.base import Audio, CallStart, Digit, HandOff, Hangup, Played, ProtocolError
from telephony.raw import RawChannel
from tests.fakes import FakeWebSocket, drain


def test_start_message_then_audio_dtmf_marks_and_hangup():
    pcm = np.full(320, 16384, "<i2").tobytes()
    ws = FakeWebSocket(
        [
            json.dumps({"call_id": "web-1", "caller": "+4512345678", "browser": "firefox"}),
            pcm,
            json.dumps({"type": "dtmf", "digit": "0"}),
            json.dumps({"type": "hangup"}),
        ]
    )
    events = asyncio.run(drain(RawChannel(ws)))
    assert events[0] == CallStart("web-1", "raw", "+4512345678", {"browser": "firefox"})
    assert isinstance(events[1], Audio) and len(events[1].samples) == 320
    assert events[1].samples[0] == pytest.approx(0.5)
    assert events[2:] == [Digit("0"), Hangup("hangup")]


def test_audio_without_a_start_message_starts_a_call():
    ch = RawChannel(FakeWebSocket())
    start, audio = ch.parse(b"\0" * 640)
    assert (
        isinstance(start, CallStart)
        and start.call_id.startswith("raw-")
        and isinstance(audio, Audio)
    )


@pytest.mark.parametrize("message, error", [
    (b"\0" * 3, "whole 16-bit"),
    ("{", "malformed JSON"),
    ("[1]", "JSON object"),
    (json.dumps({"type": "dtmf", "digit": "12"}), "dtmf digit"),
    (b"\0" * (64 * 1024 + 2), "exceeds"),
])  # fmt: skip
def test_malformed_input_is_a_protocol_error(message, error):
    ch = RawChannel(FakeWebSocket())
    ch.parse(json.dumps({"call_id": "web-2"}))
    with pytest.raises(ProtocolError, match=error):
        ch.parse(message)


def test_outbound_pcm_marks_clear_and_hand_off():
    async def scenario():
        ch = RawChannel(FakeWebSocket(end=False))
        ch.parse(json.dumps({"call_id": "web-3"}))
        await ch.play(np.zeros(16000, np.float32), "greeting-1.0")
        await ch.clear()
        echoed = ch.parse(json.dumps({"type": "mark", "name": "greeting-1.0"}))
        await ch.play(np.zeros(1600, np.float32), "route-2.0")
        played = ch.parse(json.dumps({"type": "mark", "name": "route-2.0"}))
        await ch.hand_off(HandOff("web-3", "TMF", "Teknik og Miljø", "parking_permit"))
        return ch.ws, echoed, played

    ws, echoed, played = asyncio.run(scenario())
    assert sum(len(b) for b in ws.binaries[:5]) == 32000 and all(
        len(b) % 640 == 0 for b in ws.binaries
    )
    assert ws.jsons[:2] == [{"type": "mark", "name": "greeting-1.0"}, {"type": "clear"}]
    assert echoed == [Played("greeting-1.0", interrupted=True)] and played == [Played("route-2.0")]
    assert ws.jsons[-1] == {
        "type": "hangup",
        "reason": "handoff",
        "forvaltning": "TMF",
        "queue": "Teknik og Miljø",
    }
    assert ws.closed == 1000
