"""The waiting prompts (intents/waiting_prompts.yaml): closed, expected wait and callback texts
per language, validated at start (every text present, only its own placeholders), and how
a number is read back (digits in groups)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from voicebot.catalogue import _check_placeholders
from voicebot.config import ConfigError, Settings
from voicebot.hours import OpeningHours, load_hours

if TYPE_CHECKING:
    from voicebot.catalogue import Catalogue

PROMPT_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "closed": frozenset({"queue_name", "when"}),
    "closed_not_reopening": frozenset({"queue_name"}),
    "closed_offer": frozenset(),
    "wait": frozenset({"minutes"}),
    "wait_offer": frozenset(),
    "enter_number": frozenset(),
    "number_invalid": frozenset(),
    "read_back": frozenset({"digits"}),
    "callback_confirmed": frozenset({"queue_name"}),
    "declined_closed": frozenset(),
    "callback_unavailable": frozenset(),
}
WORD_LISTS = ("yes_words", "no_words")
LANGUAGES = ("da", "en")


class WaitingPromptsError(ConfigError):
    """The waiting prompts cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class WaitingPrompts:
    language: str
    texts: dict[str, str]
    yes_words: tuple[str, ...]
    no_words: tuple[str, ...]

    def say(self, key: str, **fields: Any) -> str:
        return self.texts[key].format(**fields)

    def _starts_with(self, text: str, words: tuple[str, ...]) -> bool:
        said = " ".join(text.lower().replace(",", " ").replace(".", " ").split())
        return any(said == w or said.startswith(w + " ") for w in words)

    def is_yes(self, text: str) -> bool:
        return self._starts_with(text, self.yes_words) and not self.is_no(text)

    def is_no(self, text: str) -> bool:
        return self._starts_with(text, self.no_words)


def _parse_language(language: str, entry: Any, source: str) -> WaitingPrompts:
    if not isinstance(entry, dict):
        raise WaitingPromptsError(f"{source}: {language}: expected a mapping of texts")
    unknown = sorted(set(entry) - set(PROMPT_PLACEHOLDERS) - set(WORD_LISTS))
    if unknown:
        raise WaitingPromptsError(f"{source}: {language}.{unknown[0]}: unknown prompt")
    texts: dict[str, str] = {}
    for key, allowed in PROMPT_PLACEHOLDERS.items():
        text = entry.get(key)
        if not isinstance(text, str) or not text.strip():
            raise WaitingPromptsError(f"{source}: {language}.{key}: missing or empty")
        try:
            _check_placeholders(f"{source}: {language}.{key}", text, allowed)
        except ValueError as exc:
            raise WaitingPromptsError(str(exc)) from None
        texts[key] = " ".join(text.split())
    words: dict[str, tuple[str, ...]] = {}
    for key in WORD_LISTS:
        listed = entry.get(key)
        if (
            not isinstance(listed, list)
            or not listed
            or not all(isinstance(w, str) for w in listed)
        ):
            raise WaitingPromptsError(f"{source}: {language}.{key}: expected a list of words")
        words[key] = tuple(w.lower().strip() for w in listed)
    return WaitingPrompts(language, texts, words["yes_words"], words["no_words"])


def load_waiting_prompts(path: Path) -> dict[str, WaitingPrompts]:
    """Every language's prompts; both Danish and English must be there."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise WaitingPromptsError(f"cannot read waiting prompts {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise WaitingPromptsError(f"{path}: the top level must map languages (da, en) to texts")
    missing = [lang for lang in LANGUAGES if lang not in data]
    if missing:
        raise WaitingPromptsError(f"{path}: no prompts for language {', '.join(missing)}")
    return {str(lang): _parse_language(str(lang), entry, str(path)) for lang, entry in data.items()}


def spoken_digits(number: str, language: str = "da") -> str:
    """A number to read back, in groups with pauses: Danes say a number in pairs
    ("12, 34, 56, 78"; "plus 45, ..." for a country code), English speakers digit by digit
    in groups ("1 2 3, 4 5 6, 7 8")."""
    digits = "".join(ch for ch in number if ch.isdigit())
    plus = number.strip().startswith("+")
    country, rest = (digits[:2], digits[2:]) if plus else ("", digits)
    size = 2 if language == "da" else 3
    if language == "da" and len(rest) % 2:  # an odd count: the first group has three
        groups = [rest[:3]] + [rest[i : i + 2] for i in range(3, len(rest), 2)]
    else:
        groups = [rest[i : i + size] for i in range(0, len(rest), size)]
    if language != "da":
        groups = [" ".join(g) for g in groups]
    lead = (["plus " + (country if language == "da" else " ".join(country))]) if plus else []
    return ", ".join(lead + groups)


@dataclass(frozen=True)
class WaitingData:
    hours: OpeningHours
    prompts: dict[str, WaitingPrompts]


@cache
def _load(hours: Path, prompts: Path, queues: frozenset[str]) -> WaitingData:
    return WaitingData(load_hours(hours, set(queues)), load_waiting_prompts(prompts))


def load_waiting(settings: Settings, catalogue: Catalogue) -> WaitingData:
    """The opening hours and waiting prompts, read and validated once (at start)."""
    return _load(settings.hours, settings.waiting.prompts, frozenset(catalogue.forvaltninger))
