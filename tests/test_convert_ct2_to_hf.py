"""models/convert_ct2_to_hf.py rebuilds the same Whisper in transformers: on real Danish speech
the encoder outputs agree and greedy decoding gives the same token ids as CTranslate2; and a
random model sent through CTranslate2's own converter comes back with identical weights.

Needs the `bench` extra (torch, transformers); skipped without it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from models.convert_ct2_to_hf import (
    ct2_to_hf_state_dict,
    load_hf_whisper,
    read_ct2_model,
    whisper_config,
    whisper_tokenizer,
)
from voicebot.config import PROJECT_ROOT

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ctranslate2 = pytest.importorskip("ctranslate2")

pytestmark = pytest.mark.model

CLIP = PROJECT_ROOT.parent / "shared/data/danish-speech/nst-danspeech/u0042008.wav"
RATE = 16000
PROMPT = ["<|startoftranscript|>", "<|da|>", "<|transcribe|>", "<|notimestamps|>"]
THREADS = 2  # the machine has 2 cores; CTranslate2 gets the same number


def load_clip(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)  # NST recordings are stereo: average the channels
    if rate != RATE:
        audio = soxr.resample(audio, rate, RATE)
    return np.ascontiguousarray(audio, dtype=np.float32)


@pytest.fixture(scope="module")
def hf(whisper_dir: Path):
    torch.set_num_threads(THREADS)
    return load_hf_whisper(whisper_dir)


@pytest.fixture(scope="module")
def ct2_whisper(whisper_dir: Path):
    # float32 so the comparison measures the conversion, not int8 quantisation
    return ctranslate2.models.Whisper(
        str(whisper_dir), device="cpu", compute_type="float32", intra_threads=THREADS
    )


@pytest.fixture(scope="module")
def features(hf) -> np.ndarray:
    if not CLIP.exists():
        pytest.skip(f"{CLIP} not present")
    _, extractor, _ = hf
    mel = extractor(load_clip(CLIP), sampling_rate=RATE, return_tensors="np").input_features
    return np.ascontiguousarray(mel, dtype=np.float32)  # one log-mel for both back-ends


def test_encoder_outputs_agree(hf, ct2_whisper, features: np.ndarray, record_property) -> None:
    model, _, _ = hf
    ct2_out = np.array(
        ct2_whisper.encode(ctranslate2.StorageView.from_array(features), to_cpu=True)
    )
    with torch.inference_mode():
        hf_out = model.model.encoder(torch.from_numpy(features)).last_hidden_state.numpy()
    assert (
        ct2_out.shape
        == hf_out.shape
        == (1, model.config.max_source_positions, model.config.d_model)
    )
    diff = float(np.abs(ct2_out - hf_out).max())
    record_property("encoder_max_abs_diff", diff)
    print(f"encoder max |ct2 - hf| = {diff:.2e} (outputs up to {np.abs(hf_out).max():.1f})")
    # float32 kernels differ in summation order only (~1e-4 here); a mis-mapped weight is O(1).
    assert diff < 5e-3


def test_greedy_danish_transcription_gives_same_token_ids(
    hf, ct2_whisper, features: np.ndarray
) -> None:
    model, _, tokenizer = hf
    prompt = tokenizer.convert_tokens_to_ids(PROMPT)
    result = ct2_whisper.generate(
        ctranslate2.StorageView.from_array(features), [prompt], beam_size=1
    )
    ct2_ids = list(result[0].sequences_ids[0])

    with torch.inference_mode():
        out = model.generate(
            torch.from_numpy(features),
            language="da",
            task="transcribe",
            return_timestamps=False,
            num_beams=1,
            do_sample=False,
        )
    hf_ids = out[0].tolist()
    # transformers 4.x returns prompt + text + <|endoftext|>; 5.x returns the text tokens only
    if hf_ids[: len(prompt)] == prompt:
        hf_ids = hf_ids[len(prompt) :]
    while hf_ids and hf_ids[-1] == tokenizer.eos_token_id:
        hf_ids.pop()

    text = tokenizer.decode(hf_ids, skip_special_tokens=True)
    print(f"transcript: {text!r}")
    assert len(ct2_ids) > 5
    assert hf_ids == ct2_ids
    assert text == tokenizer.decode(ct2_ids, skip_special_tokens=True)


def test_round_trip_through_ctranslate2_converter(tmp_path: Path, whisper_dir: Path) -> None:
    """A small random HF Whisper -> CTranslate2's converter -> ours: the same weights back
    (bit-exact in float32, within half a quantisation step in int8) and the same shape config."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    config = WhisperConfig(
        d_model=64,
        encoder_layers=2,
        decoder_layers=3,
        encoder_attention_heads=4,
        decoder_attention_heads=2,
        encoder_ffn_dim=96,
        decoder_ffn_dim=160,
        num_mel_bins=80,
        vocab_size=51865,
        bos_token_id=50257,
        eos_token_id=50257,
        pad_token_id=50257,
        decoder_start_token_id=50258,
    )
    original = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # default init leaves biases 0 and norms 1, which would hide swaps
        for name, param in original.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                param.normal_()
    hf_dir = tmp_path / "hf"
    original.save_pretrained(hf_dir)
    tokenizer_file = whisper_dir / "tokenizer.json"
    whisper_tokenizer(tokenizer_file).save_pretrained(hf_dir)  # the converter reads one
    reference = {k: v.numpy() for k, v in original.state_dict().items()}

    for quantization in ("float32", "int8"):
        ct2_dir = tmp_path / f"ct2-{quantization}"
        ctranslate2.converters.TransformersConverter(str(hf_dir)).convert(
            str(ct2_dir), quantization=quantization
        )
        ct2 = read_ct2_model(ct2_dir / "model.bin")
        converted = ct2_to_hf_state_dict(ct2)
        assert converted.keys() == reference.keys()
        for name, ref in reference.items():
            got = converted[name]
            assert got.shape == ref.shape, name
            if quantization == "float32":
                assert np.array_equal(got, ref), name
            elif name.endswith("weight") and ref.ndim >= 2:
                # int8 rounds w * (127 / row max): error at most half a step per row
                step = np.abs(ref).reshape(len(ref), -1).max(axis=1) / 127
                err = np.abs(got - ref).reshape(len(ref), -1).max(axis=1)
                assert np.all(err <= step / 2 + 1e-6), name

        shutil.copyfile(tokenizer_file, ct2_dir / "tokenizer.json")
        inferred = whisper_config(ct2, json.loads(tokenizer_file.read_text(encoding="utf-8")))
        for key in (
            "d_model",
            "encoder_layers",
            "decoder_layers",
            "encoder_attention_heads",
            "decoder_attention_heads",
            "encoder_ffn_dim",
            "decoder_ffn_dim",
            "num_mel_bins",
            "vocab_size",
            "max_source_positions",
            "max_target_positions",
        ):
            assert getattr(inferred, key) == getattr(config, key), key

    model, _, _ = load_hf_whisper(tmp_path / "ct2-float32")
    assert model.proj_out.weight is model.model.decoder.embed_tokens.weight
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], original.state_dict()[k]) for k in reference)
