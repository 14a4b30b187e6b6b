"""When a turn starts and ends (voicebot/vad.py's Endpointer, on synthetic probabilities), and
what the Silero stream feeds the model (issue 19: survivors of mutation testing)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError

from voicebot import vad as vad_module
from voicebot.config import EndpointingSettings
from voicebot.vad import CONTEXT, WINDOW, WINDOW_MS, Endpoint, Endpointer, SileroVad, TurnEvent

SPEECH, SILENCE = 0.9, 0.05


def endpointer(**settings: float) -> Endpointer:
    defaults = {"silence_ms": 100, "min_speech_ms": 100}  # three whole windows each
    return Endpointer(EndpointingSettings(**{**defaults, **settings}))


def feed(ep: Endpointer, probs: list[float]) -> list[Endpoint]:
    return ep.update(np.array(probs, dtype=np.float64))


def kinds(events: list[Endpoint]) -> list[TurnEvent]:
    return [e.event for e in events]


def test_a_fresh_endpointer_has_heard_nothing():
    ep = endpointer()
    assert ep.in_speech is False and ep.silence_ms == 0
    assert (ep.speech_start, ep.last_speech) == (0, 0)


# == onset ===================================================================================
def test_a_window_exactly_at_the_threshold_counts_as_speech():
    ep = endpointer(speech_threshold=0.5)
    (start,) = feed(ep, [0.5] * 3)
    assert start == Endpoint(TurnEvent.SPEECH_START, 0) and ep.in_speech


def test_a_window_just_below_the_threshold_is_no_onset():
    ep = endpointer(speech_threshold=0.5)
    assert feed(ep, [0.49] * 20) == [] and not ep.in_speech


def test_onset_needs_min_speech_ms_of_unbroken_speech_and_starts_where_that_run_began():
    ep = endpointer()  # three windows
    assert feed(ep, [SPEECH, SPEECH, SILENCE, SPEECH, SPEECH]) == []  # the dip restarts the count
    (start,) = feed(ep, [SPEECH])
    assert start.event is TurnEvent.SPEECH_START
    assert start.sample == 3 * WINDOW  # the first window of the unbroken run, not of the first


def test_the_shortest_min_speech_ms_starts_a_turn_on_a_single_window():
    ep = endpointer(min_speech_ms=32)
    assert feed(ep, [SILENCE, SILENCE, SPEECH]) == [Endpoint(TurnEvent.SPEECH_START, 2 * WINDOW)]


def test_a_turn_that_ends_right_after_its_onset_ends_after_the_onset_windows():
    ep = endpointer()
    events = feed(ep, [SILENCE] * 2 + [SPEECH] * 3 + [SILENCE] * 3)
    assert events == [
        Endpoint(TurnEvent.SPEECH_START, 2 * WINDOW),
        Endpoint(TurnEvent.SPEECH_END, 5 * WINDOW),
    ]


# == hysteresis: speech above the threshold, silence below threshold - 0.15 =================
def test_a_dip_between_the_two_thresholds_keeps_the_turn_and_moves_its_end():
    ep = endpointer(speech_threshold=0.65)  # silence below 0.5
    assert kinds(feed(ep, [SPEECH] * 3)) == [TurnEvent.SPEECH_START]
    assert feed(ep, [0.5] * 10) == []  # exactly at the lower threshold: still speech
    assert ep.silence_ms == 0
    (end,) = feed(ep, [0.49] * 3)  # just below it: silence
    assert end == Endpoint(TurnEvent.SPEECH_END, 13 * WINDOW)


def test_the_lower_threshold_sits_0_15_below_the_onset_threshold():
    ep = endpointer(speech_threshold=0.5)
    feed(ep, [SPEECH] * 3)
    assert feed(ep, [0.36] * 3) == []  # above 0.35: speech
    assert kinds(feed(ep, [0.34] * 3)) == [TurnEvent.SPEECH_END]


def test_speech_inside_the_silence_restarts_the_silence_count():
    ep = endpointer()
    feed(ep, [SPEECH] * 3)
    assert feed(ep, [SILENCE, SILENCE, SPEECH, SILENCE, SILENCE]) == []
    assert ep.silence_ms == 2 * WINDOW_MS
    (end,) = feed(ep, [SILENCE])
    assert end.sample == 6 * WINDOW  # after the lone speech window


def test_the_end_is_reported_once_and_silence_after_it_reports_nothing():
    ep = endpointer()
    events = feed(ep, [SPEECH] * 3 + [SILENCE] * 30)
    assert kinds(events) == [TurnEvent.SPEECH_START, TurnEvent.SPEECH_END]
    assert ep.silence_ms == 0 and not ep.in_speech


# == a second turn ===========================================================================
def test_a_second_turn_needs_a_fresh_onset_and_is_placed_in_the_same_stream():
    ep = endpointer()
    first = feed(ep, [SPEECH] * 5 + [SILENCE] * 3)
    assert kinds(first) == [TurnEvent.SPEECH_START, TurnEvent.SPEECH_END]
    assert feed(ep, [SILENCE, SPEECH, SPEECH]) == []  # two windows are not yet an onset
    (start,) = feed(ep, [SPEECH])
    assert start == Endpoint(TurnEvent.SPEECH_START, 9 * WINDOW)
    (end,) = feed(ep, [SPEECH, SILENCE, SILENCE, SILENCE])
    assert end == Endpoint(TurnEvent.SPEECH_END, 13 * WINDOW)


def test_two_turns_in_one_update_are_reported_in_order():
    ep = endpointer()
    probs = [SPEECH] * 3 + [SILENCE] * 3 + [SPEECH] * 4 + [SILENCE] * 3
    assert feed(ep, probs) == [
        Endpoint(TurnEvent.SPEECH_START, 0),
        Endpoint(TurnEvent.SPEECH_END, 3 * WINDOW),
        Endpoint(TurnEvent.SPEECH_START, 6 * WINDOW),
        Endpoint(TurnEvent.SPEECH_END, 10 * WINDOW),
    ]


# == force_end: an early end decided by the listener ==========================================
def test_force_end_ends_the_turn_after_its_last_speech_and_a_new_onset_is_needed():
    ep = endpointer(silence_ms=320)
    feed(ep, [SPEECH] * 4 + [SILENCE] * 2)
    assert ep.silence_ms == 2 * WINDOW_MS
    assert ep.force_end() == Endpoint(TurnEvent.SPEECH_END, 4 * WINDOW)
    assert ep.in_speech is False and ep.silence_ms == 0
    assert feed(ep, [SILENCE] * 20) == []  # the forced end is not followed by another
    assert feed(ep, [SPEECH] * 2) == []
    assert feed(ep, [SPEECH]) == [Endpoint(TurnEvent.SPEECH_START, 26 * WINDOW)]


# == the Silero stream ========================================================================
@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


def test_each_window_reaches_the_model_with_the_previous_windows_tail_and_state(vad, monkeypatch):
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    returned: list[np.ndarray] = []
    real_run = vad.run

    def spy(x: np.ndarray, h: np.ndarray, c: np.ndarray):
        seen.append((x.copy(), h.copy()))
        probs, h2, c2 = real_run(x, h, c)
        returned.append(h2.copy())
        return probs, h2, c2

    monkeypatch.setattr(vad, "run", spy)
    audio = np.random.default_rng(3).normal(0, 0.1, 3 * WINDOW + 100).astype(np.float32)
    stream = vad.stream()
    assert len(stream.push(audio[:100])) == 0  # less than a window: nothing yet
    probs = stream.push(audio[100 : 2 * WINDOW + 100])
    probs = np.concatenate([probs, stream.push(audio[2 * WINDOW + 100 :])])
    assert len(probs) == 3 and len(seen) == 3
    for i, (x, h) in enumerate(seen):
        assert x.shape == (1, CONTEXT + WINDOW)
        np.testing.assert_array_equal(x[0, CONTEXT:], audio[i * WINDOW : (i + 1) * WINDOW])
        tail = audio[i * WINDOW - CONTEXT : i * WINDOW] if i else np.zeros(CONTEXT)
        np.testing.assert_array_equal(x[0, :CONTEXT], tail)
        expected_h = returned[i - 1] if i else np.zeros((1, 1, 128))
        np.testing.assert_array_equal(h, expected_h)
    assert all(0.0 <= p <= 1.0 for p in probs)


def test_exactly_one_window_gives_one_probability(vad):
    stream = vad.stream()
    assert len(stream.push(np.zeros(WINDOW - 1, np.float32))) == 0
    assert len(stream.push(np.zeros(1, np.float32))) == 1


def test_the_probabilities_do_not_depend_on_how_the_audio_is_chunked(vad):
    audio = np.random.default_rng(4).normal(0, 0.1, 6 * WINDOW).astype(np.float32)
    whole = vad.stream().push(audio)
    stream = vad.stream()
    pieces = np.concatenate([stream.push(audio[i : i + 300]) for i in range(0, len(audio), 300)])
    np.testing.assert_allclose(pieces, whole, atol=1e-6)


def test_a_given_model_file_is_the_one_loaded(vad, tmp_path):
    copy = tmp_path / "my_vad.onnx"
    copy.write_bytes(vad.path.read_bytes())
    chosen = SileroVad(str(copy))
    assert chosen.path == copy
    audio = np.full(WINDOW, 0.1, np.float32)
    np.testing.assert_allclose(chosen.stream().push(audio), vad.stream().push(audio))


def test_any_float_audio_is_heard_as_float32_and_probabilities_are_float32(vad):
    audio = np.random.default_rng(5).normal(0, 0.1, 2 * WINDOW)
    as64 = vad.stream().push(audio.astype(np.float64))
    as32 = vad.stream().push(audio.astype(np.float32))
    np.testing.assert_allclose(as64, as32, atol=1e-6)
    assert as64.dtype == np.float32 and vad.stream().push(audio[:10]).dtype == np.float32


def test_the_vad_session_runs_on_one_thread():
    """Every call's VAD shares the 2 cores with Whisper: one thread per run, none spinning."""
    vad = SileroVad()
    options = vad._session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    assert vad._session.get_providers() == ["CPUExecutionProvider"]


