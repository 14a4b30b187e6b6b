"""Asterisk AudioSocket: the message framing, DTMF and error kinds, and paced playback over
a real TCP connection to the adapter's own server."""

import asyncio
import time
import uuid

import numpy as np
import pytest

from telephony.audiosocket import (
    KIND_AUDIO,
    KIND_DTMF,
    KIND_ERROR,
    KIND_HANGUP,
    KIND_UUID,
    AudioSocketChannel,
    Message,
    TcpConnection,
    pack,
    serve,
)  # fmt: skip
from telephony.base import Audio, CallStart, Digit, Hangup, Played, ProtocolError

CALL = uuid.UUID("7b0c4b5e-2f3a-4f8e-9d6a-1c2b3d4e5f60")


def started() -> AudioSocketChannel:
    ch = AudioSocketChannel(None, None)
    ch.parse(Message(KIND_UUID, CALL.bytes))
    return ch


def test_the_documented_example_frames():
    assert pack(KIND_UUID, CALL.bytes)[:3] == bytes.fromhex("010010")
    assert pack(KIND_AUDIO, b"\0" * 320)[:3] == bytes.fromhex("100140")
    assert pack(KIND_HANGUP) == b"\x00\x00\x00"


def test_uuid_first_then_audio_dtmf_and_hangup():
    ch = AudioSocketChannel(None, None)
    assert ch.parse(Message(KIND_UUID, CALL.bytes)) == CallStart(str(CALL), "audiosocket")
    audio = ch.parse(Message(KIND_AUDIO, np.full(160, 1000, "<i2").tobytes()))
    assert isinstance(audio, Audio) and audio.samples.dtype == np.float32
    assert ch.parse(Message(KIND_DTMF, b"5")) == Digit("5")
    assert ch.parse(Message(KIND_DTMF, b"A")) is None  # not a key the bot uses
    assert ch.parse(Message(KIND_HANGUP, b"")) == Hangup("hangup")


def test_error_kinds():
    ch = started()
    assert ch.parse(Message(KIND_ERROR, b"\x02")) is None  # frame forwarding: logged, call goes on
    assert ch.parse(Message(KIND_ERROR, b"\x01")) == Hangup("caller hung up")
    assert ch.errors == [0x02, 0x01]


@pytest.mark.parametrize("messages, error", [
    ([Message(KIND_AUDIO, b"\0" * 320)], "first message must be the UUID"),
    ([Message(KIND_UUID, b"\x01" * 15)], "expected 16"),
    ([Message(KIND_UUID, CALL.bytes), Message(KIND_AUDIO, b"\0" * 3)], "whole 16-bit"),
    ([Message(KIND_UUID, CALL.bytes), Message(KIND_DTMF, b"12")], "expected 1"),
    ([Message(KIND_UUID, CALL.bytes), Message(0x12, b"\0" * 640)], "not 8 kHz slin"),
    ([Message(KIND_UUID, CALL.bytes), Message(0x42, b"")], "unknown message kind 0x42"),
    ([Message(KIND_UUID, CALL.bytes), Message(KIND_UUID, CALL.bytes)], "second UUID"),
])  # fmt: skip
def test_malformed_input_is_a_protocol_error(messages, error):
    ch = AudioSocketChannel(None, None)
    with pytest.raises(ProtocolError, match=error):
        for message in messages:
            ch.parse(message)


def test_over_tcp_events_paced_audio_clear_and_hangup():
    async def scenario():
        got: list = []
        done = asyncio.Event()

        async def run_channel(channel: AudioSocketChannel):
            async for event in channel.events():
                got.append(event)
                if isinstance(event, CallStart):
                    await channel.play(np.zeros(int(0.2 * 16000), np.float32), "greeting-1.0")
                    await channel.play(np.zeros(16000, np.float32), "greeting-1.1")
                if isinstance(event, Played) and event.mark == "greeting-1.0":
                    await asyncio.sleep(0.05)
                    await channel.clear()
                if isinstance(event, Played) and event.interrupted:
                    await channel.hang_up()
            done.set()

        server = await serve("127.0.0.1", 0, run_channel)
        port = server.sockets[0].getsockname()[1]
        conn = await TcpConnection.open(f"tcp://127.0.0.1:{port}")
        await conn.send(pack(KIND_UUID, CALL.bytes))
        await conn.send(pack(KIND_DTMF, b"3"))
        await conn.send(pack(KIND_AUDIO, b"\0" * 320))
        received: list[tuple[float, Message]] = []
        async for message in conn:
            received.append((time.monotonic(), message))
        await asyncio.wait_for(done.wait(), 2)
        await conn.close()
        server.close()
        return got, received

    got, received = asyncio.run(scenario())
    assert [type(e) for e in got[:3]] == [CallStart, Digit, Audio]
    assert Played("greeting-1.0") in got and Played("greeting-1.1", interrupted=True) in got
    audio = [(t, m) for t, m in received if m.kind == KIND_AUDIO]
    assert all(len(m.payload) == 320 for _, m in audio)
    assert (
        10 + 1 <= len(audio) <= 10 + 8
    )  # the first prompt, a few frames of the second, then silence
    span = audio[9][0] - audio[0][0]
    assert span == pytest.approx(0.18, abs=0.05)  # 20 ms apart: Asterisk does no pacing
    assert received[-1][1] == Message(KIND_HANGUP, b"")  # and nothing after the hangup
