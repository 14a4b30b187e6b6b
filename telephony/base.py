"""The one small interface between phone platforms and the call session.

In: CallStart, Audio (16 kHz float32 mono), Digit, Played (a mark's audio finished, or
was discarded by a clear), Hangup. Out: play(audio, mark), clear(), hand_off(), hang_up().
Each platform module implements MediaChannel for its wire format; the session sees only
this module's types.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("voicebot.telephony")

SAMPLE_RATE = 16000  # what the session hears and speaks
FRAME_MS = 20  # one media frame, as the platforms send it and the simulator paces it
DIGITS = "0123456789*#"  # the DTMF keys a platform may report
# Marks remembered while the platform has not echoed them (the bot sends one per sentence).
MAX_MARKS = 64


@dataclass(frozen=True)
class CallStart:
    call_id: str
    platform: str
    caller: str | None = None
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # 16 kHz float32 mono


@dataclass(frozen=True)
class Digit:
    digit: str


@dataclass(frozen=True)
class Played:
    mark: str
    interrupted: bool = False  # True: discarded by a clear, not heard in full


@dataclass(frozen=True)
class Hangup:
    reason: str = "hangup"


CallEvent = CallStart | Audio | Digit | Played | Hangup


@dataclass(frozen=True)
class Limits:
    """What one connection may cost (security.max_message_bytes, security.send_timeout_s)."""

    max_message_bytes: int = 64 * 1024
    send_timeout_s: float = 10.0


@dataclass(frozen=True)
class HandOff:
    """Where a call goes when it leaves the bot. The queue entry is written before this."""

    call_id: str
    forvaltning: str
    queue: str
    intent: str | None = None
    reason: str = ""


# A call id names one call everywhere (queue record, event stream, console URL): letters,
# digits and . _ : + = @ - only (every platform's ids fit: CA…, UUIDs, v3:…, 1712.42), no
# wildcard, no path separator, at most 128 characters.
CALL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+=@-]{0,127}")


def valid_call_id(call_id: str) -> bool:
    return CALL_ID.fullmatch(call_id) is not None


# WebSocket close codes (RFC 6455 §7.4.1) for the ways a peer can break its protocol.
CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED = 1003  # a kind of data we do not take: binary where text is due, a codec
CLOSE_INVALID = 1007  # data that does not parse: malformed JSON, bad base64
CLOSE_POLICY = 1008  # anything else the protocol forbids: order of events, authentication
CLOSE_TOO_BIG = 1009  # a message over security.max_message_bytes
CLOSE_INTERNAL = 1011  # our fault


class ProtocolError(Exception):
    """The platform sent something its protocol does not allow; the call is closed, on a
    WebSocket with `close_code` (the message, shortened, is the close reason)."""

    def __init__(self, message: str, close_code: int = CLOSE_POLICY) -> None:
        super().__init__(message)
        self.close_code = close_code


def close_reason(error: BaseException | None) -> tuple[int, str]:
    """(code, reason) for closing a WebSocket after `error` (None: a normal close). The
    reason is cut to the protocol's 123 bytes."""
    if error is None:
        return CLOSE_NORMAL, ""
    code = error.close_code if isinstance(error, ProtocolError) else CLOSE_INTERNAL
    reason = str(error).encode("utf-8")[:120].decode("utf-8", errors="ignore")
    return code, reason


def too_big(size: int, limit: int, what: str = "message") -> ProtocolError:
    return ProtocolError(f"{what} of {size} bytes exceeds the limit of {limit}", CLOSE_TOO_BIG)


class MediaChannel(ABC):
    """One call's media connection to a phone platform."""

    platform: str = "unknown"
    # The protocol error that ended the call, if one did: its close code goes on the wire.
    error: ProtocolError | None = None
    # False where the platform does no echo cancellation (Asterisk): the bot's own voice
    # comes back on the caller's channel, so barge-in needs more evidence.
    echo_cancelled: bool = True

    @property
    def can_play(self) -> bool:
        """False on listen-only connections (Genesys AudioHook Monitor): nothing said is heard."""
        return True

    @abstractmethod
    def events(self) -> AsyncIterator[CallEvent]:
        """Inbound call events until the call ends (a Hangup is always the last one)."""

    @abstractmethod
    async def play(self, audio: np.ndarray, mark: str) -> None:
        """Queue 16 kHz float32 audio for the caller; a Played(mark) follows when it has played."""

    @abstractmethod
    async def clear(self) -> None:
        """Stop playback now (barge-in): queued audio is dropped, its marks come back interrupted."""

    @abstractmethod
    async def hang_up(self) -> None:
        """End the call from the bot's side."""

    async def hand_off(self, target: HandOff) -> None:
        """Leave the bot towards a person. Default: end the media leg; platforms with a
        native transfer override this."""
        await self.hang_up()
