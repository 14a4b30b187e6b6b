"""Telnyx media streaming adapter against the documented messages, including media that
arrives out of order."""

import asyncio
import base64
import json

import numpy as np
import pytest

from telephony.base import Audio, CallStart, Digit, Hangup, Played, ProtocolError
from telephony.codecs import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from telephony.telnyx import TelnyxChannel, decode_payload, encode_payload
from tests.fakes import FakeWebSocket, drain

STREAM = "32DE0DEA-53CB-4B21-89A4-9E1819C043BC"
CCID = "v2:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ"
START = {
    "event": "start",
    "sequence_number": "1",
    "stream_id": STREAM,
    "start": {
        "user_id": "3E6F995F-85F7-4705-9741-53B116D28237",
        "call_control_id": CCID,
        "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d",
        "from": "+4512345678",
        "to": "+4533663366",
        "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
    },
}


def media(seq: int, payload: bytes, track: str = "inbound") -> str:
    return json.dumps(
        {
            "event": "media",
            "sequence_number": str(seq),
            "stream_id": STREAM,
            "media": {
                "track": track,
                "chunk": str(seq - 1),
                "timestamp": str((seq - 1) * 20),
                "payload": base64.b64encode(payload).decode(),
            },
        }
    )


def started(encoding: str = "PCMU", rate: int = 8000, depth: int = 5) -> TelnyxChannel:
    ch = TelnyxChannel(FakeWebSocket(), reorder_frames=depth)
    fmt = {"encoding": encoding, "sample_rate": rate, "channels": 1}
    ch.parse(json.dumps({**START, "start": {**START["start"], "media_format": fmt}}))
    return ch


def test_start_gives_call_control_id_and_caller():
    event = TelnyxChannel(FakeWebSocket()).parse(json.dumps(START))
    assert event == [
        CallStart(
            CCID,
            "telnyx",
            "+4512345678",
            {
                "from": "+4512345678",
                "to": "+4533663366",
                "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d",
            },
        )
    ]


def test_out_of_order_media_is_put_back_in_sequence():
    ch = started()
    # frame n carries the μ-law code n, so the order of the output shows
    order = [2, 3, 5, 4, 6, 8, 7, 9]
    raw = [c for seq in order for c in ch.reorder.push(seq, bytes([seq]) * 160)]
    assert [b[0] for b in raw] == [2, 3, 4, 5, 6, 7, 8, 9]
    assert ch.reorder.reordered == 2 and ch.reorder.late == 0


def test_reordered_media_becomes_audio_and_a_late_frame_is_dropped():
    ch = started()
    events = []
    for seq in (2, 4, 3, 5, 6):
        events += ch.parse(media(seq, ulaw_encode(np.full(160, 1000 * seq, np.int16))))
    assert len(events) == 5 and all(isinstance(e, Audio) for e in events)
    assert ch.parse(media(3, ulaw_encode(np.zeros(160, np.int16)))) == []  # too late
    assert ch.reorder.late == 1


def test_dtmf_marks_error_and_stop_flushes_held_frames():
    ch = started()
    ch.parse(media(2, b"\xff" * 160))
    held = ch.parse(media(4, b"\xff" * 160))  # 3 is missing: held back
    assert held == []
    events = ch.parse(
        json.dumps(
            {
                "event": "dtmf",
                "stream_id": STREAM,
                "occurred_at": "2026-01-01T10:00:00Z",
                "sequence_number": "5",
                "dtmf": {"digit": "1"},
            }
        )
    )
    assert events == [Digit("1")]  # the dtmf's own number is skipped, not waited for
    assert (
        ch.parse(
            json.dumps(
                {
                    "event": "error",
                    "stream_id": STREAM,
                    "payload": {
                        "code": 100002,
                        "title": "Unknown error",
                        "detail": "An unknown error occurred",
                    },
                }
            )
        )
        == []
    )
    assert ch.errors[0]["code"] == 100002
    stop = ch.parse(
        json.dumps(
            {
                "event": "stop",
                "sequence_number": "6",
                "stream_id": STREAM,
                "stop": {"call_control_id": CCID},
            }
        )
    )
    assert [type(e) for e in stop] == [Audio, Hangup]  # the held frame, then the end


