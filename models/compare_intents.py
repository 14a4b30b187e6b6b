"""Which intent model, trained on which data? A comparison on one fixed split (issue 5).

Candidates are a model family × a training-data variant:

  families  logreg   the shipped one: TF-IDF over text_features → logistic regression
            charcnn  a character CNN (torch): embeddings → 2 convolutions → max+mean pool
            mlp      a one-hidden-layer network (torch) over the same TF-IDF features
  variants  written  the written utterances only
            asr-all  + every ASR transcript of them (intents/asr/train_asr.tsv)
            asr-cer  + the transcripts whose CER against their source sentence is ≤ T
            asr-w    + every transcript, each weighted W

T and W are chosen by sentence-grouped 5-fold cross-validation on the training data alone
(macro-F1 of the logreg family on the validation folds' ASR transcripts). Every model is
calibrated by a temperature fitted on its own out-of-fold training scores, exported to ONNX
and scored as the bot serves it (catalogue trigger rules, then the model) on the held-back
written sentences (intents/heldout.tsv) and on their ASR transcripts
(intents/asr/heldout_asr.tsv), which nothing here trains or tunes on. The winner is picked
by WINNER_RULE (FIRST_RULE, written down before any held-back figure was seen, is kept and
reported beside it; the revision and its reason are stated where the rules are defined).

Also: per-utterance latency (ONNX as served, and the training framework itself), and how
each model treats real Danish speech that is no municipal request (cached transcripts in
intents/asr/real_clips.tsv): all of it should end out_of_scope or below the confirm threshold.

    python -m models.compare_intents [--json] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort
from tqdm import tqdm

from models.evaluation import ACTS, first_turns_of, intent_metrics
from models.intent_data import INTENTS_DIR, Example, load_heldout, load_utterances
from models.train_intents import (
    AsrExample,
    LogReg,
    build_vocabulary,
    count_matrix,
    export_onnx,
    fit_temperature,
    load_asr_examples,
    sample_weights,
    sentence_folds,
    sentence_of,
)
from voicebot.catalogue import load_catalogue
from voicebot.config import PROJECT_ROOT, DialogueSettings, Settings
from voicebot.dialogue import DialoguePolicy
from voicebot.understanding import IntentClassifier, IntentModel, normalize, softmax

SEED = 0
CER_GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
WEIGHT_GRID = (0.25, 0.5)
FAMILIES = ("logreg", "charcnn", "mlp")
VARIANTS = ("written", "asr-all", "asr-cer", "asr-w")
BOOTSTRAP = 1000
LATENCY_N = 200
REAL_CLIPS = INTENTS_DIR / "asr" / "real_clips.tsv"
SPEECH_DIR = PROJECT_ROOT.parent / "shared" / "data" / "danish-speech"

# The first rule, fixed before any held-back figure was looked at. Clean-text slack: espeak →
# phone line → Whisper base is far noisier than real callers, so a model may not buy its ASR
# score with a real loss on clean text. The tie band is well inside the bootstrap spread of
# macro-F1 on ~400 sentences, so near-ties go to the simpler choice.
CLEAN_SLACK = 0.03
TIE_BAND = 0.01
LATENCY_BUDGET_MS = 50.0
FIRST_RULE = (
    f"Among candidates whose served p95 latency is at most {LATENCY_BUDGET_MS:.0f} ms and whose "
    f"macro-F1 on clean held-back text is within {CLEAN_SLACK} of the best clean macro-F1: "
    "the highest macro-F1 on the held-back ASR transcripts. Candidates within "
    f"{TIE_BAND} of that best count as tied; the tie goes to the lowest out-of-scope "
    "false-accept rate on the ASR transcripts, then to the shipped family (logreg), then to "
    "the higher ASR macro-F1."
)
# The rule in force, revised after the first run had been read. The first rule picked the
# written-only model by 0.0005 of clean macro-F1 over the clean-slack line, yet that model acted
# at once on the wrong intent for 31 % of held-back ASR transcripts (18 % told to ring 112)
# and acted on 6 of 15 real non-request clips (3 as emergencies). Macro-F1 does not see what a
# caller lives through; the policy's first action does. So a safety gate comes first, the
# tie-break is the caller-facing error instead of the argmax false-accept rate, and the clean
# slack is measured among the safe candidates.
MAX_ASR_WRONG_ACTS = 0.05
MAX_REAL_UNFLAGGED = 1
WINNER_RULE = (
    f"Safety first: only candidates whose first turn acts on a wrong intent for at most "
    f"{MAX_ASR_WRONG_ACTS:.0%} of the held-back ASR transcripts (a wrong department costs the "
    "caller a transfer; a needless 112 frightens them) and that leave at most "
    f"{MAX_REAL_UNFLAGGED} of the real non-request clips unflagged, with served p95 latency at "
    f"most {LATENCY_BUDGET_MS:.0f} ms. Among those whose clean held-back macro-F1 is within "
    f"{CLEAN_SLACK} of the best such: the highest macro-F1 on the held-back ASR transcripts; "
    f"candidates within {TIE_BAND} of it are tied and the tie goes to the fewest wrong first-turn "
    "acts on the ASR transcripts, then to the shipped family (logreg). If no candidate passes "
    "the gate, the first rule decides."
)


# -- data --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    name: str
    use_asr: bool = False
    max_cer: float | None = None
    asr_weight: float = 1.0

    def rows(self, pool: Sequence[Example]) -> np.ndarray:
        """Mask of the pool rows this variant trains on."""
        return np.array([
            not isinstance(e, AsrExample)
            or (self.use_asr and (self.max_cer is None or e.cer <= self.max_cer))
            for e in pool
        ])

    @property
    def key(self) -> tuple[bool, float | None, float]:
        """What the variant trains on, whatever it is called."""
        return self.use_asr, self.max_cer, self.asr_weight

    def describe(self) -> str:
        if not self.use_asr:
            return "written only"
        if self.max_cer is not None:
            return f"written + ASR with CER ≤ {self.max_cer:g}"
        if self.asr_weight != 1.0:
            return f"written + all ASR, weight {self.asr_weight:g}"
        return "written + all ASR"


@dataclass
class Data:
    pool: list[Example]  # written + every non-empty ASR training transcript
    classes: list[str]
    y: np.ndarray
    folds: np.ndarray
    heldout: list[Example]
    heldout_asr: list[AsrExample]  # empty transcripts kept: the bot hears them too

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.pool]

    @property
    def is_asr(self) -> np.ndarray:
        return np.array([isinstance(e, AsrExample) for e in self.pool])


def load_data() -> Data:
    pool: list[Example] = [*load_utterances(), *load_asr_examples()]
    classes = sorted({e.intent for e in pool})
    return Data(
        pool=pool, classes=classes, y=np.array([classes.index(e.intent) for e in pool]),
        folds=sentence_folds(pool, seed=SEED), heldout=load_heldout(),
        heldout_asr=load_asr_examples(INTENTS_DIR / "asr" / "heldout_asr.tsv", "heldout_asr",
                                      keep_empty=True),
    )


# -- model families ------------------------------------------------------------------------
class Fitted(Protocol):
    def scores(self, texts: list[str]) -> np.ndarray: ...
    def export(self, path: Path, meta: dict[str, Any]) -> None: ...


class Served(Protocol):
    classes: list[str]
    def probabilities(self, texts: list[str]) -> np.ndarray: ...


@dataclass
class Family:
    name: str
    fit: Callable[[list[str], np.ndarray, np.ndarray, int], Fitted]
    serve: Callable[[Path], Served]
    description: str


@dataclass
class FittedLogReg:
    model: LogReg

    def scores(self, texts: list[str]) -> np.ndarray:
        return self.model.scores(texts)

    def export(self, path: Path, meta: dict[str, Any]) -> None:
        export_onnx(self.model.pipeline, len(self.model.vocabulary), path)
        _write_sidecar(path, {**meta, "vocabulary": self.model.vocabulary})


def _fit_logreg(texts: list[str], y: np.ndarray, weights: np.ndarray, n_classes: int) -> Fitted:
    return FittedLogReg(LogReg.fit(texts, y, weights))


def _write_sidecar(path: Path, meta: dict[str, Any]) -> None:
    path.with_suffix(".json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")


# torch is optional (the `bench` extra), so the neural families import it lazily.
MAX_CHARS = 256
CNN_CHANNELS = 64
CNN_EPOCHS = 25
MLP_EPOCHS = 20
CNN_BATCH = 32
MLP_BATCH = 128


def batch_order(n: int, batch: int, rng: np.random.Generator,
                lengths: np.ndarray | None = None) -> list[np.ndarray]:
    """Shuffled mini-batches; with `lengths`, rows of similar length share a batch (within
    windows of 20 batches) so that little time goes on padding."""
    order = rng.permutation(n)
    if lengths is None:
        return [order[i:i + batch] for i in range(0, n, batch)]
    batches = []
    for w in range(0, n, batch * 20):
        window = order[w:w + batch * 20]
        window = window[np.argsort(lengths[window], kind="stable")]
        batches += [window[i:i + batch] for i in range(0, len(window), batch)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _torch_train(net: Any, batches: Callable[[np.ndarray], tuple], y: np.ndarray,
                 weights: np.ndarray, n_classes: int, epochs: int, lr: float, batch: int,
                 lengths: np.ndarray | None = None) -> None:
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
        torch.onnx.export(net, (example,), str(path), dynamo=False, input_names=[input_name],
                          output_names=["scores"], dynamic_axes=dynamic, opset_version=17)


def char_vocabulary(texts: list[str]) -> dict[str, int]:
    """0 pads, 1 is any character not seen in training."""
    chars = sorted({ch for t in texts for ch in f" {normalize(t)} "})
    return {ch: i + 2 for i, ch in enumerate(chars)}


def encode_chars(texts: list[str], vocabulary: dict[str, int], max_chars: int = MAX_CHARS) -> np.ndarray:
    """Normalised text padded with a space each side, as ids, right-padded with 0."""
    seqs = [[vocabulary.get(ch, 1) for ch in f" {normalize(t)} "[:max_chars]] for t in texts]
    out = np.zeros((len(seqs), max(len(s) for s in seqs)), dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s
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
            return self.net(torch.from_numpy(encode_chars(texts, self.vocabulary))).numpy().astype(np.float64)

    def export(self, path: Path, meta: dict[str, Any]) -> None:
        import torch

        _torch_export(self.net, torch.from_numpy(encode_chars(["et pas"], self.vocabulary)), "chars", path)
        _write_sidecar(path, {**meta, "input": "chars", "max_chars": MAX_CHARS, "chars": self.vocabulary})


def _fit_charcnn(texts: list[str], y: np.ndarray, weights: np.ndarray, n_classes: int) -> Fitted:
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
        self._session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])

    def probabilities(self, texts: list[str]) -> np.ndarray:
        ids = encode_chars(texts, self.vocabulary, self.max_chars)
        return softmax(np.asarray(self._session.run(None, {"chars": ids})[-1], np.float64) / self.temperature)


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
            tf = torch.where(counts > 0, torch.log(counts.clamp(min=1.0)) + 1.0, torch.zeros_like(counts))
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
        _write_sidecar(path, {**meta, "vocabulary": self.vocabulary})


def _fit_mlp(texts: list[str], y: np.ndarray, weights: np.ndarray, n_classes: int) -> Fitted:
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


def families() -> dict[str, Family]:
    return {
        "logreg": Family("logreg", _fit_logreg, IntentModel,
                         "TF-IDF (word 1–2-grams + char 3–5-grams) → logistic regression (shipped)"),
        "charcnn": Family("charcnn", _fit_charcnn, CharIntentModel,
                          f"char embeddings → 2 × conv(5, {CNN_CHANNELS}) → max+mean pool → linear (torch)"),
        "mlp": Family("mlp", _fit_mlp, IntentModel,
                      "same TF-IDF features → 256 ReLU → linear (torch)"),
    }


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# -- cross-validation (training data only) ------------------------------------------------
def oof_scores(family: Family, data: Data, variant: Variant, step: Callable[[], None]) -> np.ndarray:
    """Out-of-fold scores for every pool row; each fold trains on the variant's rows only."""
    mask = variant.rows(data.pool)
    weights = sample_weights(data.pool, variant.asr_weight)
    texts = data.texts
    out = np.zeros((len(texts), len(data.classes)))
    for k in np.unique(data.folds):
        fit_rows = np.flatnonzero((data.folds != k) & mask)
        model = family.fit([texts[i] for i in fit_rows], data.y[fit_rows], weights[fit_rows],
                           len(data.classes))
        val = np.flatnonzero(data.folds == k)
        out[val] = model.scores([texts[i] for i in val])
        step()
    return out


