"""The one small interface between phone platforms and the call session.

In: CallStart, Audio (16 kHz float32 mono), Digit, Played (a mark's audio finished, or
was discarded by a clear), Hangup. Out: play(audio, mark), clear(), hand_off(), hang_up().
Each platform module implements MediaChannel for its wire format; the session sees only
this module's types.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("voicebot.telephony")

SAMPLE_RATE = 16000  # what the session hears and speaks


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
class HandOff:
    """Where a call goes when it leaves the bot. The queue entry is written before this."""

    call_id: str
    forvaltning: str
    queue: str
    intent: str | None = None
    reason: str = ""


class ProtocolError(Exception):
    """The platform sent something its protocol does not allow; the call is closed."""


class MediaChannel(ABC):
    """One call's media connection to a phone platform."""

    platform: str = "unknown"
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
