"""Issue 13, the gateway's part: call ids that cannot alias or steal another call, tokens that
open only what they were made for, refusals that are HTTP answers and WARNINGs, TwiML that
never offers ws:// to a public host, <Enqueue> only for a caller still waiting, no API pages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import pytest
import websockets
from fastapi.testclient import TestClient

from telephony import auth
from tests.fakes import ServedApp, keypad_call, light_services
from voicebot.events import EventBus


@pytest.fixture(scope="module")
def served(tmp_path_factory, catalogue, classifier):
    with ServedApp(
        light_services(tmp_path_factory.mktemp("hardening"), catalogue, classifier)
    ) as app:
        yield app


async def _upgrade_status(url: str, headers: dict | None = None) -> int:
    try:
        async with websockets.connect(url, additional_headers=headers, open_timeout=5):
            return 101
    except websockets.InvalidStatus as exc:
        return exc.response.status_code


async def _raw_call(served: ServedApp, token: str, call_id: str) -> tuple[str, int | None]:
    """Start a /raw call with `call_id`: ("greeted", None) if the bot spoke, else ("closed", code)."""
    async with websockets.connect(f"{served.media_url('raw')}?token={token}") as ws:
        await ws.send(json.dumps({"type": "start", "call_id": call_id}))
        try:
            message = await asyncio.wait_for(ws.recv(), 5)
        except websockets.ConnectionClosed as exc:
            return "closed", exc.rcvd.code if exc.rcvd else None
        if isinstance(message, bytes):
            return "greeted", None
        reply = json.loads(message)
        if reply.get("type") == "hangup":
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            return "closed", closed.value.rcvd.code if closed.value.rcvd else None
        return "greeted", None


# == #1: call ids ==============================================================================
def test_the_softphone_cannot_start_a_wildcard_call_nor_read_every_call(served):
    token = served.credentials.softphone_token
    outcome = asyncio.run(_raw_call(served, token, "*"))
    assert outcome == ("closed", 1008)
    events = f"ws://127.0.0.1:{served.port}/calls/%2A/events?token={token}"
    assert asyncio.run(_upgrade_status(events)) == 403


@pytest.mark.parametrize("call_id", ["a/b", "has space", "x" * 129, "%2A", "..", ""])
def test_call_ids_outside_the_charset_are_refused(served, call_id):
    if call_id == "":  # an empty id means "make one": the bot names the call
        assert (
            asyncio.run(_raw_call(served, served.credentials.token("raw"), call_id))[0] == "greeted"
        )
    else:
        assert asyncio.run(_raw_call(served, served.credentials.token("raw"), call_id)) == (
            "closed",
            1008,
        )


def test_a_live_call_id_cannot_be_taken_by_a_second_call(served):
    token = served.credentials.token("raw")

    async def scenario():
        async with websockets.connect(f"{served.media_url('raw')}?token={token}") as first:
            await first.send(json.dumps({"type": "start", "call_id": "CAlive0001"}))
            await asyncio.wait_for(first.recv(), 5)  # greeted: live
            second = await _raw_call(served, token, "CAlive0001")
            await first.send(json.dumps({"type": "dtmf", "digit": "2"}))  # the first call goes on
            while True:
                message = await asyncio.wait_for(first.recv(), 5)
                reply = json.loads(message) if isinstance(message, str) else {}
                if reply.get("type") == "mark":  # played at once
                    with contextlib.suppress(websockets.ConnectionClosed):
                        await first.send(message)
                if reply.get("type") == "hangup":
                    return second, reply

    second, ended = asyncio.run(scenario())
    assert second == ("closed", 1008)
    assert ended["reason"] == "handoff" and ended["forvaltning"] == "TMF"
    assert served.services.store.get("CAlive0001").forvaltning == "TMF"


def test_a_recorded_call_id_is_refused_and_its_record_kept(served):
    call, result = keypad_call(served, "twilio", "2")  # a Twilio call, routed to TMF
    assert result.turns[0].forvaltning == "TMF"
    token = served.credentials.token("raw")

    async def steal():
        outcome = await _raw_call(served, token, call.call_id)
        return outcome

    assert asyncio.run(steal()) == ("closed", 1008)
    record = served.services.store.get(call.call_id)
    assert record.forvaltning == "TMF" and record.platform == "twilio"


def test_the_softphone_follows_its_own_call_only_while_it_lasts(served):
    token = served.credentials.softphone_token

    async def scenario():
        async with websockets.connect(f"{served.media_url('raw')}?token={token}") as ws:
            await ws.send(json.dumps({"type": "start", "call_id": "web-ends-0001"}))
            await asyncio.wait_for(ws.recv(), 5)
            url = f"ws://127.0.0.1:{served.port}/calls/web-ends-0001/events?token={token}"
            async with websockets.connect(url) as follow:
                await ws.send(json.dumps({"type": "hangup"}))
                kinds = []
                with pytest.raises(websockets.ConnectionClosed):
                    while True:  # the stream ends with the call, it does not go on
                        kinds.append(json.loads(await asyncio.wait_for(follow.recv(), 5))["type"])
        return kinds, await _upgrade_status(url)

    kinds, after = asyncio.run(scenario())
    assert kinds[-1] == "call_ended"
    assert after == 403


def test_no_call_id_aliases_the_all_calls_subscription():
    async def scenario():
        bus = EventBus()
        star = bus.subscribe("*")
        waiter = asyncio.ensure_future(anext(star))
        await asyncio.sleep(0)
        bus.publish("CA-someone-else", "transcript", text="private")
        await asyncio.sleep(0.05)
        got = waiter.done()
        waiter.cancel()
        return got

    assert asyncio.run(scenario()) is False


# == #15: refusals =============================================================================
@pytest.mark.parametrize("protocol", ["twilio", "vonage", "raw"])
def test_a_refused_upgrade_is_an_http_401_and_a_warning_naming_platform_and_cause(
    served, protocol, caplog
):
    with caplog.at_level(logging.INFO):
        assert (
            asyncio.run(_upgrade_status(served.media_url(protocol) + "?token=wrong-token-wrong"))
            == 401
        )
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and protocol in r.getMessage()
    ]
    assert warnings and ("missing or wrong" in warnings[0].getMessage())
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_audiohook_refusals_are_counted_as_auth_failures(served):
    from prometheus_client import REGISTRY

    def failures() -> float:
        return (
            REGISTRY.get_sample_value("voicebot_auth_failures_total", {"endpoint": "audiohook"})
            or 0.0
        )

    before = failures()
    call, result = keypad_call(served, "audiohook", "2", api_key="a-key-genesys-never-had")
    assert result.turns == []
    assert failures() == before + 1


# == #10: the master secret and the platform credentials =======================================
def test_the_master_secret_opens_every_calls_events_and_the_queue_api(served):
    import urllib.request

    assert (
        asyncio.run(
            _upgrade_status(f"ws://127.0.0.1:{served.port}/calls/*/events?token={served.secret}")
        )
        == 101
    )
    with urllib.request.urlopen(
        f"http://127.0.0.1:{served.port}/api/queues?token={served.secret}", timeout=5
    ) as r:
        assert r.status == 200


# == #14 and #13: Twilio's webhooks =============================================================
def _twilio_app(tmp_path, catalogue, classifier, public_url: str | None = None):
    from voicebot.app import create_app

    services = light_services(tmp_path, catalogue, classifier, audiosocket_enabled=False)
    services.settings.public_url = public_url
    return services, create_app(services.settings, services=services)


def _post(client: TestClient, app, path: str, base: str, form: dict) -> str:
    signature = auth.twilio_signature(
        app.state.credentials.twilio_auth_token, base + path, form.items()
    )
    response = client.post(path, data=form, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200
    return response.text


def test_twiml_offers_wss_to_a_public_host_even_without_public_url(
    tmp_path, catalogue, classifier, caplog
):
    services, app = _twilio_app(tmp_path, catalogue, classifier)
    form = {"CallSid": "CA77", "From": "+4512345678"}
    with (
        caplog.at_level(logging.WARNING),
        TestClient(app, base_url="http://bot.example.dk") as client,
    ):
        public = _post(client, app, "/twilio/voice", "http://bot.example.dk", form)
    assert 'url="wss://bot.example.dk/twilio"' in public and "ws://" not in public
    assert any(
        "public_url" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records
    )
    with TestClient(
        app, base_url="http://127.0.0.1:8080"
    ) as client:  # a local trial may stay plain
        local = _post(client, app, "/twilio/voice", "http://127.0.0.1:8080", form)
    assert 'url="ws://127.0.0.1:8080/twilio"' in local


def test_the_connect_action_enqueues_only_a_caller_still_waiting(tmp_path, catalogue, classifier):
    from voicebot.queues import RoutedCall

    services, app = _twilio_app(tmp_path, catalogue, classifier, "https://bot.example.dk")
    for call_id in ("CAwaiting", "CAgone"):
        services.store.enqueue(
            RoutedCall(
                call_id=call_id,
                forvaltning="TMF",
                intent="waste",
                confidence=0.9,
                transcript="",
                caller=None,
                platform="twilio",
            )
        )
    assert services.store.abandon("CAgone")
    base = "https://bot.example.dk"
    with TestClient(app, base_url="http://10.0.0.5:8080") as client:
        waiting = _post(client, app, "/twilio/action", base, {"CallSid": "CAwaiting"})
        gone = _post(client, app, "/twilio/action", base, {"CallSid": "CAgone"})
        missing = _post(client, app, "/twilio/action", base, {"CallSid": "CAnever"})
    assert "<Enqueue>" in waiting
    for answer in (gone, missing):
        assert "<Enqueue>" not in answer and "<Hangup/>" in answer


# == #16: the API pages ========================================================================
def test_the_api_schema_and_its_pages_are_not_served(tmp_path, catalogue, classifier):
    services, app = _twilio_app(tmp_path, catalogue, classifier)
    with TestClient(app) as client:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
            assert client.get(path).status_code == 404, path
