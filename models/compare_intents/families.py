"""The model families compared: how each is fitted, exported to ONNX and served. The shipped
logistic regression lives here; the two torch families are in neural.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.compare_intents.fitted import Fitted, Served, write_sidecar
from models.compare_intents.neural import CNN_CHANNELS, CharIntentModel, fit_charcnn, fit_mlp
from models.train_intents import LogReg, export_onnx
from voicebot.understanding import IntentModel

FAMILIES = ("logreg", "charcnn", "mlp")


@dataclass
class Family:
    name: str
    fit: Callable[[list[str], np.ndarray, np.ndarray, int], Fitted]
    serve: Callable[[Path], Served]
    description: str
    needs_torch: bool = False


@dataclass
class FittedLogReg:
    model: LogReg

    def scores(self, texts: list[str]) -> np.ndarray:
        return self.model.scores(texts)

    def export(self, path: Path, meta: dict[str, Any]) -> None:
        export_onnx(self.model.pipeline, len(self.model.vocabulary), path)
        write_sidecar(path, {**meta, "vocabulary": self.model.vocabulary})


def fit_logreg(texts: list[str], y: np.ndarray, weights: np.ndarray, n_classes: int) -> Fitted:
    return FittedLogReg(LogReg.fit(texts, y, weights))


def families() -> dict[str, Family]:
    return {
        "logreg": Family("logreg", fit_logreg, IntentModel,
                         "TF-IDF (word 1–2-grams + char 3–5-grams) → logistic regression (shipped)"),
        "charcnn": Family("charcnn", fit_charcnn, CharIntentModel,
                          f"char embeddings → 2 × conv(5, {CNN_CHANNELS}) → max+mean pool → linear (torch)",
                          needs_torch=True),
        "mlp": Family("mlp", fit_mlp, IntentModel,
                      "same TF-IDF features → 256 ReLU → linear (torch)", needs_torch=True),
    }  # fmt: skip


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True
