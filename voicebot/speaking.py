"""The bot's side of the line: prompts sent sentence by sentence, each with its own mark.

The marks coming back (Played) say which sentences the caller heard. When the caller talks
over the bot (barge-in) playback stops at once, and the sentences cut off are kept: a "mhm"
was not a turn, and the bot goes on where it was cut off (`resume`). `wait_until_heard` lets
a hand-off wait until its announcement has played.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable

from telephony.base import MediaChannel, Played
from voicebot import metrics
from voicebot.tts import TextToSpeech
from voicebot.understanding import normalize

Publish = Callable[..., None]  # events.publish bound to the call: publish(kind, **data)

BACKCHANNELS = {
    "mhm",
    "mm",
    "hm",
    "ja",
    "jo",
    "jah",
    "okay",
    "ok",
    "nå",
    "aha",
    "javel",
    "præcis",
    "nemlig",
}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def is_backchannel(text: str) -> bool:
    """A listener's "mhm", "ja ja", "okay" — or nothing recognisable at all."""
    words = normalize(text).split()
    return len(words) <= 3 and all(w in BACKCHANNELS for w in words)


class PromptPlayer:
    """One call's outgoing prompts and what has become of them."""

    def __init__(self, channel: MediaChannel, speaker: TextToSpeech, publish: Publish) -> None:
        self.channel = channel
        self.speaker = speaker
        self.publish = publish
        self._playing: dict[str, str] = {}  # marks sent and not yet played → their sentence
        self._unheard: list[str] = []  # sentences cut off by the last barge-in
        self._done = asyncio.Event()
        self._done.set()
        self._prompts = 0

    @property
    def speaking(self) -> bool:
        return bool(self._playing)

    @property
    def cut_off(self) -> bool:
        """The last barge-in cut sentences off that the caller has not heard."""
        return bool(self._unheard)

    async def say(self, text: str, purpose: str) -> None:
        """Send a prompt sentence by sentence, each with its own mark: the first sentence
        goes out as soon as it is rendered, and the marks tell which sentences the caller
        heard before a barge-in."""
        self._prompts += 1
        self.publish(
            "bot_said", text=text, mark=f"{purpose}-{self._prompts}", heard=self.channel.can_play
        )
        if not self.channel.can_play:
            return  # a listen-only connection: the platform's own flow does the talking
        self._done.clear()
        for i, sentence in enumerate(split_sentences(text)):
            audio = await asyncio.to_thread(self.speaker.speak, sentence)
            mark = f"{purpose}-{self._prompts}.{i}"
            self._playing[mark] = sentence
            await self.channel.play(audio, mark)

    def on_played(self, played: Played) -> None:
        self._playing.pop(played.mark, None)
        if not self._playing:
            self._done.set()
        self.publish("played", mark=played.mark, interrupted=played.interrupted)

    async def barge_in(self) -> None:
        """The caller talks over the bot: stop the bot now; the marks say what was heard."""
        metrics.BARGE_INS.inc()
        self._unheard = list(self._playing.values())
        self.publish("barge_in", marks=list(self._playing))
        await self.channel.clear()

    async def stop(self) -> None:
        """Stop playback for a key press (nothing is kept to resume)."""
        if self.speaking:
            await self.channel.clear()

    async def resume(self) -> None:
        """Say again what the last barge-in cut off."""
        unheard, self._unheard = self._unheard, []
        await self.say(" ".join(unheard), "resume")

    async def wait_until_heard(self, timeout_s: float = 30.0) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # arrives as the event is set, and the call would never end.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._done.wait()
