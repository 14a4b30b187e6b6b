"""Silero VAD (shared model, per-call state) and end-of-turn detection."""

import numpy as np
import pytest

from tests.fakes import silence
from voicebot.config import EndpointingSettings
from voicebot.vad import WINDOW, Endpointer, SileroVad, TurnEvent


@pytest.fixture(scope="module")
def vad():
    return SileroVad()


def run(vad, audio: np.ndarray, settings: EndpointingSettings, chunk: int = 320):
    stream, ep, events = vad.stream(), Endpointer(settings), []
    for i in range(0, len(audio), chunk):  # 20 ms frames, as from a phone platform
        events += ep.update(stream.push(audio[i : i + chunk]))
    return events


def test_speech_between_silences_is_one_turn_at_the_right_place(vad, speaker):
    speech = speaker.speak("Jeg vil gerne høre om min beboerlicens til bilen.")
    audio = np.concatenate([silence(1.0), speech, silence(1.5)])
    events = run(vad, audio, EndpointingSettings(silence_ms=500))
    kinds = [e.event for e in events]
    assert kinds == [TurnEvent.SPEECH_START, TurnEvent.SPEECH_END]
    start_s, end_s = events[0].sample / 16000, events[1].sample / 16000
    assert abs(start_s - 1.0) < 0.25
    assert abs(end_s - (1.0 + len(speech) / 16000)) < 0.3


def test_silence_and_steady_noise_make_no_turn(vad):
    rng = np.random.default_rng(0)
    noise = (rng.normal(0, 0.003, 16000 * 3)).astype(np.float32)
    assert run(vad, np.concatenate([silence(2.0), noise]), EndpointingSettings()) == []


def test_a_pause_shorter_than_the_silence_setting_does_not_end_the_turn(vad, speaker):
    a = speaker.speak("Jeg ringer om min mor.")
    b = speaker.speak("Hun skal have hjemmehjælp.")
    audio = np.concatenate([silence(0.5), a, silence(0.3), b, silence(1.5)])
    long_wait = run(vad, audio, EndpointingSettings(silence_ms=700))
    assert [e.event for e in long_wait] == [TurnEvent.SPEECH_START, TurnEvent.SPEECH_END]
    short_wait = run(vad, audio, EndpointingSettings(silence_ms=160, early_silence_ms=100))
    assert len(short_wait) == 4  # the same pause ends the turn when the setting is shorter


def test_per_call_state_is_independent(vad, speaker):
    speech = np.concatenate([speaker.speak("Hej med dig."), silence(1.0)])
    a, b = vad.stream(), vad.stream()
    pa = np.concatenate([a.push(speech[i : i + 320]) for i in range(0, len(speech), 320)])
    b.push(
        np.random.default_rng(1).normal(0, 0.2, 48000).astype(np.float32)
    )  # another call's noise
    fresh = vad.stream()
    pf = np.concatenate([fresh.push(speech[i : i + 320]) for i in range(0, len(speech), 320)])
    np.testing.assert_allclose(pa, pf, atol=1e-5)


def test_endpointer_logic_on_synthetic_probabilities():
    ep = Endpointer(EndpointingSettings(silence_ms=320, min_speech_ms=96, speech_threshold=0.5))
    probs = [0.1] * 5 + [0.9] * 10 + [0.4] * 3 + [0.9] * 5 + [0.1] * 12
    events = ep.update(np.array(probs))
    assert [e.event for e in events] == [TurnEvent.SPEECH_START, TurnEvent.SPEECH_END]
    assert events[0].sample == 5 * WINDOW  # onset at the first speech window
    assert events[1].sample == 23 * WINDOW  # end after the last speech window (0.4 is above 0.35)
