"""Plain raw-PCM WebSocket (`/raw`): the simplest way in, for the browser softphone
(/softphone) and for test rigs. Our own protocol, complete here:

Client → bot
  text, optional, first:  {"call_id": "web-1", "caller": "+4512345678"}
                          (may also carry "type": "start"; without it the bot makes a call id)
  binary:                 16 kHz, 16-bit little-endian, mono PCM; any whole number of samples
                          per message (20–100 ms is sensible), at most 64 KiB
  text:                   {"type": "dtmf", "digit": "5"}          a key press (0-9 * #)
                          {"type": "mark", "name": "greeting-1"}  echo of a bot mark: the audio
                                                                  sent before it has been played
                          {"type": "hangup"}                      the caller hangs up
Bot → client
  binary:                 16 kHz 16-bit LE mono PCM, in 20 ms multiples; play in order
  text:                   {"type": "mark", "name": "…"}    after each prompt; echo it when played
                          {"type": "clear"}                stop playback now, drop queued audio and
                                                           echo every pending mark
                          {"type": "hangup", "reason": "hangup"|"handoff"|"error", "forvaltning": …,
                           "queue": …}                     the bot ends the call (socket closes;
                                                           after "error" with close code 1003,
                                                           1007, 1008 or 1009 and the cause)
Authentication: `Authorization: Bearer <token>` on the upgrade, or `?token=<token>` (browsers
cannot set headers); see SECURITY.md.

Marks echoed after a clear were discarded, not played (as with Twilio): they come back to the
session as Played(interrupted=True).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import numpy as np

from telephony.auth import Credentials, NonceCache, equal, presented_token
from telephony.base import (
    CLOSE_INVALID,
    DIGITS,
    SAMPLE_RATE,
    Audio,
    CallEvent,
    CallStart,
    Digit,
    HandOff,
    Hangup,
    Limits,
    ProtocolError,
    log,
    too_big,
)  # fmt: skip
from telephony.codecs import float_to_pcm16, pcm16_from_bytes, pcm16_to_float
from telephony.platform import (
    Admission,
    CallerSocket,
    Decoded,
    Platform,
    Upgrade,
    bearer_check,
    bearer_sign,
)
from telephony.streams import (
    MarkLedger,
    ReaderChannel,
    close_ws,
    parse_json_object,
    send_ws,
    websocket_messages,
)

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

PLATFORM = "raw"
WIRE_RATE = SAMPLE_RATE
FRAME_BYTES = 640  # 20 ms
CHUNK_FRAMES = 10  # outbound message: 200 ms
MAX_PARAMS = 32  # extra fields of the start message kept as call parameters


class RawChannel(ReaderChannel):
    platform = PLATFORM

    def __init__(self, websocket: WebSocket, limits: Limits | None = None) -> None:
        super().__init__(limits)
        self.ws = websocket  # starlette WebSocket, already accepted
        self.call_id: str | None = None
        self.marks = MarkLedger()
        self._closed = False

    # -- inbound ---------------------------------------------------------------------
    async def read_events(self) -> AsyncIterator[CallEvent]:
        async for message in websocket_messages(self.ws):
            for event in self.parse(message):
                yield event

    def parse(self, message: str | bytes) -> list[CallEvent]:
        if len(message) > self.limits.max_message_bytes:
            raise too_big(len(message), self.limits.max_message_bytes)
        if isinstance(message, bytes):
            events: list[CallEvent] = []
            if len(message) % 2:
                raise ProtocolError(
                    f"binary message of {len(message)} bytes: not whole 16-bit samples",
                    CLOSE_INVALID,
                )
            if self.call_id is None:
                events.append(self._start({}))
            if message:
                events.append(Audio(pcm16_to_float(pcm16_from_bytes(message))))
            return events
        msg = parse_json_object(message, "a text message")
        kind = msg.get("type", "start" if self.call_id is None else None)
        if kind == "start":
            if self.call_id is not None:
                raise ProtocolError("a second start message")
            return [self._start(msg)]
        if self.call_id is None:
            return [self._start({}), *self.parse(message)]
        match kind:
            case "dtmf":
                digit = str(msg.get("digit", ""))
                if len(digit) != 1 or digit not in DIGITS:
                    raise ProtocolError(
                        f"dtmf digit must be one of {DIGITS}, not {digit[:10]!r}", CLOSE_INVALID
                    )
                return [Digit(digit)]
            case "mark":
                return [self.marks.echoed(str(msg.get("name", "")))]
            case "hangup":
                return [Hangup("hangup")]
            case _:
                log.info("raw: ignoring unknown message type %r", str(kind)[:40])
                return []

    def _start(self, msg: dict[str, Any]) -> CallStart:
        call_id = str(msg.get("call_id") or f"raw-{uuid.uuid4().hex[:16]}")
        if len(call_id) > 128:
            raise ProtocolError("call_id longer than 128 characters")
        if len(msg) > MAX_PARAMS:
            raise ProtocolError(f"{len(msg)} fields in the start message (at most {MAX_PARAMS})")
        caller = msg.get("caller")
        self.call_id = call_id
        params = {
            str(k)[:64]: str(v)[:256]
            for k, v in msg.items()
            if k not in ("type", "call_id", "caller")
        }
        return CallStart(call_id, PLATFORM, str(caller)[:64] if caller else None, params)

    # -- outbound --------------------------------------------------------------------
    async def _send(self, message: str | bytes) -> None:
        if not self._closed and not await send_ws(self.ws, message, self.limits.send_timeout_s):
            self._closed = True
            self.send_failed()

    async def _send_text(self, obj: dict[str, Any]) -> None:
        await self._send(json.dumps(obj, ensure_ascii=False))

    async def play(self, audio: np.ndarray, mark: str) -> None:
        payload = float_to_pcm16(audio).astype("<i2").tobytes()
        chunk = FRAME_BYTES * CHUNK_FRAMES
        for i in range(0, len(payload), chunk):
            if self._closed:
                return
            await self._send(payload[i : i + chunk])
        self.marks.sent(mark)
        await self._send_text({"type": "mark", "name": mark})

    async def clear(self) -> None:
        self.marks.clear()
        await self._send_text({"type": "clear"})

    async def _close(self, message: dict[str, Any]) -> None:
        if self._closed:
            await self.stop_reading()
            return
        if self.error is not None:  # a protocol error: the close code and reason say what
            message = {"type": "hangup", "reason": "error"}
        await self._send_text(message)
        self._closed = True
        await close_ws(self.ws, self.error, self.limits.send_timeout_s)
        await self.stop_reading()

    async def hang_up(self) -> None:
        await self._close({"type": "hangup", "reason": "hangup"})

    async def hand_off(self, target: HandOff) -> None:
        log.info(
            "raw call %s handed off to %s (queue %s)",
            target.call_id,
            target.forvaltning,
            target.queue,
        )
        await self._close(
            {
                "type": "hangup",
                "reason": "handoff",
                "forvaltning": target.forvaltning,
                "queue": target.queue,
            }
        )


# -- the platform side, for `voicebot call` ------------------------------------------
class RawPlatform:
    """Speaks to the bot as the softphone does."""

    protocol = PLATFORM
    wire_rate = WIRE_RATE
    frame_ms = 20

    def __init__(self, ws: CallerSocket, call_id: str, caller: str | None) -> None:
        self.ws = ws
        self.call_id = call_id
        self.caller = caller
        self.ended: dict[str, Any] | None = None

    @staticmethod
    def new_call_id() -> str:
        return f"raw-{uuid.uuid4().hex[:16]}"

    async def start(self, params: dict[str, str]) -> None:
        await self.ws.send(
            json.dumps({"type": "start", "call_id": self.call_id, "caller": self.caller, **params})
        )

    async def send_audio(self, pcm16: np.ndarray, timestamp_ms: int) -> None:
        await self.ws.send(np.asarray(pcm16, dtype="<i2").tobytes())

    async def send_dtmf(self, digit: str) -> None:
        await self.ws.send(json.dumps({"type": "dtmf", "digit": digit}))

    async def ack_mark(self, name: str) -> None:
        await self.ws.send(json.dumps({"type": "mark", "name": name}))

    async def stop(self) -> None:
        await self.ws.send(json.dumps({"type": "hangup"}))

    def decode(self, message: str | bytes) -> Decoded:
        if isinstance(message, bytes):
            return "audio", pcm16_from_bytes(message)
        msg = json.loads(message)
        kind = msg.get("type")
        if kind == "mark":
            return "mark", msg["name"]
        if kind == "clear":
            return "clear", None
        if kind == "hangup":
            self.ended = msg
            return "hangup", msg
        raise ProtocolError(f"the bot sent an unknown message type {kind!r}")


# -- the registry entry ----------------------------------------------------------------
_bearer = bearer_check(PLATFORM)


def check(upgrade: Upgrade, credentials: Credentials, nonces: NonceCache) -> Admission:
    """The raw token, or the softphone token (which the gateway lets follow only the
    softphone's own calls)."""
    if equal(presented_token(upgrade.headers, upgrade.query), credentials.softphone_token):
        return Admission(softphone=True)
    return _bearer(upgrade, credentials, nonces)


platform = Platform(
    PLATFORM,
    client=RawPlatform,
    channel=lambda ws, conn: RawChannel(ws, conn.limits),
    check=check,
    sign=bearer_sign(PLATFORM),
)
