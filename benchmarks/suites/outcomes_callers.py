"""Scripted callers for `voicebot bench calls`: citizens who react to what the bot says.

A caller has one errand (an intent) and two held-back phrasings of it (intents/heldout*.tsv,
never trained on). It states the errand (sometimes after a bare "hej"/"øh"/"hello"), answers
a confirm question truthfully, says it again in other words when asked to, follows the spoken
keypad menu by pressing the key whose label covers its errand, says "mhm" while the bot talks
(sometimes), asks for a person or presses 0 when stuck, and hangs up once answered.

The caller reacts only to what it hears: the text of the bot's prompts (the `bot_said`
events, i.e. perfect hearing of the bot). The decision events are for scoring (outcome()),
never for reacting. Everything is seeded: the same seed gives the same calls.

Caller (the mind) is pure and drives both the benchmark (espeak-ng speech through the real
gateway) and tests/test_outcomes.py (a scripted recogniser hears the caller's words).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from telephony.base import FRAME_MS
from telephony.codecs import float_to_pcm16
from telephony.simulator import SimulatedCall
from voicebot.catalogue import Catalogue
from voicebot.understanding import normalize

MAX_INPUTS = 8  # a caller who has said or pressed this much without an end gives up
OPENER_PAUSE_S = 1.2  # "hej" ... then the errand: longer than the end-of-turn silence

# What a caller calls its errand when correcting the bot: "nej, det er om <topic>".
TOPICS: dict[str, dict[str, str]] = {
    "passport": {"da": "mit pas", "en": "my passport"},
    "driving_licence": {"da": "mit kørekort", "en": "my driving licence"},
    "health_card": {"da": "mit sundhedskort", "en": "my health card"},
    "moving": {"da": "at jeg flytter", "en": "moving house"},
    "mitid": {"da": "MitID", "en": "MitID"},
    "parking_permit": {"da": "en parkeringslicens", "en": "a parking permit"},
    "parking_fine": {"da": "en parkeringsbøde", "en": "a parking fine"},
    "waste": {"da": "skraldet", "en": "the rubbish collection"},
    "building": {"da": "en byggetilladelse", "en": "a building permit"},
    "elder_care": {"da": "hjemmehjælp til min mor", "en": "home help for my mother"},
    "childcare_school": {"da": "en vuggestueplads", "en": "a nursery place"},
    "job_centre": {"da": "jobcentret", "en": "the job centre"},
    "social_services": {"da": "hjælp fra socialforvaltningen", "en": "help from social services"},
    "national_body": {"da": "min pension", "en": "my pension"},
    "human_agent": {"da": "at tale med en medarbejder", "en": "talking to a person"},
    "emergency": {"da": "en ulykke", "en": "an accident"},
    "out_of_scope": {"da": "noget helt andet", "en": "something else"},
}
WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "da": {
        "yes": ("ja", "ja det er rigtigt", "ja tak"),
        "no": ("nej, det er om {topic}", "nej, det handler om {topic}"),
        "person": ("jeg vil gerne tale med en medarbejder", "medarbejder"),
        "opener": ("hej", "øh", "goddag"),
        "mhm": ("mhm",),
    },
    "en": {
        "yes": ("yes", "yes that's right", "yeah"),
        "no": ("no, it's about {topic}", "no, it is about {topic}"),
        "person": ("I want to talk to a person", "agent please"),
        "opener": ("hello", "hi there", "um"),
        "mhm": ("mhm",),
    },
}
# The intents whose right end is a person (the contact centre), and the one that must hear 112.
PERSON_INTENTS = frozenset({"human_agent", "out_of_scope"})
TERMINAL = ("answer", "national_body", "route", "human", "emergency")


@dataclass(frozen=True)
class Scenario:
    id: str
    language: str
    intent: str
    first: str  # the errand as first said (held back)
    second: str  # said when asked to rephrase (another held-back phrasing)
    yes: str
    no: str
    person: str  # how this caller asks for a person when stuck ("0" = presses zero)
    opener: str | None  # a bare greeting before the errand
    backchannel: str | None  # "mhm" while the bot talks after the errand
    patience: int  # failed exchanges before asking for a person
    voice: str  # espeak-ng voice

    def texts(self) -> list[str]:
        """Everything this caller may say (to render before the call)."""
        said = [self.first, self.second, self.yes, self.no, self.opener, self.backchannel]
        return [t for t in [*said, self.person] if t and t != "0"]


def scenarios(
    heldout: dict[str, dict[str, list[str]]],
    voices: dict[str, tuple[str, ...]],
    per_intent: int,
    seed: int = 15,
) -> list[Scenario]:
    """`per_intent` callers per language and intent: `heldout[language][intent]` gives the
    phrasings (two per caller, never reused within a run)."""
    out: list[Scenario] = []
    for language in sorted(heldout):
        words = WORDS[language]
        for intent in sorted(heldout[language]):
            rng = random.Random(f"{seed}/{language}/{intent}")
            texts = [t for t in heldout[language][intent] if 3 <= len(t.split()) <= 16]
            rng.shuffle(texts)
            for k in range(min(per_intent, len(texts) // 2)):
                person = rng.choice(("0", *words["person"]))
                out.append(
                    Scenario(
                        id=f"{language}-{intent}-{k}",
                        language=language,
                        intent=intent,
                        first=texts[2 * k],
                        second=texts[2 * k + 1],
                        yes=rng.choice(words["yes"]),
                        no=rng.choice(words["no"]).format(topic=TOPICS[intent][language]),
                        person=person,
                        opener=rng.choice(words["opener"]) if rng.random() < 0.3 else None,
                        backchannel=words["mhm"][0] if rng.random() < 0.3 else None,
                        patience=rng.choice((2, 3, 3)),
                        voice=voices[language][len(out) % len(voices[language])],
                    )
                )
    return out


# == what the caller hears =====================================================================
@dataclass(frozen=True)
class Heard:
    kind: str  # greeting | confirm | rephrase | keypad_menu | no_input | language_switched |
    # busy | answer | route | human | emergency | goodbye | overloaded | unknown
    intent: str | None = None  # the errand a confirm question or an answer is about
    notice: bool = False  # it began with "if someone is in danger, ring 112"


class BotPrompts:
    """Recognises the bot's prompts by their words, in every language of the catalogue."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self._known: list[tuple[str, Heard]] = []  # (normalised prefix, what it is)
        self._notices = [
            normalize(catalogue.prompt("emergency_notice", language))
            for language in catalogue.languages
        ]
        for language in catalogue.languages:
            for intent_id, intent in catalogue.intents.items():
                if language in intent.confirm:
                    self._add(intent.confirm[language], Heard("confirm", intent_id))
                if intent.answer and language in intent.answer:
                    kind = "emergency" if intent.action.value == "emergency" else "answer"
                    self._add(intent.answer[language], Heard(kind, intent_id))
            self._add(catalogue.prompt("human", language), Heard("human"))
            self._add(catalogue.prompt("overloaded", language), Heard("overloaded"))
            for name in ("greeting", "rephrase", "no_input", "busy", "goodbye"):
                self._add(catalogue.prompt(name, language), Heard(name))
            self._add(catalogue.prompt("language_switched", language), Heard("language_switched"))
            self._add(catalogue.prompt("keypad_menu", language).split("{")[0], Heard("keypad_menu"))
            self._add(catalogue.prompt("route", language).split("{")[0], Heard("route"))
        # Longest first: "Jeg stiller dig videre til en medarbejder" before "... til".
        self._known.sort(key=lambda k: len(k[0]), reverse=True)

    def _add(self, text: str, heard: Heard) -> None:
        self._known.append((normalize(text), heard))

    def heard(self, text: str) -> Heard:
        said = normalize(text)
        notice = next((n for n in self._notices if said.startswith(n)), "")
        said = said[len(notice) :].strip()
        heard = next((h for prefix, h in self._known if said.startswith(prefix)), Heard("unknown"))
        return replace(heard, notice=bool(notice))


