"""G.711 behaviour at the standard's known points, asserted on the table builders themselves
(the tables are built at import, so a test of the public look-ups alone cannot tell mutation
testing which code built them) and on the public coders, plus the PCM helpers' edges."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from telephony import codecs

ALL_PCM = np.arange(-32768, 32768, dtype=np.int32)
ALL_CODES = np.arange(256)
# sha256 of CPython audioop's lin2ulaw/lin2alaw/ulaw2lin/alaw2lin (as in tests/test_codecs.py)
REFERENCE = {
    "lin2ulaw": "81d633c9e6972a18c74a58720b96cb8ca0bdd096d4060b646dd708c3b846019a",
    "lin2alaw": "38488f6fd710f4686360edc4d38639f96c491595ef93f8eb8d62d5e07ca6ce7b",
    "ulaw2lin": "3dab54339e520bb2c924826e3b72a917a2b612e9fd12fc867500f1d983a75827",
    "alaw2lin": "e04788d110e58ff8c70c93b8480190d973e3b67876b6119abbaec766cc75c174",
}

# (linear sample, μ-law code, A-law code): silence, the sign split, segment edges, the clip.
ENCODE_POINTS = [
    (0, 0xFF, 0xD5),
    (3, 0xFF, 0xD5),
    (4, 0xFE, 0xD5),
    (-1, 0x7E, 0x55),
    (-8, 0x7E, 0x55),
    (100, 0xF2, 0xD3),
    (-100, 0x72, 0x53),
    (124, 0xEF, 0xD2),
    (128, 0xEF, 0xDD),
    (-129, 0x6F, 0x5D),
    (255, 0xE7, 0xDA),
    (256, 0xE7, 0xC5),
    (1000, 0xCE, 0xFA),
    (-1000, 0x4E, 0x7A),
    (4000, 0xAF, 0x9A),
    (8000, 0xA0, 0x8A),
    (-8000, 0x20, 0x0A),
    (16000, 0x90, 0xBA),
    (32124, 0x80, 0xAA),
    (32767, 0x80, 0xAA),
    (-32124, 0x00, 0x2A),
    (-32768, 0x00, 0x2A),
]
# (code, μ-law decoded, A-law decoded)
DECODE_POINTS = [
    (0x00, -32124, -5504),
    (0x01, -31100, -5248),
    (0x0F, -16764, -6784),
    (0x10, -15996, -2752),
    (0x1F, -8316, -3392),
    (0x2A, -5372, -32256),
    (0x54, -748, -24),
    (0x55, -716, -8),
    (0x70, -120, -688),
    (0x7E, -8, -880),
    (0x7F, 0, -848),
    (0x80, 32124, 5504),
    (0x8F, 16764, 6784),
    (0xAA, 5372, 32256),
    (0xD4, 748, 24),
    (0xD5, 716, 8),
    (0xF0, 120, 688),
    (0xFE, 8, 880),
    (0xFF, 0, 848),
]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_ulaw_encoder_matches_g711_on_every_sample():
    codes = codecs._ulaw_encode_array(ALL_PCM)
    assert codes.dtype == np.uint8
    assert sha(codes.tobytes()) == REFERENCE["lin2ulaw"]


def test_the_alaw_encoder_matches_g711_on_every_sample():
    codes = codecs._alaw_encode_array(ALL_PCM)
    assert codes.dtype == np.uint8
    assert sha(codes.tobytes()) == REFERENCE["lin2alaw"]


def test_the_ulaw_decoder_matches_g711_on_every_code():
    pcm = codecs._ulaw_decode_array(ALL_CODES)
    assert pcm.dtype == np.int16
    assert sha(pcm.astype("<i2").tobytes()) == REFERENCE["ulaw2lin"]


def test_the_alaw_decoder_matches_g711_on_every_code():
    pcm = codecs._alaw_decode_array(ALL_CODES)
    assert pcm.dtype == np.int16
    assert sha(pcm.astype("<i2").tobytes()) == REFERENCE["alaw2lin"]


@pytest.mark.parametrize(("sample", "ulaw", "alaw"), ENCODE_POINTS)
def test_known_samples_encode_to_their_g711_codes(sample: int, ulaw: int, alaw: int):
    one = np.array([sample], dtype=np.int32)
    assert int(codecs._ulaw_encode_array(one)[0]) == ulaw
    assert int(codecs._alaw_encode_array(one)[0]) == alaw
    pcm = np.array([sample], dtype=np.int16)
    assert codecs.ulaw_encode(pcm) == bytes([ulaw])
    assert codecs.alaw_encode(pcm) == bytes([alaw])


@pytest.mark.parametrize(("code", "ulaw", "alaw"), DECODE_POINTS)
def test_known_codes_decode_to_their_g711_samples(code: int, ulaw: int, alaw: int):
    one = np.array([code])
    assert int(codecs._ulaw_decode_array(one)[0]) == ulaw
    assert int(codecs._alaw_decode_array(one)[0]) == alaw
    assert int(codecs.ulaw_decode(bytes([code]))[0]) == ulaw
    assert int(codecs.alaw_decode(bytes([code]))[0]) == alaw


def test_the_public_tables_are_the_decoders_output():
    assert np.array_equal(codecs.ULAW_DECODE_TABLE, codecs._ulaw_decode_array(ALL_CODES))
    assert np.array_equal(codecs.ALAW_DECODE_TABLE, codecs._alaw_decode_array(ALL_CODES))


def test_float_audio_is_clipped_and_scaled_to_full_scale_pcm():
    pcm = codecs.float_to_pcm16(np.array([0.0, 0.5, 1.0, 2.0, -1.0, -3.0, 1e-5]))
    assert pcm.dtype == np.int16
    assert pcm.tolist() == [0, 16384, 32767, 32767, -32767, -32767, 0]


def test_pcm_becomes_float_in_minus_one_to_one():
    audio = codecs.pcm16_to_float(np.array([-32768, 0, 16384, 32767], dtype=np.int16))
    assert audio.dtype == np.float32
    assert audio.tolist() == [-1.0, 0.0, 0.5, 32767 / 32768]


def test_pcm_bytes_are_little_endian_and_an_odd_byte_is_dropped():
    assert codecs.pcm16_from_bytes(b"\x01\x00\xff\xff\x00\x80\x07").tolist() == [1, -1, -32768]
    assert codecs.pcm16_from_bytes(b"\x07").tolist() == []


def test_a_stream_at_the_same_rate_passes_through_as_float():
    stream = codecs.StreamResampler(8000, 8000)
    out = stream.process(np.array([1, 2, 3], dtype=np.int16))
    assert out.dtype == np.float32
    assert out.tolist() == [1.0, 2.0, 3.0]


def test_a_stream_from_8_to_16_khz_doubles_the_samples_once_flushed():
    stream = codecs.StreamResampler(8000, 16000)
    tone = np.sin(np.arange(8000) * 2 * np.pi * 440 / 8000).astype(np.float32)
    out = np.concatenate([stream.process(tone[:4000]), stream.process(tone[4000:], last=True)])
    assert abs(out.size - 16000) <= 2
    assert out.dtype == np.float32


def test_whole_signal_resampling_keeps_duration_and_returns_float():
    same = codecs.resample(np.array([1, 2], dtype=np.int16), 8000, 8000)
    assert same.dtype == np.float32 and same.tolist() == [1.0, 2.0]
    tone = np.sin(np.arange(16000) * 2 * np.pi * 300 / 16000).astype(np.float32)
    down = codecs.resample(tone, 16000, 8000)
    assert down.size == 8000
    assert np.max(np.abs(down)) == pytest.approx(1.0, abs=0.05)


def test_a_phone_line_keeps_the_rate_and_refuses_an_unknown_codec():
    tone = 0.5 * np.sin(np.arange(16000) * 2 * np.pi * 300 / 16000).astype(np.float32)
    for codec in ("ulaw", "alaw"):
        out = codecs.phone_line(tone, rate=16000, snr_db=None, codec=codec)
        assert out.size == tone.size
        assert float(np.max(np.abs(out - tone)[1000:-1000])) < 0.05
    with pytest.raises(ValueError, match="unknown codec 'gsm'"):
        codecs.phone_line(tone, codec="gsm")


def test_pcm_bytes_of_any_length_are_whole_samples_of_int16():
    pcm = codecs.pcm16_from_bytes(b"\x01\x00\x02\x00\x03")
    assert pcm.dtype == np.int16 and pcm.tolist() == [1, 2]


def test_the_stream_keeps_its_rates_and_a_short_delay():
    stream = codecs.StreamResampler(8000, 16000)
    assert (stream.in_rate, stream.out_rate) == (8000, 16000)
    tone = np.sin(np.arange(8000) * 2 * np.pi * 440 / 8000).astype(np.float32)
    # the low-latency filter: under 1000 samples (62.5 ms) held back after a second of audio
    assert stream.process(tone).size > 15000


def test_resampling_returns_float32_whatever_it_is_given():
    assert codecs.resample(np.zeros(1600), 16000, 8000).dtype == np.float32


def test_a_phone_line_adds_line_noise_at_the_requested_level_reproducibly():
    tone = (0.5 * np.sin(np.arange(16000) * 2 * np.pi * 300 / 16000)).astype(np.float32)
    clean = codecs.phone_line(tone, snr_db=None)
    noisy = codecs.phone_line(tone)  # the default: 25 dB
    assert noisy.size == clean.size == tone.size
    snr = 10 * np.log10(np.mean(clean**2) / np.mean((noisy - clean) ** 2))
    assert abs(snr - 25.0) < 0.45
    assert np.array_equal(noisy, codecs.phone_line(tone))  # seeded: the same line every time
    assert np.max(np.abs(codecs.phone_line(np.zeros(16000, np.float32)))) < 1e-3  # silence stays
