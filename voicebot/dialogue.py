"""The dialogue policy: a small state machine that always gets the caller somewhere.

    listening ──confident──▶ answer (then listening) / route / human / emergency
        │  └─unsure──▶ confirming ──ja──▶ act ; ──nej (+ new request)──▶ listening
        └─not understood──▶ rephrase ──again──▶ keypad menu ──again──▶ a person

Thresholds live in configuration (dialogue.accept / dialogue.confirm, or a language's own in
dialogue.per_language); once the bot has failed to understand a caller, even a confident guess
is confirmed first. A caller is never asked to try again more than twice; "0" or asking for a
person works in every state; an emergency overrides everything and "ring 112" comes first.
An emergency the model alone hears below the accept threshold (where another errand would be
asked about) gets "ring 112" as a notice ("if someone is in danger, hang up and ring 112 now")
and the call goes on; the keypad menu starts with the same notice.

The policy speaks one language at a time (`language`): every text it says comes from the
catalogue in that language, and yes/no is heard in it. Saying a language's name as the
whole turn ("English") or pressing its key switches it (action "language").
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
    language: str | None = None  # set by a "language" decision: the call goes on in it
    emergency_notice: bool = False  # `say` tells the caller to ring 112 if someone is in danger

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action, "intent": self.intent, "confidence": round(self.confidence, 4),
            "forvaltning": self.forvaltning, "explanation": self.explanation, "reason": self.reason,
            "emergency_notice": self.emergency_notice,
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
        self,
        catalogue: Catalogue,
        classifier: IntentClassifier,
        settings: DialogueSettings,
        language: str | None = None,
    ):
        self.catalogue = catalogue
        self.settings = settings
        self.state = State.LISTENING
        self.failures = 0
        self.no_inputs = 0
        self.pending: Understanding | None = None  # the intent a confirm question asks about
        self.last_intent: str | None = None
        # A whole turn that names a language ("English", "engelsk") asks for it.
        self._language_names = {
            normalize(word): code
            for code, lang in catalogue.languages.items()
            for word in lang.switch_words
        }
        self.set_language(language or catalogue.default_language, classifier)

    def set_language(self, language: str, classifier: IntentClassifier) -> None:
        """Speak and listen in `language` from now on (its classifier understands it)."""
        self.language = language
        self.classifier = classifier
        self._yes = _phrase_pattern(self.catalogue.yes_words[language])
        self._no = _phrase_pattern(self.catalogue.no_words[language])
        # Its own thresholds: each language's model and recognition err differently.
        self.thresholds = self.settings.thresholds(language)

    def text(self, prompt: str) -> str:
        return self.catalogue.prompt(prompt, self.language)

    # -- events ----------------------------------------------------------------------
    def on_utterance(self, text: str, understanding: Understanding | None = None) -> Decision:
        self.no_inputs = 0
        asked = self._language_names.get(normalize(text))
        if asked is not None and self.state is not State.DONE:  # "English" as the whole turn
            return self._switch_language(asked, f"caller said '{text}'")
        if self.state is State.LISTENING and _only_greeting(text):
            # "Hej ..." and a pause: the errand is still to come; answering now would talk over it.
            return Decision("listen", "", reason="greeting only")
        understanding = understanding or self.classifier.classify(text)
        # Emergencies and requests for a person win in every state, at the base confirm
        # threshold even where a language's own is stricter: a missed "ring 112" can cost a
        # life. Below the accept threshold an emergency is a notice, not a question: "ring
        # 112" still comes first, and a garbled errand is not sent away with it.
        urgent = min(self.thresholds.confirm, self.settings.confirm)
        if understanding.intent in ("emergency", "human_agent") and (
            understanding.rule or understanding.confidence >= urgent
        ):
            if understanding.intent == "emergency" and self._possible(understanding):
                return self._emergency_notice(understanding)
            return self._act(understanding)
        if self.state is State.CONFIRMING:
            return self._on_confirm_reply(text, understanding)
        if self.state is State.AFTER_ANSWER:
            reply = self._yes_no(text)
            if reply == "yes":  # "ja" to "vil du tale med en medarbejder?"
                return self.to_person(self.last_intent, "asked for a person after the answer")
            errand = self._errand_after_no(text) if reply == "no" else None
            if errand is not None:  # "nej, men min skraldespand ...": not done, a new errand
                return self._decide(errand)
            if reply == "no" or normalize(text) in _THANKS:
                self.state = State.DONE
                return Decision(
                    "goodbye",
                    self.text("goodbye"),
                    hang_up=True,
                    reason="caller was done after the answer",
                )
        return self._decide(understanding)

    def on_digit(self, digit: str) -> Decision:
        self.no_inputs = 0  # a key pressed is an answer: the caller is there
        asked = self.catalogue.language_for_key(digit)
        if asked is not None:
            return self._switch_language(asked, f"pressed {digit}")
        entry = self.catalogue.keypad.get(digit)
        if entry is None:
            return self._failure("unknown key")
        if entry.intent == "human_agent":  # the caller's own choice: certain
            return self.to_person(None, "pressed 0", forvaltning=entry.forvaltning, confidence=1.0)
        self.state = State.DONE
        return Decision(
            "route",
            self.text("route").format(
                queue=self.catalogue.queue_name(entry.forvaltning, self.language)
            ),
            intent=entry.intent,
            confidence=1.0,
            forvaltning=entry.forvaltning,
            hand_off=True,
            explanation=[f"tast {digit}: {entry.label[self.catalogue.default_language]}"],
            reason=f"keypad {digit}",
        )

    def on_no_input(self) -> Decision:
        self.no_inputs += 1
        if self.no_inputs >= 2:
            return self.to_person(None, "no answer from the caller twice")
        return Decision("no_input", self.text("no_input"), reason="caller silent")

    def _switch_language(self, language: str, reason: str) -> Decision:
        """The caller asked for a language: the call goes on in it (the session switches
        recognition, understanding and voice), and earlier failures in the wrong language
        no longer count."""
        if language != self.language:
            self.failures = 0
        self.state = State.LISTENING
        self.pending = None
        return Decision(
            "language",
            self.catalogue.prompt("language_switched", language),
            reason=reason,
            language=language,
        )

    # -- the policy ------------------------------------------------------------------
    def _decide(self, u: Understanding) -> Decision:
        if u.intent == "out_of_scope" or u.confidence < self.thresholds.confirm:
            return self._failure(f"not understood ({u.intent} {u.confidence:.2f})", u)
        # Once the bot has failed to understand this caller, even a confident guess is asked
        # about before the call goes anywhere: a misheard caller is often misheard again, and
        # a wrong queue is the worst outcome (bench calls, README "Whole calls").
        if u.confidence < self.thresholds.accept or self.failures > 0:
            self.state = State.CONFIRMING
            self.pending = u
            question = self.catalogue.intent(u.intent).confirm[self.language]
            return Decision(
                "confirm",
                question,
                intent=u.intent,
                confidence=u.confidence,
                explanation=u.explanation,
                reason="unsure, asking once",
            )
        return self._act(u)

    def _possible(self, u: Understanding) -> bool:
        """An emergency heard by the model alone, below the accept threshold, where another
        errand would be asked about: that band holds garbled errands as well as real
        emergencies (held-back transcripts and bench calls: "ring 112" to passport callers)."""
        return not u.rule and u.confidence < self.thresholds.accept

    def _emergency_notice(self, u: Understanding) -> Decision:
        """A possible emergency: "ring 112" comes first, as for a sure one, but as a notice
        ("if someone is in danger ..."), and a caller who is not in danger goes on with the
        errand (asked again, as for a turn not understood) instead of being sent away."""
        then = self._failure(f"possible emergency ({u.intent} {u.confidence:.2f})", u)
        notice = self.text("emergency_notice")
        if not then.emergency_notice:  # the keypad menu starts with the notice itself
            then.say = f"{notice} {then.say}"
        then.emergency_notice = True
        return then

    def _on_confirm_reply(self, text: str, u: Understanding) -> Decision:
        pending, self.pending = self.pending, None
        self.state = State.LISTENING
        reply = self._yes_no(text)
        if reply == "yes" and pending is not None and self._agrees(text, pending):
            return self._act(
                Understanding(
                    pending.intent,
                    pending.confidence,
                    explanation=pending.explanation,
                    rule="confirmed by the caller",
                )
            )
        if reply == "no":
            retry = self._errand_after_no(text)  # "nej, det er parkering"
            if retry is not None:
                return (
                    self._act(retry)
                    if pending is None or retry.intent != pending.intent
                    else self._failure("denied", retry)
                )
            return self._failure("caller said no to the confirm question", u)
        # Neither yes nor no: the reply is a new description of the errand, not an answer.
        # Understood or not, it counts as a failure (confirm questions cannot follow each
        # other for ever, and a reply misheard as a confident errand is not acted on unasked).
        if u.intent != "out_of_scope" and self.thresholds.confirm <= u.confidence:
            return self._failure("no yes or no to the confirm question", u)
        return self._decide(u)

    def _errand_after_no(self, text: str) -> Understanding | None:
        """What follows a "nej" ("nej, det er parkering"), when it is an errand understood."""
        rest = self._no.sub(" ", _FILLERS.sub("", normalize(text)), count=1).strip()
        if not rest:
            return None
        retry = self.classifier.classify(rest)
        if retry.intent == "out_of_scope" or retry.confidence < self.thresholds.confirm:
            return None
        return retry

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
                assert intent.answer is not None  # the catalogue refuses it without an answer
                # "Ring 112" first; a caller who stays on the line reaches a person.
                self.state = State.DONE
                return Decision(
                    "emergency",
                    intent.answer[self.language],
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
                say = self.text("route").format(
                    queue=self.catalogue.queue_name(intent.forvaltning, self.language)
                )
                return Decision(
                    "route", say, forvaltning=intent.forvaltning, hand_off=True, **common
                )
            case Action.ANSWER | Action.NATIONAL_BODY:
                assert intent.answer is not None  # the catalogue refuses it without an answer
                self.state = State.AFTER_ANSWER
                say = intent.answer[self.language]
                if intent.action is Action.ANSWER:
                    say = f"{say} {self.text('after_answer')}"
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
            # The contact centre, not the queue of a guess the bot never trusted: a caller
            # waiting in the wrong forvaltning's queue is the worst outcome (bench calls, stop
            # 22: a health-card caller sent to Socialforvaltningen on a 0.59 guess). The guess
            # goes with the call for the agent.
            return self.to_person(
                u.intent if u else None,
                f"{reason}; tried {self.failures - 1} times",
                forvaltning="KONTAKTCENTER",
                understanding=u,
            )
        if self.failures == 1:
            return Decision("rephrase", self.text("rephrase"), reason=reason, **extra)
        return Decision(
            "keypad_menu",
            self.catalogue.keypad_menu_text(self.language),
            reason=reason,
            emergency_notice=True,  # the menu starts with it
            **extra,
        )

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
        say = self.text("human")
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

_THANKS = {"tak", "mange tak", "tak for det", "thanks", "thank you", "thank you very much"}
# Words that greet, and the little words that may come with a greeting ("hej med dig", "øh hej").
# "morning" greets as "godmorgen" does: "good morning" alone is a greeting.
_SALUTATIONS = frozenset(
    {"hej", "hejsa", "goddag", "dav", "davs", "hallo", "halløj", "godmorgen", "godaften",
     "hello", "hi", "hey", "morning", "afternoon", "evening"}
)  # fmt: skip
_GREETING_WORDS = _SALUTATIONS | {
    "good", "uh", "um", "there",
    "øh", "øhm", "ja", "jo", "altså", "med", "dig", "jer", "nå",
}  # fmt: skip


def _only_greeting(text: str) -> bool:
    """A turn of greeting words only, with at least one real salutation in it."""
    words = normalize(text).split()
    return (
        len(words) <= 4
        and all(w in _GREETING_WORDS for w in words)
        and any(w in _SALUTATIONS for w in words)
    )


_FILLERS = re.compile(r"^(?:(?:øh+m?|øhm|hm+|mm+|altså|okay|ok|nå|uh+m?|um+|erm?|well)\s+)+")


def _phrase_pattern(phrases: list[str]) -> re.Pattern[str]:
    alternatives = sorted((re.escape(normalize(p)) for p in phrases), key=len, reverse=True)
    return re.compile(rf"^(?:{'|'.join(alternatives)})(?!\w)")
