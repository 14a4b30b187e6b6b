"""Train the intent model and export it to ONNX (served by voicebot.understanding).

Model: TF-IDF over voicebot.understanding.text_features (word uni/bigrams + character
3–5-grams), then multinomial logistic regression. Confidence is calibrated by temperature
scaling fitted on cross-validated scores of the training data (the held-back split is never
read here). Export: intent.onnx (counts → TF-IDF → class scores) + intent.json (vocabulary,
classes, temperature, provenance).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline

from models.intent_data import Example, load_asr_training, load_utterances
from voicebot.understanding import softmax, text_features


def build_vocabulary(texts: list[str], min_count: int = 1) -> dict[str, int]:
    counts = Counter(f for t in texts for f in set(text_features(t)))
    kept = sorted(f for f, c in counts.items() if c >= min_count)
    return {f: i for i, f in enumerate(kept)}


def count_matrix(texts: list[str], vocabulary: dict[str, int]) -> sparse.csr_matrix:
    rows, cols, vals = [], [], []
    for r, text in enumerate(texts):
        for f, c in Counter(text_features(text)).items():
            col = vocabulary.get(f)
            if col is not None:
                rows.append(r)
                cols.append(col)
                vals.append(float(c))
    return sparse.csr_matrix((vals, (rows, cols)), shape=(len(texts), len(vocabulary)), dtype=np.float32)


def make_pipeline(c: float = 8.0) -> Pipeline:
    return Pipeline([
        ("tfidf", TfidfTransformer(sublinear_tf=True)),
        ("lr", LogisticRegression(C=c, max_iter=3000, class_weight="balanced")),
    ])


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of held-out scores."""
    best_t, best_nll = 1.0, np.inf
    for t in np.exp(np.linspace(np.log(0.05), np.log(20.0), 200)):
        p = softmax(scores / t)
        nll = -np.mean(np.log(p[np.arange(len(labels)), labels] + 1e-12))
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return best_t


def train(examples: list[Example], out_path: Path, c: float = 8.0, seed: int = 0) -> dict:
    texts = [e.text for e in examples]
    classes = sorted({e.intent for e in examples})
    y = np.array([classes.index(e.intent) for e in examples])
    vocabulary = build_vocabulary(texts, min_count=2)
    x = count_matrix(texts, vocabulary)

    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    cv_scores = cross_val_predict(make_pipeline(c), x, y, cv=folds, method="decision_function")
    temperature = fit_temperature(cv_scores, y)

    pipeline = make_pipeline(c).fit(x, y)
    export_onnx(pipeline, len(vocabulary), out_path)
    digest = hashlib.sha256("\n".join(f"{e.intent}\t{e.text}" for e in examples).encode()).hexdigest()
    meta = {
        "classes": classes,
        "temperature": temperature,
        "family": "tfidf-char-word-logreg",
        "C": c,
        "training_examples": len(examples),
        "training_sources": dict(Counter(e.source for e in examples)),
        "training_sha256": digest,
        "cv_accuracy": float(np.mean(cv_scores.argmax(1) == y)),
        "vocabulary": vocabulary,
    }
    out_path.with_suffix(".json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    return {k: v for k, v in meta.items() if k != "vocabulary"}


def export_onnx(pipeline: Pipeline, n_features: int, out_path: Path) -> None:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    lr = pipeline.named_steps["lr"]
    onx = to_onnx(
        pipeline,
        initial_types=[("counts", FloatTensorType([None, n_features]))],
        options={id(lr): {"zipmap": False, "raw_scores": True}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    for output in onx.graph.output:  # skl2onnx pins the batch size to 1; any batch works
        dims = output.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "batch"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(onx.SerializeToString())


def training_examples(use_asr: bool = True) -> list[Example]:
    examples = load_utterances()
    if use_asr:
        examples += load_asr_training()
    return examples
