"""Recorded prompts: a voice artist's recordings played instead of the synthesized voice.

Everything the bot says is catalogue text (intents/catalogue.yaml, intents/waiting_prompts.yaml),
so it can be recorded. The workflow:

1. `voicebot prompts export` writes the script: one line per text the bot can say, with a stable
   id (`prompt.greeting`, `intent.passport.answer`, `keypad.3`, `waiting.closed_offer` …), its
   language, its kind and a short sha256 of the text.
2. The voice artist records one file per id and language (wav, flac or ogg; any rate; mono).
3. `voicebot prompts import DIR` validates them, copies them to `tts.prompts_dir` as
   `<language>/<id>.<ext>` and writes each text's hash into `manifest.tsv` beside them (or drop
   the files in and write the manifest lines by hand: language, id, file, sha256).
4. `voicebot prompts check` lists what is not recorded and recordings whose text has changed
   since (the manifest's hash is not the current text's).

Kinds of lines: `fixed` (a text as written), `filled` (a template with a finite set of fillings,
one line per filling: `prompt.route.KFF` is the route prompt with Borgerservice's name) and
`runtime` (filled at run time with an open set, {minutes} or {when}: always synthesized, listed
so the script shows every text).

At start the recordings are validated and prepared once: mono only, clipped or silent files are
refused naming the file, each is resampled to 16 kHz (soxr), trimmed of leading and trailing
silence and scaled to the synthesized voice's level (RMS over voiced 20 ms frames, measured on
the synthesized greeting). A recording is played only while its manifest hash matches the
current text: a changed text (a new fee) is synthesized until it is recorded again.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from telephony.base import SAMPLE_RATE
from telephony.codecs import frame_rms, resample
from voicebot.catalogue import Catalogue, placeholders
from voicebot.config import ConfigError
from voicebot.tts import TextToSpeech, Voice, trim_silence
from voicebot.waiting_prompts import WaitingPrompts

log = logging.getLogger("voicebot.prompts")

MANIFEST = "manifest.tsv"
MANIFEST_COLUMNS = ("language", "id", "file", "sha256")
SCRIPT_COLUMNS = ("id", "language", "kind", "text", "sha256")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
FRAME = SAMPLE_RATE // 50  # 20 ms
VOICED_GATE_DB = -40.0  # frames this far below the loudest frame are pauses, not voice
SILENT_DB = -50.0  # a file whose loudest frame is below this (dBFS) is silent
FULL_SCALE = 0.999
CLIPPED_SHARE = 0.001  # more than 0.1 % of samples at full scale: clipped
PEAK_LIMIT = 0.99  # the gain that matches the level never pushes peaks past this


class PromptsError(ConfigError):
    """A recording or the prompts folder cannot be used; the message names the file."""


def normalise(text: str) -> str:
    """A text as compared and hashed: whitespace collapsed (YAML folding is not a change)."""
    return " ".join(text.split())


def text_hash(text: str) -> str:
    """The script's short hash of a text: the first 12 hex digits of its sha256."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()[:12]


# == the script ====================================================================================
@dataclass(frozen=True)
class ScriptLine:
    id: str
    language: str
    kind: str  # fixed | filled | runtime
    text: str

    @property
    def sha256(self) -> str:
        return text_hash(self.text)

    @property
    def recordable(self) -> bool:
        return self.kind != "runtime"


def prompt_script(
    catalogue: Catalogue, waiting: dict[str, WaitingPrompts], languages: Iterable[str]
) -> list[ScriptLine]:
    """Every text the bot can say, per language, with its id (as the dialogue composes them:
    a route prompt names its queue, the keypad menu its items)."""
    lines: list[ScriptLine] = []
    for language in languages:
        lines += _catalogue_lines(catalogue, language)
        if language in waiting:
            lines += _waiting_lines(catalogue, waiting[language])
    return lines


