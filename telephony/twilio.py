"""Twilio Media Streams, bidirectional (<Connect><Stream>): the server adapter and the
platform side used by `voicebot call --protocol twilio`.

Wire format (../shared/telephony.md): text JSON frames only; inbound `connected`, `start`,
`media` (base64 μ-law 8 kHz), `dtmf`, `mark`, `stop`; outbound `media`, `mark`, `clear`
with the call's streamSid. Twilio buffers outbound media and plays it in order, so audio is
sent in bulk; a `mark` after each prompt tells when it has played. Marks that come back
right after a `clear` were discarded, not played. Hand-off: the server closes the stream
and Twilio requests the <Connect action> URL, answered with TwiML that enqueues the caller.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit
from xml.sax.saxutils import escape, quoteattr

import numpy as np
from fastapi import APIRouter, HTTPException, Request, Response

from telephony.auth import Credentials, NonceCache, twilio_signature, verify_twilio
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
    MediaChannel,
    ProtocolError,
    log,
    too_big,
)  # fmt: skip
from telephony.codecs import (
    StreamResampler,
    float_to_pcm16,
    pcm16_to_float,
    resample,
    ulaw_decode,
    ulaw_encode,
)  # fmt: skip
from telephony.platform import (
    Admission,
    CallerSocket,
    Decoded,
    Platform,
    Upgrade,
    WebhookSide,
    is_loopback_host,
)
from telephony.streams import MarkLedger, close_ws, parse_json_object, send_ws

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

PLATFORM = "twilio"
WIRE_RATE = 8000
FRAME_BYTES = 160  # 20 ms of μ-law at 8 kHz
UNEXPECTED = (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError)


def _obj(msg: dict[str, Any], key: str) -> dict[str, Any]:
    value = msg.get(key) or {}
    if not isinstance(value, dict):
        raise ProtocolError(f"'{key}' must be a JSON object", CLOSE_INVALID)
    return value


class TwilioChannel(MediaChannel):
    platform = PLATFORM

    def __init__(self, websocket: WebSocket, limits: Limits | None = None) -> None:
        self.ws = websocket  # starlette.websockets.WebSocket, already accepted
        self.limits = limits or Limits()
        self.stream_sid: str | None = None
        self.call_sid: str | None = None
        self._upsample = StreamResampler(WIRE_RATE, SAMPLE_RATE)
        self.marks = MarkLedger()
        self._closed = False

    # -- inbound ---------------------------------------------------------------------
    async def events(self) -> AsyncIterator[CallEvent]:
        from starlette.websockets import WebSocketDisconnect

        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("text") is None:
                    raise ProtocolError(
                        "binary frame: Twilio Media Streams send text JSON only", CLOSE_UNSUPPORTED
                    )
                event = self.parse(message["text"])
                if event is not None:
                    yield event
                    if isinstance(event, Hangup):
                        return
        except WebSocketDisconnect:
            pass
        except ProtocolError as exc:
            self.error = exc  # hang_up closes with its code
            raise
        yield Hangup("disconnected")

    def parse(self, text: str) -> CallEvent | None:
        """One Twilio message → a call event (None: nothing for the session). Anything the
        protocol does not allow raises ProtocolError, never another exception."""
        if len(text) > self.limits.max_message_bytes:
            raise too_big(len(text), self.limits.max_message_bytes)
        msg = parse_json_object(text)
        try:
            return self._parse(msg)
        except UNEXPECTED as exc:  # a field of the wrong type somewhere
            raise ProtocolError(f"malformed Twilio message: {exc!r}"[:200], CLOSE_INVALID) from None

    def _parse(self, msg: dict[str, Any]) -> CallEvent | None:
        kind = msg.get("event")
        if kind == "connected":
            return None
        if kind == "start":
            return self._on_start(msg)
        if self.stream_sid is None:
            raise ProtocolError(f"'{str(kind)[:40]}' before 'start'")
        sid = msg.get("streamSid")
        if sid is not None and sid != self.stream_sid:
            raise ProtocolError("a message for another streamSid")
        match kind:
            case "media":
                return self._on_media(msg)
            case "dtmf":
                digit = str(_obj(msg, "dtmf").get("digit", ""))
                return Digit(digit) if len(digit) == 1 and digit in DIGITS else None
            case "mark":
                return self.marks.echoed(str(_obj(msg, "mark").get("name", "")))
            case "stop":
                return Hangup("stop")
            case _:
                log.info("twilio: ignoring unknown event %r", str(kind)[:40])
                return None

    def _on_start(self, msg: dict[str, Any]) -> CallStart:
        if self.stream_sid is not None:
            raise ProtocolError("a second 'start'")
        start = msg.get("start")
        if not isinstance(start, dict):
            raise ProtocolError("'start' without a start object")
        fmt = _obj(start, "mediaFormat")
        if fmt and (
            fmt.get("encoding") != "audio/x-mulaw"
            or str(fmt.get("sampleRate", "")) != str(WIRE_RATE)
        ):
            raise ProtocolError(
                f"unsupported media format {str(fmt)[:80]} (audio/x-mulaw at 8000 Hz)",
                CLOSE_UNSUPPORTED,
            )
        stream_sid = str(start.get("streamSid") or msg.get("streamSid") or "")
        if not stream_sid or len(stream_sid) > 128:
            raise ProtocolError("'start' without a usable streamSid")
        self.stream_sid = stream_sid
        self.call_sid = str(start.get("callSid") or self.stream_sid)[:128]
        params = {str(k): str(v) for k, v in _obj(start, "customParameters").items()}
        caller = params.get("caller") or params.get("From")
        return CallStart(self.call_sid, PLATFORM, caller, params)

    def _on_media(self, msg: dict[str, Any]) -> Audio | None:
        media = _obj(msg, "media")
        if media.get("track", "inbound") != "inbound":
            return None
        payload_text = media.get("payload", "")
        if not isinstance(payload_text, str):
            raise ProtocolError("media payload must be a base64 string", CLOSE_INVALID)
        try:
            payload = base64.b64decode(payload_text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError(f"media payload is not base64: {exc}", CLOSE_INVALID) from exc
        if not payload:
            return None
        return Audio(self._upsample.process(pcm16_to_float(ulaw_decode(payload))))

    # -- outbound --------------------------------------------------------------------
    async def _send(self, obj: dict[str, Any]) -> None:
        # A peer gone, or one that stopped reading (send timeout): nothing more is sent, and
        # the call ends when the session next waits on the (closed) socket.
        if not self._closed and not await send_ws(
            self.ws, json.dumps(obj), self.limits.send_timeout_s
        ):
            await self.hang_up()

    async def play(self, audio: np.ndarray, mark: str) -> None:
        payload = ulaw_encode(float_to_pcm16(resample(audio, SAMPLE_RATE, WIRE_RATE)))
        for i in range(0, len(payload), FRAME_BYTES):
            if self._closed:
                return
            chunk = base64.b64encode(payload[i : i + FRAME_BYTES]).decode()
            await self._send(
                {"event": "media", "streamSid": self.stream_sid, "media": {"payload": chunk}}
            )
        self.marks.sent(mark)
        await self._send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": mark}})

    async def clear(self) -> None:
        self.marks.clear()
        await self._send({"event": "clear", "streamSid": self.stream_sid})

    async def hang_up(self) -> None:
        if not self._closed:
            self._closed = True
            await close_ws(self.ws, self.error, self.limits.send_timeout_s)

    async def hand_off(self, target: HandOff) -> None:
        # Closing the stream makes Twilio continue with <Connect action>, answered by
        # enqueue_twiml() from the routed-call record written before this.
        await self.hang_up()


def connect_twiml(stream_url: str, action_url: str, caller: str | None) -> str:
    """TwiML for the incoming-call webhook: stream the call to us, then ask `action_url`."""
    param = f'<Parameter name="caller" value={quoteattr(caller)} />' if caller else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        f"<Connect action={quoteattr(action_url)}><Stream url={quoteattr(stream_url)}>{param}</Stream></Connect>"
        "</Response>"
    )


def stream_url(base: str) -> str:
    """The media stream's URL under the base URL Twilio reaches us at: wss://, except for a
    plain-http loopback base (a local trial). Twilio refuses ws:// (error 31922), and a public
    host seen over plain http is behind a TLS proxy that did not say so."""
    parts = urlsplit(base)
    scheme = "ws" if parts.scheme == "http" and is_loopback_host(parts.hostname) else "wss"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/twilio", "", ""))


def enqueue_twiml(queue_name: str | None, goodbye: str) -> str:
    """TwiML for <Connect action>: put a routed caller in its forvaltning's Twilio queue."""
    if queue_name:
        body = f"<Enqueue>{escape(queue_name)}</Enqueue>"
    else:
        body = f'<Say language="da-DK">{escape(goodbye)}</Say><Hangup/>'
    return f'<?xml version="1.0" encoding="UTF-8"?><Response>{body}</Response>'