@dataclass(frozen=True)
class Say:
    text: str
    what: str  # errand | rephrased | yes | no | person | mhm
    opener: str | None = None


@dataclass(frozen=True)
class Press:
    key: str
    what: str  # keypad | person


@dataclass
class Caller:
    """One citizen's side of the dialogue: react(what the bot just said) → the next act, or
    None to hang up (answered, handed on, or given up)."""

    scenario: Scenario
    catalogue: Catalogue
    prompts: BotPrompts
    failures: int = 0
    acts: list[dict[str, Any]] = field(default_factory=list)
    _restated: int = 0

    @property
    def forvaltning(self) -> str | None:
        return self.catalogue.intents[self.scenario.intent].forvaltning

    def react(self, said: str | None) -> Say | Press | None:
        heard = self.prompts.heard(said) if said else Heard("nothing")
        act = self._react(heard, said or "")
        if act is not None and len(self.acts) >= MAX_INPUTS:
            act = None  # gives up: abandoned
        self.acts.append(
            {
                "heard": heard.kind,
                "about": heard.intent,
                "notice": heard.notice,
                "act": _describe(act),
            }
        )
        return act

    def _react(self, heard: Heard, said: str) -> Say | Press | None:
        s = self.scenario
        if heard.notice and s.intent == "emergency":
            return None  # "if someone is in danger, hang up and ring 112": it does
        if heard.kind in TERMINAL or heard.kind in ("goodbye", "overloaded"):
            return None  # answered or handed on: the caller is done
        if heard.kind == "keypad_menu":
            return Press(self.key_for(said), "keypad")
        if heard.kind == "greeting" and not self.acts:
            return Say(s.first, "errand", s.opener)
        if heard.kind == "confirm" and heard.intent == s.intent:
            return Say(s.yes, "yes")
        self.failures += 1  # anything else is the bot not getting it (yet)
        if self.failures >= s.patience:
            return Press("0", "person") if s.person == "0" else Say(s.person, "person")
        if heard.kind == "confirm":
            return Say(s.no, "no")
        self._restated += 1
        return Say(s.second if self._restated % 2 else s.first, "rephrased")

    def key_for(self, menu: str) -> str:
        """The key the menu offers for this errand's forvaltning (its label was heard), else 0."""
        said = normalize(menu)
        for digit, entry in sorted(self.catalogue.keypad.items()):
            if digit == "0" or entry.forvaltning != self.forvaltning:
                continue
            labels = [normalize(label) for label in entry.label.values()]
            if not said or any(label in said for label in labels):
                return digit
        return "0"


