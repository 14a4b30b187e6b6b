"""Rebuild a Hugging Face Whisper model from a CTranslate2 Whisper directory, offline.

The bot ships Whisper only as a CTranslate2 model (model.bin + config.json + tokenizer.json);
benchmarks want to run the *same* weights through `transformers`. This module reads model.bin
with a small reader of CTranslate2's binary format and inverts the variable mapping of
CTranslate2's own converter (`ctranslate2/converters/transformers.py`, WhisperLoader), which
fuses attention projections:

    self-attention   linear_0 = concat(q, k, v)  -> q_proj, k_proj, v_proj   (k has no bias:
                     linear_1 = out_proj             CTranslate2 stores zeros in its slot)
    cross-attention  linear_0 = q, linear_1 = concat(k, v), linear_2 = out_proj
    layer_norm gamma/beta -> weight/bias; ffn linear_0/1 -> fc1/fc2; ffn/layer_norm ->
    final_layer_norm; position_encodings/encodings -> embed_positions.weight;
    decoder/embeddings -> embed_tokens; decoder/projection (an alias of the embeddings) -> proj_out

Every HF hyper-parameter comes from the files (shapes, scalar variables, config.json,
tokenizer.json); nothing is fetched from a hub. torch/transformers are imported lazily so the
binary reader works in the default install (they come with the `bench` extra).

    python -m models.convert_ct2_to_hf CT2_DIR OUT_DIR
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from transformers import (
        GenerationConfig,
        PreTrainedTokenizerBase,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

# Make any accidental hub access fail at once instead of waiting on a network this host lacks.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# The layout below is the one `ModelSpec._serialize` writes for this binary version.
SUPPORTED_BINARY_VERSIONS = (6,)
# Order of `_dtype_to_type_id` in ctranslate2/specs/model_spec.py (= C++ DataType enum).
_CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_GELU = 3  # ctranslate2.specs.common_spec.Activation.GELU
_NON_LANGUAGE_TOKENS = {
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|nospeech|>",
    "<|notimestamps|>",
}


# --------------------------------------------------------------------------- CTranslate2 reader


@dataclass
class Ct2Model:
    """The raw contents of a CTranslate2 model.bin."""

    binary_version: int
    spec_name: str
    spec_revision: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # alias name -> variable name

    def get(self, name: str) -> np.ndarray:
        return self.variables[self.aliases.get(name, name)]

    def has(self, name: str) -> bool:
        return name in self.variables or name in self.aliases

    def scalar(self, name: str) -> int | float:
        return self.get(name).reshape(()).item()


def _to_numpy(buf: memoryview, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == "bfloat16":  # numpy has no bfloat16: widen the upper 16 bits of a float32
        raw = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
        return raw.view(np.float32).reshape(shape)
    return np.frombuffer(buf, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape).copy()


def read_ct2_model(path: str | os.PathLike[str]) -> Ct2Model:
    """Parse model.bin: version, spec name, revision, variables, aliases (little-endian)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        data = memoryview(mm)
        pos = 0

        def take(fmt: str) -> Any:
            nonlocal pos
            (value,) = struct.unpack_from("<" + fmt, data, pos)
            pos += struct.calcsize("<" + fmt)
            return value

        def take_string() -> str:
            nonlocal pos
            length = take("H")  # includes the trailing NUL
            text = bytes(data[pos : pos + length - 1]).decode("utf-8")
            pos += length
            return text

        try:
            version = take("I")
            if version not in SUPPORTED_BINARY_VERSIONS:
                raise ValueError(
                    f"{path}: CTranslate2 binary version {version} is not supported "
                    f"(reader follows version {SUPPORTED_BINARY_VERSIONS})"
                )
            model = Ct2Model(version, take_string(), take("I"))
            for _ in range(take("I")):
                name = take_string()
                shape = tuple(take("I") for _ in range(take("B")))
                type_id = take("B")
                if type_id >= len(_CT2_DTYPES):
                    raise ValueError(f"{path}: {name} has unknown dtype id {type_id}")
                num_bytes = take("I")
                if pos + num_bytes > len(data):
                    raise ValueError(f"{path}: truncated inside variable {name}")
                model.variables[name] = _to_numpy(
                    data[pos : pos + num_bytes], _CT2_DTYPES[type_id], shape
                )
                pos += num_bytes
            for _ in range(take("I")):
                alias = take_string()
                model.aliases[alias] = take_string()
            if pos != len(data):
                raise ValueError(f"{path}: {len(data) - pos} trailing bytes after the aliases")
        finally:
            data.release()  # the mmap cannot close while a view on it is alive
    return model


