import hashlib
import warnings

import numpy as np
import pytest

from telephony import codecs

ALL_PCM = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))
# sha256 of CPython audioop's lin2ulaw/lin2alaw over all 65,536 inputs and ulaw2lin/alaw2lin
# over all 256 codes (16-bit little-endian), recorded with Python 3.11's audioop.
REFERENCE = {
    "lin2ulaw": "81d633c9e6972a18c74a58720b96cb8ca0bdd096d4060b646dd708c3b846019a",
    "lin2alaw": "38488f6fd710f4686360edc4d38639f96c491595ef93f8eb8d62d5e07ca6ce7b",
    "ulaw2lin": "3dab54339e520bb2c924826e3b72a917a2b612e9fd12fc867500f1d983a75827",
    "alaw2lin": "e04788d110e58ff8c70c93b8480190d973e3b67876b6119abbaec766cc75c174",
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_known_reference_values():
    assert codecs.ulaw_encode(np.array([0], np.int16)) == b"\xff"
    assert codecs.alaw_encode(np.array([0], np.int16)) == b"\xd5"
    assert codecs.ulaw_decode(b"\x00")[0] == -32124
    assert codecs.ulaw_decode(b"\xff")[0] == 0
    assert codecs.alaw_decode(b"\xd5")[0] == 8


def test_all_values_match_the_reference_tables():
    assert sha(codecs.ulaw_encode(ALL_PCM)) == REFERENCE["lin2ulaw"]
    assert sha(codecs.alaw_encode(ALL_PCM)) == REFERENCE["lin2alaw"]
    assert sha(codecs.ulaw_decode(ALL_CODES).astype("<i2").tobytes()) == REFERENCE["ulaw2lin"]
    assert sha(codecs.alaw_decode(ALL_CODES).astype("<i2").tobytes()) == REFERENCE["alaw2lin"]


def test_bit_exact_against_audioop_where_available():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    raw = ALL_PCM.tobytes()
    assert codecs.ulaw_encode(ALL_PCM) == audioop.lin2ulaw(raw, 2)
    assert codecs.alaw_encode(ALL_PCM) == audioop.lin2alaw(raw, 2)
    assert codecs.ulaw_decode(ALL_CODES).tobytes() == audioop.ulaw2lin(ALL_CODES, 2)
    assert codecs.alaw_decode(ALL_CODES).tobytes() == audioop.alaw2lin(ALL_CODES, 2)


def test_round_trip_error_is_small_for_speech_levels():
    x = (np.sin(np.linspace(0, 200, 8000)) * 8000).astype(np.int16)
    y = codecs.ulaw_decode(codecs.ulaw_encode(x))
    assert np.max(np.abs(y.astype(int) - x)) <= 256  # G.711 step at this level


def _max_curvature(signal: np.ndarray) -> float:
    """Largest second difference: a click at a chunk edge bends the waveform sharply."""
    return float(np.max(np.abs(np.diff(signal, 2))))


def _sine_curvature(freq: float, rate: int, amplitude: float = 0.5) -> float:
    return (2 * np.pi * freq / rate) ** 2 * amplitude


@pytest.mark.parametrize("rates", [(8000, 16000), (16000, 8000)])
def test_streaming_resampler_has_no_clicks_at_chunk_edges(rates):
    in_rate, out_rate = rates
    t = np.arange(in_rate * 2) / in_rate
    signal = (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    stream = codecs.StreamResampler(in_rate, out_rate)
    chunk = in_rate // 50  # 20 ms frames, as the platforms send them
    pieces = [stream.process(signal[i : i + chunk]) for i in range(0, len(signal), chunk)]
    pieces.append(stream.process(np.zeros(0, np.float32), last=True))
    streamed = np.concatenate(pieces)
    whole = codecs.resample(signal, in_rate, out_rate)
    core = streamed[out_rate // 10 : -out_rate // 10]
    assert _max_curvature(core) < 1.5 * _sine_curvature(300, out_rate)
    assert abs(len(streamed) - len(whole)) <= 2


def test_stateless_per_chunk_resampling_would_click():
    """The check above can fail: resampling 20 ms chunks independently does click."""
    t = np.arange(8000) / 8000
    signal = (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    naive = np.concatenate(
        [codecs.resample(signal[i : i + 160], 8000, 16000) for i in range(0, 8000, 160)]
    )
    assert _max_curvature(naive[1600:-1600]) > 1.5 * _sine_curvature(300, 16000)


def test_phone_line_keeps_length_and_level():
    rng = np.random.default_rng(1)
    speech = (0.2 * np.sin(np.linspace(0, 2000, 16000))).astype(np.float32)
    out = codecs.phone_line(speech, snr_db=30, rng=rng)
    assert abs(len(out) - len(speech)) <= 2
    assert 0.5 < np.std(out) / np.std(speech) < 1.5
