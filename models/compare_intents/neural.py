"""The two torch families: a character CNN and a one-hidden-layer network over the logreg's
TF-IDF features, with their training loop, ONNX export and the char CNN's ONNX serving.
torch is optional (the `bench` extra), so it is imported inside the functions."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from models.compare_intents.data import SEED
from models.compare_intents.fitted import Fitted, write_sidecar
from models.train_intents import build_vocabulary, count_matrix
from voicebot.understanding import normalize, softmax

MAX_CHARS = 256
CNN_CHANNELS = 64
CNN_EPOCHS = 25
MLP_EPOCHS = 20
CNN_BATCH = 32
MLP_BATCH = 128


def batch_order(
    n: int, batch: int, rng: np.random.Generator, lengths: np.ndarray | None = None
) -> list[np.ndarray]:
    """Shuffled mini-batches; with `lengths`, rows of similar length share a batch (within
    windows of 20 batches) so that little time goes on padding."""
    order = rng.permutation(n)
    if lengths is None:
        return [order[i : i + batch] for i in range(0, n, batch)]
    batches = []
    for w in range(0, n, batch * 20):
        window = order[w : w + batch * 20]
        window = window[np.argsort(lengths[window], kind="stable")]
        batches += [window[i : i + batch] for i in range(0, len(window), batch)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _torch_train(
    net: Any,
    batches: Callable[[np.ndarray], tuple],
    y: np.ndarray,
    weights: np.ndarray,
    n_classes: int,
    epochs: int,
    lr: float,
    batch: int,
    lengths: np.ndarray | None = None,
) -> None:
    """AdamW on cross-entropy weighted by class balance (as the logreg's class_weight) and by
    the rows' own weights."""
    import torch

    counts = np.bincount(y, minlength=n_classes).astype(float)
    class_w = np.where(counts > 0, len(y) / (n_classes * np.maximum(counts, 1)), 0.0)
    row_w = torch.tensor(weights * class_w[y], dtype=torch.float32)
    target = torch.tensor(y, dtype=torch.long)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    rng = np.random.default_rng(SEED)
    net.train()
    for _ in range(epochs):
        for idx in batch_order(len(y), batch, rng, lengths):
            logits = net(*batches(idx))
            loss = torch.nn.functional.cross_entropy(logits, target[idx], reduction="none")
            loss = (loss * row_w[idx]).sum() / row_w[idx].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()


def _torch_export(net: Any, example: Any, input_name: str, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic = {input_name: {0: "batch"}, "scores": {0: "batch"}}
    if input_name == "chars":
        dynamic[input_name][1] = "length"
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, not broken
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (example,),
            str(path),
            dynamo=False,
            input_names=[input_name],
            output_names=["scores"],
            dynamic_axes=dynamic,
            opset_version=17,
        )


def char_vocabulary(texts: list[str]) -> dict[str, int]:
    """0 pads, 1 is any character not seen in training."""
    chars = sorted({ch for t in texts for ch in f" {normalize(t)} "})
    return {ch: i + 2 for i, ch in enumerate(chars)}


def encode_chars(
    texts: list[str], vocabulary: dict[str, int], max_chars: int = MAX_CHARS
) -> np.ndarray:
    """Normalised text padded with a space each side, as ids, right-padded with 0."""
    seqs = [[vocabulary.get(ch, 1) for ch in f" {normalize(t)} "[:max_chars]] for t in texts]
    out = np.zeros((len(seqs), max(len(s) for s in seqs)), dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out


def _char_cnn(n_chars: int, n_classes: int) -> Any:
    import torch
    from torch import nn

    class CharCnn(nn.Module):
        """Padding is masked, so a sentence scores the same alone or in a padded batch."""

        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(n_chars, 32, padding_idx=0)
            self.conv1 = nn.Conv1d(32, CNN_CHANNELS, 5, padding=2)
            self.conv2 = nn.Conv1d(CNN_CHANNELS, CNN_CHANNELS, 5, padding=2)
            self.drop = nn.Dropout(0.3)
            self.out = nn.Linear(2 * CNN_CHANNELS, n_classes)

        def forward(self, chars: torch.Tensor) -> torch.Tensor:
            mask = (chars != 0).unsqueeze(1).to(torch.float32)
            h = torch.relu(self.conv1(self.embed(chars).transpose(1, 2))) * mask
            h = torch.relu(self.conv2(h)) * mask
            pooled_max = (h - (1.0 - mask) * 1e4).amax(dim=2)
            pooled_mean = h.sum(dim=2) / mask.sum(dim=2).clamp(min=1.0)
            return self.out(self.drop(torch.cat([pooled_max, pooled_mean], dim=1)))

    return CharCnn()


@dataclass
class FittedCharCnn:
    net: Any
    vocabulary: dict[str, int]

    def scores(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.no_grad():
            return (
                self.net(torch.from_numpy(encode_chars(texts, self.vocabulary)))
                .numpy()
                .astype(np.float64)
            )

    def export(self, path: Path, meta: dict[str, Any]) -> None:
        import torch

        _torch_export(
            self.net, torch.from_numpy(encode_chars(["et pas"], self.vocabulary)), "chars", path
        )
        write_sidecar(
            path, {**meta, "input": "chars", "max_chars": MAX_CHARS, "chars": self.vocabulary}
        )


def fit_charcnn(texts: list[str], y: np.ndarray, weights: np.ndarray, n_classes: int) -> Fitted:
    import torch

    torch.manual_seed(SEED)
    vocabulary = char_vocabulary(texts)
    net = _char_cnn(len(vocabulary) + 2, n_classes)

    def batches(idx: np.ndarray) -> tuple:
        return (torch.from_numpy(encode_chars([texts[i] for i in idx], vocabulary)),)

    lengths = np.array([len(normalize(t)) for t in texts])
    _torch_train(net, batches, y, weights, n_classes, CNN_EPOCHS, 3e-3, CNN_BATCH, lengths)
    return FittedCharCnn(net, vocabulary)


class CharIntentModel:
    """ONNX serving of the char CNN, with IntentModel's public face (classes, probabilities)."""

    def __init__(self, onnx_path: Path) -> None:
        meta = json.loads(onnx_path.with_suffix(".json").read_text(encoding="utf-8"))
        self.classes: list[str] = meta["classes"]
        self.temperature = float(meta["temperature"])
        self.vocabulary: dict[str, int] = meta["chars"]
        self.max_chars = int(meta["max_chars"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(onnx_path), opts, providers=["CPUExecutionProvider"]
        )

    def probabilities(self, texts: list[str]) -> np.ndarray:
        ids = encode_chars(texts, self.vocabulary, self.max_chars)
        return softmax(
            np.asarray(self._session.run(None, {"chars": ids})[-1], np.float64) / self.temperature
        )


def _tfidf_mlp(idf: np.ndarray, n_classes: int) -> Any:
    import torch
    from torch import nn

    class TfidfMlp(nn.Module):
        """Counts in, as the served IntentModel feeds them: sublinear TF-IDF, L2, one hidden layer."""

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("idf", torch.tensor(idf, dtype=torch.float32))
            self.hidden = nn.Linear(len(idf), 256)
            self.drop = nn.Dropout(0.5)
            self.out = nn.Linear(256, n_classes)

        def forward(self, counts: torch.Tensor) -> torch.Tensor:
            tf = torch.where(
                counts > 0, torch.log(counts.clamp(min=1.0)) + 1.0, torch.zeros_like(counts)
            )
            x = tf * self.idf
            x = x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)
            return self.out(self.drop(torch.relu(self.hidden(x))))

    return TfidfMlp()


@dataclass
class FittedMlp:
    net: Any
    vocabulary: dict[str, int]

    def scores(self, texts: list[str]) -> np.ndarray:
        import torch

        x = torch.from_numpy(count_matrix(texts, self.vocabulary).toarray())
        with torch.no_grad():
            return self.net(x).numpy().astype(np.float64)

    def export(self, path: Path, meta: dict[str, Any]) -> None:
        import torch

        _torch_export(self.net, torch.zeros((1, len(self.vocabulary))), "counts", path)
        write_sidecar(path, {**meta, "vocabulary": self.vocabulary})


def fit_mlp(texts: list[str], y: np.ndarray, weights: np.ndarray, n_classes: int) -> Fitted:
    import torch

    torch.manual_seed(SEED)
    vocabulary = build_vocabulary(texts, min_count=2)
    x = count_matrix(texts, vocabulary)
    df = np.bincount(x.indices, minlength=len(vocabulary))
    idf = np.log((1 + len(texts)) / (1 + df)) + 1.0  # sklearn's smoothed idf
    net = _tfidf_mlp(idf, n_classes)

    def batches(idx: np.ndarray) -> tuple:
        return (torch.from_numpy(x[idx].toarray()),)

    _torch_train(net, batches, y, weights, n_classes, MLP_EPOCHS, 2e-3, MLP_BATCH)
    return FittedMlp(net, vocabulary)
