"""One phone call, from the socket to the queue. Read this module top to bottom.

1. The platform adapter (telephony/*) gives us CallStart, then Audio, Digit, Played, Hangup.
2. We greet: the caller hears that this is an automatic assistant and how to reach a person.
3. Every 32 ms of caller audio goes through Silero VAD; the Endpointer finds where the
   caller's turn starts and ends. Speech while the bot talks stops the bot (barge-in).
4. While the caller speaks, partial transcripts are decoded now and then (LocalAgreement-2
   commits the words two hypotheses agree on) for the agent console; an emergency word in
   a partial acts at once.
5. When the caller pauses, the final decode starts at once, hidden inside the end-of-turn
   silence; a confident, complete request ends the turn after a shorter silence. Then the
   intent classifier names the errand and the dialogue policy decides.
6. Acting: answer by voice, ask back, or route — the routed call is written to its
   forvaltning's queue first, then the caller hears where they go and the call is handed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from dataclasses import dataclass, field

import numpy as np

from telephony.base import Audio, CallStart, Digit, HandOff, Hangup, MediaChannel, Played
from voicebot import metrics
from voicebot.asr import SAMPLE_RATE, LocalAgreement, Overloaded
from voicebot.dialogue import Decision, DialoguePolicy
from voicebot.privacy import mask_numbers
from voicebot.queues import RoutedCall, mask_caller
from voicebot.services import Services
from voicebot.understanding import normalize
from voicebot.vad import Endpointer, TurnEvent

log = logging.getLogger("voicebot.session")

PRE_ROLL_S = 0.6  # audio kept before the detected onset: a short first word ("hej,") may
# not trip the VAD, and Whisper garbles speech that starts at the very first sample
TAIL_S = 0.15  # audio kept after the last speech window
BARGE_IN_MS = 200  # caller speech this long during bot playback stops the playback
BARGE_IN_MS_ECHO = 400  # the same where the line echoes the bot's own voice (no AEC)
START_TIMEOUT_S = 10.0
BUSY_PROMPT_AFTER_S = 1.5  # a caller never waits silently: say "et øjeblik" after this
NO_INPUT = "no-input"
SPECULATE_AFTER_MS = 96  # silence after which the final decode starts, ahead of the endpoint
SHORT_SOUND_S = 1.0  # shorter sounds that Whisper judges to be no speech are ignored


@dataclass
class Turn:
    """One caller utterance, from onset to the decision."""

    index: int
    start_sample: int
    end_sample: int = 0
    audio: np.ndarray | None = None
    agreement: LocalAgreement = field(default_factory=LocalAgreement)
    partial_samples: int = 0  # audio length at the last partial decode
    barged_in: bool = False
    # A final decode started early, in the pause after `speculation_end` (see _maybe_speculate).
    speculation: asyncio.Task | None = None
    speculation_end: int = -1
    confident_end: int = -1  # the speculation there was a confident, complete request


BACKCHANNELS = {"mhm", "mm", "hm", "ja", "jo", "jah", "okay", "ok", "nå", "aha", "javel", "præcis", "nemlig"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def is_backchannel(text: str) -> bool:
    """A listener's "mhm", "ja ja", "okay" — or nothing recognisable at all."""
    words = normalize(text).split()
    return len(words) <= 3 and all(w in BACKCHANNELS for w in words)


