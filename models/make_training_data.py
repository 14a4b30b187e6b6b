"""ASR-in-the-loop training data: every utterance is spoken by espeak-ng (several voices,
speeds and pitches), sent through a phone line (8 kHz, noise, G.711 μ-law) and transcribed
by the project's own ASR. The transcripts teach the intent model what the recogniser
really writes ("pers" for "pas").

Output (cached, incremental — rows already present are not made again), per language:
  intents/asr/train_asr.tsv    from intents/utterances/*.txt (Danish)
  intents/asr/heldout_asr.tsv  from intents/heldout.tsv (evaluation only, never trained on)
  intents/asr/train_asr_en.tsv, heldout_asr_en.tsv  the same for English (utterances/en/,
  heldout_en.tsv), spoken by English voices and transcribed with Whisper forced to English
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models.intent_data import (
    DEFAULT_LANGUAGE,
    Example,
    asr_path,
    load_heldout,
    load_utterances,
    read_tsv,
)
from telephony.codecs import phone_line
from voicebot.asr import WhisperAsr
from voicebot.tts import Speaker, Voice

# espeak-ng Danish voice variants: (voice, words per minute, pitch).
VOICES = (
    Voice("da", 150, 50), Voice("da+f3", 140, 65), Voice("da+m3", 170, 40),
    Voice("da+f1", 125, 55), Voice("da+m1", 185, 45), Voice("da+f4", 160, 70),
    Voice("da+m7", 135, 35),
)  # fmt: skip
# English: British and American voices and variants, slower ones for hesitant callers.
VOICES_EN = (
    Voice("en", 150, 50), Voice("en-us", 160, 45), Voice("en+f3", 140, 65),
    Voice("en-us+m3", 170, 40), Voice("en+f1", 125, 55), Voice("en-us+f4", 155, 70),
    Voice("en+m7", 135, 35),
)  # fmt: skip
VOICES_BY_LANGUAGE = {"da": VOICES, "en": VOICES_EN}
COLUMNS = ("text", "intent", "source_text", "voice", "snr_db")


@dataclass(frozen=True)
class Rendition:
    source: Example
    voice: Voice
    snr_db: float

    @property
    def voice_id(self) -> str:
        return f"{self.voice.name}/{self.voice.rate_wpm}/{self.voice.pitch}"


def _seed(text: str, k: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{k}:{text}".encode()).digest()[:8], "little")


def renditions(
    examples: list[Example], per_utterance: int, voices: tuple[Voice, ...] = VOICES
) -> list[Rendition]:
    """A deterministic choice of voices and noise levels per utterance."""
    out = []
    for e in examples:
        rng = np.random.default_rng(_seed(e.text, 0))
        for i in rng.choice(len(voices), size=min(per_utterance, len(voices)), replace=False):
            out.append(Rendition(e, voices[int(i)], float(np.round(rng.uniform(12, 30), 1))))
    return out


def _done(path: Path) -> set[tuple[str, str]]:
    if not path.exists():
        return set()
    return {(r["source_text"], r["voice"]) for r in read_tsv(path, ("source_text", "voice"))}


def transcribe_renditions(
    items: list[Rendition], out: Path, asr: WhisperAsr, speaker: Speaker, desc: str
) -> int:
    done = _done(out)
    todo = [r for r in items if (r.source.text, r.voice_id) not in done]
    out.parent.mkdir(parents=True, exist_ok=True)
    new_file = not out.exists()
    with out.open("a", encoding="utf-8", newline="") as f:
        writer = csv.writer(
            f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n"
        )
        if new_file:
            writer.writerow(COLUMNS)
        for r in tqdm(todo, desc=desc, unit="utt"):
            audio = speaker.speak(r.source.text, r.voice)
            line = phone_line(
                audio, snr_db=r.snr_db, rng=np.random.default_rng(_seed(r.source.text, 1))
            )
            text = asr.transcribe(line).text.replace("\t", " ").replace("\n", " ")
            writer.writerow((text, r.source.intent, r.source.text, r.voice_id, r.snr_db))
            f.flush()
    return len(todo)


def make_training_data(
    asr: WhisperAsr, per_utterance: int = 2, heldout: bool = True, language: str = DEFAULT_LANGUAGE
) -> dict[str, int]:
    """Transcripts of one language's utterances; `asr` must be forced to that language."""
    if asr.settings.language != language:
        raise ValueError(
            f"the ASR is set to {asr.settings.language!r}, the utterances are {language!r}"
        )
    speaker = Speaker(cache_size=4)
    voices = VOICES_BY_LANGUAGE[language]
    made = {
        "train": transcribe_renditions(
            renditions(load_utterances(language=language), per_utterance, voices),
            asr_path("train", language),
            asr,
            speaker,
            "training utterances",
        )
    }
    if heldout:
        made["heldout"] = transcribe_renditions(
            renditions(load_heldout(language), per_utterance, voices),
            asr_path("heldout", language),
            asr,
            speaker,
            "held-back utterances",
        )
    return made
