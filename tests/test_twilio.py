"""Twilio Media Streams adapter against the documented message formats."""

import asyncio
import base64
import json

import numpy as np
import pytest

from telephony.base import Audio, CallStart, Digit, Hangup, Played, ProtocolError
from telephony.codecs import ulaw_encode
from telephony.twilio import TwilioChannel, connect_twiml, enqueue_twiml
from tests.fakes import FakeWebSocket

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
START = {
    "event": "start", "sequenceNumber": "1", "streamSid": SID,
    "start": {"streamSid": SID, "accountSid": "AC123", "callSid": "CA456", "tracks": ["inbound"],
              "customParameters": {"caller": "+4512345678", "lang": "da"},
              "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
}  # fmt: skip


def media(payload: bytes, chunk: int = 1) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(chunk + 1),
            "streamSid": SID,
            "media": {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(chunk * 20),
                "payload": base64.b64encode(payload).decode(),
            },
        }
    )


def started() -> TwilioChannel:
    ch = TwilioChannel(FakeWebSocket())
    ch.parse(json.dumps(START))
    return ch


def test_start_gives_call_id_caller_and_parameters():
    ch = TwilioChannel(FakeWebSocket())
    assert (
        ch.parse(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})) is None
    )
    event = ch.parse(json.dumps(START))
    assert event == CallStart(
        "CA456", "twilio", "+4512345678", {"caller": "+4512345678", "lang": "da"}
    )


def test_media_becomes_16khz_audio():
    ch = started()
    frames = [ch.parse(media(ulaw_encode(np.full(160, 1000, np.int16)), i)) for i in range(1, 11)]
    assert all(isinstance(f, Audio) for f in frames)
    total = sum(len(f.samples) for f in frames)
    assert 3200 - 480 <= total <= 3200  # 200 ms at 16 kHz, less the resampler's short delay
    assert frames[-1].samples.dtype == np.float32


def test_dtmf_mark_and_stop():
    ch = started()
    assert ch.parse(
        json.dumps(
            {
                "event": "dtmf",
                "streamSid": SID,
                "sequenceNumber": "5",
                "dtmf": {"track": "inbound_track", "digit": "0"},
            }
        )
    ) == Digit("0")
    assert ch.parse(
        json.dumps(
            {
                "event": "mark",
                "streamSid": SID,
                "sequenceNumber": "6",
                "mark": {"name": "greeting-1"},
            }
        )
    ) == Played("greeting-1", False)
    assert isinstance(
        ch.parse(
            json.dumps(
                {
                    "event": "stop",
                    "streamSid": SID,
                    "sequenceNumber": "7",
                    "stop": {"accountSid": "AC123", "callSid": "CA456"},
                }
            )
        ),
        Hangup,
    )


@pytest.mark.parametrize("bad", [
    "{not json", "[1, 2]", json.dumps({"event": "start"}),
    json.dumps({**START, "start": {**START["start"], "mediaFormat": {"encoding": "audio/x-l16", "sampleRate": 16000}}}),
])  # fmt: skip
def test_malformed_messages_are_protocol_errors(bad):
    with pytest.raises(ProtocolError):
        TwilioChannel(FakeWebSocket()).parse(bad)


def test_media_before_start_and_bad_base64_are_rejected():
    with pytest.raises(ProtocolError, match="before 'start'"):
        TwilioChannel(FakeWebSocket()).parse(media(b"\xff" * 160))
    ch = started()
    bad = json.loads(media(b"\xff"))
    bad["media"]["payload"] = "!!!not base64!!!"
    with pytest.raises(ProtocolError, match="base64"):
        ch.parse(json.dumps(bad))


def test_binary_frame_is_a_protocol_error():
    ch = TwilioChannel(FakeWebSocket([json.dumps(START), b"\x00\x01"]))

    async def drain():
        return [e async for e in ch.events()]

    with pytest.raises(ProtocolError, match="binary"):
        asyncio.run(drain())


def test_unknown_events_are_ignored():
    assert started().parse(json.dumps({"event": "something-new", "streamSid": SID})) is None


def test_outbound_audio_then_mark_with_stream_sid():
    ch = started()
    asyncio.run(ch.play(np.zeros(16000, np.float32), "answer-3"))
    kinds = [m["event"] for m in ch.ws.jsons]
    assert kinds[-1] == "mark" and set(kinds[:-1]) == {"media"}
    assert all(m["streamSid"] == SID for m in ch.ws.jsons)
    payload = b"".join(base64.b64decode(m["media"]["payload"]) for m in ch.ws.jsons[:-1])
    assert len(payload) == 8000  # one second of 8 kHz μ-law
    assert ch.ws.jsons[-1]["mark"] == {"name": "answer-3"}


def test_marks_returned_after_clear_are_marked_interrupted():
    ch = started()
    asyncio.run(ch.play(np.zeros(1600, np.float32), "greeting-1"))
    asyncio.run(ch.clear())
    assert ch.ws.jsons[-1] == {"event": "clear", "streamSid": SID}
    echoed = ch.parse(
        json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": "greeting-1"}})
    )
    assert echoed == Played("greeting-1", interrupted=True)
    asyncio.run(ch.play(np.zeros(1600, np.float32), "answer-2"))
    echoed = ch.parse(json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": "answer-2"}}))
    assert echoed == Played("answer-2", interrupted=False)


def test_twiml_connect_and_enqueue_escape_values():
    import xml.etree.ElementTree as ET

    xml = connect_twiml("wss://bot.example/twilio", "https://bot.example/twilio/action", '+45"<1>')
    root = ET.fromstring(xml)
    assert root.find("Connect").get("action") == "https://bot.example/twilio/action"
    assert root.find("Connect/Stream").get("url") == "wss://bot.example/twilio"
    assert root.find("Connect/Stream/Parameter").get("value") == '+45"<1>'  # escaped, not injected
    assert "<Enqueue>Teknik &amp; Miljø</Enqueue>" in enqueue_twiml("Teknik & Miljø", "Farvel")
    assert "<Hangup/>" in enqueue_twiml(None, "Farvel")
