"""Understanding the caller: from a (misheard) Danish transcript to an intent with a
calibrated confidence and the words that drove it.

The intent model is trained by models/train_intents.py on written utterances and on the
project's own ASR transcripts of them, exported to ONNX and served here with onnxruntime.
Features are computed here, by the same function training uses, so training and serving
cannot drift apart. Emergency wording overrides the model: a caller who says someone has
fallen or cannot breathe must hear "ring 112" whatever the classifier thinks.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from voicebot.catalogue import Catalogue

_NON_WORD = re.compile(r"[^a-zæøåéü0-9]+")


def normalize(text: str) -> str:
    """Lower case, letters and digits only, single spaces."""
    text = unicodedata.normalize("NFC", text.lower())
    return _NON_WORD.sub(" ", text).strip()


def text_features(text: str) -> list[str]:
    """Word unigrams and bigrams plus character 3–5-grams inside words.

    Character n-grams keep a misheard word close to the right one ("pers" and "pas",
    "beboerlicens" and "bebojere i sønske" share pieces); words and bigrams carry meaning.
    """
    words = normalize(text).split()
    feats = [f"w:{w}" for w in words]
    feats += [f"b:{a}_{b}" for a, b in zip(words, words[1:], strict=False)]
    for w in words:
        padded = f" {w} "
        for n in (3, 4, 5):
            feats += [f"c:{padded[i : i + n]}" for i in range(max(1, len(padded) - n + 1))]
    return feats


@dataclass
class Understanding:
    intent: str
    confidence: float
    alternatives: list[tuple[str, float]] = field(default_factory=list)
    explanation: list[str] = field(default_factory=list)  # words that drove the decision
    rule: str | None = None  # set when a catalogue trigger phrase decided, not the model

    def as_dict(self) -> dict[str, Any]:
        return {
            "intent": self.intent,
            "confidence": round(self.confidence, 4),
            "alternatives": [[i, round(p, 4)] for i, p in self.alternatives],
            "explanation": self.explanation,
            "rule": self.rule,
        }


class IntentModel:
    """The ONNX intent model and its feature vocabulary (intent.onnx + intent.json)."""

    def __init__(self, onnx_path: str | Path) -> None:
        onnx_path = Path(onnx_path)
        self.path = onnx_path  # a reload reuses the loaded model of the same file
        meta_path = onnx_path.with_suffix(".json")
        if not onnx_path.exists() or not meta_path.exists():
            raise FileNotFoundError(
                f"intent model not found at {onnx_path} (+ {meta_path.name}); "
                "train it with `voicebot train-intents`"
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        self.classes: list[str] = meta["classes"]
        self.vocabulary: dict[str, int] = meta["vocabulary"]
        self.temperature: float = float(meta.get("temperature", 1.0))
        self.meta = {k: v for k, v in meta.items() if k != "vocabulary"}
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(onnx_path), opts, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name

    def counts(self, texts: list[str]) -> np.ndarray:
        x = np.zeros((len(texts), len(self.vocabulary)), dtype=np.float32)
        for row, text in enumerate(texts):
            for f in text_features(text):
                col = self.vocabulary.get(f)
                if col is not None:
                    x[row, col] += 1.0
        return x

    def scores(self, counts: np.ndarray) -> np.ndarray:
        """Raw class scores (logits) for rows of feature counts."""
        outputs = self._session.run(None, {self._input: counts})
        return np.asarray(outputs[-1], dtype=np.float64)

    def probabilities(self, texts: list[str]) -> np.ndarray:
        return softmax(self.scores(self.counts(texts)) / self.temperature)


def softmax(logits: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.floating[Any]]:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    p: npt.NDArray[np.floating[Any]] = e / e.sum(axis=-1, keepdims=True)  # numpy: keepdims → Any
    return p


class IntentClassifier:
    """Catalogue rules first (emergency, then other trigger phrases), then the model. The
    rules are one language's: a trigger word of one language may be an everyday word of
    another ("fire" is Danish for four)."""

    def __init__(
        self, model: IntentModel, catalogue: Catalogue, language: str | None = None
    ) -> None:
        self.model = model
        self.catalogue = catalogue
        self.language = language or catalogue.default_language
        # Emergency first: it overrides everything else.
        ordered = sorted(catalogue.intents.values(), key=lambda i: i.id != "emergency")
        self._rules = [
            (intent.id, phrase, re.compile(rf"(?<!\w){re.escape(normalize(phrase))}(?!\w)"))
            for intent in ordered
            for phrase in intent.trigger_phrases.get(self.language, [])
        ]

    def classify(self, text: str, explain: bool = True) -> Understanding:
        norm = normalize(text)
        matched = self._matching_rule(norm)
        if matched is not None:
            intent_id, phrase = matched
            return Understanding(intent_id, 1.0, [], [phrase], rule=f"trigger phrase '{phrase}'")
        if not norm:
            return Understanding("out_of_scope", 0.0, [], [])
        probs = self.model.probabilities([norm])[0]
        order = np.argsort(-probs)
        best = int(order[0])
        alternatives = [(self.model.classes[int(i)], float(probs[i])) for i in order[1:3]]
        explanation = self._explain(norm, best) if explain else []
        return Understanding(
            self.model.classes[best], float(probs[best]), alternatives, explanation
        )

    def _matching_rule(self, norm: str) -> tuple[str, str] | None:
        """The (intent, phrase) a trigger phrase decides: an emergency phrase always; other
        phrases only when all that match name one intent. "A parking fine although I have a
        parking permit" names two errands, and the catalogue's order must not pick one."""
        found: list[tuple[str, str]] = []
        for intent_id, phrase, pattern in self._rules:
            if pattern.search(norm):
                if intent_id == "emergency":
                    return intent_id, phrase
                found.append((intent_id, phrase))
        if len({intent_id for intent_id, _ in found}) == 1:
            return found[0]
        return None  # no rule, or rules of several errands: the model weighs the whole turn

    def _explain(self, norm: str, cls: int, top: int = 3) -> list[str]:
        """The words whose removal lowers the chosen intent's probability most (occlusion)."""
        words = norm.split()
        if len(words) <= 1:
            return words
        variants = [norm] + [" ".join(words[:i] + words[i + 1 :]) for i in range(len(words))]
        probs = self.model.probabilities(variants)[:, cls]
        drops = probs[0] - probs[1:]
        ranked = sorted(range(len(words)), key=lambda i: -drops[i])
        chosen: list[str] = []
        for i in ranked:
            if drops[i] <= 0.01 or len(chosen) == top:
                break
            if words[i] not in chosen:  # a repeated word is one reason, not two
                chosen.append(words[i])
        return chosen
