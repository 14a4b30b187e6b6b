"""Shared pieces of the telephony protocol tests: fake sockets, light Services (no Whisper,
no Silero, a 0.1 s tone for every prompt) and the real FastAPI app served by uvicorn on a
free port in a background thread, for loopback calls through telephony.simulator."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import numpy as np

from voicebot.asr import AsrPool, AsrResult
from voicebot.config import AsrSettings, load_settings
from voicebot.events import EventBus
from voicebot.queues import SqliteQueueStore
from voicebot.services import Services

PROMPT_S = 0.1


class FakeWebSocket:
    """The starlette WebSocket calls the adapters make: scripted incoming messages (None =
    the peer disconnects), a log of what was sent."""

    def __init__(
        self,
        incoming: list[str | bytes | None] | None = None,
        end: bool = True,
        headers: dict | None = None,
        query: dict | None = None,
    ) -> None:
        self.queue: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        for item in [*(incoming or []), *([None] if end else [])]:
            self.queue.put_nowait(item)
        self.sent: list[str | bytes] = []
        self.closed: int | None = None
        self.close_reason: str | None = None
        self.headers = headers or {}
        self.query_params = query or {}

    def feed(self, *messages: str | bytes | None) -> None:
        for item in messages:
            self.queue.put_nowait(item)

    async def receive(self) -> dict:
        item = await self.queue.get()
        if item is None:
            return {"type": "websocket.disconnect"}
        if isinstance(item, str):
            return {"type": "websocket.receive", "text": item}
        return {"type": "websocket.receive", "bytes": item}

    async def send_text(self, text: str) -> None:
        self.sent.append(text)

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed = code
        self.close_reason = reason

    @property
    def texts(self) -> list[str]:
        return [m for m in self.sent if isinstance(m, str)]

    @property
    def jsons(self) -> list[dict]:
        return [json.loads(m) for m in self.texts]

    @property
    def binaries(self) -> list[bytes]:
        return [m for m in self.sent if isinstance(m, bytes)]


async def drain(channel, n: int | None = None, timeout: float = 2.0) -> list:
    """Collect events from a channel (all, or the first n)."""
    out = []

    async def collect():
        async for event in channel.events():
            out.append(event)
            if n is not None and len(out) >= n:
                return

    await asyncio.wait_for(collect(), timeout)
    return out


class FakeSpeaker:
    def speak(self, text: str, voice=None) -> np.ndarray:
        t = np.arange(int(PROMPT_S * 16000)) / 16000
        return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


class SilentVad:
    """Never hears speech (the loopback calls speak with keys)."""

    class _Stream:
        def __init__(self) -> None:
            self._pending = 0

        def push(self, audio: np.ndarray) -> np.ndarray:
            self._pending += len(audio)
            n, self._pending = divmod(self._pending, 512)
            return np.zeros(n, np.float32)

    def stream(self):
        return self._Stream()


class ScriptedAsr:
    def transcribe(self, audio, previous_text=None, prefix=None, languages=None):
        return AsrResult("", -0.2, 0.01, len(audio) / 16000, 6.0, 5.0)


def light_services(tmp_path: Path, catalogue, classifier, **telephony) -> Services:
    # audiohook_playback: the simulator's AudioHook side is an Audio Connector (it hears the bot).
    settings = load_settings(
        None,
        data_dir=tmp_path,
        telephony={"audiosocket_port": 0, "audiohook_playback": True, **telephony},
    )
    return Services(
        settings=settings,
        catalogue=catalogue,
        vad=SilentVad(),
        asr=AsrPool(ScriptedAsr(), AsrSettings(workers=1)),
        classifier=classifier,
        speaker=FakeSpeaker(),
        store=SqliteQueueStore(tmp_path / "q.db"),
        events=EventBus(),
        domain_prompt=None,
    )


class ServedApp:
    """create_app(settings, services) under uvicorn on 127.0.0.1:<free port>, in a thread."""

    def __init__(self, services: Services) -> None:
        import uvicorn

        from voicebot.app import create_app
        from voicebot.server import build_config

        self.services = services
        self.app = create_app(services.settings, services=services)
        config = build_config(
            self.app,
            services.settings,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServedApp:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.secret = self.app.state.secret
        self.credentials = self.app.state.credentials
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def media_url(self, name: str) -> str:
        if name == "audiosocket":
            host, port = self.app.state.audiosocket
            return f"tcp://{host}:{port}"
        return f"ws://127.0.0.1:{self.port}/{name}"

    def events_url(self, call_id: str) -> str:
        return f"ws://127.0.0.1:{self.port}/calls/{call_id}/events?token={self.secret}"


def keypad_call(served: ServedApp, protocol: str, digit: str = "2", **platform_attrs):
    """A loopback call through the simulator: greeting, one key press, the bot routes."""
    from telephony.simulator import PLATFORMS, SimulatedCall

    cls = PLATFORMS[protocol]
    saved = {k: getattr(cls, k) for k in platform_attrs}
    for k, v in platform_attrs.items():
        setattr(cls, k, v)
    try:
        call = SimulatedCall(
            served.media_url(protocol),
            None,
            protocol=protocol,
            speed=4.0,
            timeout_s=10,
            credentials=served.credentials,
        )
        call.events_url = served.events_url(call.call_id)
        result = asyncio.run(asyncio.wait_for(call.run([], digits=digit), 15))
    finally:
        for k, v in saved.items():
            setattr(cls, k, v)
    return call, result
