"""The transformers baseline is a trustworthy peer: on real Danish speech its transcript agrees
with the bot's CTranslate2 path on the same weights (needs the `bench` extra)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = pytest.mark.model


def test_transformers_baseline_agrees_with_the_project_path_on_a_real_clip(whisper_dir):
    from benchmarks.suites.calls import real_turns
    from models.convert_ct2_to_hf import hf_transcriber
    from models.evaluation import error_rates
    from voicebot.asr import WhisperAsr, max_new_tokens
    from voicebot.config import AsrSettings

    turn = real_turns(1)[0]  # a few seconds of real Danish speech
    project = WhisperAsr(whisper_dir, AsrSettings(threads=1)).transcribe(turn.audio).text
    hf = hf_transcriber(whisper_dir)
    text = hf(turn.audio)
    # Same words, give or take Whisper's spelling of Danish between two float paths: the
    # misconfigured peer looped to 448 tokens instead.
    assert error_rates([project], [text])["cer"] < 0.25
    assert len(text.split()) <= max_new_tokens(turn.seconds)
