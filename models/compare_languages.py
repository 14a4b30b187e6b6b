"""One intent model for Danish and English, or one per language (issue 14)?

Trains both candidates of the shipped family and data recipe (models/train_intents.py) into a
scratch directory, scores each language's held-back text and held-back ASR transcripts with
the model that language would be served by, and applies the selection rule that
intents/RESULTS.md states (written before any figure was measured):

    .venv/bin/python -m models.compare_languages [--json out.json] [--out intents/RESULTS.md]

Candidate "one": one model on da+en. Candidate "per_language": a model per language, each on
its own language's data. The served classifier is used (catalogue trigger rules, then the
model), and the first turn as voicebot/dialogue.py acts on it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.evaluation import first_turns_of, intent_metrics
from models.intent_data import LANGUAGES, Example, asr_path, load_heldout
from models.train_intents import load_asr_examples, train, training_examples
from voicebot.catalogue import Catalogue, load_catalogue
from voicebot.config import Settings, load_settings
from voicebot.dialogue import DialoguePolicy
from voicebot.understanding import IntentClassifier, IntentModel

BEGIN, END = "<!-- compare_languages: begin -->", "<!-- compare_languages: end -->"
# Today's shipped Danish-only model, measured from main before any English training (RESULTS.md).
TODAY_DA_TEXT_ACCURACY = 0.865
TODAY_DA_ASR_WRONG = 24 / 798
DA_TEXT_SLACK = 0.005  # two sentences of the 399
DA_WRONG_SLACK = 0.005  # half a point


@dataclass(frozen=True)
class Scores:
    """One language's held-back figures under one candidate."""

    text: dict[str, Any]
    asr: dict[str, Any]

    @property
    def text_accuracy(self) -> float:
        return float(self.text["accuracy"])

    @property
    def asr_wrong(self) -> float:
        ft = self.asr["first_turn"]
        return ft["acts_wrong"] / max(1, ft["n"])


def evaluate(
    model_path: Path, catalogue: Catalogue, settings: Settings, examples: list[Example]
) -> dict[str, Any]:
    classifier = IntentClassifier(IntentModel(model_path), catalogue)
    texts, gold = [e.text for e in examples], [e.intent for e in examples]
    results = [classifier.classify(t, explain=False) for t in texts]
    metrics = intent_metrics(
        gold,
        [r.intent for r in results],
        [r.confidence for r in results],
        labels=sorted(catalogue.intents),
    )
    metrics["first_turn"] = first_turns_of(
        gold, texts, results, lambda: DialoguePolicy(catalogue, classifier, settings.dialogue)
    )
    return {k: v for k, v in metrics.items() if k not in ("confusion", "labels")}


def heldout_sets(language: str) -> tuple[list[Example], list[Example]]:
    """Held-back written text and its ASR transcripts (empty transcripts kept: the bot hears them)."""
    asr = load_asr_examples(asr_path("heldout", language), "heldout_asr", keep_empty=True)
    return load_heldout(language), list(asr)


def measure(settings: Settings, workdir: Path) -> dict[str, Any]:
    catalogue = load_catalogue(settings.catalogue)
    models: dict[str, dict[str, Path]] = {"one": {}, "per_language": {}}
    training: dict[str, Any] = {}
    start = time.perf_counter()
    one = workdir / "one" / "intent.onnx"
    training["one"] = train(training_examples(languages=LANGUAGES), one, languages=LANGUAGES)
    models["one"] = dict.fromkeys(LANGUAGES, one)
    for language in LANGUAGES:
        path = workdir / language / "intent.onnx"
        training[f"per_language/{language}"] = train(
            training_examples(languages=(language,)), path, languages=(language,)
        )
        models["per_language"][language] = path
    scores: dict[str, dict[str, Any]] = {}
    for language in LANGUAGES:
        text, asr = heldout_sets(language)
        for candidate, paths in models.items():
            scores.setdefault(candidate, {})[language] = {
                "text": evaluate(paths[language], catalogue, settings, text),
                "asr": evaluate(paths[language], catalogue, settings, asr),
            }
    return {"scores": scores, "training": training, "seconds": round(time.perf_counter() - start)}


def _scores(run: dict[str, Any], candidate: str, language: str) -> Scores:
    s = run["scores"][candidate][language]
    return Scores(s["text"], s["asr"])


