"""The comparison from start to end: pick the data variants by cross-validation, then fit,
export, serve and score every candidate on the held-back splits, then apply the rules.

    python -m models.compare_intents [--json] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from models.compare_intents.data import (
    VARIANTS,
    Data,
    Variant,
    cv_grid,
    load_data,
    real_clip_transcripts,
)
from models.compare_intents.families import FAMILIES, Family, families, torch_available
from models.compare_intents.report import markdown, write_section
from models.compare_intents.rules import apply_rules
from models.compare_intents.scoring import (
    LATENCY_N,
    Scored,
    best_by_cv,
    cluster_bootstrap,
    framework_latency,
    latencies_ms,
    macro_f1,
    oof_scores,
    paired_delta,
    score,
    summary,
)
from models.evaluation import ACTS
from models.train_intents import AsrExample, fit_temperature, sample_weights, sentence_of
from voicebot.catalogue import Catalogue, load_catalogue
from voicebot.config import DialogueSettings, Settings
from voicebot.dialogue import DialoguePolicy
from voicebot.understanding import IntentClassifier, normalize, softmax

BASELINE = "logreg/written"  # the shipped family on the written utterances: the paired reference


@dataclass
class Bench:
    """Everything a candidate is scored against, fixed for the whole run."""

    data: Data
    catalogue: Catalogue
    labels: list[str]
    dialogue: DialogueSettings
    clips: list[dict[str, str]]
    clean_boot: list[np.ndarray]
    asr_boot: list[np.ndarray]
    latency_texts: list[str]
    step: Callable[[], object]

    def policy(self, classifier: IntentClassifier) -> Callable[[], DialoguePolicy]:
        return lambda: DialoguePolicy(self.catalogue, classifier, self.dialogue)


def run(
    family_names: Sequence[str],
    variant_names: Sequence[str],
    refresh_clips: bool = False,
    command: str = "python -m models.compare_intents",
) -> dict:
    data = load_data()
    if not data.heldout_asr:
        raise SystemExit(
            "intents/asr/heldout_asr.tsv is missing: run `voicebot make-training-data`"
        )
    fams = families()
    if not torch_available():
        print("torch is not installed: comparing the logreg family only", file=sys.stderr)
        family_names = [f for f in family_names if not fams[f].needs_torch]
    grid = cv_grid()
    bar = tqdm(
        total=_steps(len(grid), family_names, variant_names, data.n_folds),
        desc="compare-intents",
        unit="step",
    )
    bench = _bench(data, refresh_clips, bar.update)

    # 1. Data-variant selection: the shipped family, grouped CV on training data only.
    cv_rows, oof_cache = [], {}
    for v in grid:
        bar.set_postfix_str(f"CV logreg {v.name}")
        oof_cache[("logreg", *v.key)] = oof = oof_scores(fams["logreg"], data, v, bar.update)
        cv_rows.append(_cv_row(data, v, oof))
    chosen = chosen_variants(cv_rows)

    # 2. Candidates: CV temperature, final fit, ONNX export, held-back scoring as served.
    candidates: list[dict[str, Any]] = []
    scored: dict[str, dict[str, Scored]] = {}
    with tempfile.TemporaryDirectory(prefix="compare-intents-") as workdir:
        for fname in family_names:
            for vname in variant_names:
                bar.set_postfix_str(f"{fname}/{vname}")
                oof = oof_cache.get((fname, *chosen[vname].key))
                candidate, scored[f"{fname}/{vname}"] = evaluate(
                    fams[fname], vname, chosen[vname], oof, bench, Path(workdir)
                )
                candidates.append(candidate)
    bar.close()

    # 3. Paired differences against the written-only shipped model, and the winner.
    if BASELINE in scored:
        _add_deltas(candidates, scored, bench)
    return apply_rules(
        {
            "command": command,
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "data": _data_summary(data, len(bench.clips)),
            "families": {f: fams[f].description for f in family_names},
            "confirm_threshold": bench.dialogue.confirm,
            "accept_threshold": bench.dialogue.accept,
            "cv_selection": cv_rows,
            "chosen": {
                k: {"max_cer": v.max_cer, "asr_weight": v.asr_weight} for k, v in chosen.items()
            },
            "candidates": candidates,
            "real_clip_transcripts": bench.clips,
        }
    )


def _steps(
    grid: int, family_names: Sequence[str], variant_names: Sequence[str], n_folds: int
) -> int:
    """Progress steps: CV folds of the grid, then per candidate its folds, final fit and scoring
    (the logreg candidates reuse the grid's folds)."""
    total = grid * n_folds + len(family_names) * len(variant_names) * (n_folds + 2)
    return total - (len(variant_names) * n_folds if "logreg" in family_names else 0)


def _bench(data: Data, refresh_clips: bool, step: Callable[[], object]) -> Bench:
    catalogue = load_catalogue(Settings().catalogue)
    return Bench(
        data=data, catalogue=catalogue, labels=sorted(catalogue.intents), dialogue=DialogueSettings(),
        clips=real_clip_transcripts(refresh_clips),
        clean_boot=cluster_bootstrap([e.text for e in data.heldout]),
        asr_boot=cluster_bootstrap([sentence_of(e) for e in data.heldout_asr]),
        latency_texts=[normalize(e.text) for e in data.heldout[:LATENCY_N]], step=step,
    )  # fmt: skip


def _cv_row(data: Data, v: Variant, oof: np.ndarray) -> dict[str, Any]:
    pred, is_asr, n = oof.argmax(1), data.is_asr, len(data.classes)
    return {"variant": v.name, "rows": int(v.rows(data.pool).sum()),
            "max_cer": v.max_cer, "asr_weight": v.asr_weight if v.use_asr else None,
            "use_asr": v.use_asr,
            "cv_f1_asr": macro_f1(data.y[is_asr], pred[is_asr], n),
            "cv_f1_written": macro_f1(data.y[~is_asr], pred[~is_asr], n)}  # fmt: skip


def chosen_variants(cv_rows: list[dict[str, Any]]) -> dict[str, Variant]:
    """The four compared variants, the CER threshold and ASR weight picked by CV."""
    by_cer = {r["max_cer"]: r["cv_f1_asr"] for r in cv_rows if r["max_cer"] is not None}
    by_weight = {
        r["asr_weight"]: r["cv_f1_asr"]
        for r in cv_rows
        if r["use_asr"] and r["max_cer"] is None and r["asr_weight"] != 1.0
    }
    return {
        "written": Variant("written"),
        "asr-all": Variant("asr-all", use_asr=True),
        "asr-cer": Variant("asr-cer", use_asr=True, max_cer=best_by_cv(by_cer)),
        "asr-w": Variant("asr-w", use_asr=True, asr_weight=best_by_cv(by_weight)),
    }


def evaluate(
    family: Family, vname: str, v: Variant, oof: np.ndarray | None, bench: Bench, workdir: Path
) -> tuple[dict[str, Any], dict[str, Scored]]:
    """One candidate: fitted, exported, served, and scored as the bot would use it."""
    data = bench.data
    if oof is None:
        oof = oof_scores(family, data, v, bench.step)
    mask = v.rows(data.pool)
    temperature = fit_temperature(oof[mask], data.y[mask])
    texts = [e.text for e, m in zip(data.pool, mask, strict=True) if m]
    start = time.perf_counter()
    fitted = family.fit(
        texts, data.y[mask], sample_weights(data.pool, v.asr_weight)[mask], len(data.classes)
    )
    fit_s = time.perf_counter() - start
    bench.step()
    path = workdir / family.name / vname / "intent.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    fitted.export(
        path,
        {
            "classes": data.classes,
            "temperature": temperature,
            "family": family.name,
            "variant": v.describe(),
        },
    )
    served = family.serve(path)
    classifier = IntentClassifier(served, bench.catalogue)  # type: ignore[arg-type]
    scored = {
        split: score(classifier, examples, bench.labels, bench.policy(classifier))
        for split, examples in (("clean", data.heldout), ("asr", data.heldout_asr))
    }
    # The exported graph must score as the framework does (batched, padded).
    probe = bench.latency_texts[:50]
    parity = float(
        np.abs(served.probabilities(probe) - softmax(fitted.scores(probe) / temperature)).max()
    )
    flagged = _real_clips(classifier, bench)
    is_asr = data.is_asr
    candidate = {
        "name": f"{family.name}/{vname}", "family": family.name, "variant": vname,
        "data": v.describe(), "train_rows": int(mask.sum()), "temperature": temperature, "fit_s": fit_s,
        "cv_f1_asr": macro_f1(data.y[is_asr], oof[is_asr].argmax(1), len(data.classes)),
        "clean": summary(scored["clean"], bench.clean_boot), "asr": summary(scored["asr"], bench.asr_boot),
        "served_ms": latencies_ms(lambda t: served.probabilities([t]), bench.latency_texts),
        "framework_ms": framework_latency(fitted, bench.latency_texts),
        "onnx_kb": path.stat().st_size / 1024, "onnx_max_prob_diff": parity,
        "real_clips": flagged, "real_flagged": sum(c["flagged"] for c in flagged),
        "real_acted": sum(c["action"] in ACTS for c in flagged),
    }  # fmt: skip
    bench.step()
    return candidate, scored


