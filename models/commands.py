"""The tool commands of `voicebot` (train-intents, make-training-data, eval-asr, eval-intents).

Registered as entry points of the group `voicebot.commands` in pyproject.toml, so the runtime
CLI finds them without importing this package by name. Each `add_*` adds one subparser; the
commands import their libraries when they run, so `voicebot --help` stays quick."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from telephony.base import SAMPLE_RATE
from voicebot.config import Settings, load_settings
from voicebot.provision import provision_for

if TYPE_CHECKING:
    import numpy as np

Subparsers = argparse._SubParsersAction


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None))


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False), flush=True)


# -- train-intents / make-training-data ------------------------------------------------------
def add_train_intents(sub: Subparsers) -> None:
    s = sub.add_parser("train-intents", help="train the intent model and export it to ONNX")
    s.add_argument("--no-asr", action="store_true", help="train on written utterances only")
    s.add_argument("--out", help="output .onnx path (default: settings.intent_model)")
    s.add_argument(
        "--language",
        action="append",
        choices=("da", "en"),
        dest="languages",
        help="train on this language's data (default da); one language's model goes to its "
        "own file (en: intent_en.onnx beside settings.intent_model); several need --out",
    )
    s.set_defaults(func=cmd_train_intents)


def cmd_train_intents(args: argparse.Namespace) -> int:
    from models.train_intents import SHIPPED_LANGUAGES, model_path_for, train, training_examples

    settings = _settings(args)
    languages = tuple(dict.fromkeys(args.languages)) if args.languages else SHIPPED_LANGUAGES
    if len(languages) > 1 and not args.out:
        print("voicebot train-intents: a model of several languages needs --out", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else model_path_for(languages[0], settings.intent_model)
    summary = train(
        training_examples(use_asr=not args.no_asr, languages=languages), out, languages=languages
    )
    print(json.dumps(summary, ensure_ascii=False, indent=1))
    return 0


def add_make_training_data(sub: Subparsers) -> None:
    s = sub.add_parser(
        "make-training-data",
        help="synthesize, phone-line and transcribe the intent utterances (cached)",
    )
    s.add_argument("--per-utterance", type=int, default=2, help="voices per utterance")
    s.add_argument("--no-heldout", action="store_true", help="skip the held-back split")
    s.add_argument(
        "--language",
        choices=("da", "en"),
        default="da",
        help="whose utterances: voices and the ASR's forced language follow it",
    )
    s.set_defaults(func=cmd_make_training_data)


def cmd_make_training_data(args: argparse.Namespace) -> int:
    from models.make_training_data import make_training_data
    from voicebot.asr import WhisperAsr

    settings = _settings(args)
    provision_for(settings)
    asr_settings = settings.asr.model_copy(update={"language": args.language})
    made = make_training_data(
        WhisperAsr(settings.whisper_dir, asr_settings),
        args.per_utterance,
        heldout=not args.no_heldout,
        language=args.language,
    )
    print(f"new transcripts: {made} (cached rows were kept)")
    return 0


# -- eval-asr / eval-intents -------------------------------------------------------------------
def _long_transcriber(
    asr: Any, previous_text: str | None, languages: Sequence[str] | None = None
) -> Callable[[np.ndarray], tuple[str, str]]:
    """16 kHz audio of any length → (text, language): pieces of at most 25 s cut at VAD
    pauses. With several `languages` the first piece's language is detected among them as the
    gateway detects a first turn (asr.language_margin, else the first), the rest forced to it."""
    from voicebot.asr import split_at_pauses
    from voicebot.vad import WINDOW, SileroVad

    vad = SileroVad()

    def transcribe(audio: np.ndarray) -> tuple[str, str]:
        probs = vad.stream().push(audio) if len(audio) > 28 * SAMPLE_RATE else None
        pieces = [audio] if probs is None else split_at_pauses(audio, probs, WINDOW)
        texts, asked = [], languages
        for piece in pieces:
            result = asr.transcribe(piece, previous_text, languages=asked)
            texts.append(result.text)
            asked = [result.language]  # known after the first piece
        return " ".join(t for t in texts if t), asked[0] if asked else asr.settings.language

    return transcribe


def _first_turn_languages(settings: Settings) -> list[str]:
    """What the gateway asks Whisper on a call's first turn: the call's starting language
    (asr.language, kept below the margin), then the other configured languages."""
    return [settings.asr.language, *(c for c in settings.languages if c != settings.asr.language)]


def add_eval_asr(sub: Subparsers) -> None:
    s = sub.add_parser(
        "eval-asr", help="WER/CER and latency of the ASR on a manifest (audio<TAB>text)"
    )
    s.add_argument("manifest")
    s.add_argument("--json", action="store_true")
    s.add_argument(
        "--no-trim", action="store_true", help="full 30 s encoder window (for comparison)"
    )
    s.add_argument(
        "--domain-prompt",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bias decoding with the catalogue's key terms (default: asr.domain_prompt)",
    )
    s.set_defaults(func=cmd_eval_asr)


def cmd_eval_asr(args: argparse.Namespace) -> int:
    from faster_whisper.audio import decode_audio

    from models.evaluation import evaluate_asr, load_manifest
    from voicebot.asr import WhisperAsr
    from voicebot.catalogue import load_catalogue
    from voicebot.services import domain_prompt

    settings = _settings(args)
    if args.no_trim:
        settings.asr.trim_window = False
    provision_for(settings)
    asr = WhisperAsr(settings.whisper_dir, settings.asr)
    use_prompt = settings.asr.domain_prompt if args.domain_prompt is None else args.domain_prompt
    prompt = domain_prompt(load_catalogue(settings.catalogue)) if use_prompt else None
    transcribe = _long_transcriber(asr, prompt)
    result = evaluate_asr(
        load_manifest(args.manifest),
        lambda audio: transcribe(audio)[0],
        lambda p: decode_audio(str(p), sampling_rate=SAMPLE_RATE),
        progress=not args.json,
    )
    if args.json:
        _print_json(result.as_dict())
    else:
        for row in result.rows:
            print(
                f"{row['wer']:5.2f}  {row['asr_ms']:7.0f} ms  {Path(row['audio']).name}: {row['text']}"
            )
        print(
            f"WER {result.wer:.3f}  CER {result.cer:.3f}  over {result.utterances} utterances "
            f"({result.audio_s:.0f} s audio); latency p50 {result.latency_ms_p50:.0f} ms, "
            f"p95 {result.latency_ms_p95:.0f} ms; RTF {result.asr_s / max(result.audio_s, 1e-9):.3f}"
        )
    return 0


def add_eval_intents(sub: Subparsers) -> None:
    s = sub.add_parser(
        "eval-intents", help="accuracy, macro-F1, recall, confusion on a labelled TSV"
    )
    s.add_argument(
        "file", help="TSV with columns text, intent (or with --audio: audio<TAB>intent manifest)"
    )
    s.add_argument("--json", action="store_true")
    s.add_argument(
        "--audio", action="store_true", help="FILE is a manifest of audio files; run ASR first"
    )
    s.add_argument(
        "--language",
        choices=("da", "en"),
        help="the language of rows without a `language` column (default da); with --audio "
        "the ASR is forced to it (without it: detected among `languages`, as the gateway does)",
    )
    s.add_argument(
        "--model", help="intent model .onnx to score with (default: settings.intent_model)"
    )
    s.set_defaults(func=cmd_eval_intents)


def _labelled_rows(args: argparse.Namespace, settings: Settings) -> list[tuple[str, str, str]]:
    """(text, intent, language) rows: the TSV's (language from its `language` column, else
    --language, else Danish), or with --audio the manifest's audio transcribed."""
    from models.evaluation import load_manifest
    from models.intent_data import DEFAULT_LANGUAGE, load_tsv, row_languages

    default = args.language or DEFAULT_LANGUAGE
    if not args.audio:  # empty texts stay: a transcript set holds silences too
        path = Path(args.file)
        examples = load_tsv(path, keep_empty=True)
        return [
            (e.text, e.intent, language)
            for e, language in zip(examples, row_languages(path, default), strict=True)
        ]
    from faster_whisper.audio import decode_audio

    from voicebot.asr import WhisperAsr
    from voicebot.catalogue import load_catalogue
    from voicebot.services import domain_prompt

    provision_for(settings)
    asr = WhisperAsr(settings.whisper_dir, settings.asr)
    prompt = (
        domain_prompt(load_catalogue(settings.catalogue)) if settings.asr.domain_prompt else None
    )
    # As the gateway hears a first turn: forced to --language when given, else the language
    # detected among settings.languages; each row is understood and reported in that language.
    asked = [args.language] if args.language else _first_turn_languages(settings)
    transcribe = _long_transcriber(asr, prompt, asked)
    rows = []
    for item in load_manifest(args.file):
        text, language = transcribe(decode_audio(str(item.audio), sampling_rate=SAMPLE_RATE))
        rows.append((text, item.reference, language))
    return rows


