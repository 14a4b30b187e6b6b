"""The one set of test fakes. Each stands behind the protocol the runtime consumes:

- recogniser (voicebot.asr.Recogniser): `ScriptedAsr`
- VAD (voicebot.vad.VoiceDetector): `DeafVad`
- text to speech (voicebot.tts.TextToSpeech): `ToneSpeaker`
- the platform's WebSocket as the adapters use it: `FakeWebSocket`
- a phone platform as the session sees it (telephony.base.MediaChannel): `ScriptedLine`
- the bot as the simulator's send loop sees it: `StallingLine`
- process-wide services without Whisper, Silero or espeak: `light_services`, and the real app
  served by uvicorn in a thread around them: `ServedApp`, `keypad_call`.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from telephony.base import SAMPLE_RATE, Audio, CallEvent, CallStart, Hangup, MediaChannel, Played
from voicebot.asr import AsrPool, AsrResult
from voicebot.catalogue import Catalogue
from voicebot.config import AsrSettings, load_settings
from voicebot.events import EventBus
from voicebot.queues import SqliteQueueStore
from voicebot.services import Services
from voicebot.tts import TextToSpeech, Voice
from voicebot.understanding import IntentClassifier
from voicebot.vad import WINDOW, SileroVad

FRAME = 320  # 20 ms at 16 kHz
PROMPT_S = 0.1  # every prompt of the light services: a tone this long
SENTENCE = "min skraldespand er ikke blevet tømt"  # waste → TMF
RECORDED = 1000  # decodes a ScriptedAsr remembers (the soak runs it for hours)


def tone(seconds: float, rate: int = SAMPLE_RATE, freq: float = 440.0, level: float = 0.3):
    t = np.arange(int(seconds * rate)) / rate
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), np.float32)


# == speech services ===========================================================================
class ScriptedAsr:
    """A recogniser that decodes nothing: every audio longer than `min_samples` gets the next
    text of `script` (one string: always that text; a list: one each, in decoding order, the
    last repeated), shorter ones get "". Decoding takes `delay_s` (seconds, or a range drawn
    from at random). Records how many audios it decoded (`calls`), the size of every decode
    (`batches`: 1 for a single one) and the first sample of every audio (`decoded`), the
    last RECORDED of each."""

    def __init__(
        self,
        script: str | Sequence[str] = "",
        delay_s: float | tuple[float, float] = 0.0,
        min_samples: int = SAMPLE_RATE // 2,
    ) -> None:
        self.script = [script] if isinstance(script, str) else list(script)
        self.delay_s = delay_s
        self.min_samples = min_samples
        self.calls = 0
        self.batches: list[int] = []
        self.decoded: list[float] = []

    def _wait(self) -> None:
        delay = (
            self.delay_s if isinstance(self.delay_s, float | int) else random.uniform(*self.delay_s)
        )
        time.sleep(delay)

    def _result(self, audio: np.ndarray) -> AsrResult:
        text = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        self.decoded.append(float(audio[0]) if len(audio) else 0.0)
        del self.decoded[:-RECORDED]
        text = text if len(audio) > self.min_samples else ""
        return AsrResult(text, -0.2, 0.01, len(audio) / SAMPLE_RATE, 6.0, 5.0)

    def transcribe(
        self,
        audio: np.ndarray,
        previous_text: str | None = None,
        prefix: str | None = None,
        *,
        languages: Sequence[str] | None = None,
    ) -> AsrResult:
        self._wait()
        self.batches.append(1)
        del self.batches[:-RECORDED]
        return self._result(audio)

    def transcribe_batch(
        self,
        audios: list[np.ndarray],
        previous_text: str | None = None,
        *,
        languages: Sequence[str] | None = None,
    ) -> list[AsrResult]:
        self._wait()
        self.batches.append(len(audios))
        del self.batches[:-RECORDED]
        return [self._result(a) for a in audios]


class EnergyVad:
    """Hears speech wherever the audio is louder than a whisper (prob 0.9), else silence."""

    class _Stream:
        def __init__(self) -> None:
            self._pending = np.zeros(0, np.float32)

        def push(self, audio: np.ndarray) -> np.ndarray:
            self._pending = np.concatenate([self._pending, audio])
            n = len(self._pending) // WINDOW
            windows = self._pending[: n * WINDOW].reshape(n, WINDOW)
            self._pending = self._pending[n * WINDOW :]
            loud = np.sqrt((windows**2).mean(axis=1)) > 0.02
            return np.where(loud, 0.9, 0.0).astype(np.float32)

    def stream(self) -> EnergyVad._Stream:
        return self._Stream()


class LateVad(EnergyVad):
    """Hears speech only once a loud stretch has lasted `late_s`, as Silero can after a long
    quiet stretch (voicebot.vad.speech_onset)."""

    def __init__(self, late_s: float = 1.2) -> None:
        self.late_windows = int(late_s * SAMPLE_RATE) // WINDOW

    class _LateStream(EnergyVad._Stream):
        def __init__(self, late_windows: int) -> None:
            super().__init__()
            self.late_windows, self.run = late_windows, 0

        def push(self, audio: np.ndarray) -> np.ndarray:
            out = super().push(audio)
            for i, p in enumerate(out):
                self.run = self.run + 1 if p > 0 else 0
                out[i] = p if self.run > self.late_windows else 0.0
            return out

    def stream(self) -> EnergyVad._Stream:
        return self._LateStream(self.late_windows)


class DeafVad:
    """Hears no speech at all (calls that speak with keys, or carry none)."""

    class _Stream:
        def __init__(self) -> None:
            self._pending = 0

        def push(self, audio: np.ndarray) -> np.ndarray:
            self._pending += len(audio)
            n, self._pending = divmod(self._pending, WINDOW)
            return np.zeros(n, np.float32)

    def stream(self) -> DeafVad._Stream:
        return self._Stream()


class ToneSpeaker:
    """Every sentence is a 440 Hz tone of `seconds`; the first one spoken may be
    `first_seconds` long instead. Counts the sentences spoken (`spoken`)."""

    def __init__(self, seconds: float = PROMPT_S, first_seconds: float | None = None) -> None:
        self.audio = tone(seconds)
        self.first = self.audio if first_seconds is None else tone(first_seconds)
        self.spoken = 0

    def speak(self, text: str, voice: Voice | None = None) -> np.ndarray:
        self.spoken += 1
        return self.first if self.spoken == 1 else self.audio


def light_services(
    tmp_path: Path, catalogue: Catalogue, classifier: IntentClassifier, **telephony: Any
) -> Services:
    """The real settings, catalogue, classifier, queue store and EventBus; a DeafVad, a
    ScriptedAsr that hears nothing and a ToneSpeaker of PROMPT_S."""
    # audiohook_playback: the simulator's AudioHook side is an Audio Connector (it hears the bot).
    settings = load_settings(
        None,
        data_dir=tmp_path,
        telephony={"audiosocket_port": 0, "audiohook_playback": True, **telephony},
    )
    return Services(
        settings=settings,
        catalogue=catalogue,
        vad=DeafVad(),
        asr=AsrPool(ScriptedAsr(), AsrSettings(workers=1)),
        classifier=classifier,
        speaker=ToneSpeaker(),
        store=SqliteQueueStore(tmp_path / "q.db"),
        events=EventBus(),
        domain_prompt=None,
    )


def heard_services(
    tmp_path: Path,
    catalogue: Catalogue,
    classifier: IntentClassifier,
    speaker: TextToSpeech,
    text: str,
) -> Services:
    """Services for a call that speaks: the real Silero VAD finds the caller's turns, a
    ScriptedAsr hears `text` in each, `speaker` (usually the real one) says the prompts."""
    return Services(
        settings=load_settings(None, data_dir=tmp_path),
        catalogue=catalogue,
        vad=SileroVad(),
        asr=AsrPool(ScriptedAsr(text), AsrSettings(workers=1)),
        classifier=classifier,
        speaker=speaker,
        store=SqliteQueueStore(tmp_path / "q.db"),
        events=EventBus(),
        domain_prompt=None,
    )


def published_by(services: Services) -> list[tuple[str, dict]]:
    """Every event published from now on, as (kind, data), still delivered as before."""
    events: list[tuple[str, dict]] = []
    original = services.events.publish

    def publish(call_id: str, kind: str, **data: Any) -> None:
        events.append((kind, data))
        original(call_id, kind, **data)

    services.events.publish = publish  # type: ignore[method-assign]
    return events


# == the platform's side =======================================================================
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


async def drain(channel: Any, n: int | None = None, timeout: float = 2.0) -> list:
    """Collect events from a channel (all, or the first n)."""
    out = []

    async def collect() -> None:
        async for event in channel.events():
            out.append(event)
            if n is not None and len(out) >= n:
                return

    await asyncio.wait_for(collect(), timeout)
    return out


class ScriptedLine(MediaChannel):
    """A phone platform that plays audio instantly and returns each mark at once (if
    `echo_marks`); the caller's side is `script`: audio (sent in 20 ms frames) and events,
    then silence until the bot ends the call."""

    platform = "test"

    def __init__(self, script: list, echo_marks: bool = True) -> None:
        self.script = script
        self.log: list[tuple] = []
        self.played: dict[str, np.ndarray] = {}  # the audio sent on the line, by mark
        self.echo_marks = echo_marks
        self._marks: asyncio.Queue[Played] = asyncio.Queue()
        self.ended = asyncio.Event()

    async def events(self) -> AsyncIterator[CallEvent]:
        yield CallStart("CA-test", "test", "+4511223344")
        for item in self.script:
            if self.ended.is_set():
                break
            if isinstance(item, np.ndarray):
                for i in range(0, len(item), FRAME):
                    while not self._marks.empty():
                        yield self._marks.get_nowait()
                    yield Audio(item[i : i + FRAME])
                    await asyncio.sleep(0)
            else:
                yield item
        # keep the line open with silence until the bot ends the call
        for _ in range(1500):
            if self.ended.is_set():
                break
            while not self._marks.empty():
                yield self._marks.get_nowait()
            yield Audio(np.zeros(FRAME, np.float32))
            await asyncio.sleep(0.002)
        yield Hangup("test over")

    async def play(self, audio: np.ndarray, mark: str) -> None:
        self.log.append(("play", mark, len(audio)))
        self.played[mark] = audio
        if self.echo_marks:
            self._marks.put_nowait(Played(mark))

    async def clear(self) -> None:
        self.log.append(("clear",))

    async def hang_up(self) -> None:
        self.log.append(("hang_up",))
        self.ended.set()

    async def hand_off(self, target: Any) -> None:
        self.log.append(("hand_off", target.forvaltning))
        self.ended.set()


# == the caller's side =========================================================================
class StallingLine:
    """The bot as the simulator's send loop sees it: stalls on one frame (for ten frame
    periods) and hangs up on another."""

    wire_rate = 8000

    def __init__(self, stall_at: int, hang_up_at: int) -> None:
        self.stall_at, self.hang_up_at, self.frames = stall_at, hang_up_at, 0

    async def send_audio(self, pcm: np.ndarray, ms: int) -> None:
        self.frames += 1
        if self.frames == self.hang_up_at:
            raise ConnectionError("the bot hung up")
        if self.frames == self.stall_at:
            await asyncio.sleep(0.2)  # ten frame periods: the next frame leaves late


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

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def media_url(self, name: str) -> str:
        if name == "audiosocket":
            host, port = self.app.state.audiosocket
            return f"tcp://{host}:{port}"
        return f"ws://127.0.0.1:{self.port}/{name}"

    def events_url(self, call_id: str) -> str:
        return f"ws://127.0.0.1:{self.port}/calls/{call_id}/events?token={self.secret}"


def keypad_call(served: ServedApp, protocol: str, digit: str = "2", **platform_attrs: Any):
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