def test_the_newest_shipped_silero_file_is_chosen_and_none_is_an_error(tmp_path, monkeypatch):
    package = tmp_path / "faster_whisper"
    (package / "assets").mkdir(parents=True)
    monkeypatch.setattr(
        vad_module, "faster_whisper", SimpleNamespace(__file__=str(package / "__init__.py"))
    )
    with pytest.raises(FileNotFoundError, match="no Silero VAD ONNX file"):
        vad_module.silero_path()
    for name in ("silero_vad_v4.onnx", "silero_vad_v6.onnx", "silero_vad_v5.onnx", "other.onnx"):
        (package / "assets" / name).write_bytes(b"")
    assert vad_module.silero_path() == package / "assets" / "silero_vad_v6.onnx"


# == configuration ===========================================================================
def test_every_accepted_speech_threshold_lets_silence_end_a_turn():
    """Silence is below threshold - 0.15; at a threshold of 0.15 or less even a silent window
    (probability 0) counts as speech and a turn never ends on silence: refused at start."""
    for unusable in (0.1, 0.15):
        with pytest.raises(ValidationError, match="speech_threshold"):
            EndpointingSettings(speech_threshold=unusable)
    ep = endpointer(speech_threshold=0.16)
    assert kinds(feed(ep, [SPEECH] * 3 + [0.0] * 3)) == [
        TurnEvent.SPEECH_START,
        TurnEvent.SPEECH_END,
    ]