def cmd_eval_intents(args: argparse.Namespace) -> int:
    from voicebot.catalogue import load_catalogue

    settings = _settings(args)
    catalogue = load_catalogue(settings.catalogue)
    rows = _labelled_rows(args, settings)
    unknown = sorted({intent for _, intent, _ in rows} - set(catalogue.intents))
    if unknown:
        print(
            f"voicebot eval-intents: {args.file}: unknown intent ids {', '.join(unknown)}",
            file=sys.stderr,
        )
        return 2
    languages = sorted({language for _, _, language in rows})
    # Each row is understood as the gateway would: its language's classifier and rules.
    classifiers = _classifiers(args, settings, catalogue, languages)
    metrics = _intent_metrics_of(rows, classifiers, catalogue, settings)
    # Every language on its own: a good Danish score must not hide a poor English one.
    metrics["languages"] = {
        language: _intent_metrics_of(
            [r for r in rows if r[2] == language], classifiers, catalogue, settings
        )
        for language in languages
    }
    if args.json:
        _print_json(metrics)
        return 0
    for language in languages:
        print(f"== language {language}")
        _print_intent_report(metrics["languages"][language])
    if len(languages) > 1:
        print("== all languages")
        _print_intent_report(metrics)
    return 0


def _classifiers(
    args: argparse.Namespace, settings: Settings, catalogue: Any, languages: list[str]
) -> dict[str, Any]:
    """A classifier per language: --model for all of them, else the one the gateway loads for
    that language (intent_<lang>.onnx beside settings.intent_model when shipped)."""
    from voicebot.services import load_classifier
    from voicebot.understanding import IntentClassifier, IntentModel

    if args.model:
        model = IntentModel(args.model)
        return {language: IntentClassifier(model, catalogue, language) for language in languages}
    return {language: load_classifier(settings, catalogue, language) for language in languages}