def _float32(model: Ct2Model, name: str) -> np.ndarray:
    """A float variable as float32, undoing CTranslate2's int8/int16 weight quantisation."""
    target = model.aliases.get(name, name)
    value = model.variables[target]
    if value.dtype in (np.int8, np.int16):
        scale = model.variables.get(target + "_scale")
        if scale is None:
            raise ValueError(f"{name} is {value.dtype} but has no {target}_scale")
        if model.has(target + "_zero"):
            raise NotImplementedError(f"{name}: zero-point (AWQ) quantisation is not supported")
        # Quantised as round(w * scale) per output row (or with one int16 scale): divide back.
        scale = scale.astype(np.float32).reshape((-1,) + (1,) * (value.ndim - 1))
        return value.astype(np.float32) / scale
    return value.astype(np.float32)


# --------------------------------------------------------------------------- name/shape mapping


def _layer_count(model: Ct2Model, scope: str) -> int:
    pattern = re.compile(rf"^{scope}/layer_(\d+)/")
    indices = {int(m.group(1)) for name in model.variables if (m := pattern.match(name))}
    if indices != set(range(len(indices))):
        raise ValueError(f"{scope}: layer indices are not contiguous: {sorted(indices)}")
    return len(indices)


def _split_rows(
    weight: np.ndarray, bias: np.ndarray | None, parts: int
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    if weight.shape[0] % parts:
        raise ValueError(f"cannot split {weight.shape} into {parts} projections")
    ws = np.split(weight, parts, axis=0)
    bs = np.split(bias, parts, axis=0) if bias is not None else [None] * parts
    return list(zip(ws, bs, strict=True))


def ct2_to_hf_state_dict(model: Ct2Model) -> dict[str, np.ndarray]:
    """Map every CTranslate2 weight to its transformers parameter name (float32 arrays)."""
    out: dict[str, np.ndarray] = {}
    used: set[str] = set()

    def get(name: str) -> np.ndarray:
        used.add(name)
        return _float32(model, name)

    def linear(src: str, dst: str, bias: bool = True) -> None:
        out[f"{dst}.weight"] = get(f"{src}/weight")
        if bias:
            out[f"{dst}.bias"] = get(f"{src}/bias")

    def layer_norm(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = get(f"{src}/gamma")
        out[f"{dst}.bias"] = get(f"{src}/beta")

    def fused(src: str, dsts: list[str]) -> None:
        # Fused projections: k_proj has no bias in Whisper, so its bias slot holds zeros. A
        # key bias would not change attention anyway (softmax is shift-invariant per query).
        bias = get(f"{src}/bias") if model.has(f"{src}/bias") else None
        pieces = _split_rows(get(f"{src}/weight"), bias, len(dsts))
        for dst, (w, b) in zip(dsts, pieces, strict=True):
            out[f"{dst}.weight"] = w
            if dst.endswith("k_proj"):
                if b is not None and np.any(b):
                    raise ValueError(f"{src}: non-zero key bias, not representable in HF Whisper")
            elif b is not None:
                out[f"{dst}.bias"] = b

    def ffn(src: str, dst: str) -> None:
        linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
        linear(f"{src}/ffn/linear_1", f"{dst}.fc2")
        layer_norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")

    enc, dec = "model.encoder", "model.decoder"
    linear("encoder/conv1", f"{enc}.conv1")
    linear("encoder/conv2", f"{enc}.conv2")
    out[f"{enc}.embed_positions.weight"] = get("encoder/position_encodings/encodings")
    layer_norm("encoder/layer_norm", f"{enc}.layer_norm")
    for i in range(_layer_count(model, "encoder")):
        src, dst = f"encoder/layer_{i}", f"{enc}.layers.{i}"
        fused(f"{src}/self_attention/linear_0", [f"{dst}.self_attn.{p}_proj" for p in "qkv"])
        linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
        layer_norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        ffn(src, dst)

    out[f"{dec}.embed_tokens.weight"] = get("decoder/embeddings/weight")
    out[f"{dec}.embed_positions.weight"] = get("decoder/position_encodings/encodings")
    layer_norm("decoder/layer_norm", f"{dec}.layer_norm")
    for i in range(_layer_count(model, "decoder")):
        src, dst = f"decoder/layer_{i}", f"{dec}.layers.{i}"
        fused(f"{src}/self_attention/linear_0", [f"{dst}.self_attn.{p}_proj" for p in "qkv"])
        linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
        layer_norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        linear(f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
        fused(f"{src}/attention/linear_1", [f"{dst}.encoder_attn.{p}_proj" for p in "kv"])
        linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
        layer_norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
        ffn(src, dst)

    out["proj_out.weight"] = get("decoder/projection/weight")
    if model.has("decoder/projection/bias"):
        used.add("decoder/projection/bias")
        if np.any(_float32(model, "decoder/projection/bias")):
            raise ValueError("decoder/projection has a non-zero bias; HF proj_out has none")

    # Scalars describe the architecture (checked in whisper_config); *_scale were applied above.
    leftovers = [
        n
        for n in model.variables
        if n not in used and model.variables[n].ndim > 0 and not n.endswith("_scale")
    ]
    if leftovers:
        raise ValueError(f"unmapped CTranslate2 weights: {leftovers}")
    return out


# --------------------------------------------------------------------------- configs & processors


def _special_tokens(tokenizer_json: dict[str, Any]) -> dict[str, int]:
    return {t["content"]: t["id"] for t in tokenizer_json["added_tokens"] if t.get("special")}


def whisper_config(model: Ct2Model, tokenizer_json: dict[str, Any]) -> WhisperConfig:
    """Build the transformers config from shapes, scalar variables and the side files."""
    from transformers import WhisperConfig

    if model.spec_name != "WhisperSpec":
        raise ValueError(f"not a Whisper model: spec {model.spec_name!r}")
    if model.has("decoder/activation") and model.scalar("decoder/activation") != _GELU:
        raise ValueError("decoder activation is not GELU")
    if model.has("decoder/pre_norm") and not model.scalar("decoder/pre_norm"):
        raise ValueError("decoder is post-norm; Whisper is pre-norm")
    for flag in ("alibi", "start_from_zero_embedding"):
        if model.has(f"decoder/{flag}") and model.scalar(f"decoder/{flag}"):
            raise ValueError(f"decoder/{flag} is set; HF Whisper has no such option")
    # CTranslate2 stores False or the multiplier (sqrt(d_model) when on); HF only has the bool.
    scale = model.scalar("decoder/scale_embeddings") if model.has("decoder/scale_embeddings") else 0

    vocab_size, d_model = model.get("decoder/embeddings/weight").shape
    special = _special_tokens(tokenizer_json)
    eot = special["<|endoftext|>"]
    tied = model.aliases.get("decoder/projection/weight") == "decoder/embeddings/weight"
    return WhisperConfig(
        vocab_size=int(vocab_size),
        d_model=int(d_model),
        num_mel_bins=int(model.get("encoder/conv1/weight").shape[1]),
        encoder_layers=_layer_count(model, "encoder"),
        decoder_layers=_layer_count(model, "decoder"),
        encoder_attention_heads=int(model.scalar("encoder/num_heads")),
        decoder_attention_heads=int(model.scalar("decoder/num_heads")),
        encoder_ffn_dim=int(model.get("encoder/layer_0/ffn/linear_0/weight").shape[0]),
        decoder_ffn_dim=int(model.get("decoder/layer_0/ffn/linear_0/weight").shape[0]),
        max_source_positions=int(model.get("encoder/position_encodings/encodings").shape[0]),
        max_target_positions=int(model.get("decoder/position_encodings/encodings").shape[0]),
        activation_function="gelu",
        scale_embedding=bool(scale),
        tie_word_embeddings=tied,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=special["<|startoftranscript|>"],
        # Suppression lists belong to the GenerationConfig: transformers warns (and refuses to
        # save) when the model config carries non-default generation parameters.
        suppress_tokens=None,
        begin_suppress_tokens=None,
    )


def whisper_generation_config(
    config: WhisperConfig, ct2_config: dict[str, Any], tokenizer_json: dict[str, Any]
) -> GenerationConfig:
    """What WhisperForConditionalGeneration.generate needs for language/task prompting."""
    from transformers import GenerationConfig

    special = _special_tokens(tokenizer_json)
    id_to_token = {i: t for t, i in special.items()}
    lang_ids = ct2_config.get("lang_ids") or [
        i
        for t, i in special.items()
        if t not in _NON_LANGUAGE_TOKENS and re.fullmatch(r"<\|[a-z]{2,3}(_[A-Za-z]+)?\|>", t)
    ]
    return GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        max_length=config.max_target_positions,
        suppress_tokens=list(ct2_config.get("suppress_ids") or []),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin") or []),
        alignment_heads=[list(h) for h in ct2_config.get("alignment_heads") or []],
        lang_to_id={id_to_token[i]: i for i in lang_ids},
        task_to_id={
            t: special[f"<|{t}|>"] for t in ("transcribe", "translate") if f"<|{t}|>" in special
        },
        is_multilingual=bool(lang_ids),
        no_timestamps_token_id=special["<|notimestamps|>"],
        prev_sot_token_id=special.get("<|startofprev|>"),
        return_timestamps=False,
        max_initial_timestamp_index=50,  # 1.0 s, as openai-whisper and CTranslate2 default
    )


def whisper_tokenizer(tokenizer_file: Path) -> PreTrainedTokenizerBase:
    """WhisperTokenizerFast from tokenizer.json alone (vocab, merges and added tokens live there)."""
    from transformers import WhisperTokenizerFast

    special = _special_tokens(json.loads(tokenizer_file.read_text(encoding="utf-8")))
    return WhisperTokenizerFast(
        tokenizer_file=str(tokenizer_file),
        # Registered as special so decode(skip_special_tokens=True) drops <|da|> etc., as upstream.
        additional_special_tokens=sorted(special, key=special.__getitem__),
        pad_token="<|endoftext|>",
    )


# --------------------------------------------------------------------------- entry points


def load_hf_whisper(
    ct2_dir: str | os.PathLike[str],
) -> tuple[WhisperForConditionalGeneration, WhisperFeatureExtractor, PreTrainedTokenizerBase]:
    """(model in eval mode, float32 on CPU; feature extractor; tokenizer) from a CTranslate2 dir."""
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    ct2_dir = Path(ct2_dir)
    ct2 = read_ct2_model(ct2_dir / "model.bin")
    ct2_config = json.loads((ct2_dir / "config.json").read_text(encoding="utf-8"))
    tokenizer_json = json.loads((ct2_dir / "tokenizer.json").read_text(encoding="utf-8"))

    config = whisper_config(ct2, tokenizer_json)
    arrays = ct2_to_hf_state_dict(ct2)
    del ct2
    # Random init would be overwritten anyway: build on the meta device and assign our tensors.
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    if config.tie_word_embeddings:
        state.pop("proj_out.weight")  # re-tied to embed_tokens below
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "proj_out.weight")]
    if missing or unexpected:
        raise ValueError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    if config.tie_word_embeddings:
        model.proj_out.weight = model.model.decoder.embed_tokens.weight
    on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if on_meta:  # a tensor this transformers version adds that model.bin cannot fill
        raise ValueError(f"not filled from model.bin: {on_meta}")
    model.generation_config = whisper_generation_config(config, ct2_config, tokenizer_json)
    model = model.float().eval()

    extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    tokenizer = whisper_tokenizer(ct2_dir / "tokenizer.json")
    return model, extractor, tokenizer