# == where the speech began (vad.speech_onset) ================================================
RATE = 16000


def burst(seconds: float, level: float = 0.2) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (level * np.sin(2 * np.pi * 300 * t)).astype(np.float32)


def quiet(seconds: float, level: float = 0.0) -> np.ndarray:
    noise = np.random.default_rng(7).normal(0, level, int(seconds * RATE)) if level else None
    return np.zeros(int(seconds * RATE), np.float32) if noise is None else noise.astype(np.float32)


def test_a_late_vad_onset_is_moved_back_to_where_the_sound_began():
    # Speech from 3.0 s; the VAD called it only at 4.2 s (after a long quiet stretch).
    audio = np.concatenate([quiet(3.0), burst(2.0)])
    assert vad_module.speech_onset(audio, int(4.2 * RATE)) == 3 * RATE


def test_the_walk_back_crosses_gaps_between_words_but_not_a_pause():
    words = [burst(0.4), quiet(0.12), burst(0.4)]  # a 120 ms gap: the same utterance
    audio = np.concatenate([quiet(2.0), *words, quiet(0.4), burst(1.0)])
    utterance, later = int(2.0 * RATE), int(3.32 * RATE)  # the 400 ms pause ends it
    assert vad_module.speech_onset(audio, later + int(0.3 * RATE)) == later
    assert vad_module.speech_onset(audio, utterance + int(0.7 * RATE)) == utterance


