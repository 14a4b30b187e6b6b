"""The intent catalogue (intents/catalogue.yaml): intents, forvaltninger, prompts, keypad menu.

Everything the bot says exists in every language the catalogue declares under `languages`
(the first one is the language a call starts in): a text is a mapping `{da: ..., en: ...}`,
a word list `{da: [...], en: [...]}`. Loaded and validated once at start. A malformed
catalogue, or one with a text missing in a declared language, raises CatalogueError naming
the file and the entry, so an operator editing the routing table sees what to fix.
"""

from __future__ import annotations

import datetime as dt
import string
from enum import StrEnum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

INTENT_IDS = (
    "passport", "driving_licence", "health_card", "moving", "mitid", "parking_permit",
    "parking_fine", "waste", "building", "elder_care", "childcare_school", "job_centre",
    "social_services", "national_body", "human_agent", "emergency", "out_of_scope",
)  # fmt: skip
REQUIRED_PROMPTS = (
    "greeting", "confirm", "rephrase", "keypad_menu", "keypad_item", "route", "human",
    "after_answer", "no_input", "busy", "overloaded", "goodbye", "language_switched",
    "emergency_notice",
)  # fmt: skip
# The placeholders each prompt may use: `route` is formatted with {queue} (DialoguePolicy),
# `keypad_menu` with {menu} and `keypad_item` with {key} and {label}
# (Catalogue.keypad_menu_text); `confirm` documents {name} (the intents' own confirm texts
# are what is asked). Other prompts are spoken as written.
PROMPT_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "route": frozenset({"queue"}),
    "keypad_menu": frozenset({"menu"}),
    "keypad_item": frozenset({"key", "label"}),
    "confirm": frozenset({"name"}),
}
Text = dict[str, str]  # language code → what is said in it
Words = dict[str, list[str]]  # language code → words or phrases


def placeholders(text: str) -> set[str]:
    """The `{name}` fields in a text; ValueError for a brace that opens no field."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def _check_placeholders(where: str, text: str, allowed: frozenset[str]) -> None:
    """A text may use only the placeholders the code fills in: any other would fail when
    a caller reaches it, and that caller would hear nothing."""
    try:
        found = placeholders(text)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc} (write a literal brace as {{{{ or }}}})") from None
    unknown = sorted(found - allowed)
    if unknown:
        known = ", ".join(f"{{{p}}}" for p in sorted(allowed)) or "none"
        raise ValueError(
            f"{where}: unknown placeholder {', '.join(f'{{{u}}}' for u in unknown)} "
            f"(this text may use: {known})"
        )


class CatalogueError(Exception):
    """The catalogue cannot be used; the message names the file and the entry."""


class Action(StrEnum):
    ANSWER = "answer"
    ROUTE = "route"
    HUMAN = "human"
    EMERGENCY = "emergency"
    NATIONAL_BODY = "national_body"
    CLARIFY = "clarify"


class Language(BaseModel):
    """A language the bot serves callers in."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)  # in the language itself: "English"
    # Said in this language's voice right after the greeting (not for the first language).
    offer: str | None = None
    # A whole turn that is one of these switches the call to this language ("English").
    switch_words: list[str] = []
    key: str | None = None  # a key that switches the call to this language ...
    key_offer: str | None = None  # ... offered after the keypad menu in this language's voice

    @model_validator(mode="after")
    def _key_with_offer(self) -> Language:
        if self.key is not None and not (self.key_offer and "{key}" in self.key_offer):
            raise ValueError("a language with a `key` needs a `key_offer` that says {key}")
        return self


