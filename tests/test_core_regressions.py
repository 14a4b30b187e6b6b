"""Small plausible bugs in core functions that the suite once let through (issue 19): each test
here fails when its bug is planted (see README, "Testing")."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from voicebot.app import create_app
from voicebot.asr import LocalAgreement
from voicebot.config import DialogueSettings, EndpointingSettings
from voicebot.dialogue import DialoguePolicy, State
from voicebot.understanding import Understanding
from voicebot.vad import WINDOW, WINDOW_MS, Endpointer, TurnEvent

from .console_helpers import add_agents, make_services, make_settings, post_login, routed_call
from .console_helpers import route as route_call


# -- dialogue: a denial is never read as a yes -------------------------------------------
@pytest.fixture
def policy(catalogue, classifier) -> DialoguePolicy:
    return DialoguePolicy(catalogue, classifier, DialogueSettings(accept=0.6, confirm=0.35))


@pytest.mark.parametrize("denial", ["det er det ikke", "det gør det ikke", "nej tak"])
def test_a_denial_that_starts_like_a_yes_does_not_act_on_the_errand(policy, denial):
    asked = policy.on_utterance("noget med min bil", Understanding("parking_permit", 0.45, [], []))
    assert asked.action == "confirm" and policy.state is State.CONFIRMING
    reply = policy.on_utterance(denial, Understanding("out_of_scope", 0.3, [], []))
    assert reply.action == "rephrase" and not reply.hand_off
    assert reply.forvaltning is None and policy.state is State.LISTENING


# -- LocalAgreement: only a common prefix is committed ------------------------------------
def test_local_agreement_stops_at_the_first_disagreement_and_commits_later_on():
    la = LocalAgreement()
    la.update(["jeg", "skal", "have", "et", "pas"])
    # "skal" against "vil": only "jeg" is shared as a prefix; "have et pas" agree but come after.
    assert la.update(["jeg", "vil", "have", "et", "pas"]) == ["jeg"]
    assert la.committed == ["jeg"] and la.tentative == ["vil", "have", "et", "pas"]
    assert la.update(["jeg", "vil", "have", "et", "nyt"]) == ["vil", "have", "et"]
    assert la.committed == ["jeg", "vil", "have", "et"]


# -- Endpointer: WHEN the end fires, not only where the turn ends -------------------------
@pytest.mark.parametrize("silence_ms", [4 * WINDOW_MS, 5 * WINDOW_MS, 320])
def test_the_end_of_turn_fires_on_the_window_where_the_silence_reaches_silence_ms(silence_ms):
    ep = Endpointer(EndpointingSettings(silence_ms=silence_ms, min_speech_ms=64))
    started = [e for p in [0.9] * 4 for e in ep.update(np.array([p]))]
    assert [e.event for e in started] == [TurnEvent.SPEECH_START]
    end_window = silence_ms // WINDOW_MS
    for n in range(1, end_window):
        assert ep.update(np.array([0.05])) == [], f"ended after {n} silent windows"
        assert ep.silence_ms == n * WINDOW_MS
    (end,) = ep.update(np.array([0.05]))
    assert end.event is TurnEvent.SPEECH_END and end.sample == 4 * WINDOW
    assert not ep.in_speech and ep.silence_ms == 0


def test_the_end_fires_in_the_same_update_that_completes_the_silence():
    ep = Endpointer(EndpointingSettings(silence_ms=320, min_speech_ms=64))
    probs = np.array([0.9] * 4 + [0.05] * 10)  # exactly 320 ms of silence
    assert [e.event for e in ep.update(probs)] == [TurnEvent.SPEECH_START, TurnEvent.SPEECH_END]


# -- console: a claim outside the agent's forvaltninger is refused as such ---------------
@pytest.mark.usefixtures("fast_hashing")
@pytest.mark.parametrize("verb", ["claim", "complete", "release"])
def test_another_forvaltnings_agent_is_refused_403_and_the_record_is_untouched(
    tmp_path, catalogue, verb
):
    settings = make_settings(tmp_path)
    add_agents(settings)
    services = make_services(settings, catalogue)
    app = create_app(settings, services)
    with TestClient(app) as anna, TestClient(app) as bo:
        tokens = {}
        for client, name in ((anna, "anna"), (bo, "bo")):
            assert post_login(client, name).status_code == 303
            tokens[name] = {"X-CSRF-Token": client.get("/console/api/me").json()["csrf"]}
        anna.portal.call(route_call, services, routed_call("CA_tmf", "TMF"))
        if verb != "claim":  # complete/release: anna holds the call
            assert anna.post("/console/api/calls/CA_tmf/claim", headers=tokens["anna"]).is_success
        before = services.store.get("CA_tmf")
        published: list[tuple[str, str]] = []
        real_publish = services.events.publish
        services.events.publish = lambda cid, kind, **kw: (
            published.append((cid, kind)),
            real_publish(cid, kind, **kw),
        )
        refused = bo.post(f"/console/api/calls/CA_tmf/{verb}", headers=tokens["bo"])
        assert refused.status_code == 403
        assert refused.json()["detail"] == "Du har ikke adgang til denne forvaltnings kø."
        after = services.store.get("CA_tmf")
        assert (after.status, after.claimed_by) == (before.status, before.claimed_by)
        assert published == []  # no console was told of a change
