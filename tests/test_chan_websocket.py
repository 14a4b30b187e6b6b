"""Asterisk chan_websocket adapter: plain-text and JSON control messages as chan_websocket.c
prints them, flow control (MEDIA_XOFF/MEDIA_XON), marks and FLUSH_MEDIA."""

import asyncio
import json

import numpy as np
import pytest

from telephony.base import Audio, CallStart, Digit, Hangup, Played, ProtocolError
from telephony.chan_websocket import AsteriskWsChannel, AsteriskWsPlatform, parse_control
from telephony.codecs import alaw_encode, ulaw_encode
from tests.fakes import FakeWebSocket, drain

PLAIN_START = (
    "MEDIA_START connection_id:media_connection1 channel:WebSocket/media_connection1/0x5140001a0040 "
    "channel_id:1761245643.1 format:ulaw optimal_frame_size:160 ptime:20"
)
JSON_START = json.dumps({
    "event": "MEDIA_START", "connection_id": "media_connection1",
    "channel": "WebSocket/media_connection1/0x5140001a0040", "channel_id": "1761245643.1", "format": "ulaw",
    "optimal_frame_size": 160, "ptime": 20,
    "channel_variables": {"DIALEDPEERNUMBER": "media_connection1/c(ulaw)", "VOICEBOT_CALLER": "+4512345678",
                          "MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE": "160"}})  # fmt: skip


def started(start: str = PLAIN_START, **kwargs) -> AsteriskWsChannel:
    ch = AsteriskWsChannel(FakeWebSocket(end=False), **kwargs)
    ch.parse(start)
    return ch


def test_plain_and_json_media_start_give_the_same_call():
    plain = AsteriskWsChannel(FakeWebSocket(), caller="+4511111111").parse(PLAIN_START)
    as_json = AsteriskWsChannel(FakeWebSocket()).parse(JSON_START)
    assert plain.call_id == as_json.call_id == "1761245643.1"
    assert plain.caller == "+4511111111" and as_json.caller == "+4512345678"
    assert plain.params["channel"] == "WebSocket/media_connection1/0x5140001a0040"


def test_parse_control_forms():
    assert parse_control("MEDIA_XOFF") == ("MEDIA_XOFF", {}, False)
    assert parse_control("MEDIA_MARK_PROCESSED greeting-1.0") == (
        "MEDIA_MARK_PROCESSED",
        {"correlation_id": "greeting-1.0"},
        False,
    )
    assert parse_control("DTMF_END digit:5 channel_id:1761245643.1")[1] == {
        "digit": "5",
        "channel_id": "1761245643.1",
    }
    name, fields, is_json = parse_control('{"event":"DTMF_END","channel_id":"1.1","digit":"#"}')
    assert (name, fields["digit"], is_json) == ("DTMF_END", "#", True)


def test_answer_is_sent_after_media_start_in_the_same_form():
    ws = FakeWebSocket([PLAIN_START, b"\xff" * 160])
    events = asyncio.run(drain(AsteriskWsChannel(ws)))
    assert [type(e) for e in events] == [CallStart, Audio, Hangup]
    assert ws.texts == ["ANSWER"]
    ws = FakeWebSocket([JSON_START])
    asyncio.run(drain(AsteriskWsChannel(ws)))
    assert ws.jsons == [{"command": "ANSWER"}]
    ws = FakeWebSocket([PLAIN_START])
    asyncio.run(drain(AsteriskWsChannel(ws, answer=False)))
    assert ws.texts == []


@pytest.mark.parametrize("fmt, encode, width", [("ulaw", ulaw_encode, 1), ("alaw", alaw_encode, 1)])
def test_g711_audio_is_decoded_and_upsampled(fmt, encode, width):
    ch = started(PLAIN_START.replace("format:ulaw", f"format:{fmt}"))
    total = sum(len(ch.parse(encode(np.full(160, 1000, np.int16))).samples) for _ in range(10))
    assert 3200 - 480 <= total <= 3200


def test_slin16_needs_no_resampling():
    ch = started(
        PLAIN_START.replace(
            "format:ulaw optimal_frame_size:160", "format:slin16 optimal_frame_size:640"
        )
    )
    audio = ch.parse(np.full(320, 16384, "<i2").tobytes())
    assert len(audio.samples) == 320 and audio.samples[0] == pytest.approx(0.5)
    assert ch.frame_bytes == 640 and ch.ptime_s == pytest.approx(0.02)


