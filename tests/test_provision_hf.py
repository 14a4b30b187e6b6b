"""Issue 17 item 2: `voicebot provision --from-hf DIR` converts a municipality's own Hugging
Face Whisper checkpoint with CTranslate2's converter. Offline round trip: the shipped base
weights go through models/convert_ct2_to_hf.py into a Hugging Face directory and back through
the command; the result transcribes real Danish exactly as the original does.

Needs torch and transformers (the `bench` extra; ./setup.sh --test installs them)."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import soxr

from voicebot.asr import WhisperAsr
from voicebot.cli import main
from voicebot.config import PROJECT_ROOT, AsrSettings

pytest.importorskip(
    "torch", reason="needs torch (bench extra: pip install torch==2.13.0 transformers)"
)
pytest.importorskip(
    "transformers",
    reason="needs transformers (bench extra: pip install torch==2.13.0 transformers)",
)

pytestmark = pytest.mark.model

CLIPS = [
    PROJECT_ROOT.parent / "shared/data/danish-speech/readalongs-dan/dan_ap_dan.wav",
    PROJECT_ROOT.parent / "shared/data/danish-speech/nst-danspeech/u0042008.wav",
]


def clip_16k(path: Path):
    if not path.exists():
        pytest.skip(f"{path} is not here (../shared holds the Danish test clips)")
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    audio = soxr.resample(audio.mean(axis=1), rate, 16000)
    return audio[: 28 * 16000]


@pytest.fixture(scope="module")
def hf_checkpoint(whisper_dir: Path, tmp_path_factory) -> Path:
    from models.convert_ct2_to_hf import save_pretrained

    return save_pretrained(whisper_dir, tmp_path_factory.mktemp("hf") / "whisper-base-hf")


def test_a_round_tripped_checkpoint_transcribes_as_the_original(
    whisper_dir, hf_checkpoint, tmp_path, capsys
):
    out = tmp_path / "whisper-da-ct2"
    code = main(
        [
            "provision",
            "--from-hf",
            str(hf_checkpoint),
            "--quantization",
            "float16",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert f"asr.model_dir: {out.resolve()}" in printed  # the setting to use
    assert "dan_ap_dan.wav" in printed  # verified on the real Danish clip
    assert (out / "tokenizer.json").read_bytes() == (hf_checkpoint / "tokenizer.json").read_bytes()

    settings = AsrSettings()
    original, converted = WhisperAsr(whisper_dir, settings), WhisperAsr(out, settings)
    for clip in CLIPS:
        audio = clip_16k(clip)
        expected = original.transcribe(audio).text
        assert expected  # the clip is speech
        assert converted.transcribe(audio).text == expected, clip.name


def test_int8_conversion_loads_and_is_a_quarter_of_float32(hf_checkpoint, tmp_path, capsys):
    out = tmp_path / "int8"
    assert main(["provision", "--from-hf", str(hf_checkpoint), "--out", str(out)]) == 0
    assert "«" in capsys.readouterr().out  # it heard words
    float32_bytes = (hf_checkpoint / "model.safetensors").stat().st_size
    assert (out / "model.bin").stat().st_size < float32_bytes / 3
    # an existing model directory is not replaced without --force
    assert main(["provision", "--from-hf", str(hf_checkpoint), "--out", str(out)]) == 1
    assert "--force replaces it" in capsys.readouterr().err