def _describe(act: Say | Press | None) -> dict[str, Any] | None:
    return None if act is None else {"type": type(act).__name__.lower(), **asdict(act)}


# == the caller on the phone line ==============================================================
class ScriptedCall(SimulatedCall):
    """A SimulatedCall whose inputs come from a Caller reacting to the bot's prompts.

    Faster than real time only where it cannot change the outcome: the bot's prompts are
    'played' `fast` times faster once the bot has decided on the caller's last input (the
    bot counts marks and stream samples, not wall time); the caller's speech and the wait
    for the bot's decision are real time. `lived_s(t)` converts a wall time of this call to
    the seconds the caller would have lived by then (the stream time of the line)."""

    def __init__(
        self,
        media_url: str,
        events_url: str | None,
        caller: Caller,
        voice: Callable[[str], np.ndarray],
        *,
        fast: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(media_url, events_url, speed=1.0, **kwargs)
        self.citizen = caller  # self.caller is the phone number
        self.voice = voice  # text → float32 audio at the wire rate
        self.fast = max(1.0, fast)
        self.timeline: list[tuple[float, int]] = []  # (wall time, stream ms) as frames leave
        self.inputs_log: list[dict[str, Any]] = []  # what the caller did, when (wall time)
        self._speaking = False
        self._spoke_at = time.monotonic()  # the end of the caller's last input
        self._heard_from = 0.0  # bot prompts received after this are new to the caller
        self._mhm_armed = False

    @property
    def speed(self) -> float:
        if self._speaking or self.fast == 1.0 or not self._audio_times:
            return 1.0
        now = time.monotonic()
        playing = now - self._audio_times[-1] < 0.05 or now < self._play_until
        decided = any(
            e.get("type") == "decision" and t >= self._spoke_at for t, e in self.events[-20:]
        )
        greeting = not self.inputs_log
        return self.fast if playing and (decided or greeting) else 1.0

    @speed.setter
    def speed(self, value: float) -> None:
        pass  # decided by the phase above

    def lived_s(self, wall: float) -> float:
        if not self.timeline:
            return 0.0
        walls, ms = zip(*self.timeline, strict=True)
        return float(np.interp(wall, walls, ms)) / 1000

    def _last_heard(self) -> str | None:
        said = [
            str(e.get("text", ""))
            for t, e in self.events
            if e.get("type") == "bot_said" and t >= self._heard_from
        ]
        kinds = [(text, self.citizen.prompts.heard(text).kind) for text in said]
        heard = [text for text, kind in kinds if kind != "busy"]  # "et øjeblik" asks nothing
        return heard[-1] if heard else None

    def inputs(self, turns: list[np.ndarray], digits: str) -> Iterator[np.ndarray | str]:
        while True:
            said = self._last_heard()
            act = self.citizen.react(said)
            if act is None:
                return
            self._heard_from = time.monotonic()
            self.inputs_log.append({"at": self._heard_from, **(_describe(act) or {})})
            if isinstance(act, Press):
                self._spoke_at = time.monotonic()
                yield act.key
                continue
            audio = self.voice(act.text)
            if act.opener:
                pause = np.zeros(int(OPENER_PAUSE_S * self._wire_rate()), np.float32)
                audio = np.concatenate([self.voice(act.opener), pause, audio])
            self._mhm_armed = act.what == "errand" and bool(self.citizen.scenario.backchannel)
            yield audio

    def _wire_rate(self) -> int:
        return int(self.platform_cls.wire_rate)

    def _mhm_due(self) -> bool:
        if not self._mhm_armed or not self._audio_times:
            return False
        now = time.monotonic()
        started = next((t for t in self._audio_times if t >= self._spoke_at), None)
        return started is not None and now - started >= 0.2 and now < self._play_until - 0.3

    async def _send(self, platform: Any, pcm: np.ndarray) -> list[float]:
        frame = platform.wire_rate * FRAME_MS // 1000
        if len(pcm) <= frame and self._mhm_due():  # "mhm" instead of a silent frame
            self._mhm_armed = False
            text = self.citizen.scenario.backchannel or "mhm"
            self.inputs_log.append(
                {"at": time.monotonic(), "type": "say", "text": text, "what": "mhm"}
            )
            pcm = float_to_pcm16(self.voice(text))
        speech = len(pcm) > frame
        self._speaking = speech
        self.timeline.append((time.monotonic(), self._ms))
        try:
            sent = await super()._send(platform, pcm)
        finally:
            self._speaking = False
            if speech:
                self._spoke_at = time.monotonic()
        self.timeline.append((time.monotonic(), self._ms))
        return sent


# == scoring (the bot's decision events; never used for reacting) ==============================
OUTCOMES = (
    "resolved_speech",  # answered correctly, or routed to the right queue, by speech
    "resolved_keypad",  # routed to the right queue by the keypad menu
    "person",  # handed to a person (the contact centre or the errand's own forvaltning)
    "misrouted",  # wrong queue, or a wrong answer
    "notice_112",  # an emergency that heard "if someone is in danger, ring 112" first
    "needless_112",  # told to ring 112 without an emergency
    "missed_112",  # an emergency that did not hear 112 first
    "abandoned",  # no decision: the caller gave up or the call failed
)


def outcome(
    scenario: Scenario, catalogue: Catalogue, decisions: list[dict[str, Any]]
) -> tuple[str, dict[str, Any] | None]:
    """The call's outcome from the bot's first final decision (what the caller was given); for
    an emergency, from the first decision that told it to ring 112, as an act or a notice."""
    intent = scenario.intent
    if intent == "emergency":
        told = next(
            (d for d in decisions if d.get("action") in TERMINAL or d.get("emergency_notice")),
            None,
        )
        if told is not None and told.get("action") == "emergency":
            return "resolved_speech", told
        if told is not None and told.get("emergency_notice"):
            return "notice_112", told
        return ("missed_112" if told is not None else "abandoned"), told
    final = next((d for d in decisions if d.get("action") in TERMINAL), None)
    if final is None:
        return "abandoned", None
    action, forvaltning = final.get("action"), final.get("forvaltning")
    expected = catalogue.intents[intent].forvaltning
    if action == "emergency":
        return "needless_112", final
    if action == "human":
        right = forvaltning in ("KONTAKTCENTER", expected)
        return ("person" if right else "misrouted"), final
    if intent in PERSON_INTENTS:  # they needed a person; any answer or queue is wrong
        return "misrouted", final
    if action in ("answer", "national_body"):
        return ("resolved_speech" if final.get("intent") == intent else "misrouted"), final
    if forvaltning != expected:
        return "misrouted", final
    keypad = str(final.get("reason", "")).startswith("keypad")
    return ("resolved_keypad" if keypad else "resolved_speech"), final