@pytest.mark.parametrize("encoding, rate, encode, decode", [
    ("PCMA", 8000, alaw_encode, alaw_decode),
    ("PCMU", 8000, ulaw_encode, ulaw_decode),
])  # fmt: skip
def test_g711_payloads_use_the_right_law(encoding, rate, encode, decode):
    pcm = (np.sin(np.arange(160) / 5) * 8000).astype(np.int16)
    assert np.array_equal(decode_payload(encode(pcm), encoding), decode(encode(pcm)))
    assert encode_payload(pcm, encoding) == encode(pcm)
    ch = started(encoding, rate)
    assert all(isinstance(e, Audio) for e in ch.parse(media(2, encode(pcm))))


def test_l16_is_big_endian_and_16k_needs_no_resampling():
    pcm = np.array([1, -2, 300], np.int16)
    assert encode_payload(pcm, "L16") == pcm.astype(">i2").tobytes()
    assert np.array_equal(decode_payload(pcm.astype(">i2").tobytes(), "L16"), pcm)
    ch = started("L16", 16000)
    (audio,) = ch.parse(media(2, np.full(320, 16384, ">i2").tobytes()))
    assert len(audio.samples) == 320 and audio.samples[0] == pytest.approx(0.5)


@pytest.mark.parametrize("bad, error", [
    ("{not json", "malformed JSON"),
    ("[]", "JSON object"),
    (json.dumps({"event": "media", "media": {}}), "before 'start'"),
    (json.dumps({**START, "start": {**START["start"], "media_format": {"encoding": "G722", "sample_rate": 8000}}}),
     "unsupported media format"),
    (json.dumps({**START, "start": {**START["start"], "media_format": {"encoding": "PCMU", "sample_rate": "x"}}}),
     "sample_rate"),
    (json.dumps({**START, "stream_id": None}), "stream_id"),
])  # fmt: skip
def test_malformed_messages_are_protocol_errors(bad, error):
    with pytest.raises(ProtocolError, match=error):
        TelnyxChannel(FakeWebSocket()).parse(bad)


def test_bad_payload_and_sequence_number_are_protocol_errors():
    ch = started()
    bad = json.loads(media(2, b"\xff"))
    bad["media"]["payload"] = "!!"
    with pytest.raises(ProtocolError, match="base64"):
        ch.parse(json.dumps(bad))
    with pytest.raises(ProtocolError, match="sequence_number"):
        ch.parse(json.dumps({**json.loads(media(3, b"\xff")), "sequence_number": "three"}))


def test_binary_frame_ends_the_call_with_a_protocol_error():
    ch = TelnyxChannel(FakeWebSocket([json.dumps(START), b"\x00"]))
    with pytest.raises(ProtocolError, match="binary"):
        asyncio.run(drain(ch))


def test_outbound_media_then_mark_and_clear_interrupts_at_once():
    async def scenario():
        ch = started()
        await ch.play(np.zeros(8000, np.float32), "answer-3.0")  # 0.5 s
        await ch.clear()
        played = await ch.inbox.get()
        echo = ch.parse(
            json.dumps(
                {
                    "event": "mark",
                    "sequence_number": "9",
                    "stream_id": STREAM,
                    "mark": {"name": "answer-3.0"},
                }
            )
        )
        return ch.ws.jsons, played, echo

    sent, played, echo = asyncio.run(scenario())
    kinds = [m["event"] for m in sent]
    assert kinds == ["media", "media", "media", "mark", "clear"]
    chunks = [base64.b64decode(m["media"]["payload"]) for m in sent[:3]]
    assert [len(c) for c in chunks] == [1600, 1600, 800]  # 0.5 s of 8 kHz μ-law, 200 ms chunks
    assert sent[3]["mark"] == {"name": "answer-3.0"}
    assert played == Played("answer-3.0", interrupted=True)
    assert echo == []  # the late echo of a cleared mark is not reported twice


def test_mark_echo_after_playback_is_played():
    ch = started()
    asyncio.run(ch.play(np.zeros(1600, np.float32), "greeting-1.0"))
    assert ch.parse(
        json.dumps({"event": "mark", "stream_id": STREAM, "mark": {"name": "greeting-1.0"}})
    ) == [Played("greeting-1.0")]
