"""The intent catalogue (intents/catalogue.yaml): intents, forvaltninger, prompts, keypad menu.

Loaded and validated once at start. A malformed catalogue raises CatalogueError naming the
file and the entry, so an operator editing the routing table sees what to fix.
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
    "greeting", "confirm", "rephrase", "keypad_menu", "route", "human", "after_answer",
    "no_input", "busy", "overloaded", "goodbye",
)  # fmt: skip
# The placeholders each prompt may use: `route` is formatted with {queue} (DialoguePolicy),
# `keypad_menu` with {menu} (Catalogue.keypad_menu_text); `confirm` documents {name} (the
# intents' own confirm texts are what is asked). Other prompts are spoken as written.
PROMPT_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "route": frozenset({"queue"}),
    "keypad_menu": frozenset({"menu"}),
    "confirm": frozenset({"name"}),
}


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


class Forvaltning(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    queue: str = Field(min_length=1)


class Intent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = ""
    name: str = Field(min_length=1)
    forvaltning: str | None
    action: Action
    confirm: str = Field(min_length=1)
    answer: str | None = None
    key_terms: list[str] = []
    trigger_phrases: list[str] = []
    source: str | None = None
    checked: dt.date | None = None

    @model_validator(mode="after")
    def _answer_when_spoken(self) -> Intent:
        needs_answer = {Action.ANSWER, Action.EMERGENCY, Action.NATIONAL_BODY}
        if self.action in needs_answer and not (self.answer and self.answer.strip()):
            raise ValueError(f"action '{self.action}' needs an 'answer' text")
        return self


class KeypadEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    intent: str
    label: str
    forvaltning: str


class Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_: int = Field(alias="schema")
    municipality: str
    valid_from: dt.date
    review_after_days: int = Field(365, ge=1)
    forvaltninger: dict[str, Forvaltning]
    prompts: dict[str, str]
    keypad: dict[str, KeypadEntry]
    yes_words: list[str]
    no_words: list[str]
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
        absent = [p for p in REQUIRED_PROMPTS if p not in self.prompts]
        if absent:
            raise ValueError(f"prompts missing: {', '.join(absent)}")
        for name, text in self.prompts.items():
            _check_placeholders(f"prompts.{name}", text, PROMPT_PLACEHOLDERS.get(name, frozenset()))
        return self

    # -- look-ups used by the dialogue -------------------------------------------------
    def intent(self, intent_id: str) -> Intent:
        return self.intents[intent_id]

    def queue_name(self, forvaltning: str) -> str:
        return self.forvaltninger[forvaltning].queue

    def keypad_menu_text(self) -> str:
        items = [f"Tryk {d} for {e.label}." for d, e in sorted(self.keypad.items()) if d != "0"]
        return self.prompts["keypad_menu"].format(menu=" ".join(items))

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


def load_catalogue(path: str | Path) -> Catalogue:
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
        return Catalogue.model_validate(raw)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            where = ".".join(str(p) for p in e["loc"]) or "(top level)"
            problems.append(f"  {where}: {e['msg']}")
        raise CatalogueError(f"{path}: invalid intent catalogue:\n" + "\n".join(problems)) from err