def hf_transcriber(ct2_dir: str | os.PathLike[str]) -> Callable[[np.ndarray], str]:
    """A transformers peer of the bot's decode (voicebot.asr.WhisperAsr.transcribe), set up
    as transformers documents it: `generate(language="da", task="transcribe")` with
    `return_timestamps=False` (the <|notimestamps|> prompt), greedy (`num_beams=1`,
    `do_sample=False`), the suppress and begin-suppress lists of the original Whisper config
    (copied from config.json by whisper_generation_config), and the bot's length cap
    (`max_new_tokens` from voicebot.asr.max_new_tokens, not 448). Like the bot, a looping
    output is decoded once more with `no_repeat_ngram_size=3, repetition_penalty=1.2`.
    Left as transformers does it: the padded 30 s window (its feature extractor's default)."""
    import torch

    from voicebot.asr import _looping, max_new_tokens

    model, extractor, tokenizer = load_hf_whisper(ct2_dir)

    def transcribe(audio: np.ndarray) -> str:
        features = extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
        options: dict[str, Any] = {
            "language": "da",
            "task": "transcribe",
            "return_timestamps": False,
            "num_beams": 1,
            "do_sample": False,
            "max_new_tokens": max_new_tokens(len(audio) / 16000),
        }
        with torch.inference_mode():
            ids = model.generate(features, **options)
            text = tokenizer.batch_decode(ids, skip_special_tokens=True)[0].strip()
            if _looping(text):
                ids = model.generate(
                    features, **options, no_repeat_ngram_size=3, repetition_penalty=1.2
                )
                text = tokenizer.batch_decode(ids, skip_special_tokens=True)[0].strip()
        return text

    return transcribe


def save_pretrained(ct2_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Write a directory that `WhisperForConditionalGeneration/WhisperProcessor.from_pretrained`
    loads offline (safetensors weights, config, generation config, tokenizer, preprocessor)."""
    from transformers import WhisperProcessor

    model, extractor, tokenizer = load_hf_whisper(ct2_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ct2_dir", type=Path, help="CTranslate2 Whisper dir (model.bin, ...)")
    parser.add_argument("out_dir", type=Path, help="where to write the transformers model")
    args = parser.parse_args(argv)
    out = save_pretrained(args.ct2_dir, args.out_dir)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