# -- the platform side, for `voicebot call` ------------------------------------------
class TwilioPlatform:
    """Speaks to a bot as Twilio does: start, real-time μ-law media, dtmf, mark echoes."""

    protocol = PLATFORM
    wire_rate = WIRE_RATE
    frame_ms = 20

    def __init__(self, ws: CallerSocket, call_id: str, caller: str | None) -> None:
        self.ws = ws  # a websockets client connection
        self.call_id = call_id
        self.stream_sid = "MZ" + call_id[2:] if call_id.startswith("CA") else "MZ" + call_id
        self.caller = caller
        self._seq = 0
        self._chunk = 0

    def _next_seq(self) -> str:
        self._seq += 1
        return str(self._seq)

    async def start(self, params: dict[str, str]) -> None:
        await self.ws.send(
            json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        )
        custom = dict(params)
        if self.caller:
            custom.setdefault("caller", self.caller)
        await self.ws.send(json.dumps({
            "event": "start", "sequenceNumber": self._next_seq(), "streamSid": self.stream_sid,
            "start": {
                "streamSid": self.stream_sid, "accountSid": "AC" + "0" * 32, "callSid": self.call_id,
                "tracks": ["inbound"], "customParameters": custom,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": WIRE_RATE, "channels": 1},
            },
        }))  # fmt: skip

    async def send_audio(self, pcm16: np.ndarray, timestamp_ms: int) -> None:
        self._chunk += 1
        await self.ws.send(json.dumps({
            "event": "media", "sequenceNumber": self._next_seq(), "streamSid": self.stream_sid,
            "media": {"track": "inbound", "chunk": str(self._chunk), "timestamp": str(timestamp_ms),
                      "payload": base64.b64encode(ulaw_encode(pcm16)).decode()},
        }))  # fmt: skip

    async def send_dtmf(self, digit: str) -> None:
        await self.ws.send(
            json.dumps(
                {
                    "event": "dtmf",
                    "streamSid": self.stream_sid,
                    "sequenceNumber": self._next_seq(),
                    "dtmf": {"track": "inbound_track", "digit": digit},
                }
            )
        )

    async def ack_mark(self, name: str) -> None:
        await self.ws.send(
            json.dumps(
                {
                    "event": "mark",
                    "sequenceNumber": self._next_seq(),
                    "streamSid": self.stream_sid,
                    "mark": {"name": name},
                }
            )
        )

    async def stop(self) -> None:
        await self.ws.send(
            json.dumps(
                {
                    "event": "stop",
                    "sequenceNumber": self._next_seq(),
                    "streamSid": self.stream_sid,
                    "stop": {"accountSid": "AC" + "0" * 32, "callSid": self.call_id},
                }
            )
        )

    def decode(self, message: str | bytes) -> Decoded:
        """A bot message → ("audio", 8 kHz int16) | ("mark", name) | ("clear", None)."""
        if isinstance(message, bytes):
            raise ProtocolError("the bot sent a binary frame (Twilio error 31950)")
        msg = json.loads(message)
        kind = msg.get("event")
        if msg.get("streamSid") != self.stream_sid:
            raise ProtocolError(f"wrong streamSid in {kind} (Twilio error 31924)")
        if kind == "media":
            return "audio", ulaw_decode(base64.b64decode(msg["media"]["payload"]))
        if kind == "mark":
            return "mark", msg["mark"]["name"]
        if kind == "clear":
            return "clear", None
        raise ProtocolError(f"the bot sent an event Twilio does not accept: {kind!r} (31951)")


