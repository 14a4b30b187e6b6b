"""Asterisk AudioSocket (TCP): the server adapter, the TCP server the gateway starts, and the
platform side used by `voicebot call --protocol audiosocket --url tcp://127.0.0.1:9092`.

Asterisk connects to us: `AudioSocket(<uuid>,127.0.0.1:9092)` in the dialplan (or ARI
external media). Wire format (../shared/telephony.md; the AudioSocket protocol definition):
- Every message: 1-byte kind, uint16 big-endian payload length, payload.
- 0x01 UUID (16 bytes), always first; 0x10 audio: signed linear 16-bit little-endian, 8 kHz,
  mono; 0x03 DTMF: one ASCII byte (Asterisk 20/21/22, 2025); 0x00 hangup; 0xFF error with a
  code byte (0x01 the caller hung up, 0x02 frame forwarding, 0x04 memory). Kinds 0x11–0x18
  (other rates) only exist with a codec option we do not configure: refused.
- We send only 0x10 audio and 0x00 hangup. Asterisk does no pacing, so audio goes out as
  320 bytes (20 ms) every 20 ms. There is no flush: barge-in = stop sending (the queued audio
  is dropped here). Marks do not exist: this adapter reports Played when a prompt's last frame
  has been sent and played, Played(interrupted=True) for what a clear dropped.
- Hand-off: the queue entry is written before; we log the queue and send hangup, and the
  dialplan continues after AudioSocket() (it can look the routed call up by its UUID).
- Who may connect: AudioSocket has no authentication, so the server accepts connections only
  from `security.audiosocket_sources` (default 127.0.0.1 and ::1); keep the port on an
  internal network. A protocol error is logged and answered with hangup and a closed socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

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
)
from telephony.platform import CallerSocket, Decoded, Platform, RunChannel
from telephony.streams import PacedPlayout, ReaderChannel, split_frames

PLATFORM = "audiosocket"
KIND_HANGUP, KIND_UUID, KIND_DTMF, KIND_AUDIO, KIND_ERROR = 0x00, 0x01, 0x03, 0x10, 0xFF
HIGHER_RATE_KINDS = range(0x11, 0x19)
WIRE_RATE = 8000
FRAME_BYTES = 320  # 20 ms
ERROR_CODES = {
    0x00: "none",
    0x01: "caller hung up",
    0x02: "frame forwarding error",
    0x04: "memory error",
}
HEADER = struct.Struct(">BH")


def pack(kind: int, payload: bytes = b"") -> bytes:
    if len(payload) > 0xFFFF:
        raise ValueError(f"AudioSocket payload of {len(payload)} bytes exceeds 65535")
    return HEADER.pack(kind, len(payload)) + payload


@dataclass(frozen=True)
class Message:
    kind: int
    payload: bytes


async def read_message(reader: asyncio.StreamReader, max_bytes: int = 0xFFFF) -> Message | None:
    """One message, or None at the end of the stream (a clean close or a cut-off message). A
    header announcing more than `max_bytes` is a ProtocolError before the payload is read."""
    try:
        kind, length = HEADER.unpack(await reader.readexactly(HEADER.size))
        if length > max_bytes:
            raise too_big(length, max_bytes, f"AudioSocket kind 0x{kind:02x} payload")
        payload = await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            log.info(
                "audiosocket: the stream ended inside a message (%d bytes of it read)",
                len(exc.partial),
            )
        return None
    except ConnectionError:
        return None
    return Message(kind, payload)


class AudioSocketChannel(ReaderChannel):
    platform = PLATFORM
    echo_cancelled = False  # Asterisk passes the line through as it is

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        limits: Limits | None = None,
    ) -> None:
        super().__init__(limits)
        self.reader = reader
        self.writer = writer
        self.call_id: str | None = None
        self.errors: list[int] = []
        self._upsample = StreamResampler(WIRE_RATE, SAMPLE_RATE)
        self._closed = False
        self.playout = PacedPlayout(
            self._send_frame, self.inbox.put_now, frame_s=0.02, name="audiosocket-playout"
        )

    # -- inbound ---------------------------------------------------------------------
    async def read_events(self) -> AsyncIterator[CallEvent]:
        while True:
            message = await read_message(self.reader, min(0xFFFF, self.limits.max_message_bytes))
            if message is None:
                return
            event = self.parse(message)
            if event is not None:
                yield event
                if isinstance(event, Hangup):
                    return

    def parse(self, message: Message) -> CallEvent | None:
        kind, payload = message.kind, message.payload
        if self.call_id is None:
            if kind != KIND_UUID:
                raise ProtocolError(
                    f"first message must be the UUID (kind 0x01), not kind 0x{kind:02x}"
                )
            if len(payload) != 16:
                raise ProtocolError(
                    f"UUID payload of {len(payload)} bytes, expected 16", CLOSE_INVALID
                )
            self.call_id = str(uuid.UUID(bytes=payload))
            return CallStart(self.call_id, PLATFORM)
        if kind == KIND_AUDIO:
            if len(payload) % 2:
                raise ProtocolError(
                    f"audio payload of {len(payload)} bytes: not whole 16-bit samples",
                    CLOSE_INVALID,
                )
            if not payload:
                return None
            return Audio(self._upsample.process(pcm16_to_float(pcm16_from_bytes(payload))))
        if kind == KIND_DTMF:
            if len(payload) != 1:
                raise ProtocolError(
                    f"DTMF payload of {len(payload)} bytes, expected 1", CLOSE_INVALID
                )
            digit = payload.decode("ascii", errors="replace")
            if digit in DIGITS:
                return Digit(digit)
            log.info("audiosocket: ignoring DTMF %r", digit)
            return None
        if kind == KIND_HANGUP:
            return Hangup("hangup")
        if kind == KIND_ERROR:
            code = payload[0] if payload else 0
            self.errors.append(code)
            log.warning(
                "audiosocket call %s: error 0x%02x (%s)",
                self.call_id,
                code,
                ERROR_CODES.get(code, "unknown"),
            )
            return Hangup("caller hung up") if code == 0x01 else None
        if kind == KIND_UUID:
            raise ProtocolError("a second UUID message")
        if kind in HIGHER_RATE_KINDS:
            raise ProtocolError(
                f"audio kind 0x{kind:02x} (not 8 kHz slin) is not supported; "
                "use AudioSocket without a codec option",
                CLOSE_UNSUPPORTED,
            )
        raise ProtocolError(f"unknown message kind 0x{kind:02x}")

    # -- outbound --------------------------------------------------------------------
    async def _write(self, data: bytes) -> None:
        if self._closed:
            return
        self.writer.write(data)
        try:
            async with asyncio.timeout(self.limits.send_timeout_s):
                await self.writer.drain()
        except TimeoutError:
            # Asterisk stopped reading: drop the connection (its buffer with it) and end the call.
            log.warning(
                "audiosocket call %s: not read for %.1f s; closing",
                self.call_id,
                self.limits.send_timeout_s,
            )
            self._closed = True
            self.writer.transport.abort()
            self.send_failed()
            raise ConnectionError("the AudioSocket peer stopped reading") from None

    async def _send_frame(self, frame: bytes) -> None:
        await self._write(pack(KIND_AUDIO, frame))

    async def play(self, audio: np.ndarray, mark: str) -> None:
        pcm = float_to_pcm16(resample(audio, SAMPLE_RATE, WIRE_RATE)).astype("<i2").tobytes()
        self.playout.enqueue(split_frames(pcm, FRAME_BYTES, b"\0\0"), mark)

    async def clear(self) -> None:
        self.playout.clear()  # no flush command exists: what is not sent is not heard

    async def hang_up(self) -> None:
        if not self._closed:
            await self.playout.close()
            with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                await self._write(pack(KIND_HANGUP))
            self._closed = True
            with contextlib.suppress(ConnectionError, OSError, RuntimeError, TimeoutError):
                self.writer.close()
                async with asyncio.timeout(self.limits.send_timeout_s):
                    await self.writer.wait_closed()
            if (
                not self.writer.transport.is_closing()
                or self.writer.transport.get_write_buffer_size()
            ):
                self.writer.transport.abort()  # unsent bytes a stalled peer will never take
        await self.stop_reading()

    async def hand_off(self, target: HandOff) -> None:
        log.info(
            "audiosocket call %s handed off: forvaltning %s, queue %s (intent %s); "
            "sending hangup, the dialplan continues",
            target.call_id,
            target.forvaltning,
            target.queue,
            target.intent,
        )
        await self.hang_up()


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_sources(sources: list[str]) -> list[Network]:
    return [ipaddress.ip_network(s, strict=False) for s in sources]


def source_allowed(peer: object, allowed: list[Network]) -> bool:
    """Whether a peer address (a socket's peername) lies in one of the allowed networks."""
    host = peer[0] if isinstance(peer, tuple) and peer else None
    if not isinstance(host, str):
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    return any(address.version == net.version and address in net for net in allowed)


DEFAULT_SOURCES = ["127.0.0.1", "::1"]


async def serve(
    host: str,
    port: int,
    run_channel: Callable[[AudioSocketChannel], Awaitable[None]],
    sources: list[str] | None = None,
    limits: Limits | None = None,
) -> asyncio.Server:
    """Start the AudioSocket TCP server; each connection from an allowed source address
    becomes one call (others are logged and closed at once)."""
    allowed = parse_sources(DEFAULT_SOURCES if sources is None else sources)

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if not source_allowed(peer, allowed):
            log.warning(
                "audiosocket: refused a connection from %s (not in security.audiosocket_sources)",
                peer[0] if isinstance(peer, tuple) and peer else peer,
            )
            writer.close()  # nothing was read or written: a plain close, at once
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # 20 ms frames, no Nagle
        channel = AudioSocketChannel(reader, writer, limits)
        try:
            await run_channel(channel)
        except Exception:  # one broken call must not go unnoticed, nor affect the server
            log.exception("audiosocket call %s failed", channel.call_id)
        finally:
            await channel.hang_up()

    return await asyncio.start_server(on_connection, host, port)


# -- the platform side, for `voicebot call` ------------------------------------------
class TcpConnection:
    """An AudioSocket TCP connection with the small part of a websockets connection's
    interface the simulator uses: send(), async iteration over whole messages, close()."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, url: str) -> TcpConnection:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        if parts.scheme != "tcp" or not parts.hostname or not parts.port:
            raise ValueError(f"AudioSocket needs a tcp://HOST:PORT URL, not {url!r}")
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Message]:
        while (message := await read_message(self.reader)) is not None:
            yield message

    async def close(self) -> None:
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            self.writer.close()
            await self.writer.wait_closed()

    async def __aenter__(self) -> TcpConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AudioSocketPlatform:
    """Speaks to a bot as Asterisk's AudioSocket does: UUID, 20 ms slin frames, DTMF, hangup."""

    protocol = PLATFORM
    wire_rate = WIRE_RATE
    frame_ms = 20
    paced = True
    acks_cleared_marks = False
    transport = TcpConnection  # the simulator connects with this instead of a WebSocket

    def __init__(self, ws: CallerSocket, call_id: str, caller: str | None) -> None:
        self.ws = ws
        self.call_id = call_id
        self.caller = caller  # AudioSocket carries no caller number

    @staticmethod
    def new_call_id() -> str:
        return str(uuid.uuid4())

    async def start(self, params: dict[str, str]) -> None:
        await self.ws.send(pack(KIND_UUID, uuid.UUID(self.call_id).bytes))

    async def send_audio(self, pcm16: np.ndarray, timestamp_ms: int) -> None:
        await self.ws.send(pack(KIND_AUDIO, np.asarray(pcm16, dtype="<i2").tobytes()))

    async def send_dtmf(self, digit: str) -> None:
        await self.ws.send(pack(KIND_DTMF, digit.encode("ascii")))

    async def ack_mark(self, name: str) -> None:  # AudioSocket has no marks
        return None

    async def stop(self) -> None:
        await self.ws.send(pack(KIND_HANGUP))

    def decode(self, message: Message) -> Decoded:
        if message.kind == KIND_AUDIO:
            if len(message.payload) != FRAME_BYTES:
                raise ProtocolError(
                    f"the bot sent {len(message.payload)} audio bytes; expected {FRAME_BYTES}"
                )
            return "audio", pcm16_from_bytes(message.payload)
        if message.kind == KIND_HANGUP:
            return "hangup", None
        raise ProtocolError(
            f"the bot sent kind 0x{message.kind:02x}; a server may send only audio and hangup"
        )


# -- the registry entry ----------------------------------------------------------------
@dataclass(frozen=True)
class AudioSocketOptions:
    """A plain TCP server next to the HTTP one. Port 0 = any free port."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9092
    sources: tuple[str, ...] | list[str] = tuple(DEFAULT_SOURCES)  # AudioSocket has no credentials


async def listen(
    options: AudioSocketOptions, run_channel: RunChannel, limits: Limits
) -> asyncio.Server | None:
    if not options.enabled:
        return None
    return await serve(options.host, options.port, run_channel, list(options.sources), limits)


platform = Platform(PLATFORM, client=AudioSocketPlatform, options=AudioSocketOptions, serve=listen)