class CallSession:
    def __init__(self, channel: MediaChannel, services: Services) -> None:
        self.channel = channel
        self.services = services
        self.settings = services.settings
        self.catalogue = services.catalogue
        self.policy = DialoguePolicy(services.catalogue, services.classifier, services.settings.dialogue)
        self.vad = services.vad.stream()
        self.endpointer = Endpointer(services.settings.endpointing)
        self.call_id = ""
        self.caller: str | None = None
        self.transcripts: list[str] = []  # masked, one per caller turn
        self.finished = False
        # Audio of the call so far, bounded to what one turn may need.
        self._max_samples = int((self.settings.endpointing.max_turn_s + PRE_ROLL_S + 1) * SAMPLE_RATE)
        self._audio = np.zeros(0, dtype=np.float32)
        self._audio_offset = 0  # stream position of self._audio[0]
        self._turn: Turn | None = None
        self._turns = 0
        # Caller inputs (turns, key presses, silences) are handled one at a time by a worker,
        # so the receive loop never waits on speech recognition or playback.
        self._inputs: asyncio.Queue[Turn | str] = asyncio.Queue(maxsize=4)
        self._playing: dict[str, str] = {}  # marks sent and not yet played → their sentence
        self._unheard: list[str] = []  # sentences cut off by the last barge-in
        self._prompt_done = asyncio.Event()
        self._prompt_done.set()
        self._marks = 0
        self._idle_from = 0  # stream sample from which caller silence counts as no input
        self._partial_task: asyncio.Task | None = None
        self._working = False
        self._tasks: list[asyncio.Task] = []

    @property
    def stream_samples(self) -> int:
        return self._audio_offset + len(self._audio)

    @property
    def bot_speaking(self) -> bool:
        return bool(self._playing)

    # == 1. the call ======================================================================
    async def run(self) -> None:
        events = self.channel.events()
        try:
            start = await asyncio.wait_for(anext(events), START_TIMEOUT_S)
            if not isinstance(start, CallStart):
                log.warning("call did not begin with a start event (%s)", type(start).__name__)
                return
            self._begin(start)
            self._tasks.append(asyncio.create_task(self._input_worker(), name=f"inputs-{self.call_id}"))
            await self.say(self.catalogue.prompts["greeting"], "greeting")
            async for event in events:
                match event:
                    case Audio(samples=samples):
                        await self.hear(samples)
                    case Digit(digit=digit):
                        await self.on_digit(digit)
                    case Played():
                        self.on_played(event)
                    case Hangup(reason=reason):
                        log.info("call %s: caller side ended (%s)", self.call_id, reason)
                        break
                if self.finished:
                    break
        except (TimeoutError, StopAsyncIteration):
            log.info("call ended before it started")
        finally:
            await self._end()

    async def refuse(self) -> None:
        """The bot is at capacity: this caller goes straight to a person, told so, never to
        silence. Costs no speech recognition."""
        events = self.channel.events()
        try:
            start = await asyncio.wait_for(anext(events), START_TIMEOUT_S)
            if not isinstance(start, CallStart):
                return
            self._begin(start)
            decision = self.policy.to_person(None, "the bot was at capacity")
            decision.say = self.catalogue.prompts["overloaded"]
            await self.enqueue(decision)
            await self.say(decision.say, "overloaded")
            async with asyncio.timeout(20):
                async for event in events:
                    if isinstance(event, Played):
                        self.on_played(event)
                    if isinstance(event, Hangup) or not self.bot_speaking:
                        break
            await self.channel.hand_off(HandOff(self.call_id, decision.forvaltning,
                                                self.catalogue.queue_name(decision.forvaltning),
                                                None, decision.reason))
        except (TimeoutError, StopAsyncIteration):
            pass
        finally:
            await self._end()

    def _begin(self, start: CallStart) -> None:
        self.call_id = start.call_id
        self.caller = start.caller
        metrics.CALLS.labels(start.platform).inc()
        metrics.ACTIVE_CALLS.inc()
        self.services.active_calls += 1
        self.services.events.publish(self.call_id, "call_started", platform=start.platform,
                                     caller=mask_caller(start.caller))
        log.info("call %s started on %s", self.call_id, start.platform)

    async def _end(self) -> None:
        for task in [*self._tasks, self._partial_task]:
            if task and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.call_id:
            metrics.ACTIVE_CALLS.dec()
            self.services.active_calls -= 1
            self.services.events.publish(self.call_id, "call_ended")
            log.info("call %s ended after %d turns", self.call_id, self._turns)
        await self.channel.hang_up()

    # == 2. speaking ======================================================================
    async def say(self, text: str, purpose: str) -> None:
        """Send a prompt sentence by sentence, each with its own mark: the first sentence
        goes out as soon as it is rendered, and the marks tell which sentences the caller
        heard before a barge-in."""
        self._marks += 1
        self.services.events.publish(self.call_id, "bot_said", text=text, mark=f"{purpose}-{self._marks}",
                                     heard=self.channel.can_play)
        if not self.channel.can_play:
            return  # a listen-only connection: the platform's own flow does the talking
        self._prompt_done.clear()
        for i, sentence in enumerate(split_sentences(text)):
            audio = await asyncio.to_thread(self.services.speaker.speak, sentence)
            mark = f"{purpose}-{self._marks}.{i}"
            self._playing[mark] = sentence
            await self.channel.play(audio, mark)

    def on_played(self, played: Played) -> None:
        self._playing.pop(played.mark, None)
        if not self._playing:
            self._prompt_done.set()
            self._idle_from = self.stream_samples
        self.services.events.publish(self.call_id, "played", mark=played.mark, interrupted=played.interrupted)

    async def wait_until_heard(self, timeout_s: float = 30.0) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # arrives as the event is set, and the call would never end.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._prompt_done.wait()

    # == 3. listening =====================================================================
    async def hear(self, samples: np.ndarray) -> None:
        self._append_audio(samples)
        for endpoint in self.endpointer.update(self.vad.push(samples)):
            if endpoint.event is TurnEvent.SPEECH_START:
                self._turns += 1
                self._turn = Turn(self._turns, endpoint.sample)
                self.services.events.publish(self.call_id, "speech_start",
                                             stream_ms=endpoint.sample * 1000 // SAMPLE_RATE)
            elif self._turn is not None:
                await self._end_turn(endpoint.sample)
        if self._turn is None:
            await self._check_no_input()
            return
        speech_ms = (self.stream_samples - self._turn.start_sample) * 1000 // SAMPLE_RATE
        # Voiced time only: the silence after a short "mhm" must not add up to a barge-in.
        voiced_ms = (self.endpointer.last_speech - self._turn.start_sample) * 1000 // SAMPLE_RATE
        barge_in_ms = BARGE_IN_MS if self.channel.echo_cancelled else BARGE_IN_MS_ECHO
        if self.bot_speaking and voiced_ms >= barge_in_ms and not self._turn.barged_in:
            self._turn.barged_in = True
            await self.barge_in()
        if self.endpointer.in_speech:
            self._maybe_partial()
            self._maybe_speculate()
            ep = self.settings.endpointing
            too_long = speech_ms >= ep.max_turn_s * 1000
            confident_pause = (self._turn.confident_end == self.endpointer.last_speech
                               and self.endpointer.silence_ms >= ep.early_silence_ms)
            if too_long or confident_pause:
                await self._end_turn(self.endpointer.force_end().sample)

    def _append_audio(self, samples: np.ndarray) -> None:
        self._audio = np.concatenate([self._audio, samples])
        excess = len(self._audio) - self._max_samples
        if excess > 0:
            self._audio = self._audio[excess:]
            self._audio_offset += excess

    def _slice(self, start: int, end: int) -> np.ndarray:
        a = max(0, start - self._audio_offset)
        b = max(0, end - self._audio_offset)
        return self._audio[a:b].copy()

    async def barge_in(self) -> None:
        """The caller talks over the bot: stop the bot now; the marks say what was heard."""
        metrics.BARGE_INS.inc()
        self._unheard = list(self._playing.values())
        self.services.events.publish(self.call_id, "barge_in", marks=list(self._playing))
        await self.channel.clear()

    async def _check_no_input(self) -> None:
        if self.bot_speaking or self._busy or self.policy.state == "done":
            return
        silent_s = (self.stream_samples - self._idle_from) / SAMPLE_RATE
        if silent_s >= self.settings.endpointing.no_input_s:
            self._idle_from = self.stream_samples
            self._submit(NO_INPUT)

    # == 4. partial transcripts ===========================================================
    def _maybe_partial(self) -> None:
        turn = self._turn
        interval = self.settings.asr.partial_interval_ms * SAMPLE_RATE // 1000
        if (not self.settings.asr.partials or turn is None
                or self.services.active_calls > self.settings.asr.partials_max_calls
                or (self._partial_task and not self._partial_task.done())
                or self.stream_samples - max(turn.partial_samples, turn.start_sample) < interval):
            return
        turn.partial_samples = self.stream_samples
        audio = self._slice(turn.start_sample - int(PRE_ROLL_S * SAMPLE_RATE), self.stream_samples)
        self._partial_task = asyncio.create_task(self._partial(turn, audio))

    async def _partial(self, turn: Turn, audio: np.ndarray) -> None:
        result = await self.services.asr.partial(audio, self.services.domain_prompt)
        if result is None or turn is not self._turn:
            return
        metrics.ASR_SECONDS.labels("partial").observe(result.asr_ms / 1000)
        turn.agreement.update(result.words)
        masked = mask_numbers(result.text)
        self.services.events.publish(self.call_id, "partial", text=masked,
                                     committed=mask_numbers(" ".join(turn.agreement.committed)))
        understanding = self.services.classifier.classify(masked, explain=False)
        if understanding.intent == "emergency" and understanding.rule:
            # Do not wait for the caller to finish: "ring 112" now.
            await self._end_turn(self.endpointer.force_end().sample)

    # == 4b. deciding during the pause ====================================================
    # The caller has stopped for a moment; the turn ends only after endpointing.silence_ms.
    # Decoding now instead of then hides the decode inside that silence, and when the
    # result is a confident, complete request the turn may end after the shorter
    # endpointing.early_silence_ms. If the caller speaks again, the result is dropped.
    def _maybe_speculate(self) -> None:
        turn = self._turn
        pause_end = self.endpointer.last_speech
        if (turn is None or not self.settings.asr.speculative
                or self.endpointer.silence_ms < SPECULATE_AFTER_MS or turn.speculation_end == pause_end):
            return
        if turn.speculation is not None:
            turn.speculation.cancel()  # a guess for an earlier pause: the caller spoke on
        turn.speculation_end = pause_end
        audio = self._slice(turn.start_sample - int(PRE_ROLL_S * SAMPLE_RATE),
                            pause_end + int(TAIL_S * SAMPLE_RATE))
        turn.speculation = asyncio.create_task(self._speculate(turn, pause_end, audio))

    async def _speculate(self, turn: Turn, pause_end: int, audio: np.ndarray):
        result = await self.services.asr.speculative(audio, self.services.domain_prompt)
        if result is None or turn is not self._turn or self.endpointer.last_speech != pause_end:
            return result
        u = await asyncio.to_thread(self.services.classifier.classify, mask_numbers(result.text), False)
        if u.intent != "out_of_scope" and (u.rule or u.confidence >= self.settings.dialogue.accept):
            turn.confident_end = pause_end
        return result

    # == 5. the end of a turn =============================================================
    async def _end_turn(self, end_sample: int) -> None:
        turn, self._turn = self._turn, None
        if turn is None:
            return
        turn.end_sample = end_sample
        if turn.speculation is not None and turn.speculation_end != end_sample:
            turn.speculation.cancel()  # it decoded a pause the caller spoke through
        pre = int(PRE_ROLL_S * SAMPLE_RATE)
        turn.audio = self._slice(turn.start_sample - pre, end_sample + int(TAIL_S * SAMPLE_RATE))
        self.services.events.publish(self.call_id, "speech_end", turn=turn.index,
                                     stream_ms=end_sample * 1000 // SAMPLE_RATE)
        self._submit(turn)

    def _submit(self, item: Turn | str) -> None:
        try:
            self._inputs.put_nowait(item)
        except asyncio.QueueFull:
            log.warning("call %s: dropping an input, %d are already waiting", self.call_id, self._inputs.qsize())

    @property
    def _busy(self) -> bool:
        return self._working or not self._inputs.empty()

    async def _input_worker(self) -> None:
        while True:
            item = await self._inputs.get()
            self._working = True
            try:
                if isinstance(item, Turn):
                    await self.process_turn(item)
                elif item == NO_INPUT:
                    await self.act(self.policy.on_no_input(), transcript="")
                else:  # a key press
                    await self.act(self.policy.on_digit(item), transcript=f"[tast {item}]")
            finally:
                self._working = False
                self._idle_from = self.stream_samples

    async def process_turn(self, turn: Turn) -> None:
        t_end = time.monotonic()
        busy = asyncio.create_task(self._busy_prompt_after(BUSY_PROMPT_AFTER_S))
        try:
            result = None
            if turn.speculation is not None and turn.speculation_end == turn.end_sample:
                result = await turn.speculation  # decoded during the pause: the same audio
            if result is None:
                # The whole turn again, not only the uncommitted words: forcing the committed
                # prefix saved no time and cost WER (README, "Streaming partials").
                result = await self.services.asr.final(turn.audio, self.services.domain_prompt)
        except Overloaded:
            metrics.ASR_OVERLOADED.inc()
            busy.cancel()
            decision = self.policy.to_person(None, "speech recognition overloaded")
            decision.say = self.catalogue.prompts["overloaded"]
            await self.act(decision, transcript="")
            return
        finally:
            busy.cancel()
        metrics.ASR_SECONDS.labels("final").observe(result.asr_ms / 1000)
        if turn.barged_in and self._unheard and is_backchannel(result.text):
            # "mhm" or "ja" while the bot talked: not a turn; go on where the bot was cut off.
            self.services.events.publish(self.call_id, "backchannel", turn=turn.index)
            unheard, self._unheard = self._unheard, []
            await self.say(" ".join(unheard), "resume")
            return
        masked = mask_numbers(result.text)
        self.transcripts.append(masked)
        self.services.events.publish(self.call_id, "transcript", turn=turn.index, text=masked,
                                     asr_ms=round(result.asr_ms, 1), window_s=result.window_s)
        if self.settings.log_transcripts:
            log.info("call %s turn %d: %s", self.call_id, turn.index, masked)
        if not result.text or (result.likely_noise and result.audio_s < SHORT_SOUND_S):
            self.services.events.publish(self.call_id, "ignored", turn=turn.index, reason="noise")
            return  # a cough or a click, not a turn
        # Understanding reads the masked text too, so no number can reach the explanation.
        understanding = await asyncio.to_thread(self.services.classifier.classify, masked)
        decision = self.policy.on_utterance(masked, understanding)
        metrics.DECISION_LATENCY.observe(time.monotonic() - t_end)
        await self.act(decision, transcript=masked)

    async def _busy_prompt_after(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await self.say(self.catalogue.prompts["busy"], "busy")

    # == 6. acting ========================================================================
    async def act(self, decision: Decision, transcript: str) -> None:
        if decision.action == "listen":  # nothing to say yet: the caller is not done
            self.services.events.publish(self.call_id, "listening", transcript=transcript, reason=decision.reason)
            return
        if not self.channel.can_play and not decision.hand_off:
            # Nobody hears a question or an answer on a listen-only line: hand the call back
            # to the platform with the best routing we have.
            decision = self.policy.to_person(decision.intent, f"listen-only line; {decision.reason}")
        metrics.ACTIONS.labels(decision.action).inc()
        self.services.events.publish(self.call_id, "decision", transcript=transcript, **decision.as_dict())
        if decision.forvaltning and decision.hand_off:
            await self.enqueue(decision)
        if decision.say:
            await self.say(decision.say, decision.action)
        if decision.hand_off or decision.hang_up:
            await self.wait_until_heard()
            if decision.hand_off and decision.forvaltning:
                await self.channel.hand_off(HandOff(self.call_id, decision.forvaltning,
                                                    self.catalogue.queue_name(decision.forvaltning),
                                                    decision.intent, decision.reason))
            else:
                await self.channel.hang_up()
            self.finished = True

    async def enqueue(self, decision: Decision) -> None:
        """Write the routed call to its forvaltning's queue (before the caller leaves the bot)."""
        record = RoutedCall(
            call_id=self.call_id, forvaltning=decision.forvaltning, intent=decision.intent,
            confidence=decision.confidence, transcript=" / ".join(t for t in self.transcripts if t),
            explanation=decision.explanation, reason=decision.reason, caller=mask_caller(self.caller),
            platform=self.channel.platform,
        )
        try:
            await asyncio.to_thread(self.services.store.enqueue, record)
        except Exception:
            # The caller still goes on to a person: the platform's hand-off does not depend
            # on our record, and silence is never an option. The agent loses the context.
            log.exception("call %s: the queue record could not be written", self.call_id)
            self.services.events.publish(self.call_id, "enqueue_failed", forvaltning=decision.forvaltning)
            return
        metrics.ROUTED.labels(decision.forvaltning).inc()
        self.services.events.publish(self.call_id, "routed", forvaltning=decision.forvaltning,
                                     queue=self.catalogue.queue_name(decision.forvaltning))

    # == DTMF =============================================================================
    async def on_digit(self, digit: str) -> None:
        self.services.events.publish(self.call_id, "dtmf", digit=digit)
        if self.bot_speaking:
            await self.channel.clear()
        self._submit(digit)
