"""What each ASR technique does to WER and to the work left after the end of speech, on
the Danish evaluation set (benchmarks/data/asr_eval/manifest.tsv):

  full       one decode of the turn, padded 30 s encoder window
  trimmed    one decode, encoder window = audio + margin (at least asr.window_min_s)
  prompt     trimmed, with the catalogue's domain terms as previous-text prompt
  streaming  partials every asr.partial_interval_ms on the growing audio, LocalAgreement-2
             commits words, the final pass decodes only what is not committed (forced prefix)

    python -m benchmarks.streaming_eval [--json] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
from faster_whisper.audio import decode_audio
from tqdm import tqdm

from benchmarks.suites.asr import MANIFEST
from models.evaluation import error_rates, load_manifest
from telephony.base import SAMPLE_RATE
from voicebot.asr import LocalAgreement, WhisperAsr, split_at_pauses
from voicebot.catalogue import load_catalogue
from voicebot.config import Settings
from voicebot.services import domain_prompt
from voicebot.vad import WINDOW, SileroVad

PIECE_S = 12.0  # longer recordings (the real clip) are cut at pauses into turn-sized pieces


def streaming(asr: WhisperAsr, audio: np.ndarray, interval_s: float) -> tuple[str, float, int]:
    """Partials on the growing audio, then the final with the committed prefix.
    Returns (text, final-pass ms, partial decodes)."""
    agreement = LocalAgreement()
    step = int(interval_s * SAMPLE_RATE)
    partials = 0
    for end in range(step, len(audio), step):
        agreement.update(asr.transcribe(audio[:end]).words)
        partials += 1
    prefix = " ".join(agreement.committed) or None
    start = time.perf_counter()
    text = asr.transcribe(audio, prefix=prefix).text
    return text, (time.perf_counter() - start) * 1000, partials


def evaluate(limit: int | None = None) -> dict:
    settings = Settings()
    asr = WhisperAsr(settings.whisper_dir, settings.asr)
    prompt = domain_prompt(load_catalogue(settings.catalogue))
    vad = SileroVad()
    refs, recordings, real = [], [], []  # each recording: a list of turn-sized pieces
    for item in load_manifest(MANIFEST)[:limit]:
        audio = decode_audio(str(item.audio), sampling_rate=SAMPLE_RATE)
        pieces = (
            [audio]
            if len(audio) <= PIECE_S * SAMPLE_RATE
            else split_at_pauses(audio, vad.stream().push(audio), WINDOW, max_s=PIECE_S)
        )
        refs.append(item.reference)
        recordings.append(pieces)
        real.append(not item.audio.name.startswith("syn"))

    def score(texts: list[str], ms: list[float]) -> dict:
        syn = [k for k, r in enumerate(real) if not r]
        out = {
            "wer": error_rates(refs, texts)["wer"],
            "wer_synthetic": error_rates([refs[k] for k in syn], [texts[k] for k in syn])["wer"],
            "after_speech_ms_p50": float(np.median(ms)),
            "after_speech_ms_max": float(np.max(ms)),
        }
        if any(real):
            rk = [k for k, r in enumerate(real) if r]
            out["wer_real"] = error_rates([refs[k] for k in rk], [texts[k] for k in rk])["wer"]
        return out

    def run(fn: Callable[[np.ndarray], tuple[str, float]]) -> tuple[list[str], list[float]]:
        texts, ms = [], []
        for pieces in recordings:
            out = []
            for piece in pieces:
                text, elapsed = fn(piece)
                out.append(text)
                ms.append(elapsed)
            texts.append(" ".join(out))
        return texts, ms

    def one_pass(**options) -> Callable[[np.ndarray], tuple[str, float]]:
        def fn(audio: np.ndarray) -> tuple[str, float]:
            start = time.perf_counter()
            text = asr.transcribe(audio, **options).text
            return text, (time.perf_counter() - start) * 1000

        return fn

    partials = 0

    def stream(audio: np.ndarray) -> tuple[str, float]:
        nonlocal partials
        text, ms, n = streaming(asr, audio, settings.asr.partial_interval_ms / 1000)
        partials += n
        return text, ms

    variants = {
        "full": one_pass(trim=False),
        "trimmed": one_pass(),
        "prompt": one_pass(previous_text=prompt),
        "streaming": stream,
    }
    report = {name: score(*run(fn)) for name, fn in tqdm(variants.items(), desc="variants")}
    report["streaming"]["partial_decodes"] = partials
    report["recordings"] = {"synthetic": real.count(False), "real": real.count(True)}
    return {
        k: (
            {m: round(v, 4) if isinstance(v, float) else v for m, v in r.items()}
            if isinstance(r, dict)
            else r
        )
        for k, r in report.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--limit", type=int)
    args = parser.parse_args(argv)
    print(json.dumps(evaluate(args.limit), indent=None if args.json else 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
