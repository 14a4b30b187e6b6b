"""Vonage Voice API WebSocket (NCCO `connect` to a `websocket` endpoint): the server adapter
and the platform side used by `voicebot call --protocol vonage`.

Wire format (../shared/telephony.md):
- First message, text: {"event": "websocket:connected", "content-type": "audio/l16;rate=16000",
  …the NCCO `headers` flattened in…}. rate=8000 is accepted too.
- Audio both ways: binary 16-bit little-endian linear PCM, one 20 ms frame per message:
  640 bytes at 16 kHz, 320 at 8 kHz. We send exactly that size.
- DTMF: {"event": "websocket:dtmf", "digit": "5", "duration": 260}.
- Barge-in: {"action": "clear"} (Vonage answers {"event": "websocket:cleared"}).

Vonage buffers about 1024 messages and plays them in order, but has no marks. So outbound
audio is paced in real time here (a few frames ahead), and this adapter itself reports
Played(mark) when the audio before the mark has been sent and played, and
Played(mark, interrupted=True) for marks whose audio a clear dropped.

Call id and caller come from the NCCO headers: put {"call_id": <uuid from the answer
webhook>, "caller": <from>} there (also read: "uuid", "conversation_uuid", "from").
Hand-off: the bot closes the socket; Vonage continues with the NCCO action after `connect`
(e.g. a `conversation` or a new NCCO from the event webhook) — the queue entry is written
before; a REST transfer is not made from here.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import numpy as np

from telephony.base import (
    CLOSE_INVALID,
    CLOSE_UNSUPPORTED,
    DIGITS,
    FRAME_MS,
    SAMPLE_RATE,
    Audio,
    CallEvent,
    CallStart,
    Digit,
    HandOff,
    Limits,
    ProtocolError,
    log,
    too_big,
)  # fmt: skip
from telephony.codecs import (
    StreamResampler,
    float_to_pcm16,
    pcm16_from_bytes,
    pcm16_to_float,
    resample,
)  # fmt: skip
from telephony.platform import CallerSocket, Decoded, Platform, bearer_check, bearer_sign
from telephony.streams import (
    PacedPlayout,
    ReaderChannel,
    close_ws,
    parse_json_object,
    send_ws,
    split_frames,
    websocket_messages,
)

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

PLATFORM = "vonage"
RATES = (16000, 8000)
LEAD_FRAMES = 3  # sent ahead of real time, against network jitter (Vonage buffers)
MAX_TEXT_BYTES = 16 * 1024  # control messages are small, whatever security.max_message_bytes says
MAX_HEADERS = 64  # NCCO headers kept from websocket:connected
_CONTENT_TYPE = re.compile(r"^\s*audio/l16\s*;\s*rate\s*=\s*(\d+)\s*$", re.IGNORECASE)


def frame_bytes(rate: int) -> int:
    return rate * FRAME_MS // 1000 * 2


class VonageChannel(ReaderChannel):
    platform = PLATFORM

    def __init__(self, websocket: WebSocket, limits: Limits | None = None) -> None:
        super().__init__(limits)
        self.ws = websocket  # starlette WebSocket, already accepted
        self.call_id: str | None = None
        self.wire_rate = 0
        self._upsample: StreamResampler | None = None
        self._odd_sizes = 0
        self._closed = False
        self.playout = PacedPlayout(
            self._send_frame,
            self.inbox.put_now,
            frame_s=FRAME_MS / 1000,
            lead_frames=LEAD_FRAMES,
            name="vonage-playout",
        )

    # -- inbound ---------------------------------------------------------------------
    async def read_events(self) -> AsyncIterator[CallEvent]:
        async for message in websocket_messages(self.ws):
            event = self.parse(message)
            if event is not None:
                yield event

    def parse(self, message: str | bytes) -> CallEvent | None:
        if isinstance(message, bytes):
            return self._on_audio(message)
        limit = min(MAX_TEXT_BYTES, self.limits.max_message_bytes)
        if len(message) > limit:
            raise too_big(len(message), limit, "text message")
        msg = parse_json_object(message, "a text message")
        kind = msg.get("event")
        if kind == "websocket:connected":
            return self._on_connected(msg)
        if self.call_id is None:
            raise ProtocolError(f"{str(kind)[:40]!r} before 'websocket:connected'")
        match kind:
            case "websocket:dtmf":
                digit = str(msg.get("digit", ""))
                return Digit(digit) if len(digit) == 1 and digit in DIGITS else None
            case "websocket:cleared" | "websocket:notify":
                return None
            case _:
                log.info("vonage: ignoring unknown event %r", str(kind)[:40])
                return None

    def _on_connected(self, msg: dict[str, Any]) -> CallStart:
        if self.call_id is not None:
            raise ProtocolError("a second 'websocket:connected'")
        content_type = str(msg.get("content-type", ""))
        match = _CONTENT_TYPE.match(content_type)
        if not match or int(match.group(1)) not in RATES:
            raise ProtocolError(
                f"unsupported content-type {content_type[:60]!r} (audio/l16;rate=16000 or 8000)",
                CLOSE_UNSUPPORTED,
            )
        if len(msg) > MAX_HEADERS:
            raise ProtocolError(f"{len(msg)} fields in websocket:connected (at most {MAX_HEADERS})")
        self.wire_rate = int(match.group(1))
        self._upsample = StreamResampler(self.wire_rate, SAMPLE_RATE)
        headers = {str(k): str(v) for k, v in msg.items() if k not in ("event", "content-type")}
        self.call_id = (
            headers.get("call_id")
            or headers.get("uuid")
            or headers.get("conversation_uuid")
            or f"vonage-{uuid.uuid4().hex}"
        )[:128]
        caller = headers.get("caller") or headers.get("from")
        return CallStart(self.call_id, PLATFORM, caller, headers)

    def _on_audio(self, data: bytes) -> Audio | None:
        if self.call_id is None or self._upsample is None:
            raise ProtocolError("audio before 'websocket:connected'")
        if len(data) > self.limits.max_message_bytes:
            raise too_big(len(data), self.limits.max_message_bytes, "audio message")
        if len(data) % 2:
            raise ProtocolError(
                f"audio message of {len(data)} bytes: not whole 16-bit samples", CLOSE_INVALID
            )
        if len(data) != frame_bytes(self.wire_rate):
            self._odd_sizes += 1
            if self._odd_sizes == 1:
                log.warning(
                    "vonage: audio message of %d bytes, expected %d",
                    len(data),
                    frame_bytes(self.wire_rate),
                )
        if not data:
            return None
        return Audio(self._upsample.process(pcm16_to_float(pcm16_from_bytes(data))))

    # -- outbound --------------------------------------------------------------------
    async def _send_frame(self, frame: bytes) -> None:
        if self._closed or not await send_ws(self.ws, frame, self.limits.send_timeout_s):
            self.send_failed()
            raise ConnectionError("the Vonage socket is closed")  # stops the playout

    async def play(self, audio: np.ndarray, mark: str) -> None:
        rate = self.wire_rate or SAMPLE_RATE
        pcm = float_to_pcm16(resample(audio, SAMPLE_RATE, rate)).astype("<i2").tobytes()
        self.playout.enqueue(split_frames(pcm, frame_bytes(rate), b"\0\0"), mark)

    async def clear(self) -> None:
        self.playout.clear()
        if not self._closed:
            await send_ws(self.ws, json.dumps({"action": "clear"}), self.limits.send_timeout_s)

    async def hang_up(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.playout.close()
        await close_ws(self.ws, self.error, self.limits.send_timeout_s)
        await self.stop_reading()

    async def hand_off(self, target: HandOff) -> None:
        log.info(
            "vonage call %s: closing the media leg; NCCO continues (queue %s written)",
            target.call_id,
            target.queue,
        )
        await self.hang_up()


# -- the platform side, for `voicebot call` ------------------------------------------
class VonagePlatform:
    """Speaks to a bot as Vonage does: connected, 20 ms binary L16 frames, dtmf."""

    protocol = PLATFORM
    wire_rate = 16000
    frame_ms = FRAME_MS
    paced = True  # the bot sends in real time: a gap between frames is not the end of a prompt
    acks_cleared_marks = False

    def __init__(self, ws: CallerSocket, call_id: str, caller: str | None) -> None:
        self.ws = ws
        self.call_id = call_id
        self.caller = caller
        self._frame_bytes = frame_bytes(self.wire_rate)

    @staticmethod
    def new_call_id() -> str:
        return str(uuid.uuid4())

    async def start(self, params: dict[str, str]) -> None:
        headers = {
            "call_id": self.call_id,
            **({"caller": self.caller} if self.caller else {}),
            **params,
        }
        await self.ws.send(
            json.dumps(
                {
                    "event": "websocket:connected",
                    "content-type": f"audio/l16;rate={self.wire_rate}",
                    **headers,
                }
            )
        )

    async def send_audio(self, pcm16: np.ndarray, timestamp_ms: int) -> None:
        await self.ws.send(np.asarray(pcm16, dtype="<i2").tobytes())

    async def send_dtmf(self, digit: str) -> None:
        await self.ws.send(json.dumps({"event": "websocket:dtmf", "digit": digit, "duration": 260}))

    async def ack_mark(self, name: str) -> None:  # Vonage has no marks
        return None

    async def cleared(self) -> None:
        await self.ws.send(json.dumps({"event": "websocket:cleared"}))

    async def stop(self) -> None:
        await self.ws.close()

    def decode(self, message: str | bytes) -> Decoded:
        if isinstance(message, bytes):
            if len(message) != self._frame_bytes:
                # Vonage requires exactly one 20 ms frame per message
                raise ProtocolError(
                    f"the bot sent a {len(message)}-byte frame; Vonage needs {self._frame_bytes}"
                )
            return "audio", pcm16_from_bytes(message)
        msg = json.loads(message)
        if msg.get("action") == "clear":
            return "clear", None
        raise ProtocolError(f"the bot sent a message Vonage does not accept: {message[:80]!r}")


platform = Platform(
    PLATFORM,
    client=VonagePlatform,
    channel=lambda ws, conn: VonageChannel(ws, conn.limits),
    check=bearer_check(PLATFORM),
    sign=bearer_sign(PLATFORM),
)
