"""Bad input over real sockets, on every protocol: each gets a clear log line and its
protocol's own close (WebSocket 1003/1007/1008/1009, AudioSocket hangup, AudioHook
disconnect "error"), the server stays up, and a call beside it on the same server completes.
Also: a peer that never reads, and one that vanishes mid-utterance."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import socket
import time
import uuid

import pytest
import websockets

from telephony.audiosocket import KIND_AUDIO, KIND_HANGUP, KIND_UUID, TcpConnection, pack
from telephony.registry import client_headers
from telephony.simulator import SimulatedCall
from tests.fakes import ServedApp, ToneSpeaker, light_services

START_TWILIO = {
    "event": "start",
    "streamSid": "MZ1",
    "start": {
        "streamSid": "MZ1",
        "callSid": "CAbad",
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
    },
}
CONNECTED_VONAGE = {"event": "websocket:connected", "content-type": "audio/l16;rate=16000"}
START_TELNYX = {
    "event": "start",
    "stream_id": "s1",
    "start": {"media_format": {"encoding": "PCMU", "sample_rate": 8000}},
}
BIG = "x" * (65 * 1024)  # over security.max_message_bytes (64 KiB), under uvicorn's frame limit

# protocol → [(messages to send, the close code expected, what the log names)]
GARBAGE = {
    "twilio": [
        (["{not json"], 1007, "malformed JSON"),
        ([b"\x00\x01"], 1003, "binary frame"),
        ([json.dumps({"event": "media", "media": {"payload": ""}})], 1008, "before 'start'"),
        (
            [json.dumps(START_TWILIO), json.dumps({"event": "media", "media": {"payload": "!!"}})],
            1007,
            "base64",
        ),
        (
            [
                json.dumps(
                    {
                        **START_TWILIO,
                        "start": {
                            **START_TWILIO["start"],
                            "mediaFormat": {"encoding": "audio/x-l16", "sampleRate": 16000},
                        },
                    }
                )
            ],
            1003,
            "unsupported media format",
        ),
        ([BIG], 1009, "exceeds"),
        ([json.dumps(START_TWILIO), json.dumps(START_TWILIO)], 1008, "second 'start'"),
    ],
    "vonage": [
        (["[]"], 1007, "JSON object"),
        ([b"\0" * 640], 1008, "before 'websocket:connected'"),
        (
            [json.dumps({**CONNECTED_VONAGE, "content-type": "audio/l16;rate=44100"})],
            1003,
            "content-type",
        ),
        ([json.dumps(CONNECTED_VONAGE), b"\0" * 641], 1007, "16-bit"),
        ([json.dumps(CONNECTED_VONAGE), b"\0" * (66 * 1024)], 1009, "exceeds"),
    ],
    "telnyx": [
        (["{"], 1007, "malformed JSON"),
        ([b"\x01"], 1003, "binary frame"),
        (
            [
                json.dumps(
                    {
                        **START_TELNYX,
                        "start": {"media_format": {"encoding": "OPUS", "sample_rate": 48000}},
                    }
                )
            ],
            1003,
            "unsupported media format",
        ),
        (
            [
                json.dumps(START_TELNYX),
                json.dumps({"event": "media", "sequence_number": "x", "media": {}}),
            ],
            1007,
            "sequence_number",
        ),
    ],
    "asterisk": [
        (['{"event": 5}'], 1007, "'event' string"),
        ([b"\xff" * 160], 1008, "before MEDIA_START"),
        (["MEDIA_START channel_id:x format:g729"], 1003, "unsupported format"),
        (
            ["MEDIA_START channel_id:x format:slin16 optimal_frame_size:640", b"\0" * 3],
            1007,
            "whole samples",
        ),
    ],
    "raw": [
        (["[1]"], 1007, "JSON object"),
        (
            [json.dumps({"call_id": "web-x"}), json.dumps({"type": "dtmf", "digit": "12"})],
            1007,
            "dtmf digit",
        ),
        ([b"\0\0\0"], 1007, "16-bit"),
        ([json.dumps({"call_id": "y" * 200})], 1008, "call_id"),
        ([BIG.encode()], 1009, "exceeds"),
    ],
}


@pytest.fixture(scope="module")
def served(tmp_path_factory, catalogue, classifier):
    with ServedApp(light_services(tmp_path_factory.mktemp("bad"), catalogue, classifier)) as app:
        yield app


def auth_headers(served: ServedApp, protocol: str) -> dict[str, str]:
    return client_headers(protocol, served.media_url(protocol), served.credentials)


async def send_garbage(served: ServedApp, protocol: str, messages: list) -> tuple[int | None, list]:
    """Send `messages`, then read until the server closes; (close code, what it sent)."""
    received: list = []
    async with websockets.connect(
        served.media_url(protocol), additional_headers=auth_headers(served, protocol), max_size=None
    ) as ws:
        try:
            for message in messages:
                await ws.send(message)
            async with asyncio.timeout(10):
                async for message in ws:
                    received.append(message)
        except websockets.ConnectionClosed:
            pass
        return (ws.close_code, received)


async def good_call(served: ServedApp, protocol: str):
    call = SimulatedCall(
        served.media_url(protocol),
        None,
        protocol=protocol,
        speed=4.0,
        timeout_s=10,
        credentials=served.credentials,
    )
    call.events_url = served.events_url(call.call_id)
    result = await asyncio.wait_for(call.run([], digits="2"), 20)
    return call.call_id, result


@pytest.mark.parametrize("protocol", sorted(GARBAGE))
def test_garbage_gets_the_documented_close_and_the_call_beside_it_completes(
    served, protocol, caplog
):
    async def scenario():
        good = asyncio.create_task(good_call(served, protocol))
        closes = [
            await send_garbage(served, protocol, messages) for messages, _, _ in GARBAGE[protocol]
        ]
        return closes, await good

    with caplog.at_level(logging.WARNING, logger="voicebot.app"):
        closes, (call_id, result) = asyncio.run(scenario())
    for (code, received), (_, expected, why) in zip(closes, GARBAGE[protocol], strict=True):
        assert code == expected, (why, code)
        assert why in caplog.text
        if protocol == "raw":  # the raw protocol also says it in words before closing
            assert json.loads(received[-1]) == {"type": "hangup", "reason": "error"}
    assert f"{protocol} call" in caplog.text and "protocol error" in caplog.text
    assert result.turns[0].forvaltning == "TMF" and served.services.store.get(call_id) is not None
    assert served.services.active_calls == 0


def test_a_frame_over_the_servers_frame_limit_is_closed_1009(served):
    code, _ = asyncio.run(
        send_garbage(served, "raw", [b"\0" * (300 * 1024)])
    )  # over ws_max_size (256 KiB)
    assert code == 1009


def test_audiohook_garbage_is_answered_with_disconnect_error(served):
    from telephony.audiohook import AudioHookPlatform

    async def scenario():
        headers = client_headers(
            "audiohook",
            served.media_url("audiohook"),
            served.credentials,
            AudioHookPlatform.headers("probe"),
        )
        async with websockets.connect(
            served.media_url("audiohook"), additional_headers=headers
        ) as ws:
            await ws.send(
                json.dumps({"version": "2", "type": "open", "seq": 7, "id": str(uuid.uuid4())})
            )
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
            await ws.send(
                json.dumps(
                    {"version": "2", "type": "close", "seq": 8, "id": reply["id"], "parameters": {}}
                )
            )
            async with asyncio.timeout(10):
                async for _ in ws:
                    pass
            return reply

    reply = asyncio.run(scenario())
    assert reply["type"] == "disconnect" and reply["parameters"]["reason"] == "error"
    assert "seq 7" in reply["parameters"]["info"]


def test_audiosocket_garbage_and_truncated_frames_end_only_their_call(served):
    async def scenario():
        host, port = served.app.state.audiosocket
        good = asyncio.create_task(good_call(served, "audiosocket"))
        # Unknown kind after the UUID: the server answers hangup and closes.
        conn = await TcpConnection.open(f"tcp://{host}:{port}")
        await conn.send(pack(KIND_UUID, uuid.uuid4().bytes) + pack(0x42, b"??"))
        kinds = [m.kind async for m in conn]
        await conn.close()
        # A frame cut off mid-payload, then the connection drops: the call just ends.
        conn = await TcpConnection.open(f"tcp://{host}:{port}")
        await conn.send(pack(KIND_UUID, uuid.uuid4().bytes) + pack(KIND_AUDIO, b"\0" * 320)[:100])
        conn.writer.transport.abort()
        return kinds, await good

    kinds, (call_id, result) = asyncio.run(scenario())
    assert KIND_HANGUP in kinds
    assert result.turns[0].forvaltning == "TMF" and served.services.store.get(call_id) is not None
    deadline = time.monotonic() + 10
    while served.services.active_calls and time.monotonic() < deadline:
        time.sleep(0.05)
    assert served.services.active_calls == 0


# == a peer that never reads ===================================================================
def ws_frame(text: bytes) -> bytes:
    """One masked client text frame (RFC 6455 §5.2), for a client that does nothing else."""
    mask = os.urandom(4)
    n = len(text)
    head = bytes([0x81]) + (
        bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    )
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(text))


def stuck_raw_client(port: int, token: str) -> socket.socket:
    """Upgrade to /raw, send the start message, then never read: a small receive window that
    fills at once. (A websockets client would go on reading into its own memory.)"""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /raw?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101")
    sock.sendall(ws_frame(json.dumps({"call_id": "web-stuck"}).encode()))
    return sock


def test_a_peer_that_never_reads_is_cut_off_and_others_go_on(
    tmp_path, catalogue, classifier, caplog
):
    services = light_services(tmp_path, catalogue, classifier, audiosocket_enabled=False)
    services.settings.security.send_timeout_s = 1.0
    # The stuck call's greeting is far longer than the sockets' buffers (about 2–3 MB on
    # loopback): 200 s, 6.4 MB of PCM. Every later sentence is short, so the other call is not
    # itself a slow reader of megabytes on a busy machine.
    services.speaker = speaker = ToneSpeaker(0.2, first_seconds=200)
    with ServedApp(services) as served, caplog.at_level(logging.WARNING):
        stuck = stuck_raw_client(served.port, served.credentials.token("raw"))

        async def scenario():
            deadline = time.monotonic() + 10
            while (
                not speaker.spoken and time.monotonic() < deadline
            ):  # the stuck call got the long one
                await asyncio.sleep(0.01)
            other = SimulatedCall(
                served.media_url("raw"),
                None,
                protocol="raw",
                speed=4.0,
                timeout_s=60,
                credentials=served.credentials,
            )
            other.events_url = served.events_url(other.call_id)
            result = await asyncio.wait_for(other.run([], digits="2"), 90)
            deadline = time.monotonic() + 20
            while services.active_calls and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            return other.call_id, result

        other_id, result = asyncio.run(scenario())
        assert services.active_calls == 0  # the stuck call was ended, not left waiting
        assert "has not read" in caplog.text
        # The stuck peer, reading at last, gets what was buffered and then the end — no hang.
        received, chunk = 0, b"x"
        with contextlib.suppress(ConnectionResetError):
            while chunk:
                chunk = stuck.recv(1 << 16)
                received += len(chunk)
        stuck.close()
        assert 0 < received < 6 * 1024 * 1024  # less than the 6.4 MB sentence was ever queued
        assert result.turns[0].forvaltning == "TMF" and services.store.get(other_id) is not None
        assert services.store.get("web-stuck") is None


# == a peer that vanishes mid-utterance ========================================================
def test_a_caller_cut_off_mid_utterance_leaves_nothing_behind(tmp_path, speaker):
    from telephony.codecs import float_to_pcm16, resample, ulaw_encode
    from tests.light_server import LightServer

    speech = float_to_pcm16(
        resample(speaker.speak("Min skraldespand er ikke blevet tømt i denne uge."), 16000, 8000)
    )
    with LightServer(tmp_path, "--vad", "silero", "--asr-delay-ms", "300", "400") as server:
        from voicebot.config import load_settings
        from voicebot.secrets import load_credentials

        creds = load_credentials(load_settings(None, data_dir=tmp_path))

        async def cut_off(n: int) -> None:
            url = server.url("/twilio")
            async with websockets.connect(
                url, additional_headers=client_headers("twilio", url, creds)
            ) as ws:
                await ws.send(
                    json.dumps(
                        {
                            **START_TWILIO,
                            "streamSid": f"MZ{n}",
                            "start": {
                                **START_TWILIO["start"],
                                "streamSid": f"MZ{n}",
                                "callSid": f"CAcut{n}",
                            },
                        }
                    )
                )
                for i in range(0, len(speech) * 2 // 3, 160):  # two thirds of the sentence, fast
                    payload = ulaw_encode(speech[i : i + 160])
                    await ws.send(
                        json.dumps(
                            {
                                "event": "media",
                                "streamSid": f"MZ{n}",
                                "media": {"payload": base64.b64encode(payload).decode()},
                            }
                        )
                    )
                    await asyncio.sleep(0.005)
                ws.transport.abort()  # no close frame: the line just drops

        async def scenario():
            await asyncio.gather(*(cut_off(n) for n in range(4)))

        asyncio.run(scenario())
        deadline = time.monotonic() + 15
        state = server.state()
        while (state["active_calls"] or state["session_tasks"]) and time.monotonic() < deadline:
            time.sleep(0.2)
            state = server.state()
        assert (
            state["active_calls"] == 0
            and state["session_tasks"] == []
            and state["subscribers"] == 0
        )
    assert server.proc.returncode is not None