class Forvaltning(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    queue: Text  # the queue's name as the caller hears it; the first language's for agents


class Intent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = ""
    name: str = Field(min_length=1)
    forvaltning: str | None
    action: Action
    confirm: Text
    answer: Text | None = None
    key_terms: list[str] = []
    # Per language: a trigger phrase is a word of one language ("fire" is Danish for four).
    trigger_phrases: Words = {}
    source: str | None = None
    checked: dt.date | None = None

    @model_validator(mode="after")
    def _answer_when_spoken(self) -> Intent:
        needs_answer = {Action.ANSWER, Action.EMERGENCY, Action.NATIONAL_BODY}
        if self.action in needs_answer and not self.answer:
            raise ValueError(f"action '{self.action}' needs an 'answer' text")
        return self


class KeypadEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    intent: str
    label: Text
    forvaltning: str


class Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_: int = Field(alias="schema")
    municipality: str
    valid_from: dt.date
    review_after_days: int = Field(365, ge=1)
    languages: dict[str, Language] = Field(min_length=1)  # the first: where every call starts
    forvaltninger: dict[str, Forvaltning]
    prompts: dict[str, Text]
    keypad: dict[str, KeypadEntry]
    yes_words: Words
    no_words: Words
    intents: dict[str, Intent]

    @model_validator(mode="after")
    def _consistent(self) -> Catalogue:
        missing = [i for i in INTENT_IDS if i not in self.intents]
        if missing:
            raise ValueError(f"intents missing: {', '.join(missing)}")
        unknown = [i for i in self.intents if i not in INTENT_IDS]
        if unknown:
            raise ValueError(
                f"unknown intent ids: {', '.join(unknown)} (allowed: {', '.join(INTENT_IDS)})"
            )
        for intent_id, intent in self.intents.items():
            intent.id = intent_id
            if intent.forvaltning is not None and intent.forvaltning not in self.forvaltninger:
                raise ValueError(
                    f"intents.{intent_id}.forvaltning: '{intent.forvaltning}' is not one of "
                    f"the forvaltninger ({', '.join(self.forvaltninger)})"
                )
            if intent.action in (Action.ROUTE, Action.HUMAN) and intent.forvaltning is None:
                raise ValueError(
                    f"intents.{intent_id}: action '{intent.action}' needs a forvaltning"
                )
        for digit, entry in self.keypad.items():
            if digit not in "0123456789" or len(digit) != 1:
                raise ValueError(f"keypad.{digit}: keys are single digits")
            if entry.intent not in self.intents:
                raise ValueError(f"keypad.{digit}.intent: unknown intent '{entry.intent}'")
            if entry.forvaltning not in self.forvaltninger:
                raise ValueError(
                    f"keypad.{digit}.forvaltning: unknown forvaltning '{entry.forvaltning}'"
                )
        if "0" not in self.keypad or self.keypad["0"].intent != "human_agent":
            raise ValueError("keypad.0 must reach a person (intent human_agent)")
        for code, language in self.languages.items():
            if language.key is not None and (language.key in self.keypad or len(language.key) != 1):
                raise ValueError(
                    f"languages.{code}.key: '{language.key}' must be a single digit the keypad "
                    f"menu does not use ({', '.join(sorted(self.keypad))})"
                )
        absent = [p for p in REQUIRED_PROMPTS if p not in self.prompts]
        if absent:
            raise ValueError(f"prompts missing: {', '.join(absent)}")
        for where, texts in self._every_text():
            self._check_languages(where, texts)
        for name, prompt_texts in self.prompts.items():
            for code, text in prompt_texts.items():
                allowed = PROMPT_PLACEHOLDERS.get(name, frozenset())
                _check_placeholders(f"prompts.{name}.{code}", text, allowed)
        return self

    def _every_text(self) -> list[tuple[str, dict[str, object]]]:
        """Everything said or matched per language, with where it is in the file."""
        found: list[tuple[str, dict[str, object]]] = [
            ("yes_words", dict(self.yes_words)),
            ("no_words", dict(self.no_words)),
        ]
        found += [(f"prompts.{n}", dict(t)) for n, t in self.prompts.items()]
        found += [
            (f"forvaltninger.{f}.queue", dict(v.queue)) for f, v in self.forvaltninger.items()
        ]
        found += [(f"keypad.{d}.label", dict(e.label)) for d, e in self.keypad.items()]
        for intent_id, intent in self.intents.items():
            found.append((f"intents.{intent_id}.confirm", dict(intent.confirm)))
            if intent.answer is not None:
                found.append((f"intents.{intent_id}.answer", dict(intent.answer)))
            if intent.trigger_phrases:  # rules that stop in one language would fail a caller
                found.append((f"intents.{intent_id}.trigger_phrases", dict(intent.trigger_phrases)))
        return found

    def _check_languages(self, where: str, texts: dict[str, object]) -> None:
        unknown = sorted(set(texts) - set(self.languages))
        if unknown:
            raise ValueError(
                f"{where}: language {', '.join(unknown)} is not declared under `languages` "
                f"({', '.join(self.languages)})"
            )
        for code in self.languages:
            value = texts.get(code)
            if value == [] and where.endswith(".trigger_phrases"):
                continue  # `da: []`: no rule in this language, said on purpose; the model decides
            if not value or (isinstance(value, str) and not value.strip()):
                raise ValueError(f"{where}: no text in '{code}' (every language needs one)")

    # -- look-ups used by the dialogue -------------------------------------------------
    @property
    def default_language(self) -> str:
        """The language every call starts in (the first under `languages`)."""
        return next(iter(self.languages))

    def intent(self, intent_id: str) -> Intent:
        return self.intents[intent_id]

    def prompt(self, name: str, language: str) -> str:
        return self.prompts[name][language]

    def queue_name(self, forvaltning: str, language: str | None = None) -> str:
        """The queue's name as said in `language`; agents and platforms get the first language's."""
        return self.forvaltninger[forvaltning].queue[language or self.default_language]

    def keypad_menu_text(self, language: str | None = None) -> str:
        """The keypad menu, after the emergency notice: a caller the bot has failed to
        understand twice may be one it cannot hear, and "ring 112" must come before any queue."""
        language = language or self.default_language
        item = self.prompts["keypad_item"][language]
        items = [
            item.format(key=d, label=e.label[language])
            for d, e in sorted(self.keypad.items())
            if d != "0"
        ]
        menu = self.prompts["keypad_menu"][language].format(menu=" ".join(items))
        return f"{self.prompts['emergency_notice'][language]} {menu}"

    def language_for_key(self, digit: str) -> str | None:
        return next((c for c, lang in self.languages.items() if lang.key == digit), None)

    def check_languages(self, languages: list[str]) -> None:
        """Configured languages the catalogue does not serve fail the start (CatalogueError)."""
        missing = [code for code in languages if code not in self.languages]
        if missing:
            raise CatalogueError(
                f"languages.{missing[0]}: configured in `languages` but the catalogue has no "
                f"texts in it (it declares {', '.join(self.languages)})"
            )

    def domain_terms(self) -> list[str]:
        seen: dict[str, None] = {}
        for intent in self.intents.values():
            for term in intent.key_terms:
                seen.setdefault(term, None)
        return list(seen)

    def stale_answers(self, today: dt.date | None = None) -> list[str]:
        today = today or dt.date.today()
        limit = dt.timedelta(days=self.review_after_days)
        return [i.id for i in self.intents.values() if i.checked and today - i.checked > limit]


def load_catalogue(path: str | Path, languages: list[str] | None = None) -> Catalogue:
    """Load and validate; `languages` (the settings') must all be served by the catalogue."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogueError(f"{path}: cannot read the intent catalogue: {exc}") from exc
    except UnicodeDecodeError as exc:  # a binary or non-UTF-8 file
        raise CatalogueError(
            f"{path}: the intent catalogue is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from exc
    except yaml.YAMLError as exc:
        raise CatalogueError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise CatalogueError(f"{path}: the top level must be a mapping")
    try:
        catalogue = Catalogue.model_validate(raw)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            where = ".".join(str(p) for p in e["loc"]) or "(top level)"
            problems.append(f"  {where}: {e['msg']}")
        raise CatalogueError(f"{path}: invalid intent catalogue:\n" + "\n".join(problems)) from err
    try:
        catalogue.check_languages(languages or [])
    except CatalogueError as err:
        raise CatalogueError(f"{path}: {err}") from None
    return catalogue
