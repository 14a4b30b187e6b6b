"""The dialogue policy: a small state machine that always gets the caller somewhere.

    listening ──confident──▶ answer (then listening) / route / human / emergency
        │  └─unsure──▶ confirming ──ja──▶ act ; ──nej (+ new request)──▶ listening
        └─not understood──▶ rephrase ──again──▶ keypad menu ──again──▶ a person

Thresholds live in configuration (dialogue.accept / dialogue.confirm). A caller is never
asked to try again more than twice; "0" or asking for a person works in every state; an
emergency overrides everything and "ring 112" comes first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypedDict

from voicebot.catalogue import Action, Catalogue
from voicebot.config import DialogueSettings
from voicebot.understanding import IntentClassifier, Understanding, normalize


class State(StrEnum):
    LISTENING = "listening"
    CONFIRMING = "confirming"
    AFTER_ANSWER = "after_answer"
    DONE = "done"


@dataclass
class Decision:
    action: str  # answer | route | human | emergency | national_body | confirm | rephrase | keypad_menu | goodbye
    say: str
    intent: str | None = None
    confidence: float = 0.0
    forvaltning: str | None = None  # set when the call goes to a queue
    hand_off: bool = False  # the call leaves the bot after `say`
    hang_up: bool = False
    explanation: list[str] = field(default_factory=list)
    reason: str = ""  # why, for the agent and the logs

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action, "intent": self.intent, "confidence": round(self.confidence, 4),
            "forvaltning": self.forvaltning, "explanation": self.explanation, "reason": self.reason,
        }  # fmt: skip


class _Grounds(TypedDict):
    """What a decision was based on (Decision's fields of the same names)."""

    intent: str | None
    confidence: float
    explanation: list[str]


class _Reasoned(_Grounds):
    reason: str


class DialoguePolicy:
    """One call's dialogue state."""

    def __init__(
        self, catalogue: Catalogue, classifier: IntentClassifier, settings: DialogueSettings
    ):
        self.catalogue = catalogue
        self.classifier = classifier
        self.settings = settings
        self.state = State.LISTENING
        self.failures = 0
        self.no_inputs = 0
        self.pending: Understanding | None = None  # the intent a confirm question asks about
        self.last_intent: str | None = None
        self._yes = _phrase_pattern(catalogue.yes_words)
        self._no = _phrase_pattern(catalogue.no_words)

    # -- events ----------------------------------------------------------------------
    def on_utterance(self, text: str, understanding: Understanding | None = None) -> Decision:
        self.no_inputs = 0
        if self.state is State.LISTENING and _only_greeting(text):
            # "Hej ..." and a pause: the errand is still to come; answering now would talk over it.
            return Decision("listen", "", reason="greeting only")
        understanding = understanding or self.classifier.classify(text)
        # Emergencies and requests for a person win in every state.
        if understanding.intent in ("emergency", "human_agent") and (
            understanding.rule or understanding.confidence >= self.settings.confirm
        ):
            return self._act(understanding)
        if self.state is State.CONFIRMING:
            return self._on_confirm_reply(text, understanding)
        if self.state is State.AFTER_ANSWER:
            reply = self._yes_no(text)
            if reply == "yes":  # "ja" to "vil du tale med en medarbejder?"
                return self.to_person(self.last_intent, "asked for a person after the answer")
            if reply == "no" or normalize(text) in ("tak", "mange tak", "tak for det"):
                self.state = State.DONE
                return Decision(
                    "goodbye",
                    self.catalogue.prompts["goodbye"],
                    hang_up=True,
                    reason="caller was done after the answer",
                )
        return self._decide(understanding)

    def on_digit(self, digit: str) -> Decision:
        entry = self.catalogue.keypad.get(digit)
        if entry is None:
            return self._failure("unknown key")
        if entry.intent == "human_agent":  # the caller's own choice: certain
            return self.to_person(None, "pressed 0", forvaltning=entry.forvaltning, confidence=1.0)
        self.state = State.DONE
        return Decision(
            "route",
            self.catalogue.prompts["route"].format(
                queue=self.catalogue.queue_name(entry.forvaltning)
            ),
            intent=entry.intent,
            confidence=1.0,
            forvaltning=entry.forvaltning,
            hand_off=True,
            explanation=[f"tast {digit}: {entry.label}"],
            reason=f"keypad {digit}",
        )

    def on_no_input(self) -> Decision:
        self.no_inputs += 1
        if self.no_inputs >= 2:
            return self.to_person(None, "no answer from the caller twice")
        return Decision("no_input", self.catalogue.prompts["no_input"], reason="caller silent")

    # -- the policy ------------------------------------------------------------------
    def _decide(self, u: Understanding) -> Decision:
        if u.intent == "out_of_scope" or u.confidence < self.settings.confirm:
            return self._failure(f"not understood ({u.intent} {u.confidence:.2f})", u)
        if u.confidence < self.settings.accept:
            self.state = State.CONFIRMING
            self.pending = u
            question = self.catalogue.intent(u.intent).confirm
            return Decision(
                "confirm",
                question,
                intent=u.intent,
                confidence=u.confidence,
                explanation=u.explanation,
                reason="unsure, asking once",
            )
        return self._act(u)

    def _on_confirm_reply(self, text: str, u: Understanding) -> Decision:
        pending, self.pending = self.pending, None
        self.state = State.LISTENING
        reply = self._yes_no(text)
        if reply == "yes" and pending is not None and self._agrees(text, pending):
            return self._act(
                Understanding(
                    pending.intent,
                    pending.confidence,
                    [],
                    pending.explanation,
                    rule="confirmed by the caller",
                )
            )
        if reply == "no":
            rest = self._no.sub(" ", normalize(text), count=1).strip()
            if rest:  # "nej, det er parkering"
                retry = self.classifier.classify(rest)
                if retry.intent != "out_of_scope" and retry.confidence >= self.settings.confirm:
                    return (
                        self._act(retry)
                        if pending is None or retry.intent != pending.intent
                        else self._failure("denied", retry)
                    )
            return self._failure("caller said no to the confirm question", u)
        # Neither yes nor no: the reply is a new description of the errand. Unsure again
        # counts as a failure, so confirm questions cannot follow each other for ever.
        if (
            u.intent != "out_of_scope"
            and self.settings.confirm <= u.confidence < self.settings.accept
        ):
            return self._failure("still unsure after the confirm question", u)
        return self._decide(u)

    def _agrees(self, text: str, pending: Understanding) -> bool:
        """A "ja" that is the answer: short ("ja", "ja, det er rigtigt"), or followed by words
        about the same errand. Whisper often starts a transcript with "Ja," the caller never
        said, so a long reply that only starts with it is read as a new description."""
        rest = self._yes.sub(" ", _FILLERS.sub("", normalize(text)), count=1).strip()
        if len(rest.split()) <= SHORT_ANSWER_WORDS:
            return True
        return self.classifier.classify(rest, explain=False).intent == pending.intent

    def _act(self, u: Understanding) -> Decision:
        intent = self.catalogue.intent(u.intent)
        self.last_intent = u.intent
        common = _Reasoned(
            intent=u.intent,
            confidence=u.confidence,
            explanation=u.explanation,
            reason=u.rule or "model",
        )
        match intent.action:
            case Action.EMERGENCY:
                # "Ring 112" first; a caller who stays on the line reaches a person.
                self.state = State.DONE
                return Decision(
                    "emergency",
                    intent.answer or "",
                    forvaltning=intent.forvaltning,
                    hand_off=True,
                    **common,
                )
            case Action.HUMAN:
                return self.to_person(
                    u.intent,
                    "caller asked for a person",
                    forvaltning=intent.forvaltning,
                    understanding=u,
                )
            case Action.ROUTE:
                assert intent.forvaltning is not None  # the catalogue refuses a route without one
                self.state = State.DONE
                say = self.catalogue.prompts["route"].format(
                    queue=self.catalogue.queue_name(intent.forvaltning)
                )
                return Decision(
                    "route", say, forvaltning=intent.forvaltning, hand_off=True, **common
                )
            case Action.ANSWER | Action.NATIONAL_BODY:
                self.state = State.AFTER_ANSWER
                say = intent.answer or ""
                if intent.action is Action.ANSWER:
                    say = f"{say} {self.catalogue.prompts['after_answer']}"
                return Decision(intent.action.value, say, **common)
            case _:
                return self._failure("clarify", u)

    def _failure(self, reason: str, u: Understanding | None = None) -> Decision:
        self.failures += 1
        self.state = State.LISTENING
        extra = _Grounds(
            intent=u.intent if u else None,
            confidence=u.confidence if u else 0.0,
            explanation=u.explanation if u else [],
        )
        if self.failures > self.settings.max_retries:
            return self.to_person(
                u.intent if u else None,
                f"{reason}; tried {self.failures - 1} times",
                understanding=u,
            )
        if self.failures == 1:
            return Decision("rephrase", self.catalogue.prompts["rephrase"], reason=reason, **extra)
        return Decision("keypad_menu", self.catalogue.keypad_menu_text(), reason=reason, **extra)

    def to_person(
        self,
        intent_id: str | None,
        reason: str,
        forvaltning: str | None = None,
        understanding: Understanding | None = None,
        confidence: float = 0.0,
    ) -> Decision:
        """Hand the call to a person: the matter's own forvaltning when known, else the contact centre.
        The decision's confidence is the classifier's, as it decided (0 when nothing was
        understood): the queue record must not claim a certainty the bot did not have."""
        self.state = State.DONE
        if forvaltning is None and intent_id is not None:
            intent = self.catalogue.intent(intent_id)
            forvaltning = (
                intent.forvaltning if intent.action in (Action.ROUTE, Action.ANSWER) else None
            )
        forvaltning = forvaltning or "KONTAKTCENTER"
        say = self.catalogue.prompts["human"]
        return Decision(
            "human",
            say,
            intent=intent_id or "human_agent",
            confidence=understanding.confidence if understanding else confidence,
            forvaltning=forvaltning,
            hand_off=True,
            explanation=understanding.explanation if understanding else [],
            reason=reason,
        )

    def _yes_no(self, text: str) -> str | None:
        norm = _FILLERS.sub("", normalize(text))
        # "nej" before "ja": "nej, ja, det er parkering" is a no.
        if self._no.match(norm):
            return "no"
        if self._yes.match(norm):
            return "yes"
        return None


SHORT_ANSWER_WORDS = 3  # words after "ja" that still make a plain yes: "ja, det er rigtigt"

_GREETING_WORDS = {
    "hej",
    "hejsa",
    "goddag",
    "dav",
    "davs",
    "hallo",
    "halløj",
    "godmorgen",
    "godaften",
    "øh",
    "øhm",
    "ja",
    "jo",
    "altså",
    "med",
    "dig",
    "jer",
    "nå",
}


def _only_greeting(text: str) -> bool:
    words = normalize(text).split()
    return (
        0 < len(words) <= 4
        and all(w in _GREETING_WORDS for w in words)
        and any(
            w
            in ("hej", "hejsa", "goddag", "dav", "davs", "hallo", "halløj", "godmorgen", "godaften")
            for w in words
        )
    )


_FILLERS = re.compile(r"^(?:(?:øh+m?|øhm|hm+|mm+|altså|okay|ok|nå)\s+)+")


def _phrase_pattern(phrases: list[str]) -> re.Pattern[str]:
    alternatives = sorted((re.escape(normalize(p)) for p in phrases), key=len, reverse=True)
    return re.compile(rf"^(?:{'|'.join(alternatives)})(?!\w)")
