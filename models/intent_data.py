"""Reading the intent training data in intents/, per language (Danish, the default, and English).

- intents/utterances/<intent>.txt: Danish written utterances, one per line (training only);
  intents/utterances/<language>/<intent>.txt: the same for another language ("en/")
- intents/heldout.tsv (Danish) and intents/heldout_<language>.tsv: the fixed held-back test
  splits (text, intent[, language]); training never reads them
- intents/asr/*.tsv: ASR transcripts of synthesized utterances (text, intent, ...), made by
  `voicebot make-training-data`: train_asr.tsv / heldout_asr.tsv for Danish,
  train_asr_<language>.tsv / heldout_asr_<language>.tsv for another language
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from voicebot.config import PROJECT_ROOT

INTENTS_DIR = PROJECT_ROOT / "intents"
DEFAULT_LANGUAGE = "da"  # the files without a language in their name are Danish
LANGUAGES = ("da", "en")


def _suffix(language: str) -> str:
    if language not in LANGUAGES:
        raise ValueError(
            f"unknown language {language!r}: the intent data has {', '.join(LANGUAGES)}"
        )
    return "" if language == DEFAULT_LANGUAGE else f"_{language}"


def utterances_dir(language: str = DEFAULT_LANGUAGE) -> Path:
    base = INTENTS_DIR / "utterances"
    return base if _suffix(language) == "" else base / language


def heldout_path(language: str = DEFAULT_LANGUAGE) -> Path:
    return INTENTS_DIR / f"heldout{_suffix(language)}.tsv"


def asr_path(split: str, language: str = DEFAULT_LANGUAGE) -> Path:
    """The ASR transcripts of the training (`split` "train") or held-back ("heldout") sentences."""
    if split not in ("train", "heldout"):
        raise ValueError(f"unknown split {split!r}")
    return INTENTS_DIR / "asr" / f"{split}_asr{_suffix(language)}.tsv"


@dataclass(frozen=True)
class Example:
    text: str
    intent: str
    source: str = "written"


def load_utterances(
    directory: Path | None = None, language: str = DEFAULT_LANGUAGE
) -> list[Example]:
    """The written utterances of `language` (or of the files in `directory`). The Danish
    directory holds the other languages' directories: only its own *.txt files are read."""
    directory = utterances_dir(language) if directory is None else directory
    examples = []
    for path in sorted(directory.glob("*.txt")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                examples.append(Example(line.strip(), path.stem))
    return examples


def read_tsv(path: Path, columns: tuple[str, ...] = ("text", "intent")) -> list[dict[str, str]]:
    """The rows of a TSV with a header line naming at least `columns` (no quoting: the files
    are written without it). A short row's missing cells read as ""."""
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE, restval="")
        if not reader.fieldnames or not set(columns) <= set(reader.fieldnames):
            raise ValueError(
                f"{path}: needs a header with the columns {', '.join(map(repr, columns))}"
            )
        return list(reader)


def load_tsv(path: Path, source: str | None = None, keep_empty: bool = False) -> list[Example]:
    """Rows with at least the columns `text` and `intent`. Rows with no text are dropped, or
    kept with `keep_empty` (an evaluation set of transcripts: the bot hears silence too)."""
    return [
        Example(
            row["text"].strip(), row["intent"].strip(), source or row.get("source") or path.stem
        )
        for row in read_tsv(path)
        if keep_empty or row["text"].strip()
    ]


def load_heldout(language: str = DEFAULT_LANGUAGE) -> list[Example]:
    return load_tsv(heldout_path(language), "heldout")


def row_languages(path: Path, default: str = DEFAULT_LANGUAGE) -> list[str]:
    """The language of every row of a labelled TSV (its `language` column, else `default`),
    in the order load_tsv(path, keep_empty=True) returns them."""
    return [(row.get("language") or "").strip() or default for row in read_tsv(path)]