def macro_f1(gold: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Macro-F1 over the classes present in `gold` (as models.evaluation.intent_metrics)."""
    confusion = np.bincount(gold * n_classes + pred, minlength=n_classes * n_classes)
    confusion = confusion.reshape(n_classes, n_classes).astype(float)
    tp = np.diag(confusion)
    support, predicted = confusion.sum(1), confusion.sum(0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp),
                   where=(precision + recall) > 0)
    return float(f1[support > 0].mean()) if (support > 0).any() else 0.0


def best_by_cv(cv: dict[float, float]) -> float:
    """The grid value with the best CV score; ties go to the first (smallest) value."""
    return max(sorted(cv), key=lambda v: (cv[v], -v))


# -- held-back scoring ---------------------------------------------------------------------
def cluster_bootstrap(clusters: Sequence[str], n: int = BOOTSTRAP, seed: int = SEED) -> list[np.ndarray]:
    """Row-index resamples that draw whole clusters (a sentence and its transcripts)."""
    names, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    members = [np.flatnonzero(inverse == c) for c in range(len(names))]
    rng = np.random.default_rng(seed)
    return [np.concatenate([members[c] for c in rng.integers(0, len(names), len(names))]) for _ in range(n)]


def interval(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


@dataclass
class Scored:
    gold: list[str]
    predicted: list[str]
    confidence: list[float]
    metrics: dict[str, Any] = field(default_factory=dict)


def score(classifier: IntentClassifier, examples: Sequence[Example], labels: list[str],
          policy: Callable[[], DialoguePolicy]) -> Scored:
    results = [classifier.classify(e.text, explain=False) for e in examples]
    gold = [e.intent for e in examples]
    predicted = [r.intent for r in results]
    confidence = [r.confidence for r in results]
    metrics = intent_metrics(gold, predicted, confidence, labels=labels)
    metrics["first_turn"] = first_turns_of(gold, [e.text for e in examples], results, policy)
    return Scored(gold, predicted, confidence, metrics)


def latencies_ms(fn: Callable[[str], object], texts: Sequence[str]) -> dict[str, float]:
    fn(texts[0])  # warm-up
    ms = []
    for t in texts:
        start = time.perf_counter()
        fn(t)
        ms.append((time.perf_counter() - start) * 1000)
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95))}


# -- real speech that is no municipal request ----------------------------------------------
def real_clip_transcripts(refresh: bool = False) -> list[dict[str, str]]:
    """Transcripts of the NST clips and the read-along clip (split at a pause), cached."""
    if REAL_CLIPS.exists() and not refresh:
        with REAL_CLIPS.open(encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    from faster_whisper.audio import decode_audio

    from voicebot.asr import SAMPLE_RATE, WhisperAsr, split_at_pauses
    from voicebot.vad import WINDOW, SileroVad

    asr = WhisperAsr(PROJECT_ROOT / "var" / "models" / "whisper-base-ct2")
    rows = []
    for wav in sorted((SPEECH_DIR / "nst-danspeech").glob("*.wav")):
        audio = decode_audio(str(wav), sampling_rate=SAMPLE_RATE)
        rows.append({"text": asr.transcribe(audio).text, "source_file": f"nst-danspeech/{wav.name}"})
    wav = SPEECH_DIR / "readalongs-dan" / "dan_ap_dan.wav"
    audio = decode_audio(str(wav), sampling_rate=SAMPLE_RATE)
    start = 0
    for piece in split_at_pauses(audio, SileroVad().stream().push(audio), WINDOW):
        span = f"{start / SAMPLE_RATE:.1f}-{(start + len(piece)) / SAMPLE_RATE:.1f}s"
        rows.append({"text": asr.transcribe(piece).text, "source_file": f"readalongs-dan/{wav.name}@{span}"})
        start += len(piece)
    for row in rows:  # the TSV is written without quoting
        row["text"] = " ".join(row["text"].replace("\t", " ").split())
    REAL_CLIPS.parent.mkdir(parents=True, exist_ok=True)
    with REAL_CLIPS.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, ("text", "source_file"), delimiter="\t", quoting=csv.QUOTE_NONE,
                                escapechar="\\", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return rows


# -- the winner ------------------------------------------------------------------------------
def select_first_rule(rows: list[dict[str, Any]]) -> str:
    """Apply FIRST_RULE to rows with name, family, clean_f1, asr_f1, asr_far, p95_ms."""
    eligible = [r for r in rows if r["p95_ms"] <= LATENCY_BUDGET_MS]
    best_clean = max(r["clean_f1"] for r in eligible)
    eligible = [r for r in eligible if r["clean_f1"] >= best_clean - CLEAN_SLACK]
    best_asr = max(r["asr_f1"] for r in eligible)
    tied = [r for r in eligible if r["asr_f1"] >= best_asr - TIE_BAND]
    return min(tied, key=lambda r: (r["asr_far"] if r["asr_far"] is not None else 1.0,
                                    r["family"] != "logreg", -r["asr_f1"]))["name"]


def select_winner(rows: list[dict[str, Any]]) -> str:
    """Apply WINNER_RULE to rows that also carry asr_wrong (share of ASR transcripts acted
    on with a wrong intent) and real_unflagged (real non-request clips not flagged)."""
    safe = [r for r in rows if r["p95_ms"] <= LATENCY_BUDGET_MS
            and r["asr_wrong"] <= MAX_ASR_WRONG_ACTS and r["real_unflagged"] <= MAX_REAL_UNFLAGGED]
    if not safe:
        return select_first_rule(rows)
    best_clean = max(r["clean_f1"] for r in safe)
    eligible = [r for r in safe if r["clean_f1"] >= best_clean - CLEAN_SLACK]
    best_asr = max(r["asr_f1"] for r in eligible)
    tied = [r for r in eligible if r["asr_f1"] >= best_asr - TIE_BAND]
    return min(tied, key=lambda r: (r["asr_wrong"], r["family"] != "logreg", -r["asr_f1"]))["name"]


def winner_rows(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the rules read from each candidate of a run."""
    return [
        {"name": c["name"], "family": c["family"], "clean_f1": c["clean"]["macro_f1"],
         "asr_f1": c["asr"]["macro_f1"], "asr_far": c["asr"]["oos_false_accept_rate"],
         "asr_wrong": c["asr"]["first_turn"]["acts_wrong"] / max(c["asr"]["first_turn"]["n"], 1),
         "real_unflagged": len(c["real_clips"]) - c["real_flagged"],
         "p95_ms": c["served_ms"]["p95"]}
        for c in candidates
    ]


def apply_rules(result: dict[str, Any]) -> dict[str, Any]:
    rows = winner_rows(result["candidates"])
    result.update(first_rule=FIRST_RULE, first_rule_winner=select_first_rule(rows),
                  winner_rule=WINNER_RULE, winner=select_winner(rows))
    return result


# -- the run -----------------------------------------------------------------------------------
def run(family_names: Sequence[str], variant_names: Sequence[str], refresh_clips: bool = False,
        command: str = "python -m models.compare_intents") -> dict:
    data = load_data()
    if not data.heldout_asr:
        raise SystemExit("intents/asr/heldout_asr.tsv is missing: run `voicebot make-training-data`")
    fams = families()
    if not torch_available():
        print("torch is not installed: comparing the logreg family only", file=sys.stderr)
        family_names = [f for f in family_names if fams[f].fit is _fit_logreg]
    catalogue = load_catalogue(Settings().catalogue)
    labels = sorted(catalogue.intents)
    dialogue = DialogueSettings()
    confirm = dialogue.confirm
    clips = real_clip_transcripts(refresh_clips)
    is_asr = data.is_asr
    n_folds = len(np.unique(data.folds))

    grid = [Variant("written"), Variant("asr-all", use_asr=True)]
    grid += [Variant(f"cer≤{t:g}", use_asr=True, max_cer=t) for t in CER_GRID]
    grid += [Variant(f"w={w:g}", use_asr=True, asr_weight=w) for w in WEIGHT_GRID]
    total = len(grid) * n_folds + len(family_names) * len(variant_names) * (n_folds + 2)
    total -= len(variant_names) * n_folds if "logreg" in family_names else 0  # logreg CV reused
    bar = tqdm(total=total, desc="compare-intents", unit="step")

    def step() -> None:
        bar.update()

    # 1. Data-variant selection: the shipped family, grouped CV on training data only.
    cv_rows, oof_cache = [], {}
    for v in grid:
        bar.set_postfix_str(f"CV logreg {v.name}")
        oof = oof_scores(fams["logreg"], data, v, step)
        oof_cache[("logreg", *v.key)] = oof
        pred = oof.argmax(1)
        cv_rows.append({"variant": v.name, "rows": int(v.rows(data.pool).sum()),
                        "max_cer": v.max_cer, "asr_weight": v.asr_weight if v.use_asr else None,
                        "use_asr": v.use_asr,
                        "cv_f1_asr": macro_f1(data.y[is_asr], pred[is_asr], len(data.classes)),
                        "cv_f1_written": macro_f1(data.y[~is_asr], pred[~is_asr], len(data.classes))})
    by_cer = {r["max_cer"]: r["cv_f1_asr"] for r in cv_rows if r["max_cer"] is not None}
    by_weight = {r["asr_weight"]: r["cv_f1_asr"] for r in cv_rows
                 if r["use_asr"] and r["max_cer"] is None and r["asr_weight"] != 1.0}
    chosen = {
        "written": Variant("written"),
        "asr-all": Variant("asr-all", use_asr=True),
        "asr-cer": Variant("asr-cer", use_asr=True, max_cer=best_by_cv(by_cer)),
        "asr-w": Variant("asr-w", use_asr=True, asr_weight=best_by_cv(by_weight)),
    }

    # 2. Candidates: CV temperature, final fit, ONNX export, held-back scoring as served.
    heldout_clusters = [e.text for e in data.heldout]
    asr_clusters = [sentence_of(e) for e in data.heldout_asr]
    clean_boot = cluster_bootstrap(heldout_clusters)
    asr_boot = cluster_bootstrap(asr_clusters)
    latency_texts = [normalize(e.text) for e in data.heldout[:LATENCY_N]]
    candidates: list[dict[str, Any]] = []
    scored: dict[str, dict[str, Scored]] = {}
    workdir = Path(tempfile.mkdtemp(prefix="compare-intents-"))
    for fname in family_names:
        family = fams[fname]
        for vname in variant_names:
            v = chosen[vname]
            name = f"{fname}/{vname}"
            bar.set_postfix_str(name)
            oof = oof_cache.get((fname, *v.key))
            if oof is None:
                oof = oof_scores(family, data, v, step)
            mask = v.rows(data.pool)
            temperature = fit_temperature(oof[mask], data.y[mask])
            texts = [e.text for e, m in zip(data.pool, mask, strict=True) if m]
            start = time.perf_counter()
            fitted = family.fit(texts, data.y[mask], sample_weights(data.pool, v.asr_weight)[mask],
                                len(data.classes))
            fit_s = time.perf_counter() - start
            step()
            path = workdir / fname / vname / "intent.onnx"
            path.parent.mkdir(parents=True, exist_ok=True)
            fitted.export(path, {"classes": data.classes, "temperature": temperature, "family": fname,
                                 "variant": v.describe()})
            served = family.serve(path)
            classifier = IntentClassifier(served, catalogue)  # type: ignore[arg-type]

            def policy(c: IntentClassifier = classifier) -> DialoguePolicy:
                return DialoguePolicy(catalogue, c, dialogue)

            clean = score(classifier, data.heldout, labels, policy)
            asr = score(classifier, data.heldout_asr, labels, policy)
            scored[name] = {"clean": clean, "asr": asr}
            # The exported graph must score as the framework does (batched, padded).
            parity = float(np.abs(served.probabilities(latency_texts[:50])
                                  - softmax(fitted.scores(latency_texts[:50]) / temperature)).max())
            served_ms = latencies_ms(lambda t, m=served: m.probabilities([t]), latency_texts)
            framework_ms = _framework_latency(fitted, latency_texts)
            flagged = []
            for clip in clips:
                u = classifier.classify(clip["text"], explain=False)
                flagged.append({"source_file": clip["source_file"], "intent": u.intent,
                                "confidence": round(u.confidence, 3),
                                "flagged": u.intent == "out_of_scope" or u.confidence < confirm,
                                "action": policy().on_utterance(clip["text"], u).action})
            candidates.append({
                "name": name, "family": fname, "variant": vname, "data": v.describe(),
                "train_rows": int(mask.sum()), "temperature": temperature, "fit_s": fit_s,
                "cv_f1_asr": macro_f1(data.y[is_asr], oof[is_asr].argmax(1), len(data.classes)),
                "clean": _summary(clean, clean_boot), "asr": _summary(asr, asr_boot),
                "served_ms": served_ms, "framework_ms": framework_ms,
                "onnx_kb": path.stat().st_size / 1024, "onnx_max_prob_diff": parity,
                "real_clips": flagged, "real_flagged": sum(c["flagged"] for c in flagged),
                "real_acted": sum(c["action"] in ACTS for c in flagged),
            })
            step()
    bar.close()
    shutil.rmtree(workdir, ignore_errors=True)

    # 3. Paired differences against the written-only shipped model, and the winner.
    base = "logreg/written"
    if base in scored:
        for c in candidates:
            for split, boot in (("clean", clean_boot), ("asr", asr_boot)):
                c[split]["delta_f1_vs_logreg_written"] = _paired_delta(
                    scored[c["name"]][split], scored[base][split], labels, boot)
    return apply_rules({
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "data": {"written": int((~is_asr).sum()), "asr_train": int(is_asr.sum()),
                 "heldout": len(data.heldout), "heldout_sentences": len(set(heldout_clusters)),
                 "heldout_asr": len(data.heldout_asr), "heldout_asr_sentences": len(set(asr_clusters)),
                 "heldout_asr_empty": sum(not e.text for e in data.heldout_asr),
                 "train_asr_median_cer": float(np.median([e.cer for e in data.pool if isinstance(e, AsrExample)])),
                 "heldout_asr_median_cer": float(np.median([e.cer for e in data.heldout_asr])),
                 "folds": n_folds, "real_clips": len(clips)},
        "families": {f: fams[f].description for f in family_names},
        "confirm_threshold": confirm,
        "accept_threshold": dialogue.accept,
        "cv_selection": cv_rows,
        "chosen": {k: {"max_cer": v.max_cer, "asr_weight": v.asr_weight} for k, v in chosen.items()},
        "candidates": candidates,
        "real_clip_transcripts": clips,
    })


def _framework_latency(fitted: Fitted, texts: Sequence[str]) -> dict[str, float]:
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


def _summary(s: Scored, boot: list[np.ndarray]) -> dict[str, Any]:
    labels = s.metrics["labels"]
    index = {label: i for i, label in enumerate(labels)}
    gold = np.array([index[g] for g in s.gold])
    pred = np.array([index[p] for p in s.predicted])
    f1s = [macro_f1(gold[b], pred[b], len(labels)) for b in boot]
    keys = ("n", "accuracy", "macro_f1", "oos_precision", "oos_recall", "oos_false_accept_rate", "ece",
            "first_turn")
    return {**{k: s.metrics.get(k) for k in keys}, "macro_f1_ci95": interval(f1s),
            "per_intent_recall": s.metrics["per_intent_recall"]}


def _paired_delta(a: Scored, b: Scored, labels: list[str], boot: list[np.ndarray]) -> dict[str, Any]:
    index = {label: i for i, label in enumerate(labels)}
    gold = np.array([index[g] for g in a.gold])
    pa = np.array([index[p] for p in a.predicted])
    pb = np.array([index[p] for p in b.predicted])
    n = len(labels)
    deltas = [macro_f1(gold[i], pa[i], n) - macro_f1(gold[i], pb[i], n) for i in boot]
    return {"delta": macro_f1(gold, pa, n) - macro_f1(gold, pb, n), "ci95": interval(deltas)}


# -- the report -------------------------------------------------------------------------------
BEGIN, END = "<!-- compare_intents: begin -->", "<!-- compare_intents: end -->"


def _f(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(result: dict) -> str:
    d = result["data"]
    out = [
        BEGIN,
        "## Intent model comparison (generated)",
        "",
        f"Command: `{result['command'].strip()}` ({result['date']}). Generated by "
        "models/compare_intents.py; rerunning replaces this section only.",
        "",
        f"Training pool: {d['written']} written utterances + {d['asr_train']} non-empty ASR "
        f"transcripts of them (median CER {d['train_asr_median_cer']:.2f}); "
        f"{d['folds']}-fold CV with folds drawn per source sentence. Held back: "
        f"{d['heldout']} written sentences (clean) and {d['heldout_asr']} ASR transcripts of "
        f"{d['heldout_asr_sentences']} of them ({d['heldout_asr_empty']} empty, median CER "
        f"{d['heldout_asr_median_cer']:.2f}). Scores are the served classifier's: catalogue "
        "trigger rules, then the ONNX model with its own temperature. 95% intervals: bootstrap "
        f"over sentences ({BOOTSTRAP} resamples; a sentence's transcripts move together).",
        "",
        "Families:",
        *[f"- `{name}`: {desc}" for name, desc in result["families"].items()],
        "",
        f"First rule (fixed before the held-back figures were seen): {result['first_rule']}",
        "",
        f"Rule in force (revised after the first run was read; see models/compare_intents.py for "
        f"why): {result['winner_rule']}",
        "",
        "### Data-variant selection (logreg, cross-validation on training data only)",
        "",
        "| variant | training rows | CV macro-F1, ASR transcripts | CV macro-F1, written |",
        "|---|---:|---:|---:|",
        *[f"| {r['variant']} | {r['rows']} | {_f(r['cv_f1_asr'])} | {_f(r['cv_f1_written'])} |"
          for r in result["cv_selection"]],
        "",
        f"Chosen: asr-cer keeps transcripts with CER ≤ {result['chosen']['asr-cer']['max_cer']:g}; "
        f"asr-w weights every transcript {result['chosen']['asr-w']['asr_weight']:g}.",
        "",
    ]
    for split, title in (("clean", "clean held-back text (intents/heldout.tsv)"),
                         ("asr", "held-back ASR transcripts (intents/asr/heldout_asr.tsv)")):
        out += [
            f"### Held back: {title}",
            "",
            "| model | data | rows | T | accuracy | macro-F1 [95% CI] | Δ macro-F1 vs logreg/written [95% CI] "
            "| OOS precision | OOS recall | OOS false-accept | ECE |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in result["candidates"]:
            s = c[split]
            lo, hi = s["macro_f1_ci95"]
            delta = s.get("delta_f1_vs_logreg_written")
            delta_s = "–" if delta is None else f"{delta['delta']:+.3f} [{delta['ci95'][0]:+.3f}, {delta['ci95'][1]:+.3f}]"
            out.append(
                f"| {c['family']} | {c['data']} | {c['train_rows']} | {c['temperature']:.2f} | "
                f"{_f(s['accuracy'])} | {_f(s['macro_f1'])} [{lo:.3f}, {hi:.3f}] | {delta_s} | "
                f"{_f(s['oos_precision'])} | {_f(s['oos_recall'])} | {_f(s['oos_false_accept_rate'])} | "
                f"{_f(s['ece'])} |")
        out.append("")
    out += [
        "### First turn, as the dialogue policy acts on it (voicebot/dialogue.py)",
        "",
        f"Acting at once: confidence ≥ accept {result['accept_threshold']}, or ≥ confirm "
        f"{result['confirm_threshold']} for emergency and human_agent, or a trigger rule. "
        "\"Ring 112\" = a non-emergency caller told to call 112. Shares of all rows.",
        "",
        "| model | data | clean: acts, right | acts, wrong | ring 112 | confirms | rephrase "
        "| ASR: acts, right | acts, wrong | ring 112 | confirms | rephrase |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in result["candidates"]:
        cells = []
        for split in ("clean", "asr"):
            t = c[split]["first_turn"]
            cells += [f"{t[k] / t['n']:.3f}" for k in ("acts_right", "acts_wrong", "false_112", "confirms", "rephrase")]
        out.append(f"| {c['family']} | {c['data']} | " + " | ".join(cells) + " |")
    out.append("")
    out += [
        f"### Latency per utterance (ms, one thread, {LATENCY_N} held-back sentences, features included)",
        "",
        "| model | data | ONNX served p50 | p95 | framework p50 | p95 | ONNX size (kB) | final fit (s) "
        "| max |p(ONNX) − p(framework)| |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *[f"| {c['family']} | {c['data']} | {c['served_ms']['p50']:.2f} | {c['served_ms']['p95']:.2f} | "
          f"{c['framework_ms']['p50']:.2f} | {c['framework_ms']['p95']:.2f} | {c['onnx_kb']:.0f} | {c['fit_s']:.0f} "
          f"| {c['onnx_max_prob_diff']:.1e} |"
          for c in result["candidates"]],
        "",
        f"### Real Danish speech, none of it a municipal request ({d['real_clips']} transcripts)",
        "",
        f"Flagged = `out_of_scope` or confidence below the confirm threshold {result['confirm_threshold']}; "
        "all should be flagged. Transcripts: intents/asr/real_clips.tsv (Whisper base, no phone line).",
        "",
        "| model | data | flagged | acted on at once | not flagged (file → intent, confidence) |",
        "|---|---|---:|---:|---|",
    ]
    for c in result["candidates"]:
        missed = ", ".join(f"{Path(r['source_file']).name} → {r['intent']} {r['confidence']:.2f}"
                           for r in c["real_clips"] if not r["flagged"])
        n = len(c["real_clips"])
        out.append(f"| {c['family']} | {c['data']} | {c['real_flagged']}/{n} | {c['real_acted']}/{n} | {missed or '–'} |")
    out += ["", f"First rule's pick: `{result['first_rule_winner']}`. "
            f"**Winner by the rule in force (shipped): `{result['winner']}`.**", "", END]
    return "\n".join(out) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace the generated section of `path` (between the markers), keep the rest."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section.rstrip("\n") + rest.split(END, 1)[1]
    else:
        text = (text.rstrip("\n") + "\n\n" if text else "") + section
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.compare_intents", description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true", help="print every figure as JSON")
    p.add_argument("--out", type=Path, help="write the markdown section into this file")
    p.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--refresh-clips", action="store_true", help="transcribe the real clips again")
    p.add_argument("--from-json", type=Path, metavar="FILE",
                   help="re-render a saved --json run (rules applied again) instead of training")
    args = p.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    if args.from_json:
        result = apply_rules(json.loads(args.from_json.read_text(encoding="utf-8")))
    else:
        result = run(args.families, args.variants, args.refresh_clips,
                     " ".join(["python -m models.compare_intents", *argv]))
    section = markdown(result)
    if args.out:
        write_section(args.out, section)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=1))
    elif not args.out:
        print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
