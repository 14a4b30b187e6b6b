"""The call session with a scripted platform and a scripted recogniser (no Whisper): the
order of things on the line, barge-in, queue-before-hand-off, keys and emergencies."""

from __future__ import annotations

import asyncio

import pytest

from telephony.base import CallStart, Digit, Hangup
from tests.fakes import ScriptedLine, heard_services, published_by, silence
from voicebot.session import CallSession


@pytest.fixture
def services(tmp_path, catalogue, classifier, speaker):
    return lambda text: heard_services(tmp_path, catalogue, classifier, speaker, text)


def run(session: CallSession) -> None:
    asyncio.run(asyncio.wait_for(session.run(), 60))


def test_greets_then_routes_and_writes_the_queue_before_hand_off(services, speaker):
    svc = services("min skraldespand er ikke blevet tømt")
    speech = speaker.speak("Min skraldespand er ikke blevet tømt i denne uge.")
    line = ScriptedLine([silence(0.5), speech, silence(1.5)])
    session = CallSession(line, svc)
    seen_queue_at_hand_off = []
    original = line.hand_off

    async def hand_off(target):
        seen_queue_at_hand_off.append(svc.store.get("CA-test"))
        await original(target)

    line.hand_off = hand_off
    run(session)
    assert line.log[0][0] == "play" and line.log[0][1].startswith("greeting")
    assert ("hand_off", "TMF") in line.log
    record = seen_queue_at_hand_off[0]
    assert record is not None and record.forvaltning == "TMF" and record.intent == "waste"
    assert record.caller == "+45 ••••••44"
    assert record.transcript == "min skraldespand er ikke blevet tømt"


def test_caller_speech_during_the_greeting_stops_it(services, speaker):
    svc = services("jeg vil tale med en medarbejder")
    speech = speaker.speak("Jeg vil gerne tale med en medarbejder, tak.")
    line = ScriptedLine([speech, silence(1.5)], echo_marks=False)  # greeting still playing
    run(CallSession(line, svc))
    kinds = [entry[0] for entry in line.log]
    assert "clear" in kinds and kinds.index("clear") > 0


def test_key_zero_reaches_a_person(services):
    svc = services("")
    line = ScriptedLine([silence(0.3), Digit("0"), silence(0.5)])
    run(CallSession(line, svc))
    assert ("hand_off", "KONTAKTCENTER") in line.log
    assert svc.store.get("CA-test").reason == "pressed 0"


def test_an_emergency_says_112_first(services, speaker):
    svc = services("min mor er faldet og bløder")
    speech = speaker.speak("Min mor er faldet og hun bløder meget.")
    line = ScriptedLine([silence(0.3), speech, silence(1.5)])
    events = published_by(svc)
    run(CallSession(line, svc))
    said = [d["text"] for k, d in events if k == "bot_said"]
    assert said[1].lower().startswith("ring et et to")  # the first thing after the greeting
    assert ("hand_off", "KONTAKTCENTER") in line.log


def test_a_caller_not_understood_twice_hears_the_112_notice_before_the_menu(services, speaker):
    from prometheus_client import REGISTRY

    def notices() -> float:
        labels = {"why": "keypad_menu", "language": "da"}
        return REGISTRY.get_sample_value("voicebot_emergency_notices_total", labels) or 0.0

    before = notices()
    svc = services("blå bananer i vinden")
    speech = speaker.speak("Blå bananer i vinden.")
    line = ScriptedLine([silence(0.3), speech, silence(1.5), speech, silence(1.5), Hangup("done")])
    events = published_by(svc)
    run(CallSession(line, svc))
    said = [d["text"] for k, d in events if k == "bot_said"]
    assert said[2].startswith("Hvis nogen er i fare, så læg på og ring et et to nu. Du kan også")
    assert notices() == before + 1  # operators see how often callers are told


def test_cpr_numbers_never_reach_the_queue_or_events(services, speaker):
    svc = services("jeg skal have hjemmehjælp mit cpr er 010203-1234")
    speech = speaker.speak("Jeg skal have hjemmehjælp, mit cpr nummer er nul et nul to nul tre.")
    line = ScriptedLine([silence(0.3), speech, silence(1.5)])
    events = published_by(svc)
    understood = []  # what the classifier reads: its explanation goes to the agent
    classify = svc.classifier.classify
    svc.classifier.classify = lambda text, *a, **k: (
        understood.append(text),
        classify(text, *a, **k),
    )[1]
    run(CallSession(line, svc))
    record = svc.store.get("CA-test")
    assert record is not None and "010203" not in record.transcript and "[CPR]" in record.transcript
    assert not any("010203" in repr(data) for _, data in events)
    assert understood and not any("010203" in t for t in understood)