def _catalogue_lines(catalogue: Catalogue, language: str) -> list[ScriptLine]:
    lines: list[ScriptLine] = []

    def add(id_: str, kind: str, text: str) -> None:
        lines.append(ScriptLine(id_, language, kind, normalise(text)))

    for name, texts in catalogue.prompts.items():
        text = texts[language]
        if name == "route":  # one per forvaltning, naming its queue
            for code in catalogue.forvaltninger:
                add(
                    f"prompt.route.{code}",
                    "filled",
                    text.format(queue=catalogue.queue_name(code, language)),
                )
        elif name == "keypad_menu":  # one menu per language: its items are the keypad lines
            add("prompt.keypad_menu", "filled", catalogue.keypad_menu_text(language))
        elif name == "keypad_item":
            for digit, entry in sorted(catalogue.keypad.items()):
                if digit != "0":
                    add(
                        f"keypad.{digit}",
                        "filled",
                        text.format(key=digit, label=entry.label[language]),
                    )
        elif name == "confirm":
            continue  # never said: each intent's own confirm question is (below)
        else:
            add(f"prompt.{name}", "runtime" if placeholders(text) else "fixed", text)
    own = catalogue.languages.get(language)
    if own is not None:  # said after the greeting and the keypad menu, in this language's voice
        if own.offer:
            add(f"language.{language}.offer", "fixed", own.offer)
        if own.key and own.key_offer:
            add(f"language.{language}.key_offer", "filled", own.key_offer.format(key=own.key))
    for intent_id, intent in catalogue.intents.items():
        add(f"intent.{intent_id}.confirm", "fixed", intent.confirm[language])
        if intent.answer is not None:
            add(f"intent.{intent_id}.answer", "fixed", intent.answer[language])
    return lines


def _waiting_lines(catalogue: Catalogue, prompts: WaitingPrompts) -> list[ScriptLine]:
    lines: list[ScriptLine] = []
    for key, text in prompts.texts.items():
        fields = placeholders(text)
        if fields == {"queue_name"}:  # waiting.py names the queue in the prompts' language
            for code in catalogue.forvaltninger:
                filled = text.format(queue_name=catalogue.queue_name(code, prompts.language))
                lines.append(
                    ScriptLine(f"waiting.{key}.{code}", prompts.language, "filled", filled)
                )
        else:
            kind = "runtime" if fields else "fixed"
            lines.append(ScriptLine(f"waiting.{key}", prompts.language, kind, text))
    return lines


def write_script(lines: Iterable[ScriptLine], out: Path | None, dialect: str = "excel-tab") -> str:
    """The script as CSV (dialect "excel") or TSV ("excel-tab") with a header; written to `out`
    when given, and returned."""
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, dialect=dialect, lineterminator="\n")
    writer.writerow(SCRIPT_COLUMNS)
    for line in lines:
        writer.writerow((line.id, line.language, line.kind, line.text, line.sha256))
    if out is not None:
        out.write_text(buffer.getvalue(), encoding="utf-8")
    return buffer.getvalue()


def read_script(path: Path) -> dict[tuple[str, str], str]:
    """An exported script (CSV or TSV): (language, id) → the hash of the text read out."""
    text = path.read_text(encoding="utf-8")
    dialect = "excel" if path.suffix.lower() == ".csv" else "excel-tab"
    rows = list(csv.DictReader(text.splitlines(), dialect=dialect))
    if not rows or not {"id", "language", "sha256"} <= set(rows[0]):
        raise PromptsError(f"{path}: not an exported prompt script (columns id, language, sha256)")
    return {(row["language"], row["id"]): row["sha256"] for row in rows}


# == the folder ====================================================================================
@dataclass(frozen=True)
class ManifestEntry:
    language: str
    id: str
    file: str  # relative to the folder
    sha256: str  # of the text the artist read


def read_manifest(folder: Path) -> dict[tuple[str, str], ManifestEntry]:
    path = folder / MANIFEST
    if not path.exists():
        return {}
    entries: dict[tuple[str, str], ManifestEntry] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, row in enumerate(csv.reader(lines, dialect="excel-tab"), start=1):
        if not row or row[0].startswith("#") or tuple(row) == MANIFEST_COLUMNS:
            continue
        if len(row) != len(MANIFEST_COLUMNS):
            raise PromptsError(
                f"{path}: line {number}: expected {len(MANIFEST_COLUMNS)} tab-separated fields "
                f"({', '.join(MANIFEST_COLUMNS)})"
            )
        entry = ManifestEntry(*row)
        entries[(entry.language, entry.id)] = entry
    return entries


def write_manifest(folder: Path, entries: dict[tuple[str, str], ManifestEntry]) -> None:
    path = folder / MANIFEST
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, dialect="excel-tab", lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        for key in sorted(entries):
            e = entries[key]
            writer.writerow((e.language, e.id, e.file, e.sha256))


def audio_files(folder: Path) -> dict[tuple[str, str], Path]:
    """`<folder>/<language>/<id>.<ext>` → (language, id); two files for one id are an error."""
    found: dict[tuple[str, str], Path] = {}
    for path in sorted(folder.glob("*/*")):
        if path.suffix.lower() not in AUDIO_SUFFIXES or not path.is_file():
            continue
        key = (path.parent.name, path.stem)
        if key in found:
            raise PromptsError(f"{path}: a second recording of {key[1]} ({found[key]})")
        found[key] = path
    return found


