"""Every platform end to end: the real FastAPI app (light services: no Whisper, prompts are
short tones) under uvicorn on a free port, called by telephony.simulator speaking the
platform's own protocol over a real socket. The caller hears the greeting, presses 2, and
the bot writes the queue entry and hands the call on the platform's way."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from telephony.registry import PLATFORM_CLIENTS, WEBSOCKET_CHANNELS
from tests.fakes import ServedApp, keypad_call, light_services

PROTOCOLS = sorted(PLATFORM_CLIENTS)


@pytest.fixture(scope="module")
def served(tmp_path_factory, catalogue, classifier):
    with ServedApp(
        light_services(tmp_path_factory.mktemp("loopback"), catalogue, classifier)
    ) as app:
        yield app


def test_every_platform_client_has_an_endpoint():
    assert set(PLATFORM_CLIENTS) == set(WEBSOCKET_CHANNELS) | {"audiosocket"}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_keypad_call_is_routed_and_handed_off(served, protocol):
    call, result = keypad_call(served, protocol, "2")
    (turn,) = result.turns
    assert (turn.action, turn.forvaltning) == ("route", "TMF")
    assert turn.latency_ms["speech_end_to_decision"] is not None
    routed = served.services.store.get(
        call.call_id
    )  # the queue entry, under the platform's call id
    assert routed is not None and routed.forvaltning == "TMF" and routed.platform == protocol
    assert len(result.reply_audio) > 0  # the greeting and the route prompt reached the caller
    kinds = [e["type"] for e in result.events]
    assert kinds.index("dtmf") < kinds.index("decision") < kinds.index("routed")


def test_audiohook_hand_off_carries_output_variables(served):
    call, result = keypad_call(served, "audiohook", "3")
    assert result.turns[0].forvaltning == "SUF"
    assert ("control", "closed") in result.platform_events  # disconnect → close → closed


def test_listen_only_audiohook_listens_until_closed_and_assists(tmp_path, catalogue, classifier):
    """AudioHook Monitor (playback not configured): the bot never disconnects or routes on its
    own; what it understands reaches the agent as agent_assist, and Genesys's close ends it."""
    services = light_services(
        tmp_path, catalogue, classifier, audiosocket_enabled=False, audiohook_playback=False
    )
    with ServedApp(services) as served:
        call, result = keypad_call(served, "audiohook", "2", audio_connector=False)
        assert result.turns == [] and not result.closed_by_bot  # no decision, no disconnect
        assert len(result.reply_audio) == 0  # AudioHook Monitor: the bot cannot be heard
        assists = [e for e in result.events if e["type"] == "agent_assist"]
        assert (
            assists
            and assists[0]["forvaltning"] == "TMF"
            and assists[0]["intent"] == "parking_permit"
        )
        assert served.services.store.get(call.call_id) is None


def test_json_chan_websocket_and_in_order_telnyx(served):
    _, result = keypad_call(served, "asterisk", "4", json_control=True)
    assert result.turns[0].forvaltning == "BUF"
    _, result = keypad_call(served, "telnyx", "5", swap_every=0)
    assert result.turns[0].forvaltning == "BIF"


def test_softphone_page_is_served_in_danish(tmp_path, catalogue, classifier):
    from voicebot.app import create_app

    services = light_services(tmp_path, catalogue, classifier, audiosocket_enabled=False)
    app = create_app(services.settings, services=services)
    local = {"base_url": "http://127.0.0.1:8080", "client": ("127.0.0.1", 50000)}
    with TestClient(app, **local) as client:
        page = client.get("/softphone")
        proxied = client.get("/softphone", headers={"X-Forwarded-For": "203.0.113.9"})
        rebound = client.get("/softphone", headers={"Host": "evil.example"})
        token = app.state.credentials.softphone_token
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'lang="da"' in page.text and "/raw" in page.text and "Læg på" in page.text
    # From this machine the page carries a softphone-only token; never cached, never framed.
    assert f'content="{token}"' in page.text and token != app.state.secret
    assert page.headers["cache-control"] == "no-store" and page.headers["x-frame-options"] == "DENY"
    # Through a proxy or under another host name the page asks for the token instead.
    for other in (proxied, rebound):
        assert other.status_code == 200 and token not in other.text and 'content=""' in other.text
    with TestClient(app, base_url="http://bot.example", client=("198.51.100.7", 4000)) as client:
        remote = client.get("/softphone")
    assert token not in remote.text and 'content=""' in remote.text