def passes_danish_gate(da: Scores) -> bool:
    return (
        da.text_accuracy >= TODAY_DA_TEXT_ACCURACY - DA_TEXT_SLACK
        and da.asr_wrong <= TODAY_DA_ASR_WRONG + DA_WRONG_SLACK
    )


def select(run: dict[str, Any]) -> tuple[str, str]:
    """The rule of intents/RESULTS.md: (winner, why)."""
    a_da, a_en = _scores(run, "one", "da"), _scores(run, "one", "en")
    b_da, b_en = _scores(run, "per_language", "da"), _scores(run, "per_language", "en")
    a_ok, b_ok = passes_danish_gate(a_da), passes_danish_gate(b_da)
    if a_ok:
        english_better = (
            a_en.asr_wrong - b_en.asr_wrong >= 0.01
            or b_en.text_accuracy - a_en.text_accuracy >= 0.02
        )
        danish_no_worse = (
            b_da.text_accuracy >= a_da.text_accuracy and b_da.asr_wrong <= a_da.asr_wrong
        )
        if english_better and danish_no_worse:
            return (
                "per_language",
                "A passes the Danish gate, but B is better on English by the margins and no worse on Danish",
            )
        return (
            "one",
            "A passes the Danish gate and B does not beat it on English by the margins without costing Danish",
        )
    if b_ok:
        return "per_language", "A fails the Danish gate and B passes it"
    a_no_worse = a_da.text_accuracy >= b_da.text_accuracy and a_da.asr_wrong <= b_da.asr_wrong
    return ("one" if a_no_worse else "per_language"), "neither passes the Danish gate"


def markdown(run: dict[str, Any], winner: str, why: str, command: str) -> str:
    names = {"one": "A: one model (da+en)", "per_language": "B: one per language"}
    lines = [
        BEGIN,
        "## English and Danish, one model or one per language (generated)",
        "",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d %H:%M')}). Generated by "
        "models/compare_languages.py; rerunning replaces this section only.",
        "",
        "Training examples: "
        + ", ".join(f"{k} {v['training_examples']}" for k, v in run["training"].items())
        + ". First turn: shares of all rows, the dialogue policy's first action.",
        "",
    ]
    for language in LANGUAGES:
        lines += [
            f"### {'Danish' if language == 'da' else 'English'} ({language})",
            "",
            "| candidate | held back | rows | accuracy | macro-F1 | OOS false-accept | first turn acts right | acts wrong | needless 112 | confirms | asks again |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for candidate in ("one", "per_language"):
            for split in ("text", "asr"):
                m = run["scores"][candidate][language][split]
                ft, n = m["first_turn"], max(1, m["first_turn"]["n"])
                oos = m.get("oos_false_accept_rate")
                lines.append(
                    f"| {names[candidate]} | {'written' if split == 'text' else 'ASR transcripts'} | {m['n']} | "
                    f"{m['accuracy']:.3f} | {m['macro_f1']:.3f} | {'–' if oos is None else f'{oos:.3f}'} | "
                    f"{ft['acts_right'] / n:.3f} | {ft['acts_wrong'] / n:.3f} | {ft['false_112'] / n:.3f} | "
                    f"{ft['confirms'] / n:.3f} | {ft['rephrase'] / n:.3f} |"
                )
        lines.append("")
    lines += [
        f"Today's Danish model (gate): text accuracy {TODAY_DA_TEXT_ACCURACY:.3f}, ASR wrong first acts "
        f"{TODAY_DA_ASR_WRONG:.3f}.",
        "",
        f"**Winner by the rule: {names[winner]}** ({why}).",
        END,
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the part of `path` between the markers `begin` and `end` (or append it)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the measured figures here")
    parser.add_argument(
        "--out", type=Path, help="replace the generated section of this Markdown file"
    )
    parser.add_argument("--keep", type=Path, help="train the candidates into this directory (kept)")
    args = parser.parse_args(argv)
    settings = load_settings(None)
    with tempfile.TemporaryDirectory() as scratch:
        run = measure(settings, args.keep or Path(scratch))
    winner, why = select(run)
    run["winner"], run["why"] = winner, why
    if args.json:
        args.json.write_text(json.dumps(run, ensure_ascii=False, indent=1), encoding="utf-8")
    section = markdown(
        run, winner, why, "python -m models.compare_languages --out intents/RESULTS.md"
    )
    if args.out:
        write_section(args.out, section)
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
