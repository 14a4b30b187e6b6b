"""Whole calls end in the right place: scripted callers (benchmarks/suites/outcomes_callers.py)
through the real app and the simulator's Twilio line, each reacting to what the bot says.
The recogniser is scripted: it hears exactly what the caller said (the caller's speech is a
tone the energy VAD hears), so these pin the dialogue's outcomes, not speech recognition.
The full measurement with Whisper is `voicebot bench calls`."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np
import pytest

from benchmarks.suites.outcomes_callers import BotPrompts, Caller, Scenario, ScriptedCall, outcome
from voicebot.asr import AsrPool
from voicebot.config import AsrSettings

from .fakes import EnergyVad, ScriptedAsr, ServedApp, light_services

WIRE_RATE = 8000
NONSENSE = ("blå bananer i vinden", "grønne skyer over taget")

CLEAR = Scenario(
    id="waste",
    language="da",
    intent="waste",
    first="min skraldespand er ikke blevet tømt i denne uge",
    second="skraldebilen kom ikke i går",
    yes="ja",
    no="nej, det er om skraldet",
    person="0",
    opener=None,
    backchannel=None,
    patience=3,
    voice="da",
)


@pytest.fixture(scope="module")
def served(tmp_path_factory, catalogue, classifier):
    services = light_services(tmp_path_factory.mktemp("outcomes"), catalogue, classifier)
    services.vad = EnergyVad()
    recogniser = ScriptedAsr("")
    services.asr = AsrPool(recogniser, AsrSettings(workers=1, partials=False))
    with ServedApp(services) as app:
        app.recogniser = recogniser  # type: ignore[attr-defined]
        yield app


def place(served, catalogue, scenario: Scenario) -> tuple[str, dict, Caller]:
    """One scripted call; the recogniser hears what the caller says as it says it."""

    def voice(text: str) -> np.ndarray:
        served.recogniser.script = [text]
        t = np.arange(int(1.2 * WIRE_RATE)) / WIRE_RATE
        return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)

    caller = Caller(scenario, catalogue, BotPrompts(catalogue))
    call = ScriptedCall(
        served.media_url("twilio"),
        None,
        caller,
        voice,
        fast=4.0,
        timeout_s=30,
        credentials=served.credentials,
    )
    call.events_url = served.events_url(call.call_id)
    result = asyncio.run(asyncio.wait_for(call.run([]), 45))
    decisions = [e for e in result.events if e["type"] == "decision"]
    ended, final = outcome(scenario, catalogue, decisions)
    return ended, final or {}, caller


def test_a_clear_request_is_routed_to_its_queue_by_speech(served, catalogue):
    ended, final, caller = place(served, catalogue, CLEAR)
    assert (ended, final["action"], final["forvaltning"]) == ("resolved_speech", "route", "TMF")
    assert [a["act"]["what"] for a in caller.acts if a["act"]] == ["errand"]


def test_a_denied_confirm_with_a_correction_goes_to_the_corrected_errand(served, catalogue):
    # "noget med parkering" makes the bot unsure between the parking errands: it asks about
    # the fine; the caller says no, it is the permit, and gets the permit's answer.
    scenario = replace(
        CLEAR,
        intent="parking_permit",
        first="det er noget med parkering",
        no="nej, det er om en parkeringslicens",
    )
    ended, final, caller = place(served, catalogue, scenario)
    heard = [a["heard"] for a in caller.acts]
    assert heard[:2] == ["greeting", "confirm"] and caller.acts[1]["about"] == "parking_fine"
    assert (ended, final["action"], final["intent"]) == (
        "resolved_speech",
        "answer",
        "parking_permit",
    )


def test_a_caller_not_understood_twice_follows_the_keypad_menu_to_the_right_queue(
    served, catalogue
):
    scenario = replace(CLEAR, intent="elder_care", first=NONSENSE[0], second=NONSENSE[1])
    ended, final, caller = place(served, catalogue, scenario)
    assert [a["heard"] for a in caller.acts][:3] == ["greeting", "rephrase", "keypad_menu"]
    assert caller.acts[2]["act"] == {"type": "press", "key": "3", "what": "keypad"}
    assert (ended, final["action"], final["forvaltning"]) == ("resolved_keypad", "route", "SUF")


def test_a_caller_misheard_after_a_failure_is_asked_before_being_routed(served, catalogue):
    # Not understood once, then heard as a confident waste errand (a mishearing of a social
    # services caller): the bot asks before sending the call anywhere, the caller says no and
    # names the errand, and the call reaches the right queue instead of the wrong one.
    scenario = replace(
        CLEAR,
        intent="social_services",
        first=NONSENSE[0],
        second="min skraldespand er ikke blevet tømt i denne uge",
        no="nej, det handler om hjælp fra socialforvaltningen",
    )
    ended, final, caller = place(served, catalogue, scenario)
    assert [(a["heard"], a["about"]) for a in caller.acts][1:3] == [
        ("rephrase", None),
        ("confirm", "waste"),
    ]
    assert (ended, final["action"], final["forvaltning"]) == ("resolved_speech", "route", "SOF")


def test_a_confirm_reply_heard_as_another_errand_is_not_acted_on_unasked(served, catalogue):
    # The caller's reply to the confirm question is misheard as a confident waste errand
    # with no yes or no in it: not an answer, so the bot asks again instead of routing, and
    # the caller reaches its own queue by the keypad.
    scenario = replace(
        CLEAR,
        intent="social_services",
        first="det er noget med parkering",
        no="min skraldespand er ikke blevet tømt i denne uge",
        second=NONSENSE[1],
    )
    ended, final, caller = place(served, catalogue, scenario)
    assert [a["heard"] for a in caller.acts][1:4] == ["confirm", "rephrase", "keypad_menu"]
    assert (ended, final["action"], final["forvaltning"]) == ("resolved_keypad", "route", "SOF")


def test_an_emergency_hears_112_first(served, catalogue):
    scenario = replace(CLEAR, intent="emergency", first="min mand er faldet og bløder")
    ended, final, caller = place(served, catalogue, scenario)
    assert (ended, final["action"]) == ("resolved_speech", "emergency")
    assert caller.acts[1]["heard"] == "emergency"  # the first thing said after the errand


def test_an_emergency_the_bot_cannot_hear_hears_112_before_any_queue(served, catalogue):
    # Not understood twice (a voice Whisper garbles): the keypad menu starts with "if someone
    # is in danger, ring 112", and the caller in danger hangs up to ring it instead of being
    # put in a queue.
    scenario = replace(CLEAR, intent="emergency", first=NONSENSE[0], second=NONSENSE[1])
    ended, final, caller = place(served, catalogue, scenario)
    assert [(a["heard"], a["notice"]) for a in caller.acts] == [
        ("greeting", False),
        ("rephrase", False),
        ("keypad_menu", True),
    ]
    assert caller.acts[-1]["act"] is None  # hung up to ring 112
    assert (ended, final["action"], final["forvaltning"]) == ("notice_112", "keypad_menu", None)


def test_an_errand_caller_goes_on_past_the_emergency_notice(catalogue):
    prompts = BotPrompts(catalogue)
    said = f"{catalogue.prompt('emergency_notice', 'en')} {catalogue.prompt('rephrase', 'en')}"
    assert prompts.heard(said).kind == "rephrase" and prompts.heard(said).notice
    caller = Caller(CLEAR, catalogue, prompts)
    caller.react(catalogue.prompt("greeting", "da"))
    act = caller.react(said)
    assert act is not None and act.what == "rephrased"
    emergency = Caller(replace(CLEAR, intent="emergency"), catalogue, prompts)
    emergency.react(catalogue.prompt("greeting", "da"))
    assert emergency.react(said) is None


def test_an_emergency_is_scored_by_the_first_time_it_hears_112(catalogue):
    emergency = replace(CLEAR, intent="emergency")
    rephrase = {"action": "rephrase", "emergency_notice": False}
    notice = {"action": "rephrase", "emergency_notice": True}
    act = {"action": "emergency", "forvaltning": "KONTAKTCENTER", "intent": "emergency"}
    person = {"action": "human", "forvaltning": "KONTAKTCENTER", "intent": "human_agent"}
    assert outcome(emergency, catalogue, [rephrase, act])[0] == "resolved_speech"
    assert outcome(emergency, catalogue, [rephrase, notice, person])[0] == "notice_112"
    assert outcome(emergency, catalogue, [rephrase, person, notice])[0] == "missed_112"
    assert outcome(emergency, catalogue, [rephrase])[0] == "abandoned"
    # An errand caller who heard the notice is scored by where its call ended.
    route = {"action": "route", "forvaltning": "TMF", "intent": "waste", "reason": "model"}
    assert outcome(CLEAR, catalogue, [notice, route])[0] == "resolved_speech"


def test_a_stuck_caller_who_presses_0_reaches_a_person(served, catalogue):
    scenario = replace(CLEAR, first=NONSENSE[0], second=NONSENSE[1], patience=1)
    ended, final, caller = place(served, catalogue, scenario)
    assert caller.acts[1]["act"] == {"type": "press", "key": "0", "what": "person"}
    assert (ended, final["action"], final["forvaltning"]) == ("person", "human", "KONTAKTCENTER")


def test_a_wrong_queue_is_scored_as_misrouted(catalogue):
    decisions = [{"action": "route", "forvaltning": "KFF", "intent": "mitid", "reason": "model"}]
    assert outcome(CLEAR, catalogue, decisions)[0] == "misrouted"
    needless = [{"action": "emergency", "forvaltning": "KONTAKTCENTER", "intent": "emergency"}]
    assert outcome(CLEAR, catalogue, needless)[0] == "needless_112"
    assert outcome(CLEAR, catalogue, [])[0] == "abandoned"


def test_callers_are_seeded_and_speak_only_held_back_utterances():
    from benchmarks.suites.outcomes import LANGUAGES, build_scenarios
    from models.intent_data import load_heldout

    plan = build_scenarios(2)
    assert plan == build_scenarios(2)  # the same seed places the same calls
    held_back = {(e.text, e.intent) for lang in LANGUAGES for e in load_heldout(lang)}
    for s in plan:
        assert (s.first, s.intent) in held_back and (s.second, s.intent) in held_back
        assert s.first != s.second
    assert {s.language for s in plan} == set(LANGUAGES)
