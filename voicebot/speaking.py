"""The bot's side of the line: prompts sent sentence by sentence, each with its own mark.

The marks coming back (Played) say which sentences the caller heard. When the caller talks
over the bot (barge-in) playback stops at once, and the sentences cut off are kept: a "mhm"
was not a turn, and the bot goes on where it was cut off (`resume`). `wait_until_heard` lets
a hand-off wait until its announcement has played.

Recorded prompts (voicebot/prompts.py) go through the same marks: a text is cut into the
longest recorded texts and single synthesized sentences, from the start, at sentence ends
("<answer> <after_answer>" plays two recordings), and each piece is sent with its own mark.
A recording is one piece with one mark whatever its length: a barge-in during it cuts off
all of it, and `resume` plays it again from its start.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Sequence

import numpy as np

from telephony.base import MediaChannel, Played
from voicebot import metrics
from voicebot.prompts import RecordedSpeaker, Recordings
from voicebot.tts import TextToSpeech, Voice
from voicebot.understanding import normalize

Publish = Callable[..., None]  # events.publish bound to the call: publish(kind, **data)
Spoken = tuple[str, Voice | None, str | None]  # a text, its voice and language

_SOUNDS = {"mhm", "mm", "hm", "aha", "okay", "ok"}
# A listener's words per language; a language not listed uses all of them.
BACKCHANNELS: dict[str, frozenset[str]] = {
    "da": frozenset(_SOUNDS | {"ja", "jo", "jah", "nå", "javel", "præcis", "nemlig"}),
    "en": frozenset(_SOUNDS | {"yes", "yeah", "yep", "right", "sure", "uh", "huh", "i", "see"}),
}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def pieces_of(
    text: str, language: str | None, recordings: Recordings | None
) -> list[tuple[str, np.ndarray | None]]:
    """The text as it is played: each piece the longest run of sentences that is a recorded
    text (with its audio), or else one sentence to synthesize (None)."""
    sentences = split_sentences(text)
    if recordings is None or not len(recordings) or language is None:
        return [(s, None) for s in sentences]
    pieces: list[tuple[str, np.ndarray | None]] = []
    start = 0
    while start < len(sentences):
        for end in range(len(sentences), start, -1):
            candidate = " ".join(sentences[start:end])
            found = recordings.find(candidate, language)
            if found is not None:
                pieces.append((candidate, found.audio))
                start = end
                break
        else:
            pieces.append((sentences[start], None))
            start += 1
    return pieces


def is_backchannel(text: str, language: str = "da") -> bool:
    """A listener's "mhm", "ja ja", "okay", "yeah right" — or nothing recognisable at all."""
    words = normalize(text).split()
    known = BACKCHANNELS.get(language) or frozenset().union(*BACKCHANNELS.values())
    return len(words) <= 3 and all(w in known for w in words)


class PromptPlayer:
    """One call's outgoing prompts and what has become of them."""

    def __init__(self, channel: MediaChannel, speaker: TextToSpeech, publish: Publish) -> None:
        self.channel = channel
        self.speaker = speaker
        self.publish = publish
        # Marks sent and not yet played → their sentence, its voice and language.
        self._playing: dict[str, Spoken] = {}
        self._unheard: list[Spoken] = []  # sentences cut off by the last barge-in
        self._done = asyncio.Event()
        self._done.set()
        self._prompts = 0
        self.recordings = speaker.recordings if isinstance(speaker, RecordedSpeaker) else None

    @property
    def speaking(self) -> bool:
        return bool(self._playing)

    @property
    def cut_off(self) -> bool:
        """The last barge-in cut sentences off that the caller has not heard."""
        return bool(self._unheard)

    async def say(
        self,
        text: str,
        purpose: str,
        voice: Voice | None = None,
        language: str | None = None,
        then: Sequence[Spoken] = (),
    ) -> None:
        """Send a prompt sentence by sentence, each with its own mark, in `voice` (the
        speaker's own when None), followed by the parts in `then` in their own voices (the
        greeting's "For English, just speak English."): the first sentence goes out as soon
        as it is rendered, and the marks tell which sentences the caller heard before a
        barge-in. One prompt, one `bot_said` event with the whole text."""
        parts = [(text, voice, language), *then]
        self._prompts += 1
        self.publish(
            "bot_said",
            text=" ".join(part for part, _, _ in parts),
            mark=f"{purpose}-{self._prompts}",
            heard=self.channel.can_play,
            language=language,
        )
        if not self.channel.can_play:
            return  # a listen-only connection: the platform's own flow does the talking
        self._done.clear()
        pieces = [
            (piece, v, lang, recorded)
            for part, v, lang in parts
            for piece, recorded in pieces_of(part, lang, self.recordings)
        ]
        for i, (sentence, sentence_voice, sentence_language, recorded) in enumerate(pieces):
            audio = (
                recorded
                if recorded is not None
                else await asyncio.to_thread(self.speaker.speak, sentence, sentence_voice)
            )
            mark = f"{purpose}-{self._prompts}.{i}"
            self._playing[mark] = (sentence, sentence_voice, sentence_language)
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
        """Say again what the last barge-in cut off, each sentence in its own voice."""
        unheard, self._unheard = self._unheard, []
        if unheard:
            (text, voice, language), *rest = unheard
            await self.say(text, "resume", voice, language, then=rest)

    async def wait_until_heard(self, timeout_s: float = 30.0) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # arrives as the event is set, and the call would never end.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._done.wait()
