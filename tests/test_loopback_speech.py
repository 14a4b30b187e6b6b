"""Every platform with speech instead of keys: the real app under uvicorn, called by
telephony.simulator over the platform's own protocol, the caller SAYS a request (a tone the
scripted VAD hears as speech) and a scripted recogniser returns the request's words, so the
turn is heard, endpointed, classified by the shipped intent model and routed — no key press.
(The shared fakes of tests/fakes.py mostly hear nothing; these two hear and transcribe.)"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from telephony.registry import PLATFORM_CLIENTS
from telephony.simulator import PLATFORMS, SimulatedCall
from voicebot.asr import AsrPool
from voicebot.config import AsrSettings

from .fakes import EnergyVad, ScriptedAsr, ServedApp, light_services

REQUEST = "min skraldespand er ikke blevet tømt i denne uge"


@pytest.fixture(scope="module")
def served(tmp_path_factory, catalogue, classifier):
    services = light_services(tmp_path_factory.mktemp("speech"), catalogue, classifier)
    services.vad = EnergyVad()
    services.asr = AsrPool(ScriptedAsr(REQUEST), AsrSettings(workers=1, partials=False))
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