def _intent_metrics_of(
    rows: list[tuple[str, str, str]],
    classifiers: dict[str, Any],
    catalogue: Any,
    settings: Settings,
) -> dict[str, Any]:
    from models.evaluation import first_turn, intent_metrics
    from voicebot.dialogue import DialoguePolicy

    results = [classifiers[language].classify(text, explain=False) for text, _, language in rows]
    gold = [g for _, g, _ in rows]
    metrics = intent_metrics(
        gold,
        [r.intent for r in results],
        [r.confidence for r in results],
        labels=sorted(catalogue.intents),
    )
    # What the caller would live through: the dialogue policy's first action on each turn,
    # each the opening turn of a call of its own in the row's language.
    decisions = [
        DialoguePolicy(catalogue, classifiers[language], settings.dialogue, language).on_utterance(
            text, understood
        )
        for (text, _, language), understood in zip(rows, results, strict=True)
    ]
    metrics["first_turn"] = first_turn(
        gold, [d.action for d in decisions], [d.intent for d in decisions]
    )
    # A confirm question on the right intent: one "yes" from acting right.
    metrics["first_turn"]["confirms_right"] = sum(
        d.action == "confirm" and d.intent == g for d, g in zip(decisions, gold, strict=True)
    )
    # "If someone is in danger, ring 112" for a possible emergency (the call goes on): to a
    # real emergency it is its 112; to anyone else a sentence more.
    notices = [g for d, g in zip(decisions, gold, strict=True) if d.emergency_notice]
    metrics["first_turn"]["notice_112_emergency"] = notices.count("emergency")
    metrics["first_turn"]["notice_112_other"] = len(notices) - notices.count("emergency")
    return metrics


def _print_intent_report(metrics: dict[str, Any]) -> None:
    print(
        f"{metrics['n']} utterances: accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}, "
        f"out-of-scope false accepts {metrics.get('oos_false_accept_rate') or 0:.3f}, ECE {metrics['ece']:.3f}"
    )
    ft = metrics["first_turn"]
    print(
        "first turn, as the dialogue acts on it: "
        + ", ".join(
            f"{label} {ft[key]}"
            for key, label in (
                ("acts_right", "acts on the right intent"),
                ("acts_wrong", "acts on a wrong one"),
                ("false_112", "of those, needless 112"),
                ("confirms", "confirms"),
                ("confirms_right", "of those, on the right intent"),
                ("rephrase", "asks again"),
                ("notice_112_emergency", "112 notice to an emergency"),
                ("notice_112_other", "112 notice to another caller"),
            )
        )
    )
    for intent, recall in sorted(metrics["per_intent_recall"].items()):
        print(f"  recall {recall:5.2f}  {intent}")
    labels = metrics["labels"]
    short = [label[:5] for label in labels]
    print(
        "confusion (rows: true, columns: predicted)\n"
        + " " * 17
        + " ".join(f"{s:>5}" for s in short)
    )
    for label, row in zip(labels, metrics["confusion"], strict=True):
        if any(row):
            print(f"{label:>16} " + " ".join(f"{v:5d}" if v else "    ." for v in row))
