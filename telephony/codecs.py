"""G.711 μ-law / A-law and streaming 8↔16 kHz resampling.

The G.711 coders are the segment coders of ITU-T G.711 as implemented by CPython's former
`audioop` module (lin2ulaw/ulaw2lin/lin2alaw/alaw2lin), matched bit-exactly on all 65,536
linear inputs and all 256 code words; tests check this. `audioop` is gone in Python 3.13.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

_SEG_UEND = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_SEG_AEND = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def _ulaw_encode_array(pcm: np.ndarray) -> npt.NDArray[np.uint8]:
    value = pcm.astype(np.int32) >> 2  # 14-bit
    negative = value < 0
    mask = np.where(negative, 0x7F, 0xFF)
    magnitude = np.minimum(np.where(negative, -value, value), 8159) + (0x84 >> 2)
    seg = np.searchsorted(_SEG_UEND, magnitude, side="left")
    safe_seg = np.minimum(seg, 7)
    code = (safe_seg << 4) | ((magnitude >> (safe_seg + 1)) & 0xF)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _ulaw_decode_array(code: np.ndarray) -> npt.NDArray[np.int16]:
    u = (~code.astype(np.int32)) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _alaw_encode_array(pcm: np.ndarray) -> npt.NDArray[np.uint8]:
    value = pcm.astype(np.int32) >> 3  # 13-bit
    negative = value < 0
    mask = np.where(negative, 0x55, 0xD5)
    magnitude = np.where(negative, -value - 1, value)
    seg = np.searchsorted(_SEG_AEND, magnitude, side="left")
    safe_seg = np.minimum(seg, 7)
    shift = np.where(safe_seg < 2, 1, safe_seg)
    code = (safe_seg << 4) | ((magnitude >> shift) & 0xF)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _alaw_decode_array(code: np.ndarray) -> npt.NDArray[np.int16]:
    a = code.astype(np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


# Table look-ups: 64 Ki entries for encoding (indexed by the 16-bit sample), 256 for decoding.
_ALL_PCM = np.arange(-32768, 32768, dtype=np.int32)
_ULAW_ENC = _ulaw_encode_array(_ALL_PCM)
_ALAW_ENC = _alaw_encode_array(_ALL_PCM)
ULAW_DECODE_TABLE = _ulaw_decode_array(np.arange(256))
ALAW_DECODE_TABLE = _alaw_decode_array(np.arange(256))


def _pcm_index(pcm: np.ndarray) -> npt.NDArray[np.int32]:
    return pcm.astype(np.int32) + 32768


def ulaw_encode(pcm: np.ndarray) -> bytes:
    """16-bit signed PCM samples → μ-law bytes."""
    return _ULAW_ENC[_pcm_index(np.asarray(pcm, dtype=np.int16))].tobytes()


def ulaw_decode(data: bytes) -> np.ndarray:
    """μ-law bytes → 16-bit signed PCM samples."""
    return ULAW_DECODE_TABLE[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(pcm: np.ndarray) -> bytes:
    return _ALAW_ENC[_pcm_index(np.asarray(pcm, dtype=np.int16))].tobytes()


def alaw_decode(data: bytes) -> np.ndarray:
    return ALAW_DECODE_TABLE[np.frombuffer(data, dtype=np.uint8)]


def float_to_pcm16(audio: np.ndarray) -> npt.NDArray[np.int16]:
    pcm: npt.NDArray[np.int16] = (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype(np.int16)
    return pcm


def pcm16_to_float(pcm: np.ndarray) -> np.ndarray:
    return np.asarray(pcm, dtype=np.int16).astype(np.float32) / 32768.0


def pcm16_from_bytes(data: bytes) -> np.ndarray:
    """Little-endian 16-bit PCM bytes → int16 samples (an odd trailing byte is dropped)."""
    usable = len(data) - (len(data) % 2)
    return np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)


class StreamResampler:
    """One direction of one call's audio at a fixed rate change, keeping filter state
    across chunks so chunk edges do not click (a stateless per-chunk resample does)."""

    # soxr "LQ" delays the stream by ~24 ms at 8→16 kHz; "HQ" by ~96 ms, which would hold
    # back every end-of-turn decision. LQ's passband is ample for telephone-band speech.
    def __init__(self, in_rate: int, out_rate: int, quality: str = "LQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=quality)
        )

    def process(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        audio = np.asarray(samples, dtype=np.float32)
        if self._stream is None:
            return audio
        # soxr is untyped; float32 in, float32 out
        out: npt.NDArray[np.float32] = self._stream.resample_chunk(audio, last=last)
        return out


def frame_rms(audio: np.ndarray, frame: int) -> npt.NDArray[np.float64]:
    """The RMS level of each whole frame of `frame` samples (a trailing part is left out)."""
    n = len(audio) // frame
    frames = np.asarray(audio[: n * frame]).reshape(n, frame)
    rms: npt.NDArray[np.float64] = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    return rms


def resample(audio: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Resample a whole signal at once (files, prompts)."""
    if in_rate == out_rate:
        return np.asarray(audio, dtype=np.float32)
    out: npt.NDArray[np.float32] = soxr.resample(  # soxr is untyped; float32 in, float32 out
        np.asarray(audio, dtype=np.float32), in_rate, out_rate, quality="HQ"
    )
    return out


def phone_line(
    audio: np.ndarray,
    rate: int = 16000,
    snr_db: float | None = 25.0,
    rng: np.random.Generator | None = None,
    codec: str = "ulaw",
) -> np.ndarray:
    """What a caller's voice becomes on a phone line: band-limited to 8 kHz, line noise at
    `snr_db`, G.711 coded and decoded; returned at `rate` again."""
    narrow = resample(audio, rate, 8000)
    if snr_db is not None and narrow.size:
        rng = rng or np.random.default_rng(0)
        power = float(np.mean(narrow**2)) or 1e-9
        narrow = narrow + rng.normal(
            0.0, np.sqrt(power / 10 ** (snr_db / 10)), narrow.shape
        ).astype(np.float32)
    pcm = float_to_pcm16(narrow)
    if codec == "ulaw":
        decoded = ulaw_decode(ulaw_encode(pcm))
    elif codec == "alaw":
        decoded = alaw_decode(alaw_encode(pcm))
    else:
        raise ValueError(f"unknown codec {codec!r}")
    return resample(pcm16_to_float(decoded), 8000, rate)
