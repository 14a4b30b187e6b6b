"""Measuring a candidate: out-of-fold scores on the training data, the served classifier's
figures on a held-back split, bootstrap intervals over sentences, and latency."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from models.compare_intents.data import SEED, Data, Variant
from models.compare_intents.families import Family, Fitted, FittedLogReg
from models.evaluation import first_turns_of, intent_metrics
from models.intent_data import Example
from models.train_intents import sample_weights
from voicebot.dialogue import DialoguePolicy
from voicebot.understanding import IntentClassifier

BOOTSTRAP = 1000
LATENCY_N = 200  # held-back sentences timed per candidate


# -- cross-validation (training data only) ---------------------------------------------------
def oof_scores(
    family: Family, data: Data, variant: Variant, step: Callable[[], object]
) -> np.ndarray:
    """Out-of-fold scores for every pool row; each fold trains on the variant's rows only."""
    mask = variant.rows(data.pool)
    weights = sample_weights(data.pool, variant.asr_weight)
    texts = data.texts
    out = np.zeros((len(texts), len(data.classes)))
    for k in np.unique(data.folds):
        fit_rows = np.flatnonzero((data.folds != k) & mask)
        model = family.fit(
            [texts[i] for i in fit_rows], data.y[fit_rows], weights[fit_rows], len(data.classes)
        )
        val = np.flatnonzero(data.folds == k)
        out[val] = model.scores([texts[i] for i in val])
        step()
    return out


def macro_f1(gold: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Macro-F1 over the classes 0..n_classes-1 present in `gold` (as
    models.evaluation.intent_metrics): a class nobody said neither helps nor hurts."""
    present = np.flatnonzero(np.bincount(gold, minlength=n_classes)[:n_classes])
    if not len(present):
        return 0.0
    return float(f1_score(gold, pred, labels=present, average="macro", zero_division=0))


def best_by_cv(cv: dict[float, float]) -> float:
    """The grid value with the best CV score; ties go to the first (smallest) value."""
    return max(sorted(cv), key=lambda v: (cv[v], -v))


# -- held-back scoring --------------------------------------------------------------------------
def cluster_bootstrap(
    clusters: Sequence[str], n: int = BOOTSTRAP, seed: int = SEED
) -> list[np.ndarray]:
    """Row-index resamples that draw whole clusters (a sentence and its transcripts)."""
    names, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    members = [np.flatnonzero(inverse == c) for c in range(len(names))]
    rng = np.random.default_rng(seed)
    return [
        np.concatenate([members[c] for c in rng.integers(0, len(names), len(names))])
        for _ in range(n)
    ]


def interval(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


@dataclass
class Scored:
    gold: list[str]
    predicted: list[str]
    confidence: list[float]
    metrics: dict[str, Any] = field(default_factory=dict)

    def as_indices(self, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Gold and predicted labels as indices into `labels`, for resampling."""
        index = {label: i for i, label in enumerate(labels)}
        return np.array([index[g] for g in self.gold]), np.array([index[p] for p in self.predicted])


def score(
    classifier: IntentClassifier,
    examples: Sequence[Example],
    labels: list[str],
    policy: Callable[[], DialoguePolicy],
) -> Scored:
    results = [classifier.classify(e.text, explain=False) for e in examples]
    gold = [e.intent for e in examples]
    predicted = [r.intent for r in results]
    confidence = [r.confidence for r in results]
    metrics = intent_metrics(gold, predicted, confidence, labels=labels)
    metrics["first_turn"] = first_turns_of(gold, [e.text for e in examples], results, policy)
    return Scored(gold, predicted, confidence, metrics)


SUMMARY_KEYS = (
    "n",
    "accuracy",
    "macro_f1",
    "oos_precision",
    "oos_recall",
    "oos_false_accept_rate",
    "ece",
    "first_turn",
)


def summary(s: Scored, boot: list[np.ndarray]) -> dict[str, Any]:
    """The split's figures for the report, with a bootstrap interval on macro-F1."""
    gold, pred = s.as_indices(s.metrics["labels"])
    n = len(s.metrics["labels"])
    f1s = [macro_f1(gold[b], pred[b], n) for b in boot]
    return {
        **{k: s.metrics.get(k) for k in SUMMARY_KEYS},
        "macro_f1_ci95": interval(f1s),
        "per_intent_recall": s.metrics["per_intent_recall"],
    }


def paired_delta(a: Scored, b: Scored, labels: list[str], boot: list[np.ndarray]) -> dict[str, Any]:
    """Macro-F1 of `a` minus that of `b` on the same rows, with a paired bootstrap interval."""
    gold, pa = a.as_indices(labels)
    _, pb = b.as_indices(labels)
    n = len(labels)
    deltas = [macro_f1(gold[i], pa[i], n) - macro_f1(gold[i], pb[i], n) for i in boot]
    return {"delta": macro_f1(gold, pa, n) - macro_f1(gold, pb, n), "ci95": interval(deltas)}


# -- latency --------------------------------------------------------------------------------------
def latencies_ms(fn: Callable[[str], object], texts: Sequence[str]) -> dict[str, float]:
    fn(texts[0])  # warm-up
    ms = []
    for t in texts:
        start = time.perf_counter()
        fn(t)
        ms.append((time.perf_counter() - start) * 1000)
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95))}


def framework_latency(fitted: Fitted, texts: Sequence[str]) -> dict[str, float]:
    """The training framework's own single-utterance inference, on one thread as ONNX runs."""
    if isinstance(fitted, FittedLogReg):
        return latencies_ms(lambda t: fitted.scores([t]), texts)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return latencies_ms(lambda t: fitted.scores([t]), texts)
    finally:
        torch.set_num_threads(threads)