def test_the_session_ends_cleanly_when_the_caller_hangs_up(services, speaker):
    svc = services("hej")
    line = ScriptedLine([silence(0.3), Hangup("caller hung up")])
    run(CallSession(line, svc))
    assert svc.active_calls == 0
    assert line.log[-1] == ("hang_up",)


def test_a_backchannel_does_not_take_the_turn_and_the_bot_resumes(services, speaker):
    svc = services("mhm")
    speech = speaker.speak("Mhm, ja.")
    line = ScriptedLine([silence(0.2), speech, silence(2.0), Hangup("done")], echo_marks=False)
    events = published_by(svc)
    run(CallSession(line, svc))
    plays = [entry[1] for entry in line.log if entry[0] == "play"]
    assert ("clear",) in line.log
    assert any(m.startswith("resume") for m in plays)  # the cut-off greeting goes on
    kinds = [kind for kind, _ in events]
    assert "decision" not in kinds and "backchannel" in kinds


def test_marks_say_which_sentences_were_heard(services):
    svc = services("")
    line = ScriptedLine([silence(0.2)])
    run(CallSession(line, svc))
    greeting_marks = [e[1] for e in line.log if e[0] == "play" and e[1].startswith("greeting")]
    # One mark per sentence of the greeting: three Danish, then "For English, just speak English."
    assert len(greeting_marks) == 4


def test_at_capacity_a_caller_goes_straight_to_a_person(services):
    svc = services("")
    line = ScriptedLine([silence(0.3)])
    asyncio.run(asyncio.wait_for(CallSession(line, svc).refuse(), 30))
    record = svc.store.get("CA-test")
    assert record.forvaltning == "KONTAKTCENTER" and "capacity" in record.reason
    kinds = [e[0] for e in line.log]
    assert set(kinds[:-2]) == {"play"} and kinds[-2:] == ["hand_off", "hang_up"]
    assert svc.asr.asr.calls == 0  # no speech recognition spent on it


class ListenOnlyLine(ScriptedLine):
    @property
    def can_play(self) -> bool:
        return False


def test_on_a_listen_only_line_the_bot_listens_until_the_platform_closes_and_assists(
    services, speaker
):
    """AudioHook Monitor (issue 13 #11): no prompts, no no-input timer, no hand-off or
    disconnect of its own; what it understands goes to the agent as agent_assist."""
    svc = services("min skraldespand er ikke blevet tømt")
    speech = speaker.speak("Min skraldespand er ikke blevet tømt i denne uge.")
    # 30 s of line silence after the turn (far past no_input_s), then the platform closes.
    line = ListenOnlyLine([silence(0.5), speech, silence(1.5)])
    events = published_by(svc)
    run(CallSession(line, svc))
    assert not [e for e in line.log if e[0] == "play"]
    assert line.log == [("hang_up",)]  # only the session's close after the platform's Hangup
    assert not [k for k, _ in events if k == "decision"]  # no no-input prompt, no routing
    assists = [d for k, d in events if k == "agent_assist"]
    assert assists and assists[0]["intent"] == "waste" and assists[0]["forvaltning"] == "TMF"
    assert (
        assists[0]["transcript"] == "min skraldespand er ikke blevet tømt"
        and 0 < assists[0]["confidence"] <= 1
    )
    assert svc.store.get("CA-test") is None  # the platform routes a monitored call, not the bot


def test_a_line_without_echo_cancellation_needs_longer_speech_to_barge_in(services, speaker):
    svc = services("mhm")
    short = speaker.speak("Ja ja.")[: int(0.35 * 16000)]  # 350 ms: enough for 200, not for 400
    line = ScriptedLine([short, silence(1.5), Hangup("done")], echo_marks=False)
    line.echo_cancelled = False
    run(CallSession(line, svc))
    assert ("clear",) not in line.log


def test_a_failing_queue_write_still_hands_the_caller_on(services, speaker):
    svc = services("min skraldespand er ikke blevet tømt")

    def broken(call):
        raise ConnectionError("queue back-end down")

    svc.store.enqueue = broken
    speech = speaker.speak("Min skraldespand er ikke blevet tømt i denne uge.")
    line = ScriptedLine([silence(0.5), speech, silence(1.5)])
    run(CallSession(line, svc))
    assert ("hand_off", "TMF") in line.log
    assert sum(1 for e in line.log if e[0] == "play" and e[1].startswith("route")) >= 1


