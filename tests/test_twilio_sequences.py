"""Twilio Media Streams, a realistic barge-in sequence on the adapter (the message formats
themselves are in test_twilio.py): a two-sentence greeting, the caller talks over it, the
bot clears, Twilio returns both marks at once — discarded, not played — and the next
prompt's mark is played normally."""

import asyncio
import base64
import json

import numpy as np

from telephony.base import Played
from telephony.codecs import ulaw_encode
from telephony.twilio import TwilioChannel
from tests.fakes import FakeWebSocket

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
START = {
    "event": "start",
    "sequenceNumber": "1",
    "streamSid": SID,
    "start": {
        "streamSid": SID,
        "accountSid": "AC123",
        "callSid": "CA456",
        "tracks": ["inbound"],
        "customParameters": {},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    },
}


def mark(name: str, seq: int) -> str:
    return json.dumps(
        {"event": "mark", "sequenceNumber": str(seq), "streamSid": SID, "mark": {"name": name}}
    )


def media(seq: int) -> str:
    payload = base64.b64encode(ulaw_encode(np.full(160, 3000, np.int16))).decode()
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "streamSid": SID,
            "media": {
                "track": "inbound",
                "chunk": str(seq - 1),
                "timestamp": str(seq * 20),
                "payload": payload,
            },
        }
    )


def test_marks_returned_right_after_a_clear_were_discarded():
    async def scenario():
        ch = TwilioChannel(FakeWebSocket())
        ch.parse(json.dumps(START))
        await ch.play(np.zeros(16000, np.float32), "greeting-1.0")
        await ch.play(np.zeros(16000, np.float32), "greeting-1.1")
        for seq in range(2, 12):  # the caller talks over the greeting
            ch.parse(media(seq))
        await ch.clear()
        echoes = [ch.parse(mark("greeting-1.0", 12)), ch.parse(mark("greeting-1.1", 13))]
        await ch.play(np.zeros(8000, np.float32), "answer-2.0")
        later = ch.parse(mark("answer-2.0", 40))
        return ch.ws.jsons, echoes, later

    sent, echoes, later = asyncio.run(scenario())
    kinds = [m["event"] for m in sent]
    assert (
        kinds.count("mark") == 3
        and kinds.index("clear") == kinds.index("mark", kinds.index("mark") + 1) + 1
    )
    assert echoes == [Played("greeting-1.0", True), Played("greeting-1.1", True)]
    assert later == Played("answer-2.0", False)
