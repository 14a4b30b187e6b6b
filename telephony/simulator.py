"""A phone platform in a box, for `voicebot call`: streams caller audio to the bot in real
time (or `speed` times faster) as the chosen platform would, plays the bot's audio on a
simulated clock (acknowledging marks when their audio has played, honouring clears), and
measures latency from the end of the caller's speech.

Every protocol in telephony.registry.PLATFORM_CLIENTS can be driven. A platform class gives
`start/send_audio/send_dtmf/ack_mark/stop/decode`, and optionally: `new_call_id()` (the id
the bot will use, so the event stream can be followed), `headers(call_id)` (WebSocket
upgrade headers), `transport` (a non-WebSocket connection: AudioSocket's TCP, with
`--url tcp://127.0.0.1:9092`), `paced` (the bot sends audio in real time, so a gap between
frames is not the end of a prompt), `acks_cleared_marks` (whether the platform echoes
marks a clear discarded, as Twilio does) and `hears_bot` (False: a listen-only platform). `decode` returns ("audio", int16) | ("mark", name)
| ("clear", None) | ("hangup", info) | ("control", info) | ("reply", message to send).

Authentication is the platform's own (its registry entry's `sign`, telephony.registry
.client_headers): Twilio signs the upgrade URL, Genesys sends X-API-KEY (and signs when a
client secret is set), the others send a bearer token. The credentials are given (`voicebot
call` reads them as the server does), or derived from the master secret the event-stream URL
carries as `?token=`, as the server derives them. Where a URL does not say where the gateway
listens (a tcp:// media URL for the event stream, a ws:// one for AudioSocket), `Endpoints`
does.

Latency is measured here, on the caller's side: the end of speech is found in the caller's
own audio (the last 20 ms frame within 35 dB of the loudest), and each figure is the time
from sending that frame to receiving the bot's transcript, decision (both from the bot's
event stream) and first audio byte (from the media socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import numpy as np
import websockets
from websockets.asyncio.client import ClientConnection

from telephony.auth import Credentials
from telephony.base import FRAME_MS, SAMPLE_RATE, ProtocolError
from telephony.codecs import float_to_pcm16, frame_rms, resample
from telephony.platform import CallerSide, CallerSocket, CallerTransport
from telephony.registry import PLATFORM_CLIENTS as PLATFORMS
from telephony.registry import client_headers

LEAD_SILENCE_S = 0.3  # caller silence after the greeting before speaking
PACED_QUIET_S = 0.3  # paced platforms: no bot audio for this long = the prompt has ended
TURN_TIMEOUT_S = 30.0  # stream time to wait for the bot's reply to one turn


@dataclass(frozen=True)
class Endpoints:
    """Where the gateway listens, for URLs that do not say (voicebot fills it from its settings)."""

    http_port: int = 8080
    audiosocket_host: str = "127.0.0.1"
    audiosocket_port: int = 9092


def load_audio(path: str | Path, rate: int) -> np.ndarray:
    """Any audio file (wav/mp3/flac/…) → mono float32 at `rate`."""
    from faster_whisper.audio import decode_audio

    return resample(decode_audio(str(path), sampling_rate=SAMPLE_RATE), SAMPLE_RATE, rate)


def speech_end_offset_s(audio: np.ndarray, rate: int, below_peak_db: float = 35.0) -> float:
    frame = rate * FRAME_MS // 1000
    n = len(audio) // frame
    if n == 0:
        return 0.0
    db = 10 * np.log10(frame_rms(audio, frame) ** 2 + 1e-12)  # 1e-12: silence is -120 dB
    loud = np.flatnonzero(db >= db.max() - below_peak_db)
    return float(loud[-1] + 1) * FRAME_MS / 1000


@dataclass
class BotTurn:
    transcript: str
    intent: str | None
    confidence: float
    action: str
    forvaltning: str | None
    latency_ms: dict[str, float | None]
    explanation: list[str] = field(default_factory=list)
    language: str | None = None  # the language the bot served the caller in at this turn

    def as_dict(self) -> dict[str, Any]:
        return {
            "transcript": self.transcript, "intent": self.intent, "confidence": self.confidence,
            "action": self.action, "forvaltning": self.forvaltning, "latency_ms": self.latency_ms,
            "explanation": self.explanation, "language": self.language,
        }  # fmt: skip


@dataclass
class CallResult:
    call_id: str
    turns: list[BotTurn]
    reply_audio: np.ndarray  # everything the bot said, at the platform's wire rate
    wire_rate: int
    closed_by_bot: bool
    events: list[dict[str, Any]]
    platform_events: list[tuple[str, object]] = field(
        default_factory=list
    )  # clears, hangups, controls


class SimulatedCall:
    def __init__(
        self,
        media_url: str,
        events_url: str | None,
        protocol: str = "twilio",
        speed: float = 1.0,
        caller: str | None = "+4512345678",
        call_id: str | None = None,
        timeout_s: float = 120.0,
        credentials: Credentials | None = None,
        endpoints: Endpoints | None = None,
    ) -> None:
        if protocol not in PLATFORMS:
            raise ValueError(f"unknown protocol {protocol!r} (known: {', '.join(PLATFORMS)})")
        self.platform_cls = PLATFORMS[protocol]
        self.endpoints = endpoints or Endpoints()
        self.protocol = protocol
        self.media_url = media_url
        self.speed = max(0.1, speed)
        self.caller = caller
        new_id = getattr(self.platform_cls, "new_call_id", None)
        self.call_id = call_id or (new_id() if new_id else "CA" + uuid.uuid4().hex)
        self.events_url = events_url
        self.timeout_s = timeout_s
        self.events: list[tuple[float, dict[str, Any]]] = []  # (receive time, event)
        self.platform_events: list[tuple[str, object]] = []
        self._reply: list[np.ndarray] = []
        self._audio_times: list[float] = []  # receive time of each bot audio message
        self._play_until = 0.0  # simulated playback clock (monotonic seconds)
        self._pending_marks: list[asyncio.Task[None]] = []
        self._closed = asyncio.Event()
        self._clock = 0.0
        self._quiet_gap = PACED_QUIET_S if getattr(self.platform_cls, "paced", False) else 0.0
        self._error: Exception | None = None
        self._hears_bot = True
        self.credentials = credentials

    @property
    def events_url(self) -> str | None:
        return self._events_url

    @events_url.setter
    def events_url(self, url: str | None) -> None:
        # The event stream is on the HTTP server: a tcp:// media URL (AudioSocket) says
        # nothing about its port, so take it from the endpoints.
        if url and urlsplit(url).scheme == "tcp":
            parts = urlsplit(url)
            url = urlunsplit(
                ("ws", f"{parts.hostname}:{self.endpoints.http_port}", parts.path, parts.query, "")
            )
        self._events_url = url

    async def _connect(self) -> CallerSocket:
        transport: CallerTransport | None = getattr(self.platform_cls, "transport", None)
        if transport is not None:
            url = self.media_url
            parts = urlsplit(url)
            if parts.scheme != "tcp":  # the default ws://HOST:PORT/NAME: the configured TCP port
                ends = self.endpoints
                url = f"tcp://{parts.hostname or ends.audiosocket_host}:{ends.audiosocket_port}"
            return await transport.open(url)
        platform_headers = getattr(self.platform_cls, "headers", None)
        headers = client_headers(
            self.protocol,
            self.media_url,
            self._credentials(),
            platform_headers(self.call_id) if platform_headers else None,
        )
        return await websockets.connect(self.media_url, max_size=2**22, additional_headers=headers)

    def _credentials(self) -> Credentials:
        if self.credentials is None:
            token = dict(parse_qsl(urlsplit(self._events_url or "").query)).get("token")
            if not token:
                raise ValueError(
                    "no credentials: give them, or an event-stream URL with ?token=SECRET"
                )
            self.credentials = Credentials(token)
        return self.credentials

    # -- bot → caller ------------------------------------------------------------------
    async def _receive(self, platform: CallerSide) -> None:
        try:
            async for message in platform.ws:
                kind, value = platform.decode(message)
                now = time.monotonic()
                if kind == "audio":
                    self._reply.append(value)
                    self._audio_times.append(now)
                    self._play_until = (
                        max(self._play_until, now) + len(value) / platform.wire_rate / self.speed
                    )
                elif kind == "mark":
                    delay = max(0.0, self._play_until - now)
                    self._pending_marks.append(
                        asyncio.create_task(self._ack_after(platform, value, delay), name=value)
                    )
                elif kind == "clear":
                    # Cleared audio is not played; Twilio echoes its marks at once, others do not.
                    self.platform_events.append((kind, value))
                    self._play_until = now
                    waiting = [t for t in self._pending_marks if not t.done()]
                    self._pending_marks = []
                    for task in waiting:
                        task.cancel()
                        if getattr(platform, "acks_cleared_marks", True):
                            await platform.ack_mark(task.get_name())
                    if hasattr(platform, "cleared"):
                        await platform.cleared()
                elif kind == "reply":
                    await platform.ws.send(value)
                else:  # hangup, control
                    self.platform_events.append((kind, value))
        except (websockets.ConnectionClosed, ConnectionError):
            pass
        except (
            ProtocolError,
            ValueError,
            KeyError,
        ) as exc:  # the bot broke the platform's protocol
            self._error = exc
            await platform.ws.close()
        finally:
            self._closed.set()

    async def _ack_after(self, platform: CallerSide, name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        with contextlib.suppress(websockets.ConnectionClosed, ConnectionError):
            await platform.ack_mark(name)

    async def _collect_events(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                self.events.append((time.monotonic(), json.loads(message)))
        except websockets.ConnectionClosed:
            pass

    # -- caller → bot ------------------------------------------------------------------
    async def _send(self, platform: CallerSide, pcm: np.ndarray) -> list[float]:
        """Send 20 ms frames on the real-time (÷ speed) clock; returns each frame's send time."""
        frame = platform.wire_rate * FRAME_MS // 1000
        sent = []
        for i in range(0, len(pcm) - frame + 1, frame):
            if self._closed.is_set():
                break
            self._clock = max(self._clock, time.monotonic())
            try:
                await platform.send_audio(pcm[i : i + frame], int(self._ms))
            except (websockets.ConnectionClosed, ConnectionError):
                self._closed.set()  # the bot hung up while we spoke
                break
            sent.append(time.monotonic())
            self._ms += FRAME_MS
            self._clock += FRAME_MS / 1000 / self.speed
            await asyncio.sleep(max(0.0, self._clock - time.monotonic()))
        return sent

    async def _silence_until(
        self, platform: CallerSide, done: Callable[[], bool], max_s: float
    ) -> None:
        frame = np.zeros(platform.wire_rate * FRAME_MS // 1000, dtype=np.int16)
        deadline = time.monotonic() + max_s / self.speed
        while not done() and not self._closed.is_set() and time.monotonic() < deadline:
            await self._send(platform, frame)

    def _bot_quiet(self) -> bool:
        return time.monotonic() >= self._play_until + self._quiet_gap and all(
            t.done() for t in self._pending_marks
        )

    def _answered(self, speech_end: float) -> bool:
        """The bot has decided on this turn, spoken its reply and finished playing it."""
        decisions = self._events_of("decision", speech_end)
        if not decisions:
            return False
        if not self._hears_bot:  # listen-only: the bot's prompts are reported played at once
            played = self._events_of("played", decisions[0][0])
            return (
                self._closed.is_set()
                or bool(played)
                and time.monotonic() - played[-1][0] >= PACED_QUIET_S
            )
        # Reply audio may overtake the decision event (two sockets): allow a little slack,
        # but never count audio from before the caller finished (the tail of a paced prompt).
        since = max(decisions[0][0] - 0.5, speech_end)
        replied = (
            any(t >= since for t in self._audio_times)
            or self._closed.is_set()
            or not self._hears_bot
        )
        return replied and self._bot_quiet()

    def _events_of(self, kind: str, after: float) -> list[tuple[float, dict[str, Any]]]:
        return [(t, e) for t, e in self.events if e.get("type") == kind and t >= after]

    async def run(
        self, turns: list[np.ndarray], params: dict[str, str] | None = None, digits: str = ""
    ) -> CallResult:
        """Play `turns` (audio at the platform's wire rate, float32) one after another."""
        self._ms = 0
        events_ws = await websockets.connect(self.events_url) if self.events_url else None
        collector = asyncio.create_task(self._collect_events(events_ws)) if events_ws else None
        results: list[BotTurn] = []
        try:
            async with await self._connect() as ws:
                platform = self.platform_cls(ws, self.call_id, self.caller)
                receiver = asyncio.create_task(self._receive(platform))
                await platform.start(params or {})
                deadline = time.monotonic() + self.timeout_s
                # The greeting: wait (sending line silence) until it has played. A listen-only
                # platform (AudioHook Monitor) never hears the bot: only the decisions count.
                self._hears_bot = getattr(platform, "hears_bot", True)
                if self._hears_bot:
                    await self._silence_until(
                        platform, lambda: bool(self._reply) and self._bot_quiet(), 30
                    )
                for audio in self.inputs(turns, digits):
                    if self._closed.is_set() or time.monotonic() > deadline:
                        break
                    await self._silence_until(platform, lambda: False, LEAD_SILENCE_S)
                    started = time.monotonic()
                    if isinstance(audio, str):  # a key press instead of speech
                        with contextlib.suppress(websockets.ConnectionClosed, ConnectionError):
                            await platform.send_dtmf(audio)
                        speech_end = time.monotonic()
                    else:
                        pcm = float_to_pcm16(audio)
                        sent = await self._send(platform, pcm)
                        end_index = (
                            int(speech_end_offset_s(audio, platform.wire_rate) * 1000 / FRAME_MS)
                            - 1
                        )
                        speech_end = (
                            sent[min(max(end_index, 0), len(sent) - 1)] if sent else started
                        )
                    # Line silence until the bot has decided and finished speaking.
                    # A bot that says nothing for TURN_TIMEOUT_S has ignored the turn.
                    wait_s = min(TURN_TIMEOUT_S, max(1.0, deadline - time.monotonic()) * self.speed)
                    await self._silence_until(
                        platform, functools.partial(self._answered, speech_end), wait_s
                    )
                    results += self._turn_results(speech_end)
                closed_by_bot = self._closed.is_set()
                if not closed_by_bot:
                    with contextlib.suppress(websockets.ConnectionClosed, ConnectionError):
                        await platform.stop()
                    with contextlib.suppress(
                        TimeoutError
                    ):  # let the bot answer (AudioHook: closed)
                        await asyncio.wait_for(self._closed.wait(), 1.0)
                await ws.close()
                await receiver
                for task in self._pending_marks:
                    task.cancel()
        finally:
            if events_ws is not None:
                await asyncio.sleep(0.05)  # let the last events arrive
                await events_ws.close()
                if collector is not None:  # started with events_ws
                    await collector
        if self._error is not None:
            raise ProtocolError(
                f"the bot broke the {self.protocol} protocol: {self._error}"
            ) from self._error
        return CallResult(
            self.call_id,
            results,
            np.concatenate(self._reply) if self._reply else np.zeros(0, np.int16),
            self.platform_cls.wire_rate,
            closed_by_bot,
            [e for _, e in self.events],
            self.platform_events,
        )

    def inputs(self, turns: list[np.ndarray], digits: str) -> Iterator[np.ndarray | str]:
        """What the caller does, one input at a time: each utterance (audio), then each key
        (a one-character string). Asked for the next input only once the bot has answered
        the last one, so a subclass may react to what the bot said (`events`); when it stops,
        the caller hangs up."""
        yield from turns
        yield from digits

    def _turn_results(self, speech_end: float) -> list[BotTurn]:
        decisions = self._events_of("decision", speech_end)
        transcripts = self._events_of("transcript", speech_end)
        out = []
        for t_decision, decision in decisions[:1]:
            t_transcript = transcripts[0][0] if transcripts else None
            first_audio = next((t for t in self._audio_times if t >= speech_end), None)
            out.append(BotTurn(
                transcript=decision.get("transcript", ""), intent=decision.get("intent"),
                confidence=decision.get("confidence", 0.0), action=decision.get("action", ""),
                forvaltning=decision.get("forvaltning"), explanation=decision.get("explanation", []),
                language=decision.get("language"),
                latency_ms={
                    "speech_end_to_transcript": _ms(t_transcript, speech_end),
                    "speech_end_to_decision": _ms(t_decision, speech_end),
                    "speech_end_to_first_audio": _ms(first_audio, speech_end),
                },
            ))  # fmt: skip
        return out


def _ms(t: float | None, start: float) -> float | None:
    return None if t is None else round((t - start) * 1000, 1)