def test_the_walk_back_stops_at_its_limit():
    audio = np.concatenate([quiet(2.5), burst(3.0)])  # 2.5 s of sound before the VAD's call
    called = int(5.0 * RATE)
    limit = int(vad_module.ONSET_MAX_BACK_S * RATE)
    assert vad_module.speech_onset(audio, called) == called - limit


def test_line_noise_is_not_taken_for_speech():
    # -40 dBFS noise, then speech: the onset is the speech's, not the noise's.
    audio = np.concatenate([quiet(3.0, level=0.01), burst(2.0) + quiet(2.0, level=0.01)])
    onset = vad_module.speech_onset(audio, int(3.5 * RATE))
    assert abs(onset - 3 * RATE) <= vad_module.ONSET_FRAME


def test_a_vad_onset_after_quiet_or_at_the_start_stays_where_it_is():
    audio = np.concatenate([quiet(3.0), burst(1.0)])
    assert vad_module.speech_onset(audio, 3 * RATE) == 3 * RATE
    assert vad_module.speech_onset(audio, 0) == 0


def test_a_vad_onset_one_frame_into_the_call_walks_back_to_its_start():
    # No audio before to measure the line's quiet level: the absolute floor decides.
    assert vad_module.speech_onset(burst(1.0), vad_module.ONSET_FRAME) == 0


def test_a_pause_as_long_as_the_longest_gap_is_bridged_and_a_frame_longer_is_not():
    frame = vad_module.ONSET_FRAME
    longest = vad_module.ONSET_MAX_GAP_MS * RATE // 1000 // frame  # whole frames

    def onset_across(gap_frames: int) -> tuple[int, int]:
        first_word, second_word = 100 * frame, (100 + 20 + gap_frames) * frame
        audio = np.concatenate(
            [quiet(2.0), burst(0.4), np.zeros(gap_frames * frame, np.float32), burst(0.4)]
        )
        return vad_module.speech_onset(audio, second_word + 10 * frame), first_word

    onset, first_word = onset_across(longest)
    assert onset == first_word
    onset, _ = onset_across(longest + 1)
    assert onset > first_word


def test_the_frame_just_before_the_vad_onset_counts():
    audio = np.concatenate([quiet(2.0), burst(0.02), quiet(1.0)])
    assert vad_module.speech_onset(audio, 2 * RATE + vad_module.ONSET_FRAME) == 2 * RATE


def test_quiet_frames_right_before_the_vad_onset_count_as_a_pause_like_any_other():
    frame = vad_module.ONSET_FRAME
    longest = vad_module.ONSET_MAX_GAP_MS * RATE // 1000 // frame
    audio = np.concatenate([quiet(2.0), burst(0.4), np.zeros(longest * frame, np.float32)])
    assert vad_module.speech_onset(audio, len(audio)) == 2 * RATE
