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


def load_tsv(path: Path, source: str | None = None) -> list[Example]:
    """Rows with at least the columns `text` and `intent` (header line required)."""
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if not reader.fieldnames or not {"text", "intent"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: needs a header with the columns 'text' and 'intent'")
        return [
            Example(row["text"].strip(), row["intent"].strip(), source or row.get("source") or path.stem)
            for row in reader
            if row.get("text") and row["text"].strip()
        ]


def load_heldout() -> list[Example]:
    return load_tsv(INTENTS_DIR / "heldout.tsv", "heldout")
