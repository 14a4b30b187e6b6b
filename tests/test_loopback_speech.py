"""Every platform with speech instead of keys: the real app under uvicorn, called by
telephony.simulator over the platform's own protocol, the caller SAYS a request (a tone the
scripted VAD hears as speech) and a scripted recogniser returns the request's words, so the
turn is heard, endpointed, classified by the shipped intent model and routed — no key press.
(The shared fakes of tests/telephony_fakes.py hear nothing; these two hear and transcribe.)"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from telephony.registry import PLATFORM_CLIENTS
from telephony.simulator import PLATFORMS, SimulatedCall
from voicebot.asr import AsrPool, AsrResult
from voicebot.config import AsrSettings

from .telephony_fakes import ServedApp, light_services

REQUEST = "min skraldespand er ikke blevet tømt i denne uge"


class EnergyVad:
    """Hears speech wherever the audio is louder than a whisper (prob 0.9), else silence."""

    class _Stream:
        def __init__(self) -> None:
            self._pending = np.zeros(0, np.float32)

        def push(self, audio: np.ndarray) -> np.ndarray:
            self._pending = np.concatenate([self._pending, audio])
            n = len(self._pending) // 512
            windows = self._pending[: n * 512].reshape(n, 512)
            self._pending = self._pending[n * 512 :]
            loud = np.sqrt((windows**2).mean(axis=1)) > 0.02
            return np.where(loud, 0.9, 0.0).astype(np.float32)

    def stream(self) -> EnergyVad._Stream:
        return self._Stream()


class OneRequestAsr:
    """Transcribes any turn longer than half a second as REQUEST; shorter audio as nothing."""

    def __init__(self) -> None:
        self.turns = 0

    def transcribe(self, audio, previous_text=None, prefix=None) -> AsrResult:
        heard = len(audio) > 8000
        self.turns += heard
        return AsrResult(REQUEST if heard else "", -0.2, 0.01, len(audio) / 16000, 6.0, 5.0)


@pytest.fixture(scope="module")
def served(tmp_path_factory, catalogue, classifier):
    services = light_services(tmp_path_factory.mktemp("speech"), catalogue, classifier)
    services.vad = EnergyVad()
    services.asr = AsrPool(OneRequestAsr(), AsrSettings(workers=1, partials=False))
    with ServedApp(services) as app:
        yield app


def spoken_request(rate: int) -> np.ndarray:
    t = np.arange(int(1.5 * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


@pytest.mark.parametrize("protocol", sorted(PLATFORM_CLIENTS))
def test_a_spoken_request_is_heard_understood_and_routed(served, protocol):
    call = SimulatedCall(
        served.media_url(protocol),
        None,
        protocol=protocol,
        speed=4.0,
        timeout_s=15,
        credentials=served.credentials,
    )
    call.events_url = served.events_url(call.call_id)
    turns = [spoken_request(PLATFORMS[protocol].wire_rate)]
    result = asyncio.run(asyncio.wait_for(call.run(turns), 25))
    kinds = [e["type"] for e in result.events]
    assert "dtmf" not in kinds  # no key was pressed
    assert "speech_end" in kinds and kinds.index("speech_end") < kinds.index("decision")
    (turn,) = result.turns
    assert (turn.action, turn.forvaltning) == ("route", "TMF")
    decision = next(e for e in result.events if e["type"] == "decision")
    assert decision["intent"] == "waste"
    routed = served.services.store.get(call.call_id)
    assert routed is not None and (routed.intent, routed.forvaltning) == ("waste", "TMF")
    assert routed.platform == protocol and "skraldespand" in routed.transcript