def test_a_failing_session_task_is_logged_and_the_caller_handed_to_a_person(
    services, speaker, caplog
):
    """Issue 13 #9: a task that dies (here: a route prompt with a placeholder nobody fills)
    used to leave the caller in silence with nothing logged."""
    svc = services("min skraldespand er ikke blevet tømt")
    svc.catalogue = svc.catalogue.model_copy(deep=True)
    svc.catalogue.prompts["route"]["da"] = "Jeg stiller dig videre til {evil}."  # past validation
    speech = speaker.speak("Min skraldespand er ikke blevet tømt i denne uge.")
    line = ScriptedLine([silence(0.5), speech, silence(1.5)])
    with caplog.at_level("ERROR", logger="voicebot.session"):
        run(CallSession(line, svc))
    failures = [r for r in caplog.records if r.levelname == "ERROR" and "failed" in r.getMessage()]
    assert failures and failures[0].exc_info is not None  # logged with its traceback
    assert ("hand_off", "KONTAKTCENTER") in line.log
    record = svc.store.get("CA-test")
    assert (
        record is not None
        and record.forvaltning == "KONTAKTCENTER"
        and "internal error" in record.reason
    )
    assert any(e[0] == "play" and e[1].startswith("human") for e in line.log)  # told, not silence


class HangsUpDuringRoutingLine(ScriptedLine):
    """The caller hangs up while the routing prompt plays (its marks never come back)."""

    def __init__(self, script: list) -> None:
        super().__init__(script)
        self.gone = False

    async def play(self, audio, mark):
        if mark.startswith("route"):
            self.log.append(("play", mark, len(audio)))
            self.gone = True
            return
        await super().play(audio, mark)

    async def events(self):
        async for event in super().events():
            if self.gone:
                yield Hangup("caller hung up during the routing prompt")
                return
            yield event


def test_a_caller_gone_during_the_routing_prompt_is_marked_abandoned(services, speaker):
    """Issue 13 #13: the queue entry stayed `waiting` for a caller who was gone."""
    svc = services("min skraldespand er ikke blevet tømt")
    speech = speaker.speak("Min skraldespand er ikke blevet tømt i denne uge.")
    line = HangsUpDuringRoutingLine([silence(0.5), speech, silence(1.5)])
    events = published_by(svc)
    run(CallSession(line, svc))
    assert not [e for e in line.log if e[0] == "hand_off"]
    record = svc.store.get("CA-test")
    assert record is not None and record.status == "abandoned" and record.finished_at is not None
    assert "abandoned" in [k for k, _ in events]


class SilentPeer(ScriptedLine):
    """Sends its start and then no audio at all; returns marks only if `echo_marks`."""

    async def events(self):
        yield CallStart("CA-test", "test", "+4511223344")
        while not self.ended.is_set():
            yield await self._marks.get()


def test_a_peer_that_sends_no_audio_is_ended_and_frees_its_slot(services):
    """Issue 13 #6: a stream that sent `start` and then nothing held its slot forever."""
    svc = services("")
    svc.settings.endpointing.media_timeout_s = 2.0
    line = SilentPeer([], echo_marks=False)
    events = published_by(svc)
    asyncio.run(asyncio.wait_for(CallSession(line, svc).run(), 20))
    assert "media_timeout" in [k for k, _ in events]
    assert line.log[-1] == ("hang_up",)


def test_the_no_input_prompt_runs_on_the_wall_clock(services):
    """No audio arrives, but the marks do: the caller still hears "Er du der stadig?"."""
    svc = services("")
    svc.settings.endpointing.no_input_s = 2.0
    svc.settings.endpointing.media_timeout_s = 60.0
    line = SilentPeer([])
    events = published_by(svc)
    asyncio.run(asyncio.wait_for(CallSession(line, svc).run(), 20))
    said = [d["text"] for k, d in events if k == "bot_said"]
    assert svc.catalogue.prompt("no_input", "da") in said
    assert ("hand_off", "KONTAKTCENTER") in line.log  # silent twice: a person takes over


def test_a_turn_is_classified_once(services, speaker):
    """The pause's speculative decode classified the text and the turn classified it again."""
    svc = services("min skraldespand er ikke blevet tømt")
    svc.settings.asr.partials = False
    speech = speaker.speak("Min skraldespand er ikke blevet tømt i denne uge.")
    line = ScriptedLine([silence(0.5), speech])  # the pause comes at the line's own pace
    texts: list[str] = []
    classify = svc.classifier.classify
    svc.classifier.classify = lambda text, *a, **k: (texts.append(text), classify(text, *a, **k))[1]
    run(CallSession(line, svc))
    assert ("hand_off", "TMF") in line.log
    assert texts.count("min skraldespand er ikke blevet tømt") == 1
