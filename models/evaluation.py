"""Measuring the bot: ASR word/character error rates with Danish text normalisation, and
intent-classification metrics. Used by `voicebot eval-asr`, `voicebot eval-intents` and the
benchmarks."""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
from num2words import num2words

from telephony.base import SAMPLE_RATE
from voicebot.config import PROJECT_ROOT

SPEECH_DIR = PROJECT_ROOT.parent / "shared" / "data" / "danish-speech"  # the real Danish recordings

_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_PUNCT = re.compile(r"[^\w\s]|_")


def normalize_danish(text: str) -> str:
    """Case, punctuation and numbers folded so that only words count: "Pas, 3 uger!" and
    "pas tre uger" are the same. Numbers become Danish words ("25" → "femogtyve")."""
    text = unicodedata.normalize("NFC", text.lower())
    text = text.replace("-", " ")

    def spell(match: re.Match) -> str:
        raw = match.group().replace(",", ".")
        try:
            return " " + num2words(float(raw) if "." in raw else int(raw), lang="da") + " "
        except (ValueError, OverflowError, NotImplementedError):
            return match.group()

    text = _NUMBER.sub(spell, text)
    text = _PUNCT.sub(" ", text)
    return " ".join(text.split())


def error_rates(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """Corpus WER and CER (errors summed over all utterances, not averaged per utterance)."""
    refs = [normalize_danish(r) for r in references]
    hyps = [normalize_danish(h) for h in hypotheses]
    pairs = [(r, h) for r, h in zip(refs, hyps, strict=True) if r]
    if not pairs:
        return {"wer": float("nan"), "cer": float("nan")}
    r, h = zip(*pairs, strict=True)
    return {"wer": float(jiwer.wer(list(r), list(h))), "cer": float(jiwer.cer(list(r), list(h)))}


@dataclass
class ManifestItem:
    audio: Path
    reference: str


def load_manifest(path: str | Path) -> list[ManifestItem]:
    """Lines `audio path<TAB>reference text`; relative paths are relative to the manifest.
    Blank lines and lines starting with # are skipped."""
    path = Path(path)
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            raise ValueError(f"{path}:{n}: expected 'audio<TAB>reference', got {line!r}")
        audio = Path(parts[0])
        items.append(
            ManifestItem(audio if audio.is_absolute() else path.parent / audio, parts[1].strip())
        )
    return items


@dataclass
class AsrEvaluation:
    wer: float
    cer: float
    utterances: int
    audio_s: float
    asr_s: float
    latency_ms_p50: float
    latency_ms_p95: float
    rows: list[dict] = field(default_factory=list)

    def as_dict(self, with_rows: bool = True) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "rows"}
        d["rtf"] = self.asr_s / self.audio_s if self.audio_s else None
        if with_rows:
            d["rows"] = self.rows
        return d


def evaluate_asr(
    items: Iterable[ManifestItem],
    transcribe: Callable[[np.ndarray], str],
    load: Callable[[Path], np.ndarray],
    progress: bool = False,
) -> AsrEvaluation:
    """Run `transcribe` (16 kHz float32 → text) over a manifest and score it."""
    from tqdm import tqdm

    rows, refs, hyps, latencies = [], [], [], []
    audio_s = 0.0
    items = list(items)
    for item in tqdm(items, desc="eval-asr", unit="utt", disable=not progress):
        audio = load(item.audio)
        start = time.perf_counter()
        text = transcribe(audio)
        ms = (time.perf_counter() - start) * 1000
        audio_s += len(audio) / SAMPLE_RATE
        latencies.append(ms)
        refs.append(item.reference)
        hyps.append(text)
        one = error_rates([item.reference], [text])
        rows.append(
            {
                "audio": str(item.audio),
                "reference": item.reference,
                "text": text,
                "wer": round(one["wer"], 4),
                "asr_ms": round(ms, 1),
            }
        )
    rates = error_rates(refs, hyps)
    return AsrEvaluation(
        wer=rates["wer"],
        cer=rates["cer"],
        utterances=len(rows),
        audio_s=audio_s,
        asr_s=sum(latencies) / 1000,
        latency_ms_p50=float(np.percentile(latencies, 50)) if latencies else float("nan"),
        latency_ms_p95=float(np.percentile(latencies, 95)) if latencies else float("nan"),
        rows=rows,
    )


