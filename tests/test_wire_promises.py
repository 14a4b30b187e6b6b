"""Promises on the wire: Twilio's <Connect action> puts a routed caller in the queue the bot
routed it to (by name), and a WebSocket peer that stops reading loses its socket and the
buffered audio with it (voicebot/wsprotocol.py), not only its call."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from tests.fakes import ServedApp, ToneSpeaker, light_services
from tests.test_bad_input import stuck_raw_client
from tests.test_gateway_hardening import _post, _twilio_app
from voicebot.queues import RoutedCall


# == /twilio/action: <Enqueue> with the routed queue's name ===================================
def test_the_connect_action_enqueues_each_caller_in_its_routed_forvaltnings_queue(
    tmp_path, catalogue, classifier
):
    services, app = _twilio_app(tmp_path, catalogue, classifier, "https://bot.example.dk")
    routed = {"CAwaste": ("TMF", "waste", "da"), "CAcare": ("SUF", "elder_care", "en")}
    for call_id, (forvaltning, intent, language) in routed.items():
        services.store.enqueue(
            RoutedCall(
                call_id=call_id, forvaltning=forvaltning, intent=intent, confidence=0.9,
                transcript="", caller=None, platform="twilio", language=language,
            )
        )  # fmt: skip
    base = "https://bot.example.dk"
    with TestClient(app, base_url="http://10.0.0.5:8080") as client:
        answers = {
            call_id: _post(client, app, "/twilio/action", base, {"CallSid": call_id})
            for call_id in routed
        }
    # The platform's queues carry the first language's names, whatever the caller spoke.
    assert "<Enqueue>Teknik og Miljø</Enqueue>" in answers["CAwaste"]
    assert "<Enqueue>Visitationen</Enqueue>" in answers["CAcare"]


# == the bounded WebSocket send ===============================================================
def test_a_peer_that_never_reads_loses_its_socket_not_only_its_call(
    tmp_path, catalogue, classifier
):
    """The adapters' own send timeout ends the call; the server's protocol must also abort the
    transport, else the socket and megabytes of unsent audio stay until the peer reads."""
    services = light_services(tmp_path, catalogue, classifier, audiosocket_enabled=False)
    services.settings.security.send_timeout_s = 1.0
    services.speaker = speaker = ToneSpeaker(0.2, first_seconds=200)  # 6.4 MB greeting
    with ServedApp(services) as served:
        stuck = stuck_raw_client(served.port, served.credentials.token("raw"))
        try:
            connections = served.server.server_state.connections
            deadline = time.monotonic() + 30
            while (speaker.spoken == 0 or services.active_calls) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert speaker.spoken and services.active_calls == 0  # the stuck call was ended
            while connections and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not connections  # ... and its socket is gone, though the peer never read
        finally:
            stuck.close()
