"""Promises about when a caller's turn ends and what the caller hears while the bot thinks
(README "How a call flows", voicebot/listening.py): an emergency word in a partial ends the
turn at once; a confident, complete request heard in the pause ends it after
`endpointing.early_silence_ms`; a turn is cut at `endpointing.max_turn_s`; "et øjeblik" after
1.5 s without an answer. Each test observes the stream position at which the end of turn was
decided (samples of caller audio received), not the wall clock."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from telephony.base import SAMPLE_RATE
from voicebot.asr import AsrPool
from voicebot.config import AsrSettings
from voicebot.services import Services
from voicebot.session import CallSession

from .fakes import EnergyVad, LateVad, ScriptedAsr, ScriptedLine, light_services, silence, tone

EMERGENCY = "min mor er faldet og bløder"  # a trigger phrase: emergency by rule
REQUEST = "min skraldespand er ikke blevet tømt"  # waste, confidence ≈ 0.99
UNCLEAR = "hvad bliver vejret i morgen"  # out_of_scope


def speaking_services(
    tmp_path, catalogue, classifier, script: str, *, partials: bool, speculative: bool, **asr: Any
) -> Services:
    """Light services whose VAD hears every tone and whose recogniser hears `script`."""
    services = light_services(tmp_path, catalogue, classifier)
    services.settings.asr.partials = partials
    services.settings.asr.speculative = speculative
    services.vad = EnergyVad()
    services.asr = AsrPool(
        ScriptedAsr(script, **asr),
        AsrSettings(workers=1, partials=partials, speculative=speculative),
    )
    return services


def run_call(services: Services, script: list) -> tuple[CallSession, list[tuple[str, dict]]]:
    """Run one call; every event, with `fired_at` (caller samples received so far) added to
    each speech_end: where in the stream the end of the turn was decided."""
    line = ScriptedLine(script)
    session = CallSession(line, services)
    events: list[tuple[str, dict]] = []
    publish = services.events.publish

    def record(call_id: str, kind: str, **data: Any) -> None:
        seen = dict(data)
        if kind == "speech_end":
            seen["fired_at"] = session.listener.stream_samples
        events.append((kind, seen))
        publish(call_id, kind, **data)

    services.events.publish = record  # type: ignore[method-assign]
    asyncio.run(asyncio.wait_for(session.run(), 60))
    return session, events


def first(events: list[tuple[str, dict]], kind: str) -> dict:
    return next(data for k, data in events if k == kind)


def ms(samples: int) -> int:
    return samples * 1000 // SAMPLE_RATE


# == an emergency word in a partial ends the turn at once =====================================
def test_an_emergency_word_in_a_partial_ends_the_turn_while_the_caller_still_speaks(
    tmp_path, catalogue, classifier
):
    services = speaking_services(
        tmp_path, catalogue, classifier, EMERGENCY, partials=True, speculative=False
    )
    services.settings.endpointing.max_turn_s = 28.0
    # 25 s of unbroken speech: only the partial's emergency word can end the turn early.
    _, events = run_call(services, [silence(0.5), tone(25.0), silence(1.0)])
    start, end = first(events, "speech_start"), first(events, "speech_end")
    assert any(k == "partial" for k, _ in events)
    assert end["stream_ms"] - start["stream_ms"] < 10_000  # long before the caller stopped
    assert first(events, "decision")["action"] == "emergency"


# == the early end after early_silence_ms =====================================================
@pytest.mark.parametrize(
    ("heard", "ends_early"),
    [(REQUEST, True), (UNCLEAR, False)],
    ids=["a confident complete request", "an unclear request"],
)
def test_a_confident_request_heard_in_the_pause_ends_the_turn_after_early_silence_ms(
    tmp_path, catalogue, classifier, heard, ends_early
):
    services = speaking_services(
        tmp_path, catalogue, classifier, heard, partials=False, speculative=True
    )
    endpointing = services.settings.endpointing
    endpointing.silence_ms, endpointing.early_silence_ms = 2976, 240  # 93 VAD windows
    # The pause is the line's own silence after the script, paced (the decode needs time).
    _, events = run_call(services, [silence(0.5), tone(1.5)])
    end = first(events, "speech_end")
    waited_ms = ms(end["fired_at"]) - end["stream_ms"]  # silence heard before the end fired
    if ends_early:
        assert 240 <= waited_ms < 2976
        assert first(events, "decision")["intent"] == "waste"
    else:
        assert waited_ms >= 2976  # an unclear guess waits for the full silence


def test_the_early_end_needs_the_confidence_the_turns_language_acts_on(
    tmp_path, catalogue, classifier
):
    # A language whose dialogue acts only above 0.999 (its per-language accept threshold):
    # the same confident request is no longer a finished one, so the turn waits for the full
    # silence. The listener used to judge every language by the base threshold.
    from voicebot.config import Thresholds

    services = speaking_services(
        tmp_path, catalogue, classifier, REQUEST, partials=False, speculative=True
    )
    services.settings.dialogue.per_language = {"da": Thresholds(accept=0.999, confirm=0.35)}
    endpointing = services.settings.endpointing
    endpointing.silence_ms, endpointing.early_silence_ms = 2976, 240
    _, events = run_call(services, [silence(0.5), tone(1.5)])
    end = first(events, "speech_end")
    assert ms(end["fired_at"]) - end["stream_ms"] >= 2976


# == the max_turn_s cut =======================================================================
def test_a_turn_longer_than_max_turn_s_is_cut_there(tmp_path, catalogue, classifier):
    services = speaking_services(
        tmp_path, catalogue, classifier, REQUEST, partials=False, speculative=False
    )
    services.settings.endpointing.max_turn_s = 3.0
    _, events = run_call(services, [silence(0.5), tone(8.0), silence(1.0)])
    start, end = first(events, "speech_start"), first(events, "speech_end")
    # Measured on received audio, which runs up to a VAD window ahead of the VAD's position.
    assert abs(end["stream_ms"] - start["stream_ms"] - 3000) < 100  # not at the tone's end (8 s)


# == "et øjeblik" after 1.5 s =================================================================
@pytest.mark.parametrize(
    ("decode_s", "busy_prompt"), [(2.0, True), (0.0, False)], ids=["slow", "fast"]
)
def test_a_caller_waiting_for_an_answer_hears_et_oejeblik_after_1_5_s(
    tmp_path, catalogue, classifier, decode_s, busy_prompt
):
    services = speaking_services(
        tmp_path,
        catalogue,
        classifier,
        REQUEST,
        partials=False,
        speculative=False,
        delay_s=decode_s,
    )
    # The decode ends before the line's paced silence after the script (≥ 3 s) does.
    _, events = run_call(services, [silence(0.5), tone(1.5)])
    said = [data for kind, data in events if kind == "bot_said"]
    busy = [d for d in said if d["mark"].startswith("busy")]
    if busy_prompt:
        assert len(busy) == 1 and busy[0]["text"].startswith("Et øjeblik")
        # said while the caller waited: before the answer that routes the call
        assert said.index(busy[0]) < len(said) - 1
    else:
        assert not busy
    assert first(events, "decision")["intent"] == "waste"


# == the turn starts where the speech began ====================================================
def test_a_vad_slow_to_call_speech_loses_none_of_the_first_words(tmp_path, catalogue, classifier):
    # After 3 s of silence the VAD calls the speech 1.2 s late (beyond the 0.6 s pre-roll):
    # the decode still gets the whole utterance, from its first sample.
    services = speaking_services(
        tmp_path, catalogue, classifier, REQUEST, partials=False, speculative=False
    )
    services.vad = LateVad(1.2)
    decoded: list[np.ndarray] = []
    recogniser = services.asr.asr
    result = recogniser._result  # type: ignore[attr-defined]

    def keep(audio: np.ndarray) -> Any:
        decoded.append(audio)
        return result(audio)

    recogniser._result = keep  # type: ignore[attr-defined]
    run_call(services, [silence(3.0), tone(2.5), silence(1.5)])
    loud = np.flatnonzero(np.abs(max(decoded, key=len)) > 0.1)
    assert (loud[-1] - loud[0]) / SAMPLE_RATE >= 2.45  # the whole 2.5 s tone
    assert loud[0] / SAMPLE_RATE >= 0.5  # after a lead of silence, as Whisper wants it
