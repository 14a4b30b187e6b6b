"""Genesys Cloud AudioHook / Audio Connector (`/audiohook`): the server adapter and the
platform side used by `voicebot call --protocol audiohook`.

Wire format (../shared/telephony.md; the AudioHook protocol, reference implementation
purecloudlabs/audiohook-reference-implementation):
- Genesys is the client. Upgrade headers: Audiohook-Organization-Id, Audiohook-Session-Id,
  Audiohook-Correlation-Id, X-API-KEY (checked against `telephony.audiohook_api_key`, by
  default data_dir/secret), and with a client secret configured the HTTP message signature
  (telephony/auth.py, checked by the gateway on the upgrade). A failed check is answered as the
  reference implementation does: `disconnect` reason "unauthorized" at the open; the open's
  organizationId must match the Audiohook-Organization-Id header.
- Text messages {version: "2", id, type, seq, parameters}; the client adds serverseq and
  position ("PT1.24S"), the server adds clientseq. Each side's seq counts up from 1 without
  gaps; a client message whose seq is not the next one, or whose serverseq is ahead of ours,
  is a protocol error (the server then sends `disconnect` reason "error").
- Client → server: open, ping, close, paused, resumed, discarded, update, error; Audio
  Connector adds dtmf ({digit}), playback_started, playback_completed.
  Server → client: opened (the chosen media), pong, closed, disconnect (reason completed |
  unauthorized | error, outputVariables), event (barge_in).
- Media: binary PCMU at 8 kHz after `opened` only. We choose PCMU 8 kHz mono (the external
  channel, the caller) from the offered media, or PCMU stereo [external, internal] and keep
  the external channel.
- A connection probe (conversationId = nil UUID) is answered (opened … closed) without
  starting a call.
- Hand-off: `disconnect` reason "completed" with outputVariables {result: "handoff",
  forvaltning, queue, intent, reason}; the Architect flow routes on them. Genesys answers
  with `close`, we with `closed`.

Bot audio back to Genesys: AudioHook proper (AudioHook Monitor) is listen-only — Genesys does
not play anything a server sends. Only Audio Connector sessions are bidirectional. We send
audio only when the integration is configured for it: `telephony.audiohook_playback: true`
(an Audio Connector integration); never guessed from the open message (AudioHook Monitor's
reference client answers an unasked-for audio frame with error 415 and closes). Otherwise the bot's
prompts cannot be heard there: each prompt is reported Played(interrupted=True) at once and
logged, so the dialogue continues but the caller hears nothing from the bot. Audio we do send
is PCMU 8 kHz in 200 ms binary messages, paced in real time (Genesys rate-limits messages;
it has no marks), with an `event` barge_in entity on a clear.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from telephony.auth import (
    Credentials,
    NonceCache,
    SignatureError,
    equal,
    request_target,
    sign_audiohook,
    verify_audiohook_signature,
)
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
    Played,
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
from telephony.platform import Admission, CallerSocket, Connection, Decoded, Platform, Upgrade
from telephony.streams import (
    PacedPlayout,
    ReaderChannel,
    close_ws,
    parse_json_object,
    send_ws,
    split_frames,
    wait_event,
    websocket_messages,
)

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

PLATFORM = "audiohook"
VERSION = "2"
WIRE_RATE = 8000
NIL_UUID = "00000000-0000-0000-0000-000000000000"
OUT_FRAME_S = 0.2  # 200 ms per outbound binary message (1600 bytes of PCMU)
MAX_TEXT_BYTES = 65535  # the reference server's limit
CLOSE_WAIT_S = 3.0  # after our disconnect, how long Genesys gets to send close
_POSITION = re.compile(r"^PT(\d+(\.\d+)?)S$")


def parse_position(value: str) -> float:
    match = _POSITION.match(value or "")
    if not match:
        raise ProtocolError(f"position {value!r} is not an ISO 8601 duration like PT1.24S")
    return float(match.group(1))


def choose_media(offered: object) -> dict[str, Any] | None:
    """PCMU 8 kHz, mono external preferred, else stereo including external."""
    if not isinstance(offered, list):
        return None
    candidates = [
        m
        for m in offered
        if isinstance(m, dict)
        and m.get("type") == "audio"
        and m.get("format") == "PCMU"
        and m.get("rate") == WIRE_RATE
        and isinstance(m.get("channels"), list)
        and "external" in m["channels"]
    ]
    candidates.sort(key=lambda m: len(m["channels"]))
    return candidates[0] if candidates else None


class AudioHookChannel(ReaderChannel):
    platform = PLATFORM

    @property
    def can_play(self) -> bool:
        return self.playback

    def __init__(
        self,
        websocket: WebSocket,
        api_key: str | None = None,
        playback: bool = False,
        limits: Limits | None = None,
        auth_error: str | None = None,
    ) -> None:
        super().__init__(limits)
        self.ws = websocket  # starlette WebSocket, already accepted
        self.headers = dict(getattr(websocket, "headers", {}) or {})
        self.api_key = api_key
        self.auth_error = auth_error  # the upgrade's signature check failed: why (refused at open)
        self.playback_setting = (
            playback  # telephony.audiohook_playback: the integration plays bot audio
        )
        self.session_id: str | None = None
        self.call_id: str | None = None
        self.state = "preparing"  # → active ⇄ paused → closed; or disconnecting
        self.seq = 0  # ours
        self.clientseq = 0  # the last client seq received
        self.media: dict[str, Any] | None = None
        self.channel_index = 0  # of the external channel in interleaved stereo
        self.channels = 1
        self.playback = False
        self.probe = False
        self.position_samples = 0
        self.client_position_s = 0.0
        self.disconnect_sent: dict[str, Any] | None = None
        self.error_info: str | None = None
        self.closed = asyncio.Event()  # closed sent, or the socket is gone
        self._upsample = StreamResampler(WIRE_RATE, SAMPLE_RATE)
        self._silent_prompts = 0
        self._socket_closed = False
        self._finish_lock = asyncio.Lock()
        self._finished = False
        self.playout = PacedPlayout(
            self._send_audio,
            self.inbox.put_now,
            frame_s=OUT_FRAME_S,
            lead_frames=1,
            name="audiohook-playout",
        )

    def _header(self, name: str) -> str | None:
        name = name.lower()
        return next((str(v) for k, v in self.headers.items() if str(k).lower() == name), None)

    async def events(self) -> AsyncIterator[CallEvent]:
        started = False
        async for event in super().events():
            if isinstance(event, CallStart):
                started = True
            elif not started and isinstance(event, Hangup):
                return  # a probe or a refused connection: nothing for the session
            yield event

    # -- inbound ---------------------------------------------------------------------
    async def read_events(self) -> AsyncIterator[CallEvent]:
        try:
            async for message in websocket_messages(self.ws):
                for event in await self.on_message(message):
                    yield event
        except ProtocolError as exc:
            self.error_info = str(exc)
            raise
        finally:
            self.closed.set()

    async def on_message(self, message: str | bytes) -> list[CallEvent]:
        """One message from Genesys → call events. Anything the protocol does not allow raises
        ProtocolError (answered with `disconnect` reason "error"), never another exception."""
        try:
            return await self._on_message(message)
        except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError) as exc:
            raise ProtocolError(
                f"malformed AudioHook message: {exc!r}"[:200], CLOSE_INVALID
            ) from None

    async def _on_message(self, message: str | bytes) -> list[CallEvent]:
        if isinstance(message, bytes):
            return self._on_audio(message)
        limit = min(MAX_TEXT_BYTES, self.limits.max_message_bytes)
        if len(message) > limit:
            raise too_big(len(message), limit, "text message")
        msg = self._validate(message)
        kind = msg["type"]
        params = msg["parameters"]
        match kind:
            case "open":
                return await self._on_open(params)
            case "ping":
                await self._send("pong", {})
            case "close":
                await self.playout.close()
                if self.state != "closed":
                    await self._send("closed", {})
                self.state = "closed"
                self.closed.set()
                return [Hangup(f"close ({params.get('reason', 'end')})")]
            case "paused":
                if self.state == "active":
                    self.state = "paused"
            case "resumed":
                if self.state == "paused":
                    self.state = "active"
                log.info(
                    "audiohook %s resumed (%s discarded)", self.session_id, params.get("discarded")
                )
            case "discarded":
                log.info(
                    "audiohook %s: Genesys discarded %s of audio from %s",
                    self.session_id,
                    params.get("discarded"),
                    params.get("start"),
                )
            case "error":
                log.warning(
                    "audiohook %s: client error %s: %s",
                    self.session_id,
                    params.get("code"),
                    params.get("message"),
                )
            case "dtmf":
                digit = str(params.get("digit", ""))
                if len(digit) == 1 and digit in DIGITS and self.call_id is not None:
                    return [Digit(digit)]
            case "playback_started" | "playback_completed" | "update":
                log.debug("audiohook %s: %s %s", self.session_id, kind, params)
            case _:
                log.info("audiohook: ignoring unknown message type %r", kind)
        return []

    def _validate(self, text: str) -> dict[str, Any]:
        msg = parse_json_object(text)
        if msg.get("version") != VERSION:
            raise ProtocolError(f"version {msg.get('version')!r}, expected {VERSION!r}")
        kind, seq, serverseq = msg.get("type"), msg.get("seq"), msg.get("serverseq", 0)
        if not isinstance(kind, str):
            raise ProtocolError("a message needs a 'type' string")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq <= 0:
            raise ProtocolError(f"seq {seq!r} in '{kind}' is not a positive integer")
        if seq != self.clientseq + 1 and self.error_info is None:
            # (After an error of ours the count may be off; the close still gets its closed.)
            raise ProtocolError(f"seq {seq} in '{kind}', expected {self.clientseq + 1}")
        if not isinstance(serverseq, int) or serverseq > self.seq:
            raise ProtocolError(
                f"serverseq {serverseq!r} in '{kind}' is ahead of ours ({self.seq})"
            )
        params = msg.setdefault("parameters", {})
        if not isinstance(params, dict):
            raise ProtocolError(f"parameters of '{kind}' must be an object")
        session = str(msg.get("id", ""))
        if self.session_id is None:
            try:
                uuid.UUID(session)
            except ValueError as exc:
                raise ProtocolError(f"session id {session!r} is not a UUID") from exc
            header = self._header("Audiohook-Session-Id")
            if header and header.lower() != session.lower():
                raise ProtocolError(f"session id {session} differs from the header's {header}")
            self.session_id = session
        elif session != self.session_id:
            raise ProtocolError(f"session id {session!r} in '{kind}', expected {self.session_id}")
        if "position" in msg:
            self.client_position_s = parse_position(str(msg["position"]))
        self.clientseq = seq
        return msg

    async def _on_open(self, params: dict[str, Any]) -> list[CallEvent]:
        if self.state != "preparing":
            raise ProtocolError(f"'open' in state {self.state}")
        refused = self._refusal(params)
        if refused:
            log.warning("audiohook session %s refused: %s", self.session_id, refused)
            await self._disconnect("unauthorized", info=refused)
            return []
        media = choose_media(params.get("media"))
        if media is None:
            await self._disconnect(
                "error", info="no PCMU 8000 Hz media with the external channel offered"
            )
            return []
        self.media = media
        self.channels = len(media["channels"])
        self.channel_index = media["channels"].index("external")
        conversation = str(params.get("conversationId", ""))
        self.probe = conversation == NIL_UUID
        await self._send("opened", {"media": [media], "startPaused": False})
        self.state = "active"
        if self.probe:
            log.info("audiohook: connection probe %s answered", self.session_id)
            return []
        participant = params.get("participant")
        if not isinstance(participant, dict):
            participant = {}
        variables = params.get("inputVariables")
        # Configured, never guessed from the open message: a Monitor client answers audio it
        # did not ask for with error 415 and closes.
        self.playback = self.playback_setting
        if not self.playback:
            log.warning(
                "audiohook session %s is listen-only (AudioHook Monitor): the bot's prompts "
                "cannot be played to the caller",
                self.session_id,
            )
        self.call_id = conversation or str(self.session_id)
        info = {
            "sessionId": str(self.session_id),
            "organizationId": str(params.get("organizationId", "")),
            "dnis": str(participant.get("dnis", "")),
            "language": str(params.get("language", "")),
        }
        if isinstance(variables, dict):
            info.update({f"input.{k}": str(v) for k, v in variables.items()})
        caller = str(participant.get("ani") or "") or None
        return [CallStart(self.call_id, PLATFORM, caller, {k: v for k, v in info.items() if v})]

    def _refusal(self, params: dict[str, Any]) -> str | None:
        """Why this session may not open, or None. (The gateway always configures a key; a
        channel made without one accepts any, with a warning.)"""
        if self.auth_error:
            return self.auth_error
        given = self._header("X-API-KEY") or ""
        if self.api_key is None:
            log.warning(
                "audiohook: no API key configured; accepting X-API-KEY %s",
                "(none)" if not given else "as given",
            )
        elif not hmac.compare_digest(given.encode(), self.api_key.encode()):
            return "X-API-KEY not accepted"
        organization = self._header("Audiohook-Organization-Id")
        if organization and str(params.get("organizationId", "")).lower() != organization.lower():
            return "organizationId differs from the Audiohook-Organization-Id header"
        return None

    def _on_audio(self, data: bytes) -> list[CallEvent]:
        if len(data) > self.limits.max_message_bytes:
            raise too_big(len(data), self.limits.max_message_bytes, "audio message")
        if self.state in ("preparing",) or self.media is None:
            raise ProtocolError("audio before 'opened'")
        if len(data) % self.channels:
            raise ProtocolError(
                f"audio message of {len(data)} bytes is not whole {self.channels}-channel samples"
            )
        samples = len(data) // self.channels
        self.position_samples += samples
        if self.state != "active" or self.probe or self.call_id is None:
            return []  # paused, disconnecting or a probe: not for the session
        if self.channels > 1:
            data = data[self.channel_index :: self.channels]
        return [Audio(self._upsample.process(pcm16_to_float(ulaw_decode(data))))] if data else []

    @property
    def position_s(self) -> float:
        return self.position_samples / WIRE_RATE

    # -- outbound --------------------------------------------------------------------
    async def _send(self, kind: str, parameters: dict[str, Any]) -> None:
        if self._socket_closed:
            return
        self.seq += 1
        message = json.dumps(
            {
                "version": VERSION,
                "type": kind,
                "seq": self.seq,
                "clientseq": self.clientseq,
                "id": self.session_id or NIL_UUID,
                "parameters": parameters,
            }
        )
        if not await send_ws(self.ws, message, self.limits.send_timeout_s):
            self._socket_closed = True
            self.send_failed()

    async def _disconnect(
        self, reason: str, output_variables: dict[str, Any] | None = None, info: str | None = None
    ) -> None:
        if self.disconnect_sent is not None or self.state == "closed":
            return
        parameters: dict[str, Any] = {"reason": reason}
        if info:
            parameters["info"] = info
        if output_variables:
            parameters["outputVariables"] = output_variables
        self.disconnect_sent = parameters
        self.state = "disconnecting"
        await self._send("disconnect", parameters)

    async def _send_audio(self, frame: bytes) -> None:
        if self._socket_closed or (
            self.state == "active" and not await send_ws(self.ws, frame, self.limits.send_timeout_s)
        ):
            self.send_failed()
            raise ConnectionError("the AudioHook socket is closed")  # stops the playout

    async def play(self, audio: np.ndarray, mark: str) -> None:
        if not self.playback:
            self._silent_prompts += 1
            if self._silent_prompts == 1:
                log.warning(
                    "audiohook %s: listen-only session, prompt %s not played", self.session_id, mark
                )
            self.inbox.put_now(Played(mark, interrupted=True))
            return
        payload = ulaw_encode(float_to_pcm16(resample(audio, SAMPLE_RATE, WIRE_RATE)))
        self.playout.enqueue(split_frames(payload, int(OUT_FRAME_S * WIRE_RATE), b"\xff"), mark)

    async def clear(self) -> None:
        dropped = self.playout.clear()
        if self.playback and dropped and self.state == "active":
            await self._send("event", {"entities": [{"type": "barge_in", "data": {}}]})

    async def _finish(
        self, reason: str, output_variables: dict[str, Any] | None, info: str | None = None
    ) -> None:
        """disconnect → Genesys's close → closed, then the socket closes. Audio arriving
        meanwhile is dropped (state "disconnecting"), so the reader never waits on the session."""
        async with self._finish_lock:
            if self._finished:
                return
            await self.playout.close()
            if self.state != "closed" and not self._socket_closed:
                await self._disconnect(reason, output_variables, info)
                if self._reader is None or self._reader.done():
                    # The reader ended (a protocol error): read Genesys's close ourselves.
                    self.closed.clear()
                    self._reader = asyncio.create_task(self._pump(), name="audiohook-closer")
                await wait_event(self.closed, CLOSE_WAIT_S)
            self._socket_closed = self._finished = True
            # 1000 even after an error: AudioHook says why in the disconnect message.
            await close_ws(self.ws, None, self.limits.send_timeout_s)
            await self.stop_reading()

    async def hang_up(self) -> None:
        if self.error_info:
            await self._finish("error", None, self.error_info[:200])
        else:
            await self._finish("completed", {"result": "hangup"})

    async def hand_off(self, target: HandOff) -> None:
        variables = {
            "result": "handoff",
            "forvaltning": target.forvaltning,
            "queue": target.queue,
            "intent": target.intent or "",
            "reason": target.reason,
        }
        log.info("audiohook %s: disconnect with outputVariables %s", self.session_id, variables)
        await self._finish("completed", variables)


# -- the platform side, for `voicebot call` ------------------------------------------
class AudioHookPlatform:
    """Speaks to a bot as Genesys Audio Connector does: open (offering PCMU mono and stereo),
    PCMU audio after `opened`, a ping every 5 s of audio, dtmf, close; answers `disconnect`
    with `close`."""

    protocol = PLATFORM
    wire_rate = WIRE_RATE
    frame_ms = 20
    paced = True
    acks_cleared_marks = False
    organization_id = "d7934305-0972-4844-938e-9060eef73d05"
    api_key: str | None = (
        None  # None: the credentials' key (telephony.audiohook_api_key or the secret)
    )
    audio_connector = True  # send inputVariables (bot audio comes back)
    ping_every_frames = 250

    def __init__(self, ws: CallerSocket, call_id: str, caller: str | None) -> None:
        self.ws = ws
        self.call_id = call_id
        self.caller = caller
        self.hears_bot = self.audio_connector  # AudioHook Monitor is listen-only
        self.session_id = self.session_for(call_id)
        self.seq = 0
        self.serverseq = 0
        self.frames = 0
        self.opened = asyncio.Event()
        self.disconnect: dict[str, Any] | None = None
        self.closed = False

    @staticmethod
    def new_call_id() -> str:
        return str(uuid.uuid4())

    @staticmethod
    def session_for(call_id: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"audiohook:{call_id}"))

    @classmethod
    def headers(cls, call_id: str) -> dict[str, str]:
        """The AudioHook upgrade headers; X-API-KEY (and the signature) are added by
        telephony.auth.client_headers from the credentials, unless `api_key` overrides it."""
        headers = {
            "Audiohook-Organization-Id": cls.organization_id,
            "Audiohook-Session-Id": cls.session_for(call_id),
            "Audiohook-Correlation-Id": str(uuid.uuid4()),
        }
        if cls.api_key is not None:
            headers["X-API-KEY"] = cls.api_key
        return headers

    def message(self, kind: str, parameters: dict[str, Any]) -> str:
        self.seq += 1
        return json.dumps(
            {
                "version": VERSION,
                "id": self.session_id,
                "type": kind,
                "seq": self.seq,
                "serverseq": self.serverseq,
                "position": f"PT{self.frames * self.frame_ms / 1000:.2f}S",
                "parameters": parameters,
            }
        )

    async def start(self, params: dict[str, str]) -> None:
        media = [
            {
                "type": "audio",
                "format": "PCMU",
                "channels": ["external", "internal"],
                "rate": WIRE_RATE,
            },
            {"type": "audio", "format": "PCMU", "channels": ["external"], "rate": WIRE_RATE},
            {"type": "audio", "format": "PCMU", "channels": ["internal"], "rate": WIRE_RATE},
        ]
        open_params: dict[str, Any] = {
            "organizationId": self.organization_id,
            "conversationId": self.call_id,
            "participant": {
                "id": str(uuid.uuid4()),
                "ani": self.caller or "",
                "aniName": "",
                "dnis": "+4533663366",
            },
            "media": media,
            "language": "da-DK",
        }
        if self.audio_connector:
            open_params["inputVariables"] = dict(params)
        await self.ws.send(self.message("open", open_params))
        await asyncio.wait_for(self.opened.wait(), 10)

    async def send_audio(self, pcm16: np.ndarray, timestamp_ms: int) -> None:
        if self.closed:
            return
        await self.ws.send(ulaw_encode(pcm16))
        self.frames += 1
        if self.frames % self.ping_every_frames == 0:
            await self.ws.send(self.message("ping", {}))

    async def send_dtmf(self, digit: str) -> None:
        await self.ws.send(self.message("dtmf", {"digit": digit}))

    async def ack_mark(self, name: str) -> None:  # AudioHook has no marks
        return None

    async def stop(self) -> None:
        if not self.closed:
            self.closed = True
            await self.ws.send(self.message("close", {"reason": "end"}))

    def decode(self, message: str | bytes) -> Decoded:
        if isinstance(message, bytes):
            if not self.audio_connector:
                raise ProtocolError("the bot sent audio on a listen-only AudioHook session")
            return "audio", ulaw_decode(message)
        msg = json.loads(message)
        if msg.get("seq") != self.serverseq + 1:
            raise ProtocolError(f"server seq {msg.get('seq')} after {self.serverseq}")
        self.serverseq = msg["seq"]
        if msg.get("clientseq", 0) > self.seq:
            raise ProtocolError(f"clientseq {msg.get('clientseq')} is ahead of ours ({self.seq})")
        kind, params = msg.get("type"), msg.get("parameters") or {}
        if kind == "opened":
            self.opened.set()
            return "control", kind
        if kind in ("pong", "closed"):
            return "control", kind
        if kind == "event":
            if any(e.get("type") == "barge_in" for e in params.get("entities", [])):
                return "clear", None
            return "control", kind
        if kind == "disconnect":
            self.disconnect = params
            self.opened.set()  # the open transaction is over either way (e.g. "unauthorized")
            if self.closed:
                return "hangup", params
            self.closed = True
            return "reply", self.message("close", {"reason": "end"})
        raise ProtocolError(f"the bot sent a message type a client does not accept: {kind!r}")


# -- the registry entry ----------------------------------------------------------------
@dataclass(frozen=True)
class AudioHookOptions:
    # Bot audio back to Genesys: only for an Audio Connector integration (bidirectional);
    # AudioHook Monitor is listen-only. A setting, never guessed.
    playback: bool = False


def check(upgrade: Upgrade, credentials: Credentials, nonces: NonceCache) -> Admission:
    """X-API-KEY, and with a client secret the upgrade's HTTP message signature. A failure is
    answered at the open with `disconnect` reason "unauthorized", as AudioHook expects."""
    api_key = credentials.token(PLATFORM)
    if not equal(upgrade.headers.get("x-api-key"), api_key):
        return Admission(deferred="X-API-KEY not accepted")
    client_secret = credentials.client_secret(PLATFORM)
    if client_secret:
        try:
            verify_audiohook_signature(
                upgrade.headers,
                upgrade.target,
                upgrade.authorities,
                api_key,
                client_secret,
                nonces=nonces,
            )
        except SignatureError as exc:
            return Admission(deferred=f"signature: {exc}")
    return Admission()


def sign(url: str, credentials: Credentials, headers: dict[str, str]) -> dict[str, str]:
    out = dict(headers)
    out.setdefault("X-API-KEY", credentials.token(PLATFORM))
    client_secret = credentials.client_secret(PLATFORM)
    if client_secret:
        out.update(
            sign_audiohook(
                out, request_target(url), urlsplit(url).netloc, out["X-API-KEY"], client_secret
            )
        )
    return out


def _channel(ws: WebSocket, conn: Connection) -> AudioHookChannel:
    api_key = conn.credentials.token(PLATFORM) if conn.credentials else None
    return AudioHookChannel(
        ws, api_key, conn.options.playback, conn.limits, conn.admission.deferred
    )


platform = Platform(
    PLATFORM,
    client=AudioHookPlatform,
    channel=_channel,
    check=check,
    sign=sign,
    options=AudioHookOptions,
)
