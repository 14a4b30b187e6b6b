"""Asterisk chan_websocket (`/asterisk`; Asterisk 20.16/21.11/22.6/23.0 and later): the
server adapter and the platform side used by `voicebot call --protocol asterisk`.

Asterisk dials us: `Dial(WebSocket/<connection>/c(ulaw))` with the connection in
websocket_client.conf pointing at ws://<bot>/asterisk (add `v(caller=…)` to pass the
caller's number as a URI parameter, or set the channel variable VOICEBOT_CALLER).

Wire format (../shared/telephony.md; channels/chan_websocket.c):
- Binary frames: raw codec bytes in the channel's format — ulaw, alaw (8 kHz), slin (8 kHz)
  or slin16 (16 kHz), signed linear little-endian.
- Text frames: control, either plain text (`MEDIA_START connection_id:… channel:…
  channel_id:… format:ulaw optimal_frame_size:160 ptime:20`) or JSON (23.2/22.8/20.18 on:
  {"event": "MEDIA_START", "connection_id": …, "channel_id": …, "format": …,
  "optimal_frame_size": 160, "ptime": 20, "channel_variables": {…}}). Commands we send use
  the form Asterisk used: `MARK_MEDIA <id>` / {"command": "MARK_MEDIA", "correlation_id": id}.
- From Asterisk: MEDIA_START, MEDIA_XOFF / MEDIA_XON (its queue of 1000 frames reached 900 /
  fell below 800: stop / resume sending), MEDIA_MARK_PROCESSED <id> (the audio before the
  mark has been played), DTMF_END (digit), STATUS, ERROR, QUEUE_DRAINED,
  MEDIA_BUFFERING_COMPLETED; HANGUP is accepted too, though Asterisk normally just closes.
- Commands: ANSWER (sent after MEDIA_START unless disabled; needed with the `n` dial option),
  MARK_MEDIA, FLUSH_MEDIA (barge-in), HANGUP.

Asterisk paces playback itself, so audio is sent in bulk, in whole multiples of
`optimal_frame_size` (a short tail frame is padded with silence), honouring XOFF and keeping
our own estimate of its queue below its limit. FLUSH_MEDIA also discards queued marks, so
marks pending at a clear are reported interrupted here. Hand-off: HANGUP ends the WebSocket
channel; the dialplan continues after Dial() and can route the caller to the forvaltning's
queue (the entry is written before).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from telephony.base import (
    CLOSE_INVALID,
    CLOSE_UNSUPPORTED,
    DIGITS,
    MAX_MARKS,
    SAMPLE_RATE,
    Audio,
    CallEvent,
    CallStart,
    Digit,
    HandOff,
    Hangup,
    Limits,
    Played,
    ProtocolError,
    log,
    too_big,
)  # fmt: skip
from telephony.codecs import (
    StreamResampler,
    alaw_decode,
    alaw_encode,
    float_to_pcm16,
    pcm16_from_bytes,
    pcm16_to_float,
    resample,
    ulaw_decode,
    ulaw_encode,
)  # fmt: skip
from telephony.platform import (
    CallerSocket,
    Connection,
    Decoded,
    Platform,
    bearer_check,
    bearer_sign,
)
from telephony.streams import (
    ReaderChannel,
    cancel_and_wait,
    close_ws,
    parse_json_object,
    send_ws,
    split_frames,
    wait_event,
    websocket_messages,
)

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

PLATFORM = "asterisk"
# format → (sample rate, bytes per sample, silence byte pattern)
FORMATS = {
    "ulaw": (8000, 1, b"\xff"),
    "alaw": (8000, 1, b"\xd5"),
    "slin": (8000, 2, b"\0\0"),
    "slin16": (16000, 2, b"\0\0"),
}
FRAMES_PER_MESSAGE = 10  # 200 ms per binary message
HIGH_WATER_FRAMES = 500  # our estimate of Asterisk's queue (1000 max, XOFF at 900) stays below this
MAX_TEXT_BYTES = 16 * 1024  # control messages are small, whatever security.max_message_bytes says
MAX_BINARY_BYTES = 64 * 1024
MAX_MARK_CHARS = 100  # Asterisk reads at most 128 bytes per text command
MAX_FIELDS = 64  # fields in one control message


def decode_audio(data: bytes, fmt: str) -> np.ndarray:
    if fmt == "ulaw":
        return ulaw_decode(data)
    if fmt == "alaw":
        return alaw_decode(data)
    return pcm16_from_bytes(data)


def encode_audio(pcm: np.ndarray, fmt: str) -> bytes:
    if fmt == "ulaw":
        return ulaw_encode(pcm)
    if fmt == "alaw":
        return alaw_encode(pcm)
    return np.asarray(pcm, dtype=np.int16).astype("<i2").tobytes()


# A control message's fields: strings, and in the JSON form nested objects (channel_variables).
ControlFields = dict[str, str | dict[str, Any]]


def parse_control(text: str) -> tuple[str, ControlFields, bool]:
    """A control message → (name, fields, was JSON). Plain text: `NAME key:value key:value`,
    or `NAME <id>` for the mark and buffering events (the id goes in `correlation_id`)."""
    text = text.strip()
    if text.startswith("{"):
        msg = parse_json_object(text, "a JSON control message")
        if not isinstance(msg.get("event"), str):
            raise ProtocolError("a JSON control message needs an 'event' string", CLOSE_INVALID)
        if len(msg) > MAX_FIELDS:
            raise ProtocolError(f"{len(msg)} fields in a control message (at most {MAX_FIELDS})")
        fields: ControlFields = {
            str(k): v if isinstance(v, dict) else str(v) for k, v in msg.items() if k != "event"
        }
        return msg["event"], fields, True
    if not text:
        raise ProtocolError("empty control message", CLOSE_INVALID)
    name, _, rest = text.partition(" ")
    rest = rest.strip()
    if name in ("MEDIA_MARK_PROCESSED", "MEDIA_BUFFERING_COMPLETED"):
        return name, {"correlation_id": rest}, False
    fields = {}
    tokens = rest.split()
    if len(tokens) > MAX_FIELDS:
        raise ProtocolError(f"{len(tokens)} fields in {name[:40]} (at most {MAX_FIELDS})")
    for token in tokens:
        key, sep, value = token.partition(":")
        if not sep:
            raise ProtocolError(
                f"malformed field {token[:40]!r} in {name[:40]} (expected key:value)", CLOSE_INVALID
            )
        fields[key] = value
    return name, fields, False


class AsteriskWsChannel(ReaderChannel):
    platform = PLATFORM
    echo_cancelled = False  # Asterisk passes the line through as it is

    def __init__(
        self,
        websocket: WebSocket,
        answer: bool = True,
        caller: str | None = None,
        limits: Limits | None = None,
    ) -> None:
        super().__init__(limits)
        self.ws = websocket  # starlette WebSocket, already accepted
        self.answer = answer
        self.caller = caller
        self.call_id: str | None = None
        self.format = "ulaw"
        self.wire_rate = 8000
        self.frame_bytes = 160
        self.ptime_s = 0.02
        self.json_control = False
        self.xoff = False
        self._upsample: StreamResampler | None = None
        self._outbox: deque[bytes | str] = deque()  # frames and mark names, not yet sent
        self._outbox_frames = 0
        self._max_outbox_frames = int(120 / self.ptime_s)
        self._sent_marks: list[str] = []  # MARK_MEDIA sent, not yet processed
        self._wake = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._queue_until = 0.0  # when Asterisk's queue will have played out (our estimate)
        self._closed = False

    # -- inbound ---------------------------------------------------------------------
    async def read_events(self) -> AsyncIterator[CallEvent]:
        async for message in websocket_messages(self.ws):
            event = self.parse(message)
            if event is not None:
                yield event
                if isinstance(event, CallStart) and self.answer:
                    await self._command("ANSWER")

    def parse(self, message: str | bytes) -> CallEvent | None:
        if isinstance(message, bytes):
            if len(message) > self.limits.max_message_bytes:
                raise too_big(len(message), self.limits.max_message_bytes, "binary message")
            if self.call_id is None or self._upsample is None:
                raise ProtocolError("audio before MEDIA_START")
            if FORMATS[self.format][1] == 2 and len(message) % 2:
                raise ProtocolError(
                    f"{self.format} message of {len(message)} bytes: not whole samples",
                    CLOSE_INVALID,
                )
            if not message:
                return None
            return Audio(self._upsample.process(pcm16_to_float(decode_audio(message, self.format))))
        limit = min(MAX_TEXT_BYTES, self.limits.max_message_bytes)
        if len(message) > limit:
            raise too_big(len(message), limit, "text message")
        name, fields, is_json = parse_control(message)
        if name == "MEDIA_START":
            return self._on_media_start(fields, is_json)
        if self.call_id is None:
            raise ProtocolError(f"{name[:40]} before MEDIA_START")
        match name:
            case "MEDIA_XOFF":
                self.xoff = True
            case "MEDIA_XON":
                self.xoff = False
                self._wake.set()
            case "MEDIA_MARK_PROCESSED":
                mark = str(fields.get("correlation_id", ""))
                if mark in self._sent_marks:
                    self._sent_marks.remove(mark)
                    return Played(mark)
                log.debug("asterisk: mark %r processed after a flush; already reported", mark)
            case "DTMF_END":
                digit = str(fields.get("digit", ""))
                if len(digit) == 1 and digit in DIGITS:
                    return Digit(digit)
            case "HANGUP":
                return Hangup("hangup")
            case "ERROR":
                log.warning(
                    "asterisk channel %s: ERROR %s",
                    self.call_id,
                    str(fields.get("error_text", fields))[:200],
                )
            case "STATUS" | "QUEUE_DRAINED" | "MEDIA_BUFFERING_COMPLETED":
                log.debug("asterisk: %s %s", name, fields)
            case _:
                log.info("asterisk: ignoring unknown control message %r", name[:40])
        return None

    def _on_media_start(self, fields: ControlFields, is_json: bool) -> CallStart:
        if self.call_id is not None:
            raise ProtocolError("a second MEDIA_START")
        fmt = str(fields.get("format", ""))
        if fmt not in FORMATS:
            raise ProtocolError(
                f"unsupported format {fmt[:20]!r} (use ulaw, alaw, slin or slin16)",
                CLOSE_UNSUPPORTED,
            )
        rate, width, _ = FORMATS[fmt]
        try:
            # str(): a JSON object here fails as a ValueError, like any other non-integer
            ptime_ms = int(str(fields.get("ptime", 20)))
            frame_bytes = int(
                str(fields.get("optimal_frame_size", rate * ptime_ms // 1000 * width))
            )
        except (TypeError, ValueError) as exc:
            raise ProtocolError(
                f"ptime/optimal_frame_size must be integers: {str(exc)[:60]}", CLOSE_INVALID
            ) from exc
        if (
            not 0 < frame_bytes <= MAX_BINARY_BYTES
            or frame_bytes % width
            or not 0 < ptime_ms <= 1000
        ):
            raise ProtocolError(
                f"implausible optimal_frame_size {frame_bytes} / ptime {ptime_ms}",
                CLOSE_UNSUPPORTED,
            )
        self.format, self.wire_rate, self.frame_bytes = fmt, rate, frame_bytes
        self.ptime_s = frame_bytes / width / rate  # the time one optimal frame plays
        self._max_outbox_frames = int(120 / self.ptime_s)
        self.json_control = is_json
        self._upsample = StreamResampler(rate, SAMPLE_RATE)
        variables = fields.get("channel_variables")
        if not isinstance(variables, dict):
            variables = {}
        self.call_id = str(
            fields.get("channel_id") or fields.get("connection_id") or f"ast-{uuid.uuid4().hex}"
        )[:128]
        caller = self.caller or (str(variables.get("VOICEBOT_CALLER") or "")[:64] or None)
        params = {
            k: str(v) for k, v in fields.items() if k in ("connection_id", "channel", "format")
        }
        return CallStart(self.call_id, PLATFORM, caller, params)

    # -- outbound --------------------------------------------------------------------
    async def _command(self, name: str, argument: str | None = None) -> None:
        if self._closed:
            return
        if self.json_control:
            text = json.dumps(
                {"command": name, **({"correlation_id": argument} if argument is not None else {})}
            )
        else:
            text = name if argument is None else f"{name} {argument}"
        if not await send_ws(self.ws, text, self.limits.send_timeout_s):
            self._closed = True
            self.send_failed()

    async def play(self, audio: np.ndarray, mark: str) -> None:
        if len(mark) > MAX_MARK_CHARS or " " in mark:
            raise ValueError(f"mark {mark!r} cannot be sent to Asterisk")
        _, _, silence = FORMATS[self.format]
        payload = encode_audio(
            float_to_pcm16(resample(audio, SAMPLE_RATE, self.wire_rate)), self.format
        )
        frames = split_frames(payload, self.frame_bytes, silence)
        room = self._max_outbox_frames - self._outbox_frames
        if len(frames) > room:
            log.warning("asterisk: %d frames queued already; cutting a prompt", self._outbox_frames)
            frames = frames[: max(room, 0)]
        self._outbox.extend(frames)
        self._outbox_frames += len(frames)
        self._outbox.append(mark)
        self._wake.set()
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_loop(), name="asterisk-sender")

    def _queued_frames(self) -> float:
        return max(0.0, self._queue_until - time.monotonic()) / self.ptime_s

    async def _send_loop(self) -> None:
        try:
            while not self._closed:
                if not self._outbox:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if self.xoff or self._queued_frames() >= HIGH_WATER_FRAMES:
                    # Wait for XON, or for our estimate of Asterisk's queue to fall.
                    self._wake.clear()
                    await wait_event(self._wake, 0.2)
                    continue
                if isinstance(mark := self._outbox[0], str):
                    self._outbox.popleft()
                    self._sent_marks = [*self._sent_marks[-(MAX_MARKS - 1) :], mark]
                    await self._command("MARK_MEDIA", mark)
                    continue
                chunk: list[bytes] = []
                while (
                    self._outbox
                    and isinstance(frame := self._outbox[0], bytes)
                    and len(chunk) < FRAMES_PER_MESSAGE
                ):
                    self._outbox.popleft()
                    chunk.append(frame)
                self._outbox_frames -= len(chunk)
                if not await send_ws(self.ws, b"".join(chunk), self.limits.send_timeout_s):
                    self._closed = True
                    self.send_failed()
                    return
                self._queue_until = (
                    max(self._queue_until, time.monotonic()) + len(chunk) * self.ptime_s
                )
        except Exception as exc:  # the connection is gone
            log.debug("asterisk: sender stopped (%s)", exc)

    async def clear(self) -> None:
        dropped = [item for item in self._outbox if isinstance(item, str)]
        self._outbox.clear()
        self._outbox_frames = 0
        await self._command("FLUSH_MEDIA")
        self._queue_until = 0.0
        # FLUSH_MEDIA drops Asterisk's queued marks too: none of these will be processed.
        for mark in [*self._sent_marks, *dropped]:
            self.inbox.put_now(Played(mark, interrupted=True))
        self._sent_marks.clear()

    async def hang_up(self) -> None:
        if self._closed:
            return
        await self._command("HANGUP")
        self._closed = True
        self._wake.set()
        await cancel_and_wait(self._sender)
        await close_ws(self.ws, self.error, self.limits.send_timeout_s)
        await self.stop_reading()

    async def hand_off(self, target: HandOff) -> None:
        log.info(
            "asterisk channel %s: hanging up the WebSocket leg; the dialplan routes to %s",
            target.call_id,
            target.queue,
        )
        await self.hang_up()


# -- the platform side, for `voicebot call` ------------------------------------------
class AsteriskWsPlatform:
    """Speaks to a bot as Asterisk's chan_websocket does (ulaw, plain-text control by
    default). Flushed marks are not echoed, as in Asterisk."""

    protocol = PLATFORM
    wire_rate = 8000
    frame_ms = 20
    format = "ulaw"
    json_control = False
    acks_cleared_marks = False

    def __init__(self, ws: CallerSocket, call_id: str, caller: str | None) -> None:
        self.ws = ws
        self.call_id = call_id
        self.caller = caller
        self.commands: list[str] = []

    @staticmethod
    def new_call_id() -> str:
        # Asterisk's form (epoch.sequence); the random part is wide enough that lines starting
        # in the same second never share an id (a shared id would share one queue record).
        return f"{time.time():.0f}.{uuid.uuid4().int % 10**9}"

    async def start(self, params: dict[str, str]) -> None:
        rate, width, _ = FORMATS[self.format]
        frame = rate * self.frame_ms // 1000 * width
        if self.json_control:
            variables = {"VOICEBOT_CALLER": self.caller or "", **params}
            await self.ws.send(json.dumps({
                "event": "MEDIA_START", "connection_id": "voicebot", "channel": f"WebSocket/voicebot/{self.call_id}",
                "channel_id": self.call_id, "format": self.format, "optimal_frame_size": frame,
                "ptime": self.frame_ms, "channel_variables": variables}))  # fmt: skip
        else:
            await self.ws.send(
                f"MEDIA_START connection_id:voicebot channel:WebSocket/voicebot/0x1 "
                f"channel_id:{self.call_id} format:{self.format} optimal_frame_size:{frame} "
                f"ptime:{self.frame_ms}"
            )

    async def send_audio(self, pcm16: np.ndarray, timestamp_ms: int) -> None:
        await self.ws.send(encode_audio(pcm16, self.format))

    async def send_dtmf(self, digit: str) -> None:
        if self.json_control:
            await self.ws.send(
                json.dumps({"event": "DTMF_END", "channel_id": self.call_id, "digit": digit})
            )
        else:
            await self.ws.send(f"DTMF_END digit:{digit} channel_id:{self.call_id}")

    async def ack_mark(self, name: str) -> None:
        if self.json_control:
            await self.ws.send(
                json.dumps(
                    {
                        "event": "MEDIA_MARK_PROCESSED",
                        "channel_id": self.call_id,
                        "correlation_id": name,
                    }
                )
            )
        else:
            await self.ws.send(f"MEDIA_MARK_PROCESSED {name}")

    async def stop(self) -> None:
        await self.ws.close()

    def decode(self, message: str | bytes) -> Decoded:
        if isinstance(message, bytes):
            rate, width, _ = FORMATS[self.format]
            if len(message) % (rate * self.frame_ms // 1000 * width):
                raise ProtocolError(f"the bot sent {len(message)} bytes: not whole frames")
            return "audio", decode_audio(message, self.format)
        if message.startswith("{"):
            msg = json.loads(message)
            command, argument = msg.get("command"), msg.get("correlation_id")
        else:
            command, _, argument = message.partition(" ")
        self.commands.append(command)
        if command == "MARK_MEDIA":
            return "mark", argument
        if command == "FLUSH_MEDIA":
            return "clear", None
        if command == "HANGUP":
            return "hangup", None
        if command in (
            "ANSWER",
            "GET_STATUS",
            "REPORT_QUEUE_DRAINED",
            "START_MEDIA_BUFFERING",
            "STOP_MEDIA_BUFFERING",
            "PAUSE_MEDIA",
            "CONTINUE_MEDIA",
        ):
            return "control", command
        raise ProtocolError(f"the bot sent an unknown command {command!r}")


# -- the registry entry ----------------------------------------------------------------
@dataclass(frozen=True)
class AsteriskOptions:
    answer: bool = True  # send ANSWER after MEDIA_START (Dial with the n option needs it)


def _channel(ws: WebSocket, conn: Connection) -> AsteriskWsChannel:
    return AsteriskWsChannel(ws, conn.options.answer, ws.query_params.get("caller"), conn.limits)


platform = Platform(
    PLATFORM,
    client=AsteriskWsPlatform,
    channel=_channel,
    check=bearer_check(PLATFORM),
    sign=bearer_sign(PLATFORM),
    options=AsteriskOptions,
)
