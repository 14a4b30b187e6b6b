"""`voicebot provision --from-hf` refuses a broken checkpoint before converting anything,
naming what is missing, and says how to get the converter's packages. No torch needed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from voicebot import provision
from voicebot.cli import main
from voicebot.config import PROJECT_ROOT

WHISPER_CONFIG = {"model_type": "whisper", "architectures": ["WhisperForConditionalGeneration"]}


def checkpoint(tmp_path: Path, *, config=WHISPER_CONFIG, weights=True, tokenizer=True) -> Path:
    d = tmp_path / "hf"
    d.mkdir()
    if config is not None:
        (d / "config.json").write_text(json.dumps(config))
    if weights:
        (d / "model.safetensors").write_bytes(b"\0" * 16)
    if tokenizer:
        (d / "tokenizer.json").write_text("{}")
    return d


def provision_error(tmp_path: Path, source: Path, capsys) -> str:
    code = main(["provision", "--from-hf", str(source), "--out", str(tmp_path / "out")])
    assert code != 0
    assert not (tmp_path / "out").exists()  # nothing half-made
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("broken", "named"),
    [
        ({"config": None}, "missing config.json"),
        ({"weights": False}, "missing the weights: model.safetensors or pytorch_model.bin"),
        ({"tokenizer": False}, "missing tokenizer files: tokenizer.json"),
        ({"config": {"model_type": "bert"}}, "model_type is 'bert', not 'whisper'"),
    ],
)
def test_a_broken_checkpoint_is_refused_naming_what_is_missing(tmp_path, capsys, broken, named):
    err = provision_error(tmp_path, checkpoint(tmp_path, **broken), capsys)
    assert named in err and "voicebot provision:" in err


def test_a_missing_weight_shard_is_named(tmp_path, capsys):
    d = checkpoint(tmp_path, weights=False)
    index = {
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
        }
    }
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    (d / "model-00001-of-00002.safetensors").write_bytes(b"\0")
    err = provision_error(tmp_path, d, capsys)
    assert "missing weight shards: model-00002-of-00002.safetensors" in err


def test_without_torch_the_message_says_what_to_install(tmp_path, capsys, monkeypatch):
    real = provision.importlib.util.find_spec
    monkeypatch.setattr(
        provision.importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("torch", "transformers") else real(name, *a),
    )
    err = provision_error(tmp_path, checkpoint(tmp_path), capsys)
    assert "pip install torch==2.13.0 transformers" in err and "bench" in err


def test_an_unknown_quantization_is_refused(tmp_path, capsys):
    source = checkpoint(tmp_path)
    code = main(["provision", "--from-hf", str(source), "--quantization", "int3"])
    assert code == 1 and "--quantization int3: not one of int8" in capsys.readouterr().err


def test_the_runtime_does_not_import_torch_or_transformers():
    probe = (
        "import sys, voicebot.cli, voicebot.provision, voicebot.app; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
