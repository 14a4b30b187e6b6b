"""What the comparison trains and scores on: the training pool with its sentence-grouped folds,
the held-back splits, the training-data variants, and the cached real-speech transcripts."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.evaluation import SPEECH_DIR
from models.intent_data import INTENTS_DIR, Example, load_heldout, load_utterances, read_tsv
from models.train_intents import AsrExample, load_asr_examples, sentence_folds
from voicebot.config import PROJECT_ROOT

SEED = 0
VARIANTS = ("written", "asr-all", "asr-cer", "asr-w")
CER_GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
WEIGHT_GRID = (0.25, 0.5)
REAL_CLIPS = INTENTS_DIR / "asr" / "real_clips.tsv"


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
        ])  # fmt: skip

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


def cv_grid() -> list[Variant]:
    """The variants cross-validation compares to pick the CER threshold and the ASR weight."""
    grid = [Variant("written"), Variant("asr-all", use_asr=True)]
    grid += [Variant(f"cer≤{t:g}", use_asr=True, max_cer=t) for t in CER_GRID]
    grid += [Variant(f"w={w:g}", use_asr=True, asr_weight=w) for w in WEIGHT_GRID]
    return grid


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

    @property
    def n_folds(self) -> int:
        return len(np.unique(self.folds))


def load_data() -> Data:
    pool: list[Example] = [*load_utterances(), *load_asr_examples()]
    classes = sorted({e.intent for e in pool})
    return Data(
        pool=pool, classes=classes, y=np.array([classes.index(e.intent) for e in pool]),
        folds=sentence_folds(pool, seed=SEED), heldout=load_heldout(),
        heldout_asr=load_asr_examples(INTENTS_DIR / "asr" / "heldout_asr.tsv", "heldout_asr",
                                      keep_empty=True),
    )  # fmt: skip


def real_clip_transcripts(refresh: bool = False) -> list[dict[str, str]]:
    """Transcripts of the NST clips and the read-along clip (split at a pause), cached."""
    if REAL_CLIPS.exists() and not refresh:
        return read_tsv(REAL_CLIPS, ("text", "source_file"))
    rows = _transcribe_real_clips()
    for row in rows:  # the TSV is written without quoting
        row["text"] = " ".join(row["text"].replace("\t", " ").split())
    REAL_CLIPS.parent.mkdir(parents=True, exist_ok=True)
    with REAL_CLIPS.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(
            f,
            ("text", "source_file"),
            delimiter="\t",
            quoting=csv.QUOTE_NONE,
            escapechar="\\",
            lineterminator="\n",
        )
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _transcribe_real_clips() -> list[dict[str, str]]:
    from faster_whisper.audio import decode_audio

    from telephony.base import SAMPLE_RATE
    from voicebot.asr import WhisperAsr, split_at_pauses
    from voicebot.vad import WINDOW, SileroVad

    asr = WhisperAsr(PROJECT_ROOT / "var" / "models" / "whisper-base-ct2")
    rows = []
    for wav in sorted((SPEECH_DIR / "nst-danspeech").glob("*.wav")):
        audio = decode_audio(str(wav), sampling_rate=SAMPLE_RATE)
        rows.append(
            {"text": asr.transcribe(audio).text, "source_file": f"nst-danspeech/{wav.name}"}
        )
    wav = SPEECH_DIR / "readalongs-dan" / "dan_ap_dan.wav"
    audio = decode_audio(str(wav), sampling_rate=SAMPLE_RATE)
    start = 0
    for piece in split_at_pauses(audio, SileroVad().stream().push(audio), WINDOW):
        span = f"{start / SAMPLE_RATE:.1f}-{(start + len(piece)) / SAMPLE_RATE:.1f}s"
        rows.append(
            {"text": asr.transcribe(piece).text, "source_file": f"readalongs-dan/{wav.name}@{span}"}
        )
        start += len(piece)
    return rows
