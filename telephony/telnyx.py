"""Telnyx media streaming over WebSocket (Call Control `stream_url`, bidirectional with
`stream_bidirectional_mode=rtp`): the server adapter and the platform side used by
`voicebot call --protocol telnyx`.

Wire format (../shared/telephony.md; Telnyx's "Stream call media over WebSocket"):
- Text JSON only, snake_case: `connected`; `start` {sequence_number, stream_id,
  start: {call_control_id, from, to, client_state, media_format: {encoding, sample_rate,
  channels}}}; `media` {sequence_number, stream_id, media: {track, chunk, timestamp,
  payload}}; `dtmf` {dtmf: {digit}}; `mark` {mark: {name}}; `stop`; `error`
  {payload: {code, title, detail}}.
- Encodings handled: PCMU, PCMA (8 kHz) and L16 (8 or 16 kHz, network byte order as in RTP).
  Outbound audio uses the same encoding and rate as inbound (RTP mode needs the call's codec).
- Outbound: {"event": "media", "media": {"payload": base64}}, {"event": "mark", "mark":
  {"name": …}}, {"event": "clear"}. Telnyx buffers and plays media in order, so audio is sent
  in bulk (chunks of 20 ms to 30 s are allowed; we send 200 ms).
- Frame order is NOT guaranteed: inbound media is reordered by `sequence_number` (one counter
  over all of a stream's messages, so other messages' numbers are skipped, not waited for) in
  a small buffer (`telephony.telnyx_reorder_frames`); late frames are dropped and counted.
- Marks pending at a clear are reported interrupted at once; their echoes, if Telnyx sends
  them, are then ignored.
- Hand-off: the stream is closed; the Call Control application (webhook `streaming.stopped`)
  transfers the call, looking the queue up by call_control_id.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from telephony.base import (
    CLOSE_INVALID,
    CLOSE_UNSUPPORTED,
    DIGITS,
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
    MarkLedger,
    ReaderChannel,
    ReorderBuffer,
    close_ws,
    parse_json_object,
    send_ws,
    websocket_messages,
)

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

PLATFORM = "telnyx"
ENCODINGS = {"PCMU": (8000,), "PCMA": (8000,), "L16": (8000, 16000)}
CHUNK_MS = 200


def decode_payload(payload: bytes, encoding: str) -> np.ndarray:
    """Wire bytes → int16 samples."""
    if encoding == "PCMU":
        return ulaw_decode(payload)
    if encoding == "PCMA":
        return alaw_decode(payload)
    usable = len(payload) - len(payload) % 2
    return np.frombuffer(payload[:usable], dtype=">i2").astype(np.int16)


def encode_payload(pcm: np.ndarray, encoding: str) -> bytes:
    """int16 samples → wire bytes."""
    if encoding == "PCMU":
        return ulaw_encode(pcm)
    if encoding == "PCMA":
        return alaw_encode(pcm)
    return np.asarray(pcm, dtype=np.int16).astype(">i2").tobytes()


def bytes_per_ms(encoding: str, rate: int) -> int:
    return rate // 1000 * (2 if encoding == "L16" else 1)


class TelnyxChannel(ReaderChannel):
    platform = PLATFORM

    def __init__(
        self, websocket: WebSocket, reorder_frames: int = 5, limits: Limits | None = None
    ) -> None:
        super().__init__(limits)
        self.ws = websocket  # starlette WebSocket, already accepted
        self.stream_id: str | None = None
        self.call_control_id: str | None = None
        self.encoding = "PCMU"
        self.wire_rate = 8000
        self.reorder = ReorderBuffer(depth=reorder_frames)
        self._upsample: StreamResampler | None = None
        self.marks = MarkLedger()
        self.errors: list[dict[str, Any]] = []  # the last few Telnyx error events
        self._closed = False

    # -- inbound ---------------------------------------------------------------------
    async def read_events(self) -> AsyncIterator[CallEvent]:
        async for message in websocket_messages(self.ws):
            if isinstance(message, bytes):
                raise ProtocolError(
                    "binary frame: Telnyx media streaming sends text JSON only", CLOSE_UNSUPPORTED
                )
            for event in self.parse(message):
                yield event
                if isinstance(event, Hangup):
                    return

    def parse(self, text: str) -> list[CallEvent]:
        """One Telnyx message → call events (reordered media may release several). Anything
        the protocol does not allow raises ProtocolError, never another exception."""
        if len(text) > self.limits.max_message_bytes:
            raise too_big(len(text), self.limits.max_message_bytes)
        msg = parse_json_object(text)
        try:
            return self._parse(msg)
        except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError) as exc:
            raise ProtocolError(f"malformed Telnyx message: {exc!r}"[:200], CLOSE_INVALID) from None

    def _parse(self, msg: dict[str, Any]) -> list[CallEvent]:
        kind = msg.get("event")
        if kind == "connected":
            return []
        if kind == "start":
            return [self._on_start(msg)]
        if self.stream_id is None:
            raise ProtocolError(f"'{str(kind)[:40]}' before 'start'")
        if kind == "media":
            return self._on_media(msg)
        events = self._release(self.reorder.skip(seq)) if (seq := _seq(msg)) is not None else []
        match kind:
            case "dtmf":
                digit = str(_obj(msg, "dtmf").get("digit", ""))
                if len(digit) == 1 and digit in DIGITS:
                    events.append(Digit(digit))
            case "mark":
                name = str(_obj(msg, "mark").get("name", ""))
                if self.marks.take_cleared(name):
                    pass  # already reported interrupted at the clear
                elif self.marks.take_pending(name):
                    events.append(Played(name))
                else:
                    log.info("telnyx: mark %r echoed that was never sent", name)
            case "stop":
                events += self._release(self.reorder.flush())
                if self.reorder.late or self.reorder.lost or self.reorder.reordered:
                    log.info(
                        "telnyx stream %s: %d frames reordered, %d late (dropped), %d missing",
                        self.stream_id,
                        self.reorder.reordered,
                        self.reorder.late,
                        self.reorder.lost,
                    )
                events.append(Hangup("stop"))
            case "error":
                payload = _obj(msg, "payload")
                self.errors = [*self.errors[-9:], payload]
                log.warning(
                    "telnyx stream %s error %s %s: %s",
                    self.stream_id,
                    str(payload.get("code"))[:40],
                    str(payload.get("title"))[:80],
                    str(payload.get("detail"))[:200],
                )
            case _:
                log.info("telnyx: ignoring unknown event %r", str(kind)[:40])
        return events

    def _on_start(self, msg: dict[str, Any]) -> CallStart:
        if self.stream_id is not None:
            raise ProtocolError("a second 'start'")
        start = msg.get("start")
        if not isinstance(start, dict):
            raise ProtocolError("'start' without a start object")
        fmt = start.get("media_format") or {}
        if not isinstance(fmt, dict):
            raise ProtocolError("media_format must be an object")
        encoding = str(fmt.get("encoding", "PCMU")).upper()
        try:
            rate = int(fmt.get("sample_rate", 8000))
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"sample_rate is not a number: {fmt.get('sample_rate')!r}") from exc
        if rate not in ENCODINGS.get(encoding, ()):
            raise ProtocolError(
                f"unsupported media format {encoding[:20]} at {rate} Hz "
                "(PCMU/PCMA 8000, L16 8000/16000)",
                CLOSE_UNSUPPORTED,
            )
        if str(fmt.get("channels", 1) or 1) != "1":
            raise ProtocolError(
                f"unsupported channel count {str(fmt.get('channels'))[:20]}", CLOSE_UNSUPPORTED
            )
        stream_id = str(msg.get("stream_id") or start.get("stream_id") or "")
        if not stream_id or len(stream_id) > 128:
            raise ProtocolError("'start' without a usable stream_id")
        self.encoding, self.wire_rate = encoding, rate
        self._upsample = StreamResampler(rate, SAMPLE_RATE)
        self.stream_id = stream_id
        self.call_control_id = str(start.get("call_control_id") or self.stream_id)[:128]
        if (seq := _seq(msg)) is not None:
            self.reorder.skip(seq)
        params = {
            k: str(start[k])
            for k in ("from", "to", "client_state", "call_session_id")
            if start.get(k)
        }
        custom = start.get("custom_parameters")
        if isinstance(custom, dict):
            params.update({str(k): str(v) for k, v in custom.items()})
        return CallStart(self.call_control_id, PLATFORM, params.get("from"), params)

    def _on_media(self, msg: dict[str, Any]) -> list[CallEvent]:
        media = _obj(msg, "media")
        seq = _seq(msg)
        if media.get("track", "inbound") not in ("inbound", "inbound_track"):
            return self._release(self.reorder.skip(seq)) if seq is not None else []
        payload_text = media.get("payload", "")
        if not isinstance(payload_text, str):
            raise ProtocolError("media payload must be a base64 string", CLOSE_INVALID)
        try:
            payload = base64.b64decode(payload_text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError(f"media payload is not base64: {exc}", CLOSE_INVALID) from exc
        if seq is None:  # nothing to order by: take it as it comes
            return self._release([payload])
        return self._release(self.reorder.push(seq, payload))

    def _release(self, payloads: list[bytes]) -> list[CallEvent]:
        assert self._upsample is not None
        return [
            Audio(self._upsample.process(pcm16_to_float(decode_payload(p, self.encoding))))
            for p in payloads
            if p
        ]

    # -- outbound --------------------------------------------------------------------
    async def _send(self, obj: dict[str, Any]) -> None:
        if not self._closed and not await send_ws(
            self.ws, json.dumps(obj), self.limits.send_timeout_s
        ):
            self._closed = True
            self.send_failed()

    async def play(self, audio: np.ndarray, mark: str) -> None:
        payload = encode_payload(
            float_to_pcm16(resample(audio, SAMPLE_RATE, self.wire_rate)), self.encoding
        )
        chunk = CHUNK_MS * bytes_per_ms(self.encoding, self.wire_rate)
        for i in range(0, len(payload), chunk):
            if self._closed:
                return
            await self._send(
                {
                    "event": "media",
                    "media": {"payload": base64.b64encode(payload[i : i + chunk]).decode()},
                }
            )
        self.marks.sent(mark)
        await self._send({"event": "mark", "mark": {"name": mark}})

    async def clear(self) -> None:
        await self._send({"event": "clear"})
        for name in self.marks.clear():
            self.inbox.put_now(Played(name, interrupted=True))

    async def hang_up(self) -> None:
        if self._closed:
            return
        self._closed = True
        await close_ws(self.ws, self.error, self.limits.send_timeout_s)
        await self.stop_reading()

    async def hand_off(self, target: HandOff) -> None:
        log.info(
            "telnyx call %s: closing the stream; Call Control transfers it (queue %s written)",
            target.call_id,
            target.queue,
        )
        await self.hang_up()


def _obj(msg: dict[str, Any], key: str) -> dict[str, Any]:
    value = msg.get(key) or {}
    if not isinstance(value, dict):
        raise ProtocolError(f"'{key}' must be an object", CLOSE_INVALID)
    return value


MAX_SEQ = 2**53  # JSON's exact integers; beyond is garbage, not a counter


def _seq(msg: dict[str, Any]) -> int | None:
    value = msg.get("sequence_number")
    if value is None:
        return None
    try:
        seq = int(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(
            f"sequence_number is not a number: {str(value)[:40]!r}", CLOSE_INVALID
        ) from exc
    if not 0 <= seq <= MAX_SEQ:
        raise ProtocolError(f"sequence_number {seq} out of range", CLOSE_INVALID)
    return seq


# -- the platform side, for `voicebot call` ------------------------------------------
class TelnyxPlatform:
    """Speaks to a bot as Telnyx does, including (by default) an occasional pair of media
    frames delivered out of order, as Telnyx does not guarantee order."""

    protocol = PLATFORM
    wire_rate = 8000
    frame_ms = 20
    encoding = "PCMU"
    swap_every = 25  # deliver every 25th media frame after the next one (0: in order)

    def __init__(self, ws: CallerSocket, call_id: str, caller: str | None) -> None:
        self.ws = ws
        self.call_id = call_id
        self.stream_id = str(uuid.uuid4())
        self.caller = caller
        self._seq = 0
        self._chunk = 0
        self._held: str | None = None  # a media message held back to be sent late

    @staticmethod
    def new_call_id() -> str:
        return "v3:" + uuid.uuid4().hex

    def _next_seq(self) -> str:
        self._seq += 1
        return str(self._seq)

    async def start(self, params: dict[str, str]) -> None:
        await self.ws.send(json.dumps({"event": "connected", "version": "1.0.0"}))
        start = {
            "user_id": str(uuid.uuid4()),
            "call_control_id": self.call_id,
            "call_session_id": str(uuid.uuid4()),
            "from": self.caller or "",
            "to": "+4533663366",
            "media_format": {
                "encoding": self.encoding,
                "sample_rate": self.wire_rate,
                "channels": 1,
            },
        }
        if params:
            start["custom_parameters"] = params
        await self.ws.send(
            json.dumps(
                {
                    "event": "start",
                    "sequence_number": self._next_seq(),
                    "stream_id": self.stream_id,
                    "start": start,
                }
            )
        )

    async def send_audio(self, pcm16: np.ndarray, timestamp_ms: int) -> None:
        self._chunk += 1
        message = json.dumps({
            "event": "media", "sequence_number": self._next_seq(), "stream_id": self.stream_id,
            "media": {"track": "inbound", "chunk": str(self._chunk), "timestamp": str(timestamp_ms),
                      "payload": base64.b64encode(encode_payload(pcm16, self.encoding)).decode()},
        })  # fmt: skip
        if self.swap_every and self._chunk % self.swap_every == 0 and self._held is None:
            self._held = message
            return
        await self.ws.send(message)
        if self._held is not None:
            held, self._held = self._held, None
            await self.ws.send(held)

    async def send_dtmf(self, digit: str) -> None:
        await self.ws.send(
            json.dumps(
                {
                    "event": "dtmf",
                    "sequence_number": self._next_seq(),
                    "stream_id": self.stream_id,
                    "dtmf": {"digit": digit},
                }
            )
        )

    async def ack_mark(self, name: str) -> None:
        await self.ws.send(
            json.dumps(
                {
                    "event": "mark",
                    "sequence_number": self._next_seq(),
                    "stream_id": self.stream_id,
                    "mark": {"name": name},
                }
            )
        )

    async def stop(self) -> None:
        await self.ws.send(
            json.dumps(
                {
                    "event": "stop",
                    "sequence_number": self._next_seq(),
                    "stream_id": self.stream_id,
                    "stop": {"call_control_id": self.call_id},
                }
            )
        )

    def decode(self, message: str | bytes) -> Decoded:
        if isinstance(message, bytes):
            raise ProtocolError("the bot sent a binary frame; Telnyx takes JSON text")
        msg = json.loads(message)
        kind = msg.get("event")
        if kind == "media":
            return "audio", decode_payload(base64.b64decode(msg["media"]["payload"]), self.encoding)
        if kind == "mark":
            return "mark", msg["mark"]["name"]
        if kind == "clear":
            return "clear", None
        raise ProtocolError(f"the bot sent an event Telnyx does not accept: {kind!r}")


# -- the registry entry ----------------------------------------------------------------
@dataclass(frozen=True)
class TelnyxOptions:
    reorder_frames: int = 5  # inbound media frames held back to restore sequence order (20 ms each)


def _channel(ws: WebSocket, conn: Connection) -> TelnyxChannel:
    return TelnyxChannel(ws, conn.options.reorder_frames, conn.limits)


platform = Platform(
    PLATFORM,
    client=TelnyxPlatform,
    channel=_channel,
    check=bearer_check(PLATFORM),
    sign=bearer_sign(PLATFORM),
    options=TelnyxOptions,
)