# -- intents ---------------------------------------------------------------------------
def intent_metrics(
    gold: list[str],
    predicted: list[str],
    confidences: list[float] | None = None,
    labels: list[str] | None = None,
) -> dict:
    """Accuracy, macro-F1, per-intent recall, out-of-scope false-accept rate and precision/
    recall, the confusion matrix, and (given confidences) the expected calibration error."""
    labels = labels or sorted(set(gold) | set(predicted))
    index = {label: i for i, label in enumerate(labels)}
    confusion = np.zeros((len(labels), len(labels)), dtype=int)
    for g, p in zip(gold, predicted, strict=True):
        confusion[index[g], index[p]] += 1
    tp = np.diag(confusion).astype(float)
    support = confusion.sum(axis=1).astype(float)
    predicted_n = confusion.sum(axis=0).astype(float)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    precision = np.divide(tp, predicted_n, out=np.zeros_like(tp), where=predicted_n > 0)
    f1 = np.divide(
        2 * precision * recall,
        precision + recall,
        out=np.zeros_like(tp),
        where=(precision + recall) > 0,
    )
    present = support > 0
    result = {
        "n": len(gold),
        "accuracy": float(tp.sum() / max(1, len(gold))),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_intent_recall": {
            label: round(float(recall[i]), 4) for i, label in enumerate(labels) if present[i]
        },
        "labels": labels,
        "confusion": confusion.tolist(),
    }
    if "out_of_scope" in index:
        o = index["out_of_scope"]
        negatives = support[o]
        # A false accept: an out-of-scope call the bot took for a municipal errand.
        result["oos_false_accept_rate"] = (
            float((negatives - tp[o]) / negatives) if negatives else None
        )
        result["oos_precision"] = float(precision[o]) if predicted_n[o] else None
        result["oos_recall"] = float(recall[o]) if negatives else None
    if confidences is not None:
        result["ece"] = expected_calibration_error(
            confidences, [g == p for g, p in zip(gold, predicted, strict=True)]
        )
    return result


def expected_calibration_error(
    confidences: list[float], correct: list[bool], bins: int = 10
) -> float:
    conf = np.asarray(confidences, dtype=float)
    hit = np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (conf > lo) & (conf <= hi) if lo > 0 else (conf >= lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(hit[in_bin].mean() - conf[in_bin].mean())
    return float(ece)


# Dialogue actions that carry the caller off at once on an intent (no confirm question).
ACTS = frozenset({"answer", "route", "human", "emergency", "national_body"})


def first_turn(
    gold: Sequence[str], actions: Sequence[str], intents: Sequence[str | None]
) -> dict[str, Any]:
    """What the dialogue policy does with each first utterance: act at once on the right
    intent, act at once on a wrong one (an out-of-scope call acted on counts as wrong), send a
    non-emergency caller to 112, ask a confirm question, or ask to rephrase."""
    acted = [a in ACTS for a in actions]
    n = len(gold)
    counts = {
        "acts_right": sum(a and i == g for a, i, g in zip(acted, intents, gold, strict=True)),
        "acts_wrong": sum(a and i != g for a, i, g in zip(acted, intents, gold, strict=True)),
        "false_112": sum(
            a == "emergency" and g != "emergency" for a, g in zip(actions, gold, strict=True)
        ),
        "confirms": sum(a == "confirm" for a in actions),
    }
    counts["rephrase"] = n - counts["acts_right"] - counts["acts_wrong"] - counts["confirms"]
    return {"n": n, **counts}


def first_turns_of(
    gold: Sequence[str],
    texts: Sequence[str],
    understood: Sequence[Any],
    new_policy: Callable[[], Any],
) -> dict[str, Any]:
    """`first_turn` for utterances already classified: each is the opening turn of a call of
    its own (a fresh dialogue policy from `new_policy`)."""
    decisions = [new_policy().on_utterance(t, u) for t, u in zip(texts, understood, strict=True)]
    return first_turn(gold, [d.action for d in decisions], [d.intent for d in decisions])
