"""Genesys AudioHook / Audio Connector adapter: the open transaction, pings every 5 s during
audio, pause/resume, close, probes, the API key, sequence bookkeeping, hand-off by
`disconnect` with outputVariables, and what happens to the bot's prompts."""

import asyncio
import json
import logging

import numpy as np
import pytest

from telephony.audiohook import NIL_UUID, AudioHookChannel, choose_media, parse_position
from telephony.base import Audio, CallStart, Digit, HandOff, Hangup, Played, ProtocolError
from telephony.codecs import ulaw_encode
from tests.fakes import FakeWebSocket

SESSION = "e160e428-53e2-487c-977d-96989bf5c99d"
CONVERSATION = "090eaa2f-72fa-480a-83e0-8667ff89c0ec"
MEDIA = [
    {"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000},
    {"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000},
    {"type": "audio", "format": "PCMU", "channels": ["internal"], "rate": 8000},
]
OPEN_PARAMS = {
    "organizationId": "d7934305-0972-4844-938e-9060eef73d05",
    "conversationId": CONVERSATION,
    "participant": {
        "id": "883efee8-3d6c-4537-b500-6d7ca4b92fa0",
        "ani": "+4512345678",
        "aniName": "Jens Hansen",
        "dnis": "+4533663366",
    },
    "media": MEDIA,
    "language": "da-DK",
}
HEADERS = {
    "audiohook-organization-id": "d7934305-0972-4844-938e-9060eef73d05",
    "audiohook-session-id": SESSION,
    "audiohook-correlation-id": "30b0e395-84d3-4570-ac13-9a62d8f514c0",
    "x-api-key": "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh",
}


class Genesys:
    """The client side of one session: numbers its messages and tracks the server's."""

    def __init__(self, channel: AudioHookChannel) -> None:
        self.channel = channel
        self.seq = 0
        self.samples = 0

    def msg(self, kind: str, parameters: dict | None = None, **extra) -> str:
        self.seq += 1
        return json.dumps(
            {
                "version": "2",
                "id": SESSION,
                "type": kind,
                "seq": self.seq,
                "serverseq": self.channel.seq,
                "position": f"PT{self.samples / 8000:.2f}S",
                "parameters": parameters or {},
                **extra,
            }
        )

    async def send(self, kind: str, parameters: dict | None = None) -> list:
        return await self.channel.on_message(self.msg(kind, parameters))

    async def audio(self, seconds: float, value: int = 1000, stereo: bool = False) -> list:
        n = int(seconds * 8000)
        self.samples += n
        data = ulaw_encode(np.full(n, value, np.int16))
        if stereo:
            data = bytes(
                b
                for pair in zip(data, ulaw_encode(np.zeros(n, np.int16)), strict=True)
                for b in pair
            )
        return await self.channel.on_message(data)


def channel(
    api_key: str | None = "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh",
    playback: bool = False,
    headers: dict | None = None,
) -> tuple[AudioHookChannel, Genesys]:
    ch = AudioHookChannel(
        FakeWebSocket(end=False, headers=HEADERS if headers is None else headers), api_key, playback
    )
    return ch, Genesys(ch)


def sent(ch: AudioHookChannel) -> list[dict]:
    return ch.ws.jsons


def test_open_is_answered_with_pcmu_mono_external_and_starts_the_call():
    async def scenario():
        ch, genesys = channel()
        events = await genesys.send("open", OPEN_PARAMS)
        return ch, events

    ch, events = asyncio.run(scenario())
    opened = sent(ch)[0]
    assert opened["type"] == "opened" and opened["seq"] == 1 and opened["clientseq"] == 1
    assert opened["id"] == SESSION
    assert opened["parameters"]["media"] == [
        {"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000}
    ]
    (start,) = events
    assert (
        start.call_id == CONVERSATION
        and start.caller == "+4512345678"
        and start.platform == "audiohook"
    )
    assert start.params["dnis"] == "+4533663366" and start.params["sessionId"] == SESSION


def test_pings_every_5_s_during_audio_are_ponged_and_position_is_tracked():
    async def scenario():
        ch, genesys = channel()
        await genesys.send("open", OPEN_PARAMS)
        audio = []
        for _ in range(3):  # 15 s of audio in 100 ms messages, a ping every 5 s
            for _ in range(50):
                audio += await genesys.audio(0.1)
            assert await genesys.send("ping", {"rtt": "PT0.05S"}) == []
        return ch, audio

    ch, audio = asyncio.run(scenario())
    pongs = [m for m in sent(ch) if m["type"] == "pong"]
    assert [p["clientseq"] for p in pongs] == [2, 3, 4] and [p["seq"] for p in pongs] == [2, 3, 4]
    assert all(isinstance(a, Audio) for a in audio) and len(audio) == 150
    assert ch.position_s == pytest.approx(15.0) and ch.client_position_s == pytest.approx(15.0)


def test_stereo_offer_keeps_the_external_channel():
    assert choose_media([MEDIA[0]])["channels"] == ["external", "internal"]
    assert choose_media([MEDIA[2]]) is None

    async def scenario():
        ch, genesys = channel()
        await genesys.send("open", {**OPEN_PARAMS, "media": [MEDIA[0]]})
        return await genesys.audio(0.1, value=8000, stereo=True)

    (audio,) = asyncio.run(scenario())
    assert np.abs(audio.samples).max() > 0.1  # the caller's side, not the silent agent side


def test_paused_audio_is_dropped_until_resumed_and_close_is_answered():
    async def scenario():
        ch, genesys = channel()
        await genesys.send("open", OPEN_PARAMS)
        await genesys.send("paused")
        while_paused = await genesys.audio(0.1)
        await genesys.send("resumed", {"start": "PT1S", "discarded": "PT0.5S"})
        after = await genesys.audio(0.1)
        await genesys.send("discarded", {"start": "PT2S", "discarded": "PT0.2S"})
        end = await genesys.send("close", {"reason": "end"})
        return ch, while_paused, after, end

    ch, while_paused, after, end = asyncio.run(scenario())
    assert while_paused == [] and len(after) == 1
    assert end == [Hangup("close (end)")]
    assert sent(ch)[-1]["type"] == "closed" and sent(ch)[-1]["clientseq"] == 5


def test_audio_connector_dtmf():
    async def scenario():
        ch, genesys = channel()
        await genesys.send("open", OPEN_PARAMS)
        return await genesys.send("dtmf", {"digit": "2"}), await genesys.send(
            "dtmf", {"digit": "x"}
        )

    assert asyncio.run(scenario()) == ([Digit("2")], [])


def test_probe_is_answered_and_closed_without_a_call():
    async def scenario():
        ch, genesys = channel()
        probe = {
            **OPEN_PARAMS,
            "conversationId": NIL_UUID,
            "participant": {"id": NIL_UUID, "ani": "", "aniName": "", "dnis": ""},
        }
        ch.ws.feed(genesys.msg("open", probe), genesys.msg("close", {"reason": "end"}), None)
        events = [e async for e in ch.events()]
        await ch.hang_up()
        return ch, events

    ch, events = asyncio.run(scenario())
    assert events == []  # nothing for the session
    assert [m["type"] for m in sent(ch)] == ["opened", "closed"]
    assert ch.ws.closed == 1000


def test_wrong_api_key_is_refused_with_disconnect_unauthorized():
    async def scenario():
        ch, genesys = channel(api_key="the-right-key")
        ch.ws.feed(genesys.msg("open", OPEN_PARAMS), genesys.msg("close", {"reason": "end"}), None)
        events = [e async for e in ch.events()]
        return ch, events

    ch, events = asyncio.run(scenario())
    assert events == []
    types = [m["type"] for m in sent(ch)]
    assert types == ["disconnect", "closed"]
    assert sent(ch)[0]["parameters"]["reason"] == "unauthorized"


def test_without_a_configured_key_any_key_is_accepted_with_a_warning(caplog):
    async def scenario():
        ch, genesys = channel(api_key=None, headers={})
        return await genesys.send("open", OPEN_PARAMS)

    with caplog.at_level(logging.WARNING, logger="voicebot.telephony"):
        events = asyncio.run(scenario())
    assert isinstance(events[0], CallStart)
    assert "no API key configured" in caplog.text


@pytest.mark.parametrize("mutate, error", [
    (lambda m: {**m, "seq": 3}, "seq 3"),
    (lambda m: {**m, "serverseq": 7}, "serverseq 7"),
    (lambda m: {**m, "version": "1"}, "version"),
    (lambda m: {**m, "id": "not-a-uuid"}, "not a UUID"),
    (lambda m: {**m, "id": "0b9b1b8e-0000-4000-8000-000000000000"}, "differs from the header"),
    (lambda m: {**m, "parameters": []}, "parameters"),
    (lambda m: {**m, "position": "1.5 seconds"}, "ISO 8601"),
])  # fmt: skip
def test_malformed_open_is_a_protocol_error(mutate, error):
    ch, genesys = channel()
    bad = json.dumps(mutate(json.loads(genesys.msg("open", OPEN_PARAMS))))
    with pytest.raises(ProtocolError, match=error):
        asyncio.run(ch.on_message(bad))


def test_audio_before_opened_and_bad_json_are_protocol_errors():
    ch, _ = channel()
    with pytest.raises(ProtocolError, match="before 'opened'"):
        asyncio.run(ch.on_message(b"\xff" * 160))
    with pytest.raises(ProtocolError, match="malformed JSON"):
        asyncio.run(ch.on_message("{"))


def test_a_protocol_error_disconnects_with_reason_error():
    async def scenario():
        ch, genesys = channel()
        ch.ws.feed(genesys.msg("open", OPEN_PARAMS), genesys.msg("ping"), "{oops")
        events = []
        with pytest.raises(ProtocolError):
            async for event in ch.events():
                events.append(event)
        genesys.seq = 3  # the broken message took a number
        ch.ws.feed(genesys.msg("close", {"reason": "end"}), None)
        await ch.hang_up()
        return ch

    ch = asyncio.run(scenario())
    disconnect = next(m for m in sent(ch) if m["type"] == "disconnect")
    assert (
        disconnect["parameters"]["reason"] == "error"
        and "malformed JSON" in disconnect["parameters"]["info"]
    )
    assert sent(ch)[-1]["type"] == "closed"


def test_hand_off_disconnects_with_output_variables_and_waits_for_close():
    async def scenario():
        ch, genesys = channel()
        ch.ws.feed(genesys.msg("open", OPEN_PARAMS))
        events = ch.events()
        assert isinstance(await anext(events), CallStart)
        handing_off = asyncio.create_task(
            ch.hand_off(
                HandOff(CONVERSATION, "TMF", "Teknik og Miljø", "parking_permit", "keypad 2")
            )
        )
        await asyncio.sleep(0.05)
        assert not handing_off.done()  # waits for Genesys's close
        ch.ws.feed(genesys.msg("close", {"reason": "end"}), None)
        await asyncio.wait_for(handing_off, 2)
        return ch

    ch = asyncio.run(scenario())
    disconnect = next(m for m in sent(ch) if m["type"] == "disconnect")
    assert disconnect["parameters"] == {
        "reason": "completed",
        "outputVariables": {
            "result": "handoff",
            "forvaltning": "TMF",
            "queue": "Teknik og Miljø",
            "intent": "parking_permit",
            "reason": "keypad 2",
        },
    }
    assert sent(ch)[-1]["type"] == "closed" and ch.ws.closed == 1000


def test_listen_only_session_cannot_play_prompts():
    async def scenario():
        ch, genesys = channel()
        await genesys.send("open", OPEN_PARAMS)  # no inputVariables: AudioHook Monitor
        await ch.play(np.zeros(16000, np.float32), "greeting-1.0")
        return ch, await ch.inbox.get()

    ch, played = asyncio.run(scenario())
    assert played == Played("greeting-1.0", interrupted=True)  # reported, never heard
    assert ch.ws.binaries == []


def test_bot_audio_is_never_guessed_from_input_variables():
    """issue 13 #11: the reference Monitor client sends inputVariables and answers audio it did
    not ask for with error 415; audio goes out only when the setting says so."""

    async def scenario():
        ch = AudioHookChannel(
            FakeWebSocket(end=False, headers=HEADERS), "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh"
        )
        genesys = Genesys(ch)  # the channel's default: playback not configured
        await genesys.send("open", {**OPEN_PARAMS, "inputVariables": {"lang": "da"}})
        await ch.play(np.zeros(16000, np.float32), "greeting-1.0")
        return ch, await ch.inbox.get()

    ch, played = asyncio.run(scenario())
    assert not ch.can_play and ch.ws.binaries == []
    assert played == Played("greeting-1.0", interrupted=True)


def test_audio_connector_session_gets_paced_pcmu_and_barge_in_events():
    async def scenario():
        ch, genesys = channel(
            playback=True
        )  # telephony.audiohook_playback: an Audio Connector integration
        await genesys.send("open", {**OPEN_PARAMS, "inputVariables": {"lang": "da"}})
        await ch.play(np.zeros(16000, np.float32), "greeting-1.0")  # 1 s = 5 messages of 200 ms
        await asyncio.sleep(0.25)
        await ch.clear()
        played = await ch.inbox.get()
        await ch.playout.close()
        return ch, played

    ch, played = asyncio.run(scenario())
    assert 1 <= len(ch.ws.binaries) <= 3 and all(len(b) == 1600 for b in ch.ws.binaries)
    assert played == Played("greeting-1.0", interrupted=True)
    assert sent(ch)[-1]["type"] == "event"
    assert sent(ch)[-1]["parameters"] == {"entities": [{"type": "barge_in", "data": {}}]}


def test_parse_position():
    assert parse_position("PT1.24S") == pytest.approx(1.24)
    assert parse_position("PT0S") == 0.0
