"""The pure parts of benchmarks/audio_quality.py: every protocol's encode → adapter decode
path keeps the audio (no ASR here), and the delay-aligned SNR measure."""

import numpy as np
import pytest

from benchmarks.audio_quality import (
    PATHS,
    Clip,
    aligned_snr_db,
    evaluate,
    split_at_pauses,
    through_protocol,
)

T = np.arange(16000) / 16000
# Telephone-band tones: what band-limiting to 8 kHz keeps, so only the codec shows.
SIGNAL = (
    0.1 * np.sin(2 * np.pi * 440 * T)
    + 0.08 * np.sin(2 * np.pi * 1330 * T + 1)
    + 0.05 * np.sin(2 * np.pi * 2750 * T + 2)
).astype(np.float32)


@pytest.mark.parametrize("path", list(PATHS))
def test_every_path_keeps_the_audio(path):
    out = through_protocol(path, SIGNAL)
    assert out.dtype == np.float32 and len(SIGNAL) <= len(out) <= len(SIGNAL) + 1600
    snr, _ = aligned_snr_db(SIGNAL, out)
    if any(codec in path for codec in ("law", "PCMU", "PCMA")):
        assert 30 < snr < 45  # G.711: about 38 dB
    elif "8 kHz" in path:
        assert snr > 45  # 8 kHz linear PCM: the resamplers
    else:
        assert snr > 70  # 16-bit PCM at 16 kHz: only quantisation


def test_aligned_snr_finds_the_delay_and_ignores_gain():
    delayed = np.concatenate([np.zeros(123, np.float32), 0.5 * SIGNAL])
    snr, lag = aligned_snr_db(SIGNAL, delayed)
    assert lag == 123 and snr > 80
    noisy = delayed + np.random.default_rng(0).normal(0, 0.01, len(delayed)).astype(np.float32)
    assert aligned_snr_db(SIGNAL, noisy)[0] == pytest.approx(
        10 * np.log10(np.mean((0.5 * SIGNAL) ** 2) / 1e-4), abs=1
    )


def test_long_recordings_are_cut_at_a_pause():
    rng = np.random.default_rng(1)
    speech = lambda s: rng.normal(0, 0.1, int(s * 16000)).astype(np.float32)  # noqa: E731
    audio = np.concatenate([speech(14), np.zeros(8000, np.float32), speech(12)])
    chunks = split_at_pauses(audio, max_s=25)
    assert len(chunks) == 2 and sum(len(c) for c in chunks) == len(audio)
    assert 14 * 16000 <= len(chunks[0]) <= 14.5 * 16000  # inside the half-second pause


def test_evaluate_scores_every_path_against_the_text_and_the_direct_path():
    clips = [Clip("Hej med dig.", [SIGNAL[:8000]])]
    results = evaluate(clips, lambda audio: "hej med dig")
    assert [r.path for r in results] == ["direct 16 kHz", *PATHS]
    assert all(r.wer == 0.0 and r.wer_vs_direct == 0.0 for r in results)
