"""Vonage Voice WebSocket adapter against the documented messages (telephony.md)."""

import asyncio
import json
import time

import numpy as np
import pytest

from telephony.base import Audio, CallStart, Digit, Hangup, Played, ProtocolError
from telephony.vonage import VonageChannel, VonagePlatform
from tests.fakes import FakeWebSocket, drain

CONNECTED = {
    "event": "websocket:connected",
    "content-type": "audio/l16;rate=16000",
    "call_id": "63f61863-4a51-4f6b-86e1-46edebcf9356",
    "caller": "+4512345678",
    "lang": "da",
}


def frame(value: int = 1000, rate: int = 16000) -> bytes:
    return np.full(rate // 50, value, "<i2").tobytes()


def connected(rate: int = 16000) -> VonageChannel:
    ch = VonageChannel(FakeWebSocket())
    ch.parse(json.dumps({**CONNECTED, "content-type": f"audio/l16;rate={rate}"}))
    return ch


def test_connected_gives_call_id_caller_and_headers():
    event = VonageChannel(FakeWebSocket()).parse(json.dumps(CONNECTED))
    assert event == CallStart(
        "63f61863-4a51-4f6b-86e1-46edebcf9356",
        "vonage",
        "+4512345678",
        {"call_id": "63f61863-4a51-4f6b-86e1-46edebcf9356", "caller": "+4512345678", "lang": "da"},
    )


def test_16k_frames_pass_through_and_8k_frames_are_upsampled():
    ch = connected(16000)
    audio = ch.parse(frame(16384))
    assert isinstance(audio, Audio) and len(audio.samples) == 320
    assert audio.samples[0] == pytest.approx(0.5)
    ch8 = connected(8000)
    total = sum(len(ch8.parse(frame(1000, 8000)).samples) for _ in range(10))
    assert 3200 - 480 <= total <= 3200  # 200 ms at 16 kHz, less the resampler's delay


def test_dtmf_and_cleared_events():
    ch = connected()
    assert ch.parse(
        json.dumps({"event": "websocket:dtmf", "digit": "5", "duration": 260})
    ) == Digit("5")
    assert ch.parse(json.dumps({"event": "websocket:cleared"})) is None
    assert ch.parse(json.dumps({"event": "websocket:something-new"})) is None


@pytest.mark.parametrize("message, error", [
    ("{nope", "malformed JSON"),
    ("[1]", "JSON object"),
    (json.dumps({**CONNECTED, "content-type": "audio/l16;rate=44100"}), "content-type"),
    (json.dumps({**CONNECTED, "content-type": "audio/pcmu"}), "content-type"),
    (json.dumps({"event": "websocket:dtmf", "digit": "1"}), "before 'websocket:connected'"),
    (b"\x00" * 640, "audio before"),
])  # fmt: skip
def test_malformed_input_is_a_protocol_error(message, error):
    with pytest.raises(ProtocolError, match=error):
        VonageChannel(FakeWebSocket()).parse(message)


def test_odd_audio_and_second_connected_are_protocol_errors():
    ch = connected()
    with pytest.raises(ProtocolError, match="whole 16-bit"):
        ch.parse(b"\x00" * 641)
    with pytest.raises(ProtocolError, match="second"):
        ch.parse(json.dumps(CONNECTED))


def test_events_end_with_hangup_when_vonage_closes():
    ws = FakeWebSocket(
        [json.dumps(CONNECTED), frame(), json.dumps({"event": "websocket:dtmf", "digit": "0"})]
    )
    events = asyncio.run(drain(VonageChannel(ws)))
    assert [type(e) for e in events] == [CallStart, Audio, Digit, Hangup]


def test_outbound_frames_are_exactly_640_bytes_paced_and_the_mark_follows():
    async def scenario():
        ws = FakeWebSocket(end=False)
        ch = VonageChannel(ws)
        ch.parse(json.dumps(CONNECTED))
        start = time.monotonic()
        await ch.play(np.zeros(int(0.2 * 16000) + 100, np.float32), "greeting-1.0")  # 10.3 frames
        sent_at_once = len(ws.binaries)
        played = await asyncio.wait_for(ch.inbox.get(), 2)
        elapsed = time.monotonic() - start
        await ch.hang_up()
        return ws, sent_at_once, played, elapsed

    ws, sent_at_once, played, elapsed = asyncio.run(scenario())
    assert [len(b) for b in ws.binaries] == [640] * 11  # the tail is padded to a whole frame
    assert sent_at_once <= 4  # paced: only the lead frames go before the first tick
    assert played == Played("greeting-1.0")
    assert elapsed == pytest.approx(0.22, abs=0.06)


def test_clear_sends_the_clear_action_and_interrupts_the_pending_mark():
    async def scenario():
        ws = FakeWebSocket(end=False)
        ch = VonageChannel(ws)
        ch.parse(json.dumps(CONNECTED))
        await ch.play(np.zeros(16000, np.float32), "answer-2.0")
        await asyncio.sleep(0.1)
        await ch.clear()
        sent = len(ws.binaries)
        played = await asyncio.wait_for(ch.inbox.get(), 1)
        await asyncio.sleep(0.1)
        await ch.hang_up()
        return ws, sent, played

    ws, sent, played = asyncio.run(scenario())
    assert {"action": "clear"} in ws.jsons
    assert len(ws.binaries) == sent < 15  # nothing more after the clear
    assert played == Played("answer-2.0", interrupted=True)


def test_platform_side_rejects_frames_of_the_wrong_size():
    platform = VonagePlatform(None, "c", None)
    assert platform.decode(b"\0" * 640)[0] == "audio"
    assert platform.decode(json.dumps({"action": "clear"})) == ("clear", None)
    with pytest.raises(ProtocolError, match="640"):
        platform.decode(b"\0" * 1280)