# -- the registry entry ----------------------------------------------------------------
def check(upgrade: Upgrade, credentials: Credentials, nonces: NonceCache) -> Admission:
    """X-Twilio-Signature over the wss:// URL of the upgrade (no parameters)."""
    signature = upgrade.headers.get("x-twilio-signature")
    if verify_twilio(credentials.token(PLATFORM), signature, upgrade.signed_urls):
        return Admission()
    return Admission(refused="X-Twilio-Signature missing or wrong")


def sign(url: str, credentials: Credentials, headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "X-Twilio-Signature": twilio_signature(credentials.token(PLATFORM), url)}


def webhooks(side: WebhookSide) -> APIRouter:
    """Twilio's HTTP side: the incoming-call webhook (TwiML that streams the call to /twilio)
    and the <Connect action> that puts a routed caller in its queue, both signed."""
    router = APIRouter()

    async def signed_form(request: Request) -> dict[str, str]:
        form = await request.form()
        params = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
        token = side.credentials().token(PLATFORM)
        if not verify_twilio(
            token, request.headers.get("x-twilio-signature"), side.signed_urls(request), params
        ):
            side.refused(request, "X-Twilio-Signature missing or wrong")
            raise HTTPException(403, "X-Twilio-Signature missing or wrong")
        return dict(params)

    @router.post("/twilio/voice")
    async def voice(request: Request) -> Response:
        form = await signed_form(request)
        base = side.public_base(request)
        xml = connect_twiml(stream_url(base), base + "/twilio/action", form.get("From"))
        return Response(xml, media_type="application/xml")

    @router.post("/twilio/action")
    async def action(request: Request) -> Response:
        """<Enqueue> only while the call's record waits to be taken; a caller who is gone (or
        was never routed) gets the goodbye and a hang-up."""
        form = await signed_form(request)
        call_sid = form.get("CallSid")
        if not call_sid:
            raise HTTPException(422, "CallSid missing")
        queue = await side.queue_for(call_sid)
        return Response(enqueue_twiml(queue, side.goodbye()), media_type="application/xml")

    return router


platform = Platform(
    PLATFORM,
    client=TwilioPlatform,
    channel=lambda ws, conn: TwilioChannel(ws, conn.limits),
    check=check,
    sign=sign,
    webhooks=webhooks,
)