# == one recording =================================================================================
def _levels(audio: np.ndarray, rate: int) -> np.ndarray:
    """The RMS of each 20 ms frame; a recording shorter than one frame is one frame."""
    frame = max(1, rate // 50)
    return frame_rms(audio, frame if audio.size >= frame else audio.size)


def voiced_rms(audio: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    """The level of speech: RMS over the 20 ms frames within 40 dB of the loudest frame, so
    pauses do not lower it (a gated RMS, the idea of LUFS gating without the K-weighting)."""
    if audio.size == 0:
        return 0.0
    rms = _levels(audio, rate)
    voiced = rms[rms >= rms.max() * 10 ** (VOICED_GATE_DB / 20)]
    return float(np.sqrt(np.mean(np.square(voiced))))


def read_recording(path: Path) -> tuple[np.ndarray, int]:
    """The file's samples (float32 mono) and rate; stereo, clipped or silent is refused."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise PromptsError(f"{path}: cannot read the recording: {exc}") from exc
    if data.shape[1] != 1:
        raise PromptsError(
            f"{path}: {data.shape[1]} channels; recordings must be mono (mix down to one channel)"
        )
    audio = np.ascontiguousarray(data[:, 0])
    if audio.size == 0 or _levels(audio, rate).max() < 10 ** (SILENT_DB / 20):
        raise PromptsError(f"{path}: silent (no part louder than {SILENT_DB:.0f} dBFS)")
    at_full_scale = int(np.count_nonzero(np.abs(audio) >= FULL_SCALE))
    if at_full_scale > max(2, CLIPPED_SHARE * audio.size):
        raise PromptsError(
            f"{path}: clipped ({at_full_scale} samples at full scale); record it again with "
            "more headroom"
        )
    return audio, int(rate)


def prepare_recording(path: Path, target_rms: float | None) -> np.ndarray:
    """A recording as the line plays it: 16 kHz, trimmed, at the synthesized voice's level."""
    audio, rate = read_recording(path)
    audio = resample(audio, rate, SAMPLE_RATE)
    audio = trim_silence(audio, threshold=float(np.abs(audio).max()) * 10 ** (SILENT_DB / 20))
    if target_rms is None:
        return audio
    gain = target_rms / voiced_rms(audio)
    peak = float(np.abs(audio).max()) * gain
    if peak > PEAK_LIMIT:
        log.warning(
            "%s: at the synthesized voice's level its peaks would clip; played %.1f dB quieter",
            path,
            20 * np.log10(peak / PEAK_LIMIT),
        )
        gain *= PEAK_LIMIT / peak
    out: np.ndarray = (audio * gain).astype(np.float32)
    return out


def synthesized_level(speaker: TextToSpeech, text: str, voice: Voice | None) -> float:
    """The level recordings are matched to: the voiced RMS of the synthesized `text`."""
    return voiced_rms(speaker.speak(text, voice))


# == the recordings in use =========================================================================
@dataclass(frozen=True)
class Recording:
    id: str
    language: str
    text: str
    audio: np.ndarray
    path: Path


@dataclass(frozen=True)
class Recordings:
    """The recordings played for one catalogue, found by what is said: (language, text)."""

    by_text: dict[tuple[str, str], Recording] = field(default_factory=dict)

    def find(self, text: str, language: str | None) -> Recording | None:
        if language is None or not self.by_text:
            return None
        return self.by_text.get((language, normalise(text)))

    def __len__(self) -> int:
        return len(self.by_text)


@dataclass(frozen=True)
class RecordedSpeaker:
    """The synthesized voice with a catalogue's recordings: the prompt player plays a text
    recorded when it can (speaking.PromptPlayer) and synthesizes the rest with `synthesis`."""

    synthesis: TextToSpeech
    recordings: Recordings

    def speak(self, text: str, voice: Voice | None = None) -> np.ndarray:
        return self.synthesis.speak(text, voice)


def speaker_with(synthesis: TextToSpeech, recordings: Recordings) -> TextToSpeech:
    """The speaker calls use: the synthesizer, with the recordings when there are any."""
    synthesis = synthesis_of(synthesis)
    return RecordedSpeaker(synthesis, recordings) if len(recordings) else synthesis


def synthesis_of(speaker: TextToSpeech) -> TextToSpeech:
    """The synthesizer behind a speaker (itself when it plays no recordings)."""
    return speaker.synthesis if isinstance(speaker, RecordedSpeaker) else speaker


@dataclass
class FolderReport:
    """What `voicebot prompts check` says about a prompts folder against the script."""

    recorded: list[ScriptLine] = field(default_factory=list)
    missing: list[ScriptLine] = field(default_factory=list)
    changed: list[tuple[ScriptLine, Path]] = field(default_factory=list)
    unlisted: list[Path] = field(default_factory=list)  # no manifest line: text unknown
    unknown: list[Path] = field(default_factory=list)  # an id the script does not have

    @property
    def ok(self) -> bool:
        return not (self.changed or self.unlisted or self.unknown)


def survey(folder: Path, script: list[ScriptLine]) -> tuple[FolderReport, dict[ScriptLine, Path]]:
    """Match the folder's files and manifest to the script (reads no audio): the report and
    the files that may be played (their manifest hash is the current text's)."""
    if not folder.is_dir():
        raise PromptsError(f"tts.prompts_dir: {folder} is not a folder")
    files = audio_files(folder)
    manifest = read_manifest(folder)
    report = FolderReport()
    playable: dict[ScriptLine, Path] = {}
    lines = {(line.language, line.id): line for line in script if line.recordable}
    for key, line in lines.items():
        path = files.get(key)
        if path is None:
            report.missing.append(line)
        elif key not in manifest:
            report.unlisted.append(path)
        elif manifest[key].sha256 != line.sha256:
            report.changed.append((line, path))
        else:
            report.recorded.append(line)
            playable[line] = path
    report.unknown = [path for key, path in files.items() if key not in lines]
    return report, playable


def load_recordings(
    folder: Path, script: list[ScriptLine], target_rms: float | None
) -> tuple[Recordings, FolderReport]:
    """Validate and prepare every playable recording (PromptsError names a bad file); what is
    missing, changed or unlisted is logged and synthesized."""
    report, playable = survey(folder, script)
    by_text = {
        (line.language, line.text): Recording(
            line.id, line.language, line.text, prepare_recording(path, target_rms), path
        )
        for line, path in playable.items()
    }
    for line, path in report.changed:
        log.warning(
            "%s: the text of %s has changed since it was recorded; synthesized", path, line.id
        )
    for path in report.unlisted:
        log.warning("%s: no line in %s (its text is unknown); not played", path, MANIFEST)
    for path in report.unknown:
        log.warning("%s: no such prompt id in the script; not played", path)
    return Recordings(by_text), report


def import_recordings(
    source: Path,
    folder: Path,
    script: list[ScriptLine],
    read: dict[tuple[str, str], str] | None = None,
    language: str | None = None,
) -> list[ManifestEntry]:
    """Copy a delivery of recordings (`<source>/<language>/<id>.<ext>`, or `<source>/<id>.<ext>`
    with `language`) into the prompts folder and record each text's hash in the manifest: the
    hash from `read` (the exported script the artist read) when given, else the current text's.
    Every file is validated before anything is copied."""
    lines = {(line.language, line.id): line for line in script if line.recordable}
    flat = [p for p in sorted(source.glob("*")) if p.suffix.lower() in AUDIO_SUFFIXES]
    if flat and language is None:
        raise PromptsError(f"{source}: files directly in the folder need --language")
    found = {(language or "", p.stem): p for p in flat} | audio_files(source)
    if not found:
        raise PromptsError(f"{source}: no recordings (<language>/<id>.wav|flac|ogg)")
    for key, path in found.items():
        if key not in lines:
            raise PromptsError(f"{path}: no prompt {key[1]} in {key[0]} in the script")
        if read is not None and key not in read:
            raise PromptsError(f"{path}: {key[1]} ({key[0]}) is not in the script it was read from")
        read_recording(path)  # refuse stereo, clipped, silent before copying anything
    manifest = read_manifest(folder) if folder.exists() else {}
    imported = []
    for (lang, id_), path in sorted(found.items()):
        target = folder / lang / f"{id_}{path.suffix.lower()}"
        target.parent.mkdir(parents=True, exist_ok=True)
        for old in target.parent.glob(f"{id_}.*"):
            if old.suffix.lower() in AUDIO_SUFFIXES:
                old.unlink()  # a re-recording replaces the old take, whatever its format
        shutil.copyfile(path, target)
        sha = read[(lang, id_)] if read is not None else lines[(lang, id_)].sha256
        entry = ManifestEntry(lang, id_, f"{lang}/{target.name}", sha)
        manifest[(lang, id_)] = entry
        imported.append(entry)
    write_manifest(folder, manifest)
    return imported
