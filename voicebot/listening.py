"""The caller's side of the line: audio in, typed caller input out.

Every 32 ms of caller audio goes through Silero VAD; the Endpointer finds where the caller's
turn starts and ends. While the caller speaks, partial transcripts are decoded now and then
(LocalAgreement-2 commits the words two hypotheses agree on) for the agent console. When the
caller pauses, the final decode starts at once (a speculation), hidden inside the end-of-turn
silence. Speech while the bot talks is a barge-in.

`Listener.hear` is the one place where a turn ends, early or late:
- late: after endpointing.silence_ms of silence, or at endpointing.max_turn_s;
- early: when the speculation for this very pause is a confident, complete request and the
  silence has lasted endpointing.early_silence_ms, or when a partial heard an emergency.
Background decodes only return results; `hear` reads the finished ones and decides.

Every decode is made in `languages`: one language once the call's is known (forced), or
several while it is still to be found, when Whisper detects which one it hears and the
decode is made in that one. Each transcript says its language, and is understood in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from telephony.base import SAMPLE_RATE
from voicebot import metrics
from voicebot.asr import AsrResult, LocalAgreement
from voicebot.audio_buffer import StreamBuffer
from voicebot.privacy import mask_numbers
from voicebot.services import Services
from voicebot.understanding import Understanding
from voicebot.vad import ONSET_MAX_BACK_S, ONSET_NOISE_S, Endpointer, TurnEvent, speech_onset

PRE_ROLL_S = 0.6  # audio kept before the detected onset: a short first word ("hej,") may
# not trip the VAD, and Whisper garbles speech that starts at the very first sample
TAIL_S = 0.15  # audio kept after the last speech window
ONSET_LOOKBACK_S = ONSET_MAX_BACK_S + ONSET_NOISE_S  # what speech_onset reads before the onset
BARGE_IN_MS = 200  # caller speech this long during bot playback stops the playback
BARGE_IN_MS_ECHO = 400  # the same where the line echoes the bot's own voice (no AEC)
SPECULATE_AFTER_MS = 96  # silence after which the final decode starts, ahead of the endpoint

T = TypeVar("T")
Publish = Callable[..., None]  # events.publish bound to the call: publish(kind, **data)
# A supervised task of the call
Spawn = Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any]]


# -- what the caller gives the dialogue ----------------------------------------------------
@dataclass(frozen=True)
class Transcript:
    """What the recogniser heard in a turn. `text` is masked: no number reaches the events,
    the logs, the classifier or the queue."""

    result: AsrResult
    text: str
    language: str  # what it was decoded (and is understood) in
    understanding: Understanding | None = None  # classified already, during the pause


@dataclass(frozen=True)
class SpokenTurn:
    """One caller utterance, from onset to the end of the turn."""

    index: int
    audio: np.ndarray
    barged_in: bool  # it began while the bot was talking, and stopped the bot
    # The decode (and understanding) made in the pause this turn ended in: the same audio.
    guess: asyncio.Task[Transcript | None] | None = None


@dataclass(frozen=True)
class KeyPress:
    digit: str


@dataclass(frozen=True)
class Silence:
    """The caller said nothing for endpointing.no_input_s after the bot finished."""


CallerInput = SpokenTurn | KeyPress | Silence


@dataclass(frozen=True)
class BargeIn:
    """The caller has talked over the bot long enough: stop the bot."""


Heard = SpokenTurn | BargeIn


@dataclass
class _OpenTurn:
    index: int
    start_sample: int  # where the VAD called speech (barge-in and turn length count from it)
    audio_start: int  # where the speech began (vad.speech_onset): decodes start before it
    agreement: LocalAgreement = field(default_factory=LocalAgreement)
    partial_samples: int = 0  # audio length at the last partial decode
    barged_in: bool = False
    emergency: asyncio.Task[bool] | None = None  # the last partial decode: an emergency word?
    speculation: asyncio.Task[Transcript | None] | None = None
    speculation_end: int = -1  # the pause (stream sample) the speculation decoded up to


def finished_result(task: asyncio.Task[T] | None) -> T | None:
    """A background task's result once it has one; None while running, cancelled or failed
    (a failure is the supervisor's to report, see CallSession._supervise)."""
    if task is None or not task.done() or task.cancelled() or task.exception() is not None:
        return None
    return task.result()


class Listener:
    """One call's listening: VAD, endpointing, partials, speculation, barge-in."""

    def __init__(
        self, services: Services, echo_cancelled: bool, publish: Publish, spawn: Spawn
    ) -> None:
        self.services = services
        self.settings = services.settings
        self.publish = publish
        self.spawn = spawn
        self.vad = services.vad.stream()
        self.endpointer = Endpointer(services.settings.endpointing)
        self.barge_in_ms = BARGE_IN_MS if echo_cancelled else BARGE_IN_MS_ECHO
        self.turns = 0
        # Audio of the call so far, bounded to what one turn may need.
        self._max_samples = int(
            (self.settings.endpointing.max_turn_s + PRE_ROLL_S + ONSET_LOOKBACK_S + 1) * SAMPLE_RATE
        )
        self._audio = StreamBuffer(self._max_samples)  # appends cost the frame, not the buffer
        self._turn: _OpenTurn | None = None
        self._partial: asyncio.Task[bool] | None = None  # one partial decode at a time
        # What decodes are made in (the session's to set): the call's language first.
        self.languages: tuple[str, ...] = (self.settings.asr.language,)

    @property
    def stream_samples(self) -> int:
        return self._audio.end

    @property
    def in_turn(self) -> bool:
        return self._turn is not None

    # == audio in, turns out ================================================================
    def hear(self, samples: np.ndarray, bot_speaking: bool) -> list[Heard]:
        self._append_audio(samples)
        heard: list[Heard] = []
        for endpoint in self.endpointer.update(self.vad.push(samples)):
            if endpoint.event is TurnEvent.SPEECH_START:
                self.turns += 1
                self._turn = _OpenTurn(self.turns, endpoint.sample, self._onset(endpoint.sample))
                self.publish("speech_start", stream_ms=endpoint.sample * 1000 // SAMPLE_RATE)
            elif self._turn is not None:
                heard.append(self._end_turn(endpoint.sample))
        turn = self._turn
        if turn is None:
            return heard
        # Voiced time only: the silence after a short "mhm" must not add up to a barge-in.
        voiced_ms = (self.endpointer.last_speech - turn.start_sample) * 1000 // SAMPLE_RATE
        if bot_speaking and voiced_ms >= self.barge_in_ms and not turn.barged_in:
            turn.barged_in = True
            heard.append(BargeIn())
        if self.endpointer.in_speech:
            self._maybe_partial(turn)
            self._maybe_speculate(turn)
            if self._ends_early(turn):
                heard.append(self._end_turn(self.endpointer.force_end().sample))
        return heard

    def _ends_early(self, turn: _OpenTurn) -> bool:
        """The turn ends before endpointing.silence_ms: too long, an emergency heard in a
        partial ("ring 112" now), or a confident, complete request in this pause."""
        ep = self.settings.endpointing
        speech_ms = (self.stream_samples - turn.audio_start) * 1000 // SAMPLE_RATE
        if speech_ms >= ep.max_turn_s * 1000 or finished_result(turn.emergency):
            return True
        guess = finished_result(turn.speculation)
        return (
            guess is not None
            and guess.understanding is not None
            and turn.speculation_end == self.endpointer.last_speech
            and self.endpointer.silence_ms >= ep.early_silence_ms
            and self._confident(guess.understanding, guess.language)
        )

    def _confident(self, u: Understanding, language: str) -> bool:
        """Confident as the dialogue will judge it: by the turn's language's accept threshold
        (an English guess at 0.7 is a confirm question there, not a finished request)."""
        accept = self.settings.dialogue.thresholds(language).accept
        return u.intent != "out_of_scope" and (u.rule is not None or u.confidence >= accept)

    def _end_turn(self, end_sample: int) -> SpokenTurn:
        turn, self._turn = self._turn, None
        assert turn is not None
        guess = turn.speculation
        if guess is not None and turn.speculation_end != end_sample:
            guess.cancel()  # it decoded a pause the caller spoke through
            guess = None
        audio = self._slice(
            turn.audio_start - int(PRE_ROLL_S * SAMPLE_RATE),
            end_sample + int(TAIL_S * SAMPLE_RATE),
        )
        self.publish("speech_end", turn=turn.index, stream_ms=end_sample * 1000 // SAMPLE_RATE)
        return SpokenTurn(turn.index, audio, turn.barged_in, guess)

    # == the transcript of a finished turn ===================================================
    async def transcribe(self, turn: SpokenTurn) -> Transcript:
        """The speculation's transcript when it decoded this turn's audio, else a final
        decode (which raises asr.Overloaded when too many wait)."""
        if turn.guess is not None:
            await asyncio.wait({turn.guess})
            guess = finished_result(turn.guess)
            if guess is not None:
                metrics.ASR_SECONDS.labels("final").observe(guess.result.asr_ms / 1000)
                return guess
        # The whole turn again, not only the uncommitted words: forcing the committed
        # prefix saved no time and cost WER (README, "Streaming partials").
        result = await self.services.asr.final(
            turn.audio, self.services.domain_prompt, self.languages
        )
        metrics.ASR_SECONDS.labels("final").observe(result.asr_ms / 1000)
        return Transcript(result, mask_numbers(result.text), self._language_of(result))

    def _language_of(self, result: AsrResult) -> str:
        """The language a result was decoded in (the first asked for when it does not say)."""
        return result.language if result.language in self.languages else self.languages[0]

    # == partial transcripts =================================================================
    def _maybe_partial(self, turn: _OpenTurn) -> None:
        interval = self.settings.asr.partial_interval_ms * SAMPLE_RATE // 1000
        if (
            not self.settings.asr.partials
            or self.services.active_calls > self.settings.asr.partials_max_calls
            or (self._partial is not None and not self._partial.done())
            or self.stream_samples - max(turn.partial_samples, turn.start_sample) < interval
        ):
            return
        turn.partial_samples = self.stream_samples
        audio = self._slice(turn.audio_start - int(PRE_ROLL_S * SAMPLE_RATE), self.stream_samples)
        self._partial = turn.emergency = self.spawn(self._decode_partial(turn, audio), "partial")

    async def _decode_partial(self, turn: _OpenTurn, audio: np.ndarray) -> bool:
        """Publish the partial transcript; True when it holds an emergency trigger phrase."""
        result = await self.services.asr.partial(audio, self.services.domain_prompt, self.languages)
        if result is None or turn is not self._turn:
            return False
        metrics.ASR_SECONDS.labels("partial").observe(result.asr_ms / 1000)
        turn.agreement.update(result.words)
        masked = mask_numbers(result.text)
        self.publish(
            "partial", text=masked, committed=mask_numbers(" ".join(turn.agreement.committed))
        )
        classifier = self.services.classifier_for(self._language_of(result))
        understanding = classifier.classify(masked, explain=False)
        return understanding.intent == "emergency" and understanding.rule is not None

    # == deciding during the pause ===========================================================
    # The caller has stopped for a moment; the turn ends only after endpointing.silence_ms.
    # Decoding now instead of then hides the decode inside that silence, and when the
    # result is a confident, complete request the turn may end after the shorter
    # endpointing.early_silence_ms. If the caller speaks again, the result is dropped.
    def _maybe_speculate(self, turn: _OpenTurn) -> None:
        pause_end = self.endpointer.last_speech
        if (
            not self.settings.asr.speculative
            or self.endpointer.silence_ms < SPECULATE_AFTER_MS
            or turn.speculation_end == pause_end
        ):
            return
        if turn.speculation is not None:
            turn.speculation.cancel()  # a guess for an earlier pause: the caller spoke on
        turn.speculation_end = pause_end
        audio = self._slice(
            turn.audio_start - int(PRE_ROLL_S * SAMPLE_RATE), pause_end + int(TAIL_S * SAMPLE_RATE)
        )
        turn.speculation = self.spawn(self._speculate(turn, pause_end, audio), "speculation")

    async def _speculate(
        self, turn: _OpenTurn, pause_end: int, audio: np.ndarray
    ) -> Transcript | None:
        languages = self.languages
        result = await self.services.asr.speculative(audio, self.services.domain_prompt, languages)
        if result is None or (turn is self._turn and self.endpointer.last_speech != pause_end):
            return None  # no decoder free, or the caller spoke on
        if languages != self.languages:
            return None  # the call changed language meanwhile: decode the turn again
        masked = mask_numbers(result.text)
        language = self._language_of(result)
        # The turn's one classification (with the explanation for the agent): if the turn
        # ends in this pause, the dialogue uses it as it is.
        classify = self.services.classifier_for(language).classify
        understanding = await asyncio.to_thread(classify, masked)
        return Transcript(result, masked, language, understanding)

    # == the audio buffer ====================================================================
    def close(self) -> None:
        """The call is over: let the audio go now, not when the cycle collector next runs."""
        self._audio.clear()
        self._turn = None
        self._partial = None

    def _onset(self, vad_onset: int) -> int:
        """The stream position where the speech the VAD called at `vad_onset` began."""
        first = max(self._audio.offset, vad_onset - int(ONSET_LOOKBACK_S * SAMPLE_RATE))
        return first + speech_onset(self._slice(first, vad_onset), vad_onset - first)

    def _append_audio(self, samples: np.ndarray) -> None:
        self._audio.append(samples)

    def _slice(self, start: int, end: int) -> np.ndarray:
        return self._audio.slice(start, end)