def _real_clips(classifier: IntentClassifier, bench: Bench) -> list[dict[str, Any]]:
    """How the candidate treats real speech that is no municipal request: all should be flagged."""
    rows = []
    for clip in bench.clips:
        u = classifier.classify(clip["text"], explain=False)
        rows.append(
            {
                "source_file": clip["source_file"],
                "intent": u.intent,
                "confidence": round(u.confidence, 3),
                "flagged": u.intent == "out_of_scope" or u.confidence < bench.dialogue.confirm,
                "action": bench.policy(classifier)().on_utterance(clip["text"], u).action,
            }
        )
    return rows


def _add_deltas(
    candidates: list[dict[str, Any]], scored: dict[str, dict[str, Scored]], bench: Bench
) -> None:
    for c in candidates:
        for split, boot in (("clean", bench.clean_boot), ("asr", bench.asr_boot)):
            c[split]["delta_f1_vs_logreg_written"] = paired_delta(
                scored[c["name"]][split], scored[BASELINE][split], bench.labels, boot
            )


def _data_summary(data: Data, real_clips: int) -> dict[str, Any]:
    is_asr = data.is_asr
    return {
        "written": int((~is_asr).sum()), "asr_train": int(is_asr.sum()),
        "heldout": len(data.heldout), "heldout_sentences": len({e.text for e in data.heldout}),
        "heldout_asr": len(data.heldout_asr),
        "heldout_asr_sentences": len({sentence_of(e) for e in data.heldout_asr}),
        "heldout_asr_empty": sum(not e.text for e in data.heldout_asr),
        "train_asr_median_cer": float(np.median([e.cer for e in data.pool if isinstance(e, AsrExample)])),
        "heldout_asr_median_cer": float(np.median([e.cer for e in data.heldout_asr])),
        "folds": data.n_folds, "real_clips": real_clips,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m models.compare_intents",
        description="Which intent model, trained on which data?",
    )
    p.add_argument("--json", action="store_true", help="print every figure as JSON")
    p.add_argument("--out", type=Path, help="write the markdown section into this file")
    p.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--refresh-clips", action="store_true", help="transcribe the real clips again")
    p.add_argument(
        "--from-json",
        type=Path,
        metavar="FILE",
        help="re-render a saved --json run (rules applied again) instead of training",
    )
    args = p.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    if args.from_json:
        result = apply_rules(json.loads(args.from_json.read_text(encoding="utf-8")))
    else:
        result = run(
            args.families,
            args.variants,
            args.refresh_clips,
            " ".join(["python -m models.compare_intents", *argv]),
        )
    section = markdown(result)
    if args.out:
        write_section(args.out, section)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=1))
    elif not args.out:
        print(section)
    return 0
