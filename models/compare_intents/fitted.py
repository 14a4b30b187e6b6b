"""What every compared model offers once fitted (scores, ONNX export) and once served
(probabilities), shared by the logreg family and the torch families."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class Fitted(Protocol):
    def scores(self, texts: list[str]) -> np.ndarray: ...
    def export(self, path: Path, meta: dict[str, Any]) -> None: ...


class Served(Protocol):
    classes: list[str]

    def probabilities(self, texts: list[str]) -> np.ndarray: ...


def write_sidecar(path: Path, meta: dict[str, Any]) -> None:
    path.with_suffix(".json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
