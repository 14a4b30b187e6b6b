"""Reading the intent training data in intents/.

- intents/utterances/<intent>.txt: written utterances, one per line (training only)
- intents/heldout.tsv: the fixed held-back test split (text, intent); training never reads it
- intents/asr/*.tsv: ASR transcripts of synthesized utterances (text, intent, ...), made by
  `voicebot make-training-data`; rows from held-back sentences live in heldout_asr.tsv
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from voicebot.config import PROJECT_ROOT

INTENTS_DIR = PROJECT_ROOT / "intents"


@dataclass(frozen=True)
class Example:
    text: str
    intent: str
    source: str = "written"


def load_utterances(directory: Path = INTENTS_DIR / "utterances") -> list[Example]:
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


def load_heldout() -> list[Example]:
    return load_tsv(INTENTS_DIR / "heldout.tsv", "heldout")
