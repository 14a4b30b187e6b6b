"""Language detection on first turns (issue 14): how often the gateway's choice among
`languages` is right, per language, and what the Danish prior (asr.language_margin) costs.

    .venv/bin/python -m benchmarks.language_detection [--out benchmarks/results/language_detection.md]

Each clip is a call's first turn through the phone line (telephony.codecs.phone_line: 8 kHz,
line noise, G.711 μ-law). Whisper's detection reads the clip exactly as WhisperAsr.transcribe
does on a first turn (same mel window, same encoder, same restriction to `languages`, in the
same order: asr.language first); the text decode that follows does not change the language,
so it is skipped. The choice for any margin follows from the scores (voicebot.asr.choose_language),
so one pass gives the whole margin table.

Corpora:
- real Danish: the recordings under ../shared/data/danish-speech cut at pauses into 2–8 s
  turns (benchmarks.suites.calls.real_turns, voicebot.asr.split_at_pauses); also as recorded,
  without the phone line, for comparison;
- English: the held-back English requests (intents/heldout_en.tsv, never trained on) spoken by
  espeak-ng English voices (models.make_training_data.VOICES_EN);
- espeak-ng Danish: held-back Danish requests (intents/heldout.tsv) in the espeak-ng Danish
  voices, the stand-in voice. Whisper hears it as English: the stand-in's limit, reported apart
  and not a product figure.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import ctranslate2
import numpy as np

from models.intent_data import load_heldout
from models.make_training_data import VOICES_BY_LANGUAGE
from telephony.codecs import phone_line
from voicebot.asr import WhisperAsr, choose_language
from voicebot.config import Settings, load_settings
from voicebot.provision import provision_for
from voicebot.tts import Speaker

MARGINS = (0.0, 0.2, 0.5, 0.8, 0.9, 0.95, 0.98)
RENDITIONS = 6  # phone-line renditions (noise draws) of each real Danish turn: only 16 turns
TARGET = 0.98


@dataclass
class Clip:
    corpus: str  # real-da | en | espeak-da
    truth: str  # the language spoken
    audio: np.ndarray  # 16 kHz, after the phone line


@dataclass
class Detected:
    clip: Clip
    scores: dict[str, float]  # Whisper's detection among `languages` (sums to 1)


def real_danish(limit: int | None, renditions: int = RENDITIONS) -> list[Clip]:
    """Each real turn through the line `renditions` times (other noise, other level), and once
    as recorded."""
    from benchmarks.suites.calls import real_turns

    turns = real_turns(limit or 10_000)
    lines = [
        Clip("real-da", "da", _line(t.audio, 1000 + i * renditions + k))
        for i, t in enumerate(turns)
        for k in range(renditions)
    ]
    return lines + [Clip("real-da-mic", "da", t.audio) for t in turns]


def espeak(language: str, corpus: str, limit: int | None) -> list[Clip]:
    speaker = Speaker()
    voices = VOICES_BY_LANGUAGE[language]
    examples = [e for e in load_heldout(language) if e.text.strip()][:limit]
    return [
        Clip(corpus, language, _line(speaker.speak(e.text, voices[i % len(voices)]), i))
        for i, e in enumerate(examples)
    ]


def _line(audio: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return phone_line(audio, snr_db=float(rng.uniform(15, 30)), rng=rng)


def detect(asr: WhisperAsr, audio: np.ndarray, languages: list[str]) -> dict[str, float]:
    """Whisper's language scores among `languages`, read as WhisperAsr.transcribe reads them."""
    mel = asr.features(np.asarray(audio, dtype=np.float32), padding=160)[:, :-1]
    frames = asr.window_frames(mel.shape[1])
    window = np.zeros((mel.shape[0], frames), dtype=np.float32)
    n = min(frames, mel.shape[1])
    window[:, :n] = mel[:, :n]
    _, [(_, scores)] = asr.encode_and_detect(
        ctranslate2.StorageView.from_array(window[None]), languages
    )
    return scores


def rate(results: list[Detected], languages: list[str], margin: float) -> float:
    right = sum(
        choose_language([(f"<|{code}|>", p) for code, p in r.scores.items()], languages, margin)[0]
        == r.clip.truth
        for r in results
    )
    return right / max(1, len(results))


def markdown(results: list[Detected], settings: Settings, seconds: float) -> str:
    languages = [
        settings.asr.language,
        *(c for c in settings.languages if c != settings.asr.language),
    ]
    shipped = settings.asr.language_margin
    margins = sorted({*MARGINS, shipped})
    corpora = [
        ("real-da", f"real Danish turns × {RENDITIONS} line renditions", "product"),
        ("real-da-mic", "the same real Danish turns as recorded (no line)", "for comparison"),
        ("en", "English requests, espeak-ng (held back)", "product"),
        ("espeak-da", "Danish requests, espeak-ng (held back)", "stand-in voice's limit"),
    ]
    head = " | ".join(f"margin {m:.2f}" + (" (shipped)" if m == shipped else "") for m in margins)
    lines = [
        "## Language detection on first turns (generated)",
        "",
        f"Command: `python -m benchmarks.language_detection` ({time.strftime('%Y-%m-%d %H:%M')}, "
        f"{seconds:.0f} s). Through the phone line (8 kHz μ-law, 15–30 dB SNR); Whisper "
        f"{settings.whisper_dir.name} restricted to {', '.join(languages)}; below the margin the "
        f"call keeps {languages[0]}. Right = the language spoken. Target ≥ {TARGET:.0%} each.",
        "",
        f"| corpus | clips | {head} | counts as |",
        "|---|---:|" + "---:|" * len(margins) + "---|",
    ]
    for key, label, kind in corpora:
        rows = [r for r in results if r.clip.corpus == key]
        if not rows:
            continue
        cells = " | ".join(f"{rate(rows, languages, m):.1%}" for m in margins)
        lines.append(f"| {label} | {len(rows)} | {cells} | {kind} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, help="at most this many clips per corpus")
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    settings = load_settings(None)
    provision_for(settings)
    asr = WhisperAsr(settings.whisper_dir, settings.asr)
    languages = [
        settings.asr.language,
        *(c for c in settings.languages if c != settings.asr.language),
    ]
    start = time.perf_counter()
    clips = (
        real_danish(args.limit)
        + espeak("en", "en", args.limit)
        + espeak("da", "espeak-da", args.limit)
    )
    results = [Detected(clip, detect(asr, clip.audio, languages)) for clip in clips]
    table = markdown(results, settings, time.perf_counter() - start)
    if args.out:
        args.out.write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
