"""Classifier suite: the shipped intent model served by onnxruntime against the training
framework's own inference on the same texts (intents/heldout.tsv).

  onnx-model            IntentModel.probabilities([text]): features + ONNX session (1 thread)
  classify              IntentClassifier.classify(text, explain=False): catalogue trigger
                        phrases first, then the model (what the bot runs on a speculative result)
  classify+explain      the same with the occlusion explanation (one extra row per word; what
                        the bot runs on a final transcript)
  sklearn               the pipeline of models/train_intents.py refit on the shipped model's
                        training data: count_matrix([text]) + predict_proba

Per-utterance latency is one call per text, one text at a time; throughput is texts per second
of those calls, plus one batch call over all texts. "model only" times the scoring step on
precomputed features (ONNX session.run on dense counts vs predict_proba on the sparse matrix).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks.suites.common import Context, fmt, markdown_table, summarize


def _time_each(texts: list[str], fn: Callable[[str], Any], reps: int, desc: str) -> list[float]:
    out = []
    for _ in range(reps):
        for text in tqdm(texts, desc=desc, unit="text", leave=False):
            start = time.perf_counter_ns()
            fn(text)
            out.append((time.perf_counter_ns() - start) / 1e6)
    return out


def _training_set(meta: dict[str, Any]) -> tuple[list[Any], str]:
    """The training examples whose digest matches the shipped model's (written only, or
    written + ASR transcripts); the current full set when neither matches (reported)."""
    from models.train_intents import training_examples

    candidates = {
        "written": training_examples(use_asr=False),
        "written+asr": training_examples(use_asr=True),
    }
    for name, examples in candidates.items():
        digest = hashlib.sha256(
            "\n".join(f"{e.intent}\t{e.text}" for e in examples).encode()
        ).hexdigest()
        if digest == meta.get("training_sha256"):
            return examples, name
    return candidates["written+asr"], "written+asr (digest differs from the shipped model's)"


def run(ctx: Context) -> dict[str, Any]:
    from models.intent_data import load_heldout
    from models.train_intents import LogReg, count_matrix, sample_weights
    from voicebot.catalogue import load_catalogue
    from voicebot.config import Settings
    from voicebot.understanding import IntentClassifier, IntentModel

    settings = Settings()
    texts = [e.text for e in load_heldout()]
    if ctx.quick:
        texts = texts[::4]
    reps = 1 if ctx.quick else 3
    model = IntentModel(settings.intent_model)
    classifier = IntentClassifier(model, load_catalogue(settings.catalogue))
    meta = json.loads(Path(settings.intent_model).with_suffix(".json").read_text(encoding="utf-8"))

    examples, training_set = _training_set(meta)
    classes = sorted({e.intent for e in examples})
    y = np.array([classes.index(e.intent) for e in examples])
    start = time.perf_counter()
    sk = LogReg.fit(
        [e.text for e in examples],
        y,
        sample_weights(examples, meta.get("asr_weight", 1.0)),
        meta.get("C", 8.0),
    )
    fit_s = time.perf_counter() - start

    def sk_proba(text: str) -> np.ndarray:
        return sk.pipeline.predict_proba(count_matrix([text], sk.vocabulary))

    for text in texts[:5]:  # warm-up: first-call allocations
        model.probabilities([text])
        classifier.classify(text)
        sk_proba(text)

    per_text = {
        "onnx-model": _time_each(texts, lambda t: model.probabilities([t]), reps, "onnx"),
        "classify": _time_each(
            texts, lambda t: classifier.classify(t, explain=False), reps, "classify"
        ),
        "classify+explain": _time_each(
            texts, lambda t: classifier.classify(t, explain=True), reps, "explain"
        ),
        "sklearn": _time_each(texts, sk_proba, reps, "sklearn"),
    }
    counts = model.counts(texts)
    sparse_counts = count_matrix(texts, sk.vocabulary)
    model_only = {
        "onnx-model": _time_each(
            list(range(len(texts))), lambda i: model.scores(counts[i : i + 1]), reps, "onnx scores"
        ),
        "sklearn": _time_each(
            list(range(len(texts))),
            lambda i: sk.pipeline.predict_proba(sparse_counts[i : i + 1]),
            reps,
            "sklearn proba",
        ),
    }
    batch = {}
    for name, fn in (
        ("onnx-model", lambda: model.probabilities(texts)),
        ("sklearn", lambda: sk.pipeline.predict_proba(count_matrix(texts, sk.vocabulary))),
    ):
        start = time.perf_counter()
        fn()
        batch[name] = len(texts) / (time.perf_counter() - start)

    onnx_top = model.probabilities(texts).argmax(1)
    sk_top = sk.pipeline.predict_proba(count_matrix(texts, sk.vocabulary)).argmax(1)
    agree = float(
        np.mean([model.classes[a] == classes[b] for a, b in zip(onnx_top, sk_top, strict=True)])
    )
    return {
        "texts": len(texts),
        "reps": reps,
        "training_set": training_set,
        "training_examples": len(examples),
        "refit_s": fit_s,
        "vocabulary": len(sk.vocabulary),
        "per_text_ms": {
            k: summarize(v) | {"per_s": 1000 * len(v) / sum(v)} for k, v in per_text.items()
        },
        "model_only_ms": {k: summarize(v) for k, v in model_only.items()},
        "batch_per_s": batch,
        "top_intent_agreement": agree,  # ONNX export vs the refit sklearn pipeline
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "## Intent classifier",
        "",
        f"{result['texts']} held-back texts × {result['reps']}, one text per call. sklearn: the pipeline of "
        f"models/train_intents.py refit on the shipped model's training data ({result['training_set']}, "
        f"{result['training_examples']} examples, {result['refit_s']:.1f} s to fit); top intent agrees with "
        f"the ONNX model on {100 * result['top_intent_agreement']:.1f} % of texts.",
        "",
    ]
    rows = []
    for name, s in result["per_text_ms"].items():
        mo = result["model_only_ms"].get(name)
        rows.append(
            [
                f"`{name}`",
                fmt(s["p50"], 3),
                fmt(s["p95"], 3),
                fmt(s["per_s"]),
                fmt(mo["p50"], 3) if mo else "–",
                fmt(result["batch_per_s"].get(name)),
            ]
        )
    lines.append(
        markdown_table(
            [
                "path",
                "p50 ms",
                "p95 ms",
                "texts/s (one by one)",
                "model only p50 ms",
                "texts/s (one batch)",
            ],
            rows,
        )
    )
    return "\n".join(lines)


def plot(result: dict[str, Any], out_dir: Path) -> list[str]:
    import matplotlib.pyplot as plt

    names = list(result["per_text_ms"])
    p50 = [result["per_text_ms"][n]["p50"] for n in names]
    p95 = [result["per_text_ms"][n]["p95"] for n in names]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    y = np.arange(len(names))
    ax.barh(y, p95, color="#cfd8e3", label="p95")
    ax.barh(y, p50, color="#3b6ea5", label="p50")
    for i, (a, b) in enumerate(zip(p50, p95, strict=True)):
        ax.text(b, i, f"  p50 {a:.2f} / p95 {b:.2f} ms", va="center", fontsize=8)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(min(p50) / 2, max(p95) * 8)
    ax.set_xlabel("ms per utterance (log scale)")
    ax.set_title("Intent classification latency")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out_dir / "classifier.png", dpi=110)
    plt.close(fig)
    return ["classifier.png"]
