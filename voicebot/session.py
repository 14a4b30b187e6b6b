"""One phone call, from the socket to the queue. Read this module top to bottom.

1. The platform adapter (telephony/*) gives us CallStart, then Audio, Digit, Played, Hangup.
2. We greet: the caller hears that this is an automatic assistant and how to reach a person,
   in the first language, then one short sentence in each other language ("For English,
   just speak English.").
3. We listen (voicebot/listening.py): every 32 ms of caller audio goes through Silero VAD;
   the Endpointer finds where the caller's turn starts and ends. Speech while the bot talks
   stops the bot (barge-in). While the caller speaks, partial transcripts are decoded now and
   then for the agent console; an emergency word in a partial ends the turn at once. When
   the caller pauses, the final decode starts at once, hidden inside the end-of-turn
   silence; a confident, complete request ends the turn after a shorter silence. Caller
   input reaches the dialogue typed: SpokenTurn, KeyPress, Silence.
4. We understand: the transcript (the pause's speculative decode when it decoded the same
   audio, else a final decode) is classified once, and the dialogue policy decides. Until
   the caller has said something, every decode asks Whisper which language it hears (among
   `languages`) and decodes in it; the first turn heard in another language switches the
   call to it, and that turn is understood in it. Saying "English" or pressing its key does
   the same. From then on recognition, understanding, prompts and voice are that language's.
5. We act: answer by voice, ask back, or route — the routed call is written to its
   forvaltning's queue first, then the caller hears where they go (voicebot/speaking.py)
   and the call is handed on. A caller gone before the hand-off completes is marked
   abandoned in the queue.

Never silence: every background task of a call is supervised; one that dies is logged with
its traceback and the caller is handed to a person. A listen-only connection (Genesys
AudioHook Monitor) is the exception to acting: there the bot only listens, publishes what it
understands as `agent_assist` for the agent, and leaves ending the call to the platform.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import numpy as np

from telephony.base import (
    SAMPLE_RATE,
    Audio,
    CallStart,
    Digit,
    HandOff,
    Hangup,
    MediaChannel,
    Played,
)
from voicebot import metrics
from voicebot.asr import Overloaded
from voicebot.catalogue import Language
from voicebot.dialogue import Decision, DialoguePolicy, State
from voicebot.listening import (
    BargeIn,
    CallerInput,
    KeyPress,
    Listener,
    Silence,
    SpokenTurn,
    Transcript,
)
from voicebot.privacy import mask_caller
from voicebot.queues import RoutedCall
from voicebot.services import Services
from voicebot.speaking import PromptPlayer, is_backchannel
from voicebot.understanding import Understanding
from voicebot.waiting import CallWaiting, Step

log = logging.getLogger("voicebot.session")

START_TIMEOUT_S = 10.0
BUSY_PROMPT_AFTER_S = 1.5  # a caller never waits silently: say "et øjeblik" after this
SHORT_SOUND_S = 1.0  # shorter sounds that Whisper judges to be no speech are ignored
CLOCK_S = 0.25  # how often the no-input clock looks
HEARD_TIMEOUT_S = 30.0  # longest wait for a hand-off's announcement to be played


class CallSession:
    def __init__(self, channel: MediaChannel, services: Services) -> None:
        self.channel = channel
        self.services = services
        self.settings = services.settings
        self.catalogue = services.catalogue
        # The call's language: the first one until the caller shows another.
        self.language = services.settings.asr.language
        self.policy = DialoguePolicy(
            services.catalogue,
            services.classifier_for(self.language),
            services.settings.dialogue,
            self.language,
        )
        self.voice = PromptPlayer(channel, services.speaker, self._publish)
        self.listener = Listener(services, channel.echo_cancelled, self._publish, self._spawn)
        self.waiting = CallWaiting(services)  # closed queue, long wait: a callback instead
        others = [code for code in self.settings.languages if code != self.language]
        # Detect the language (each decode asks Whisper) until the caller has spoken.
        self.detecting = bool(others)
        self.listener.languages = (self.language, *others)
        self.call_id = ""
        self.caller: str | None = None
        self.transcripts: list[str] = []  # masked, one per caller turn
        self.finished = False
        self.listen_only = False  # set at the start: the channel cannot play (AudioHook Monitor)
        self.listening = False  # audio goes to the listener (not on a refused call)
        # Caller inputs are handled one at a time by a worker, so the receive loop never
        # waits on speech recognition or playback.
        self._inputs: asyncio.Queue[CallerInput] = asyncio.Queue(maxsize=4)
        self._working = False
        # Caller silence counts from here: (wall clock, stream sample) when the bot went quiet.
        self._quiet_since = (time.monotonic(), 0)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rescued = False  # a failed task has handed the caller to a person
        self._ending = False
        self._enqueued = False  # this call's queue record exists ...
        self._announced = False  # the hand-off's announcement has been sent ...
        self._handed_off = False  # ... and the platform has taken the call on
        self._best: tuple[str, Understanding] | None = None  # listen-only: best routing so far

    # == 1. the call ========================================================================
    async def run(self) -> None:
        """greet → listen → understand → act, until the call is handed on or ends."""
        await self._serve(self._greet)

    async def refuse(self) -> None:
        """The bot is at capacity: this caller goes straight to a person, told so, never to
        silence. Costs no speech recognition."""
        await self._serve(self._refuse)

    async def _serve(self, opening: Callable[[], Awaitable[None]]) -> None:
        events = self.channel.events()
        try:
            start = await asyncio.wait_for(anext(events), START_TIMEOUT_S)
            if not isinstance(start, CallStart):
                log.warning("call did not begin with a start event (%s)", type(start).__name__)
                return
            self._begin(start)
            await opening()
            # No audio for media_timeout_s (wall clock) ends the call: a dead peer frees its slot.
            media_timeout = None if self.listen_only else self.settings.endpointing.media_timeout_s
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(media_timeout) as no_media:
                    async for event in events:
                        match event:
                            case Audio(samples=samples):
                                # Pushed on when half spent: not one timer handle per frame.
                                if (
                                    media_timeout is not None
                                    and (no_media.when() or 0) - loop.time() < media_timeout / 2
                                ):
                                    no_media.reschedule(loop.time() + media_timeout)
                                await self.hear(samples)
                            case Digit(digit=digit):
                                await self.on_digit(digit)
                            case Played():
                                self.voice.on_played(event)
                                if not self.voice.speaking:
                                    self._mark_quiet()
                            case Hangup(reason=reason):
                                log.info("call %s: caller side ended (%s)", self.call_id, reason)
                                break
                        if self.finished:
                            break
            except TimeoutError:
                if not no_media.expired():
                    raise
                log.warning(
                    "call %s: no audio for %.0f s, ending the call", self.call_id, media_timeout
                )
                self._publish("media_timeout", seconds=media_timeout)
        except (TimeoutError, StopAsyncIteration):
            log.info("call ended before it started")
        finally:
            await self._end()

    def _begin(self, start: CallStart) -> None:
        self.call_id = start.call_id
        self.caller = start.caller
        self.listen_only = not self.channel.can_play
        metrics.CALLS.labels(start.platform).inc()
        metrics.ACTIVE_CALLS.inc()
        self._publish("call_started", platform=start.platform, caller=mask_caller(start.caller))
        log.info("call %s started on %s", self.call_id, start.platform)

    async def _greet(self) -> None:
        self.listening = True
        self._spawn(self._input_worker(), "inputs")
        if not self.listen_only:
            self._spawn(self._no_input_clock(), "no-input-clock")
        # Then one short sentence in each other language, in its own voice.
        offers = [(lang.offer, code) for code, lang in self._other_languages() if lang.offer]
        await self._say(self.policy.text("greeting"), "greeting", then=offers)

    def _other_languages(self) -> list[tuple[str, Language]]:
        return [
            (code, language)
            for code, language in self.catalogue.languages.items()
            if code != self.language and code in self.settings.languages
        ]

    async def _say(self, text: str, purpose: str, then: Sequence[tuple[str, str]] = ()) -> None:
        """Say a text in the call's language and voice, then (text, language) parts each in
        its own language's voice."""
        await self.voice.say(
            text,
            purpose,
            self.services.voice_for(self.language),
            self.language,
            then=[(t, self.services.voice_for(code), code) for t, code in then],
        )

    def _switch_language(self, language: str, how: str, scores: dict[str, float]) -> None:
        """From now on the call is in `language`: recognition forced to it, understanding,
        prompts, yes/no words and voice its own."""
        self.detecting = False
        self.listener.languages = (language,)
        if language == self.language:
            return
        log.info("call %s: caller's language is %s (%s)", self.call_id, language, how)
        self.language = language
        self.policy.set_language(language, self.services.classifier_for(language))
        if not self.waiting.active:  # closed-queue, wait and callback prompts in it too
            self.waiting = CallWaiting(self.services, language)
        self._publish(
            "language",
            language=language,
            how=how,
            scores={k: round(v, 4) for k, v in scores.items()},
        )

    async def _refuse(self) -> None:
        if not self.listen_only:  # a listen-only line is the platform's to route
            self._spawn(
                self.act(self._overloaded("the bot was at capacity"), transcript=""), "refusal"
            )

    async def _end(self) -> None:
        self._ending = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.listener.close()
        # Gone before the hand-off and before hearing where they go (the gap after a prompt
        # heard in full is the platform's: its own hang-up detection takes over there).
        if self._enqueued and not self._handed_off and (not self._announced or self.voice.speaking):
            await self._abandon()
        if self.call_id:
            metrics.ACTIVE_CALLS.dec()
            if self._best is not None:
                transcript, u = self._best
                self._publish("agent_assist", final=True, transcript=transcript, **self._routing(u))
            metrics.CALL_LANGUAGES.labels(self.language).inc()
            self._publish("call_ended", language=self.language)
            log.info("call %s ended after %d turns", self.call_id, self.listener.turns)
        await self.channel.hang_up()

    # == 2. listening =======================================================================
    async def hear(self, samples: np.ndarray) -> None:
        if not self.listening or self._rescued:
            return
        for heard in self.listener.hear(samples, self.voice.speaking):
            if isinstance(heard, BargeIn):
                await self.voice.barge_in()
            else:
                self._submit(heard)
        self._check_no_input()

    async def on_digit(self, digit: str) -> None:
        entering = self.waiting.step is Step.ENTERING  # a callback number's keys stay private
        self._publish("dtmf", digit="•" if entering and digit.isdigit() else digit)
        await self.voice.stop()
        self._submit(KeyPress(digit))

    # -- no input: the caller has said nothing since the bot went quiet ---------------------
    async def _no_input_clock(self) -> None:
        """Silence is timed on the wall clock too, not only on received audio: a peer may
        send none."""
        while True:
            await asyncio.sleep(CLOCK_S)
            self._check_no_input()

    def _check_no_input(self) -> None:
        if not self._awaiting_caller():
            return
        wall, sample = self._quiet_since
        # Whichever clock says more: audio received proves time passed on the caller's
        # side (also when it arrives in bursts), the wall clock when no audio arrives.
        silent_s = max(
            time.monotonic() - wall, (self.listener.stream_samples - sample) / SAMPLE_RATE
        )
        if silent_s >= self.settings.endpointing.no_input_s:
            self._mark_quiet()
            self._submit(Silence())

    def _awaiting_caller(self) -> bool:
        return not (
            self.listen_only
            or not self.listening
            or self.voice.speaking
            or self._busy
            or (self.policy.state is State.DONE and not self.waiting.active)
            or self._rescued
            or self.listener.in_turn
        )

    def _mark_quiet(self) -> None:
        self._quiet_since = (time.monotonic(), self.listener.stream_samples)

    def _submit(self, item: CallerInput) -> None:
        try:
            self._inputs.put_nowait(item)
        except asyncio.QueueFull:
            log.warning(
                "call %s: dropping an input, %d are already waiting",
                self.call_id,
                self._inputs.qsize(),
            )

    @property
    def _busy(self) -> bool:
        return self._working or not self._inputs.empty()

    async def _input_worker(self) -> None:
        while True:
            item = await self._inputs.get()
            self._working = True
            try:
                match item:
                    case SpokenTurn():
                        await self.understand(item)
                    case KeyPress(digit=digit) if self.listen_only:
                        self._assist_key(digit)
                    case KeyPress(digit=digit) if self.waiting.active:
                        await self.act(await self.waiting.on_digit(digit), transcript="[tast]")
                    case Silence() if self.waiting.active:
                        await self.act(self.waiting.on_no_input(), transcript="")
                    case KeyPress(digit=digit):
                        await self.act(self.policy.on_digit(digit), transcript=f"[tast {digit}]")
                    case Silence():
                        await self.act(self.policy.on_no_input(), transcript="")
            finally:
                self._working = False
                self._mark_quiet()

    # == 3. understanding ===================================================================
    async def understand(self, turn: SpokenTurn) -> None:
        t_end = time.monotonic()
        busy = self._spawn(self._busy_prompt_after(BUSY_PROMPT_AFTER_S), "busy-prompt")
        heard: Transcript | None = None
        try:
            heard = await self.listener.transcribe(turn)
        except Overloaded:
            metrics.ASR_OVERLOADED.inc()
        finally:
            busy.cancel()
        if heard is None:
            if not self.listen_only:
                await self.act(self._overloaded("speech recognition overloaded"), transcript="")
            return
        result = heard.result
        if turn.barged_in and self.voice.cut_off and is_backchannel(result.text, heard.language):
            # "mhm" or "ja" while the bot talked: not a turn; go on where the bot was cut off.
            self._publish("backchannel", turn=turn.index)
            await self.voice.resume()
            return
        self.transcripts.append(heard.text)
        self._publish(
            "transcript",
            turn=turn.index,
            text=heard.text,
            asr_ms=round(result.asr_ms, 1),
            window_s=result.window_s,
            tokens=result.tokens,
            redecodes=result.redecodes,
            language=heard.language,
        )
        if self.settings.log_transcripts:
            log.info("call %s turn %d: %s", self.call_id, turn.index, heard.text)
        if not result.text or (result.likely_noise and result.audio_s < SHORT_SOUND_S):
            self._publish("ignored", turn=turn.index, reason="noise")
            return  # a cough or a click, not a turn
        if self.waiting.active and not self.listen_only:  # a callback offer's answer
            await self.act(await self.waiting.on_utterance(heard.text), transcript=heard.text)
            return
        if self.detecting:  # the first words: their language is the call's from now on
            self._switch_language(heard.language, "detected", result.language_scores)
        # Understanding reads the masked text too, so no number can reach the explanation.
        classify = self.services.classifier_for(heard.language).classify
        understanding = heard.understanding
        if understanding is None:
            understanding = await asyncio.to_thread(classify, heard.text)
        if self.listen_only:
            self._assist(heard.text, understanding)
            return
        decision = self.policy.on_utterance(heard.text, understanding)
        metrics.DECISION_LATENCY.observe(time.monotonic() - t_end)
        await self.act(decision, transcript=heard.text)

    async def _busy_prompt_after(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        # While the caller's language is still being found, "one moment" in every language
        # the line offers, each in its own voice: the caller may not speak the first one.
        others = self._other_languages() if self.detecting else []
        then = [(self.catalogue.prompt("busy", code), code) for code, _ in others]
        await self._say(self.policy.text("busy"), "busy", then=then)

    def _overloaded(self, reason: str) -> Decision:
        decision = self.policy.to_person(None, reason)
        decision.say = self.policy.text("overloaded")
        return decision

    # -- a listen-only line: the agent hears the caller, the bot tells what it understood ---
    def _assist(self, transcript: str, u: Understanding) -> None:
        understood = u.intent != "out_of_scope"
        if understood and (self._best is None or u.confidence >= self._best[1].confidence):
            self._best = (transcript, u)
        self._publish(
            "agent_assist", transcript=transcript, language=self.language, **self._routing(u)
        )

    def _assist_key(self, digit: str) -> None:
        entry = self.catalogue.keypad.get(digit)
        if entry is not None:
            self._assist(
                f"[tast {digit}]",
                Understanding(
                    entry.intent,
                    1.0,
                    [],
                    [entry.label[self.catalogue.default_language]],
                    rule=f"keypad {digit}",
                ),
            )

    def _routing(self, u: Understanding) -> dict[str, Any]:
        forvaltning = (
            self.catalogue.intent(u.intent).forvaltning
            if u.intent in self.catalogue.intents
            else None
        )
        return {
            "intent": u.intent,
            "confidence": round(u.confidence, 4),
            "explanation": u.explanation,
            "forvaltning": forvaltning,
            "queue": self.catalogue.queue_name(forvaltning) if forvaltning else None,
        }

    # == 4. acting ==========================================================================
    async def act(self, decision: Decision, transcript: str) -> None:
        if decision.action == "listen":  # nothing to say yet: the caller is not done
            self._publish("listening", transcript=transcript, reason=decision.reason)
            return
        if decision.language is not None:  # the caller asked for a language
            self._switch_language(decision.language, "asked", {})
        if decision.hand_off and decision.forvaltning and not self._rescued:
            record = self._record(decision)
            diverted = await self.waiting.at_routing(decision, record, self.caller)
            decision = diverted or decision
        metrics.ACTIONS.labels(decision.action, self.language).inc()
        if decision.emergency_notice:
            why = "keypad_menu" if decision.action == "keypad_menu" else "possible_emergency"
            metrics.EMERGENCY_NOTICES.labels(why, self.language).inc()
        self._publish(
            "decision", transcript=transcript, language=self.language, **decision.as_dict()
        )
        if decision.forvaltning and decision.hand_off:
            await self.enqueue(decision)
        if decision.say:
            # The keypad menu goes on with the other languages' keys, each in its voice.
            keys = [
                ((lang.key_offer or "").format(key=lang.key), code)
                for code, lang in self._other_languages()
                if lang.key and decision.action == "keypad_menu"
            ]
            await self._say(decision.say, decision.action, then=keys)
        self._announced = decision.hand_off
        if decision.hand_off or decision.hang_up:
            await self.voice.wait_until_heard(HEARD_TIMEOUT_S)
            if decision.hand_off and decision.forvaltning:
                # From here the platform has the call: a socket that closes while the hand-off
                # is sent (the platform taking the call away) is not a caller who left.
                self._handed_off = True
                await self.channel.hand_off(
                    HandOff(
                        self.call_id,
                        decision.forvaltning,
                        self.catalogue.queue_name(decision.forvaltning),
                        decision.intent,
                        decision.reason,
                    )
                )
            else:
                await self.channel.hang_up()
            self.finished = True

    async def enqueue(self, decision: Decision) -> None:
        """Write the routed call to its forvaltning's queue (before the caller leaves the bot)."""
        record = self._record(decision)
        try:
            await asyncio.to_thread(self.services.store.enqueue, record)
        except Exception:
            # The caller still goes on to a person: the platform's hand-off does not depend
            # on our record, and silence is never an option. The agent loses the context.
            log.exception("call %s: the queue record could not be written", self.call_id)
            self._publish("enqueue_failed", forvaltning=decision.forvaltning)
            return
        self._enqueued = True
        forvaltning = decision.forvaltning
        assert forvaltning is not None  # enqueue is called for hand-offs to a forvaltning only
        metrics.ROUTED.labels(forvaltning, self.language).inc()
        self._publish(
            "routed",
            forvaltning=forvaltning,
            queue=self.catalogue.queue_name(forvaltning),
            language=self.language,
        )

    def _record(self, decision: Decision) -> RoutedCall:
        assert decision.forvaltning is not None
        return RoutedCall(
            call_id=self.call_id, forvaltning=decision.forvaltning, intent=decision.intent,
            confidence=decision.confidence, transcript=" / ".join(t for t in self.transcripts if t),
            explanation=decision.explanation, reason=decision.reason, caller=mask_caller(self.caller),
            platform=self.channel.platform, language=self.language,
        )  # fmt: skip

    async def _abandon(self) -> None:
        """The caller left before the hand-off completed: no agent should wait for them."""
        try:
            await asyncio.to_thread(self.services.store.abandon, self.call_id)
        except Exception:
            log.exception("call %s: could not mark the queue record abandoned", self.call_id)
            return
        log.info("call %s: caller gone before the hand-off; queue record abandoned", self.call_id)
        self.waiting.abandoned()
        self._publish("abandoned")

    # == never silence: supervised tasks ====================================================
    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"{name}-{self.call_id}")
        self._tasks.add(task)
        task.add_done_callback(self._supervise)
        return task

    def _supervise(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        log.error(
            "call %s: task %s failed", self.call_id, task.get_name(), exc_info=task.exception()
        )
        self._publish("task_failed", task=task.get_name())
        if self.listen_only or self.finished or self._ending:
            return  # nothing to hand on: the platform owns a listen-only call
        if self._rescued:  # the hand-off to a person failed too: end the call
            self.finished = True
            self._tasks.add(
                asyncio.create_task(self.channel.hang_up(), name=f"give-up-{self.call_id}")
            )
            return
        self._rescued = True
        for other in list(self._tasks):
            other.cancel()
        self._spawn(
            self.act(
                self.policy.to_person(None, f"internal error ({task.get_name()})"), transcript=""
            ),
            "rescue",
        )

    def _publish(self, kind: str, **data: Any) -> None:
        if kind == "bot_said" and self.waiting.step is Step.READ_BACK:
            data["text"] = "[nummeret til tilbagekald læses op]"  # the number stays off events
        self.services.events.publish(self.call_id, kind, **data)