def test_dtmf_hangup_status_and_error_events():
    ch = started()
    assert ch.parse("DTMF_END digit:7 channel_id:1761245643.1") == Digit("7")
    assert ch.parse('{"event":"DTMF_END","channel_id":"1761245643.1","digit":"*"}') == Digit("*")
    assert (
        ch.parse(
            "STATUS channel_id:1 queue_length:0 xon_level:800 xoff_level:900 queue_full:false "
            "bulk_media:false media_paused:false"
        )
        is None
    )
    assert (
        ch.parse('{"event":"ERROR","channel_id":"1","error_text":"Unable to parse JSON command"}')
        is None
    )
    assert ch.parse("HANGUP") == Hangup("hangup")


@pytest.mark.parametrize("bad, error", [
    (b"\xff" * 160, "audio before MEDIA_START"),
    ("MEDIA_XOFF", "before MEDIA_START"),
    (PLAIN_START.replace("format:ulaw", "format:opus"), "unsupported format"),
    (PLAIN_START.replace("optimal_frame_size:160", "optimal_frame_size:abc"), "integers"),
    (PLAIN_START.replace("ptime:20", "ptime"), "malformed field"),
    ('{"event": 5}', "'event' string"),
    ("{broken", "malformed JSON"),
    ("   ", "empty"),
])  # fmt: skip
def test_malformed_input_is_a_protocol_error(bad, error):
    with pytest.raises(ProtocolError, match=error):
        AsteriskWsChannel(FakeWebSocket()).parse(bad)


def test_audio_is_sent_in_whole_frames_then_the_mark_and_processed_marks_are_played():
    async def scenario():
        ch = started()
        await ch.play(np.zeros(int(0.45 * 16000), np.float32), "greeting-1.0")  # 22.5 frames
        await asyncio.sleep(0.05)
        played = ch.parse("MEDIA_MARK_PROCESSED greeting-1.0")
        await ch.hang_up()
        return ch.ws, played

    ws, played = asyncio.run(scenario())
    sizes = [len(b) for b in ws.binaries]
    assert all(s % 160 == 0 for s in sizes) and sum(sizes) == 23 * 160
    assert ws.texts == ["MARK_MEDIA greeting-1.0", "HANGUP"]
    assert played == Played("greeting-1.0")


def test_xoff_stops_sending_until_xon():
    async def scenario():
        ch = started(JSON_START)
        ch.parse('{"event":"MEDIA_XOFF","channel_id":"1761245643.1"}')
        await ch.play(np.zeros(16000, np.float32), "answer-2.0")
        await asyncio.sleep(0.1)
        during_xoff = len(ch.ws.binaries)
        ch.parse('{"event":"MEDIA_XON","channel_id":"1761245643.1"}')
        await asyncio.sleep(0.1)
        after_xon = len(ch.ws.binaries)
        await ch.hang_up()
        return during_xoff, after_xon, ch.ws.jsons

    during_xoff, after_xon, commands = asyncio.run(scenario())
    assert during_xoff == 0 and after_xon == 5  # 1 s in 200 ms messages
    assert {"command": "MARK_MEDIA", "correlation_id": "answer-2.0"} in commands


def test_flush_media_on_clear_interrupts_sent_and_queued_marks():
    async def scenario():
        ch = started()
        ch.xoff = True  # keep the second prompt queued here
        ch._sent_marks.append("greeting-1.0")  # as if sent earlier
        await ch.play(np.zeros(3200, np.float32), "greeting-1.1")
        await ch.clear()
        events = [await ch.inbox.get(), await ch.inbox.get()]
        late = ch.parse("MEDIA_MARK_PROCESSED greeting-1.0")  # raced the flush: already reported
        await ch.hang_up()
        return events, late, ch.ws.texts

    events, late, texts = asyncio.run(scenario())
    assert events == [Played("greeting-1.0", True), Played("greeting-1.1", True)]
    assert late is None
    assert texts[0] == "FLUSH_MEDIA"


def test_platform_side_speaks_both_control_forms():
    plain = AsteriskWsPlatform(None, "1761245643.1", "+4512345678")
    assert plain.decode("MARK_MEDIA answer-2.0") == ("mark", "answer-2.0")
    assert plain.decode("FLUSH_MEDIA") == ("clear", None)
    assert plain.decode('{"command":"MARK_MEDIA","correlation_id":"x"}') == ("mark", "x")
    with pytest.raises(ProtocolError, match="whole frames"):
        plain.decode(b"\xff" * 100)
