"""How well Silero VAD finds speech on the phone line, and how long callers pause inside
a sentence (which sets the end-of-turn silence).

Labelled set:
  synthetic  held-back domain sentences spoken by espeak-ng, joined with pauses of 0.2–1.5 s,
             phone line (8 kHz μ-law, 15–30 dB SNR); reference: where the clean TTS signal
             is not silent
  real       the 13 NST Danish clips in ../shared/data/danish-speech/nst-danspeech (studio
             recordings); reference: frames within 35 dB of the clip's loudest frame on the
             clean recording (a silver reference), hypothesis on the phone-line version
Metric: pyannote.metrics' detection error rate ((miss + false alarm) / speech), collar 0.

    python -m benchmarks.vad_eval [--json]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import soundfile as sf
from pyannote.core import Annotation, Segment
from pyannote.metrics.detection import DetectionErrorRate

from models.intent_data import load_heldout
from telephony.base import SAMPLE_RATE
from telephony.codecs import phone_line, resample
from voicebot.config import PROJECT_ROOT
from voicebot.tts import Speaker, Voice
from voicebot.vad import WINDOW, SileroVad

NST = PROJECT_ROOT.parent / "shared" / "data" / "danish-speech" / "nst-danspeech"


def regions(active: np.ndarray, hop_s: float, min_gap_s: float = 0.0) -> list[tuple[float, float]]:
    """Runs of True frames as (start, end) seconds; gaps shorter than min_gap_s are bridged."""
    out: list[list[float]] = []
    for i in np.flatnonzero(active):
        t = i * hop_s
        if out and t - out[-1][1] <= min_gap_s + 1e-9:
            out[-1][1] = t + hop_s
        else:
            out.append([t, t + hop_s])
    return [(a, b) for a, b in out]


def energy_reference(
    audio: np.ndarray, below_peak_db: float = 35.0, hop_s: float = 0.01
) -> np.ndarray:
    hop = int(hop_s * SAMPLE_RATE)
    n = len(audio) // hop
    rms = np.sqrt(np.mean(audio[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
    db = 20 * np.log10(rms)
    return db >= db.max() - below_peak_db


def vad_speech(vad: SileroVad, audio: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Per-window speech decisions with the same hysteresis as the Endpointer."""
    probs = vad.stream().push(audio)
    active, on = np.zeros(len(probs), bool), False
    for i, p in enumerate(probs):
        on = p >= threshold if not on else p >= threshold - 0.15
        active[i] = on
    return active


def annotation(segments: list[tuple[float, float]]) -> Annotation:
    ann = Annotation()
    for a, b in segments:
        ann[Segment(a, b)] = "speech"
    return ann


def synthetic_set(n: int = 12) -> list[tuple[str, np.ndarray, list[tuple[float, float]]]]:
    speaker = Speaker(cache_size=2)
    voices = (Voice("da", 150, 50), Voice("da+f3", 135, 65), Voice("da+m3", 165, 40))
    rng = np.random.default_rng(7)
    sentences = [e.text for e in load_heldout() if e.intent != "out_of_scope"]
    items = []
    for k in range(n):
        parts, ref, t = [np.zeros(int(rng.uniform(0.3, 1.0) * SAMPLE_RATE), np.float32)], [], 0.0
        t = len(parts[0]) / SAMPLE_RATE
        for text in rng.choice(sentences, size=3, replace=False):
            speech = speaker.speak(str(text), voices[k % len(voices)])
            for a, b in regions(
                np.abs(speech[: len(speech) // 160 * 160].reshape(-1, 160)).max(1) > 0.01,
                0.01,
                min_gap_s=0.05,
            ):
                ref.append((t + a, t + b))
            pause = np.zeros(int(rng.uniform(0.2, 1.5) * SAMPLE_RATE), np.float32)
            parts += [speech, pause]
            t += (len(speech) + len(pause)) / SAMPLE_RATE
        clean = np.concatenate(parts)
        line = phone_line(clean, snr_db=float(rng.uniform(15, 30)), rng=rng)
        items.append((f"synthetic-{k}", line, ref))
    return items


def real_set() -> list[tuple[str, np.ndarray, list[tuple[float, float]]]]:
    items = []
    for path in sorted(NST.glob("*.wav")):
        audio, rate = sf.read(path, dtype="float32")
        mono = resample(audio.mean(axis=1) if audio.ndim == 2 else audio, rate, SAMPLE_RATE)
        ref = regions(energy_reference(mono), 0.01, min_gap_s=0.05)
        line = phone_line(mono, snr_db=25.0, rng=np.random.default_rng(len(items)))
        items.append((path.name, line, ref))
    return items


def internal_pauses(ref: list[tuple[float, float]], min_pause_s: float = 0.05) -> list[float]:
    """Silences between speech regions inside one utterance."""
    return [b[0] - a[1] for a, b in zip(ref, ref[1:], strict=False) if b[0] - a[1] >= min_pause_s]


def evaluate(threshold: float = 0.5) -> dict:
    vad = SileroVad()
    hop_s = WINDOW / SAMPLE_RATE
    report = {}
    for name, items in (("synthetic", synthetic_set()), ("real", real_set())):
        metric = DetectionErrorRate(collar=0.0)
        hyps = []
        for _, audio, ref in items:
            hyp = regions(vad_speech(vad, audio, threshold), hop_s)
            hyps.append(hyp)
            metric(annotation(ref), annotation(hyp), uem=Segment(0, len(audio) / SAMPLE_RATE))
        detail = abs(metric)
        components = metric[:]
        report[name] = {
            "clips": len(items),
            "detection_error_rate": round(float(detail), 4),
            "miss_s": round(float(components["miss"]), 2),
            "false_alarm_s": round(float(components["false alarm"]), 2),
            "speech_s": round(float(components["total"]), 2),
        }
        if name == "real":
            pauses = np.array([p for _, _, ref in items for p in internal_pauses(ref)])
            report[name]["internal_pauses"] = {
                "count": int(len(pauses)),
                "p50_ms": round(float(np.percentile(pauses, 50)) * 1000) if len(pauses) else None,
                "p90_ms": round(float(np.percentile(pauses, 90)) * 1000) if len(pauses) else None,
                "p95_ms": round(float(np.percentile(pauses, 95)) * 1000) if len(pauses) else None,
                "max_ms": round(float(pauses.max()) * 1000) if len(pauses) else None,
            }
            # How often would each end-of-turn silence cut a caller off mid-sentence? The
            # endpointer sees the VAD's pauses (each NST clip is one read sentence).
            vad_pauses = [internal_pauses(h, 0.0) for h in hyps]
            report[name]["vad_internal_pauses_max_ms"] = round(
                max(max(p, default=0) for p in vad_pauses) * 1000
            )
            report[name]["cut_rate_by_silence_ms"] = {
                ms: round(float(np.mean([any(p * 1000 >= ms for p in ps) for ps in vad_pauses])), 3)
                for ms in (160, 240, 320, 400, 480, 560, 640, 800)
            }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args(argv)
    report = evaluate(args.threshold)
    print(json.dumps(report, indent=None if args.json else 1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
