"""The Danish ASR evaluation set in benchmarks/data/asr_eval/ (reproducible):

(a) domain sentences from the held-back intent split, spoken by espeak-ng with several
    voices, speeds and pitches, sent through a phone line (8 kHz, G.711 μ-law, noise at
    15–30 dB SNR) and stored as 8 kHz 16-bit WAV;
(b) the real Danish clip ../shared/data/danish-speech/readalongs-dan/ with its transcript.

    python -m benchmarks.asr_eval_set      # writes manifest.tsv and the WAV files

intents.tsv labels the same audio with intent ids for `voicebot eval-intents --audio`: each
synthetic sentence with its held-back intent, and every real clip in ../shared (none of them a
municipal request) as out_of_scope.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import soundfile as sf

from models.intent_data import load_heldout
from telephony.codecs import phone_line, resample
from voicebot.config import PROJECT_ROOT
from voicebot.tts import Speaker, Voice

OUT = PROJECT_ROOT / "benchmarks" / "data" / "asr_eval"
SHARED_CLIP = Path("../shared/data/danish-speech/readalongs-dan/dan_ap_dan")
VOICES = (
    Voice("da", 150, 50),
    Voice("da+f3", 135, 65),
    Voice("da+m3", 165, 40),
    Voice("da+f1", 125, 55),
)
PER_INTENT = 2


def _rng(text: str) -> np.random.Generator:
    return np.random.default_rng(
        int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    )


def make(out: Path = OUT) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    speaker = Speaker(cache_size=2)
    taken: dict[str, int] = {}
    lines = ["# audio\treference (made by: python -m benchmarks.asr_eval_set)"]
    for example in load_heldout():
        if example.intent == "out_of_scope" or taken.get(example.intent, 0) >= PER_INTENT:
            continue
        n = sum(taken.values())
        taken[example.intent] = taken.get(example.intent, 0) + 1
        rng = _rng(example.text)
        voice = VOICES[n % len(VOICES)]
        audio = speaker.speak(example.text, voice)
        line = phone_line(audio, snr_db=float(rng.uniform(15, 30)), rng=rng)
        name = f"syn{n:03d}_{example.intent}.wav"
        sf.write(out / name, resample(line, 16000, 8000), 8000, subtype="PCM_16")
        lines.append(f"{name}\t{example.text}")
    # The real clip, referenced where ../shared has it (relative to this manifest).
    reference = (PROJECT_ROOT / SHARED_CLIP).with_suffix(".txt")
    if reference.exists():
        rel = Path("../../../") / SHARED_CLIP.with_suffix(".wav")
        lines.append(f"{rel}\t{' '.join(reference.read_text(encoding='utf-8').split())}")
    manifest = out / "manifest.tsv"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_intent_manifest(out)
    return manifest


def write_intent_manifest(out: Path = OUT) -> Path:
    """audio<TAB>intent for the synthetic WAVs in `out` (the intent is in the file name) and
    for the real Danish clips beside the project (out_of_scope)."""
    lines = ["# audio\tintent (made by: python -m benchmarks.asr_eval_set)"]
    lines += [f"{wav.name}\t{wav.stem.split('_', 1)[1]}" for wav in sorted(out.glob("syn*_*.wav"))]
    shared = PROJECT_ROOT / SHARED_CLIP.parents[1]
    for wav in sorted(shared.glob("*/*.wav")):
        lines.append(
            f"{Path('../../../') / SHARED_CLIP.parents[1] / wav.relative_to(shared)}\tout_of_scope"
        )
    path = out / "intents.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":
    print(make())
