"""Who may connect: each platform's authentication (telephony.auth) against its documented
examples, and every endpoint of the real app refusing what is not authenticated while
`voicebot call`'s platform side (the simulator) gets in as the platform would."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
import uuid

import pytest
import websockets
from fastapi.testclient import TestClient

from telephony import auth
from telephony.audiosocket import (
    KIND_UUID,
    TcpConnection,
    pack,
    parse_sources,
    serve,
    source_allowed,
)
from telephony.registry import WEBSOCKET_CHANNELS, client_headers
from tests.fakes import ServedApp, keypad_call, light_services

# Twilio's worked example ("Webhooks security"): auth token 12345.
TWILIO_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TWILIO_PARAMS = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Caller", "+12349013030"),
    ("Digits", "1234"),
    ("From", "+12349013030"),
    ("To", "+18005551212"),
]
# The AudioHook protocol documentation's signature example (also in its reference server's tests).
AH_SECRET = "TXlTdXBlclNlY3JldEtleVRlbGxOby0xITJAMyM0JDU="
AH_KEY = "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh"
AH_HEADERS = {
    "host": "audiohook.example.com", "audiohook-organization-id": "d7934305-0972-4844-938e-9060eef73d05",
    "audiohook-session-id": "30b0e395-84d3-4570-ac13-9a62d8f514c0",
    "audiohook-correlation-id": "e160e428-53e2-487c-977d-96989bf5c99d", "x-api-key": AH_KEY,
    "signature": "sig1=:NZBwyBHRRyRoeLqy1IzOa9VYBuI8TgMFt2GRDkDuJh4=:",
    "signature-input": 'sig1=("@request-target" "@authority" "audiohook-organization-id" "audiohook-session-id" '
                       '"audiohook-correlation-id" "x-api-key");keyid="SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh";'
                       'nonce="VGhpc0lzQVVuaXF1ZU5vbmNl";alg="hmac-sha256";created=1641013200;expires=3282026430',
}  # fmt: skip
AH_TARGET = "/api/v1/voicebiometrics/ws"


# == the schemes ==============================================================================
def test_twilio_signature_matches_twilios_documented_example():
    assert (
        auth.twilio_signature("12345", TWILIO_URL, TWILIO_PARAMS) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    )
    assert auth.verify_twilio(
        "12345", "0/KCTR6DLpKmkAf8muzZqo1nDgQ=", [TWILIO_URL], reversed(TWILIO_PARAMS)
    )
    tampered = [(k, "9" if k == "Digits" else v) for k, v in TWILIO_PARAMS]
    assert not auth.verify_twilio("12345", "0/KCTR6DLpKmkAf8muzZqo1nDgQ=", [TWILIO_URL], tampered)
    assert not auth.verify_twilio(
        "54321", "0/KCTR6DLpKmkAf8muzZqo1nDgQ=", [TWILIO_URL], TWILIO_PARAMS
    )
    assert not auth.verify_twilio("12345", None, [TWILIO_URL], TWILIO_PARAMS)


def test_twilio_signature_holds_with_or_without_the_default_port():
    signed = auth.twilio_signature("t" * 32, "wss://bot.example.dk/twilio")
    assert auth.verify_twilio("t" * 32, signed, ["wss://bot.example.dk:443/twilio"])
    assert not auth.verify_twilio("t" * 32, signed, ["wss://bot.example.dk:8443/twilio"])
    assert not auth.verify_twilio("t" * 32, signed, ["wss://evil.example/twilio"])


def test_audiohook_signature_matches_the_documented_example():
    auth.verify_audiohook_signature(
        AH_HEADERS, AH_TARGET, ["audiohook.example.com"], AH_KEY, AH_SECRET, now=1641013205
    )


@pytest.mark.parametrize("change, why", [
    ({"x-api-key": "b3RoZXIga2V5IG9mIHRoZSBvcmc="}, "does not match|keyid"),
    ({"audiohook-session-id": str(uuid.UUID(int=1))}, "does not match"),
    ({"signature": "sig1=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:"}, "does not match"),
    ({"signature": None, "signature-input": None}, "not signed"),
    ({"signature-input": AH_HEADERS["signature-input"].replace(' "x-api-key")', ")")}, "does not cover x-api-key"),
    ({"signature-input": AH_HEADERS["signature-input"].replace("hmac-sha256", "rsa-pss-sha512")}, "algorithm"),
    ({"signature-input": "sig1=(garbage"}, "malformed|structured"),
])  # fmt: skip
def test_audiohook_signature_refusals(change, why):
    headers = {k: v for k, v in {**AH_HEADERS, **change}.items() if v is not None}
    with pytest.raises(auth.SignatureError, match=why):
        auth.verify_audiohook_signature(
            headers, AH_TARGET, ["audiohook.example.com"], AH_KEY, AH_SECRET, now=1641013205
        )


def test_audiohook_signature_expires_and_cannot_be_replayed():
    check = auth.verify_audiohook_signature
    with pytest.raises(auth.SignatureError, match="too old"):
        check(
            AH_HEADERS, AH_TARGET, ["audiohook.example.com"], AH_KEY, AH_SECRET, now=1641013200 + 60
        )
    with pytest.raises(auth.SignatureError, match="future"):
        check(
            AH_HEADERS, AH_TARGET, ["audiohook.example.com"], AH_KEY, AH_SECRET, now=1641013200 - 60
        )
    with pytest.raises(auth.SignatureError, match="does not match"):  # another path or host
        check(
            AH_HEADERS, "/audiohook", ["audiohook.example.com"], AH_KEY, AH_SECRET, now=1641013205
        )
    nonces = auth.NonceCache()
    check(
        AH_HEADERS,
        AH_TARGET,
        ["audiohook.example.com"],
        AH_KEY,
        AH_SECRET,
        now=1641013205,
        nonces=nonces,
    )
    with pytest.raises(auth.SignatureError, match="replay"):
        check(
            AH_HEADERS,
            AH_TARGET,
            ["audiohook.example.com"],
            AH_KEY,
            AH_SECRET,
            now=1641013206,
            nonces=nonces,
        )


def test_the_platform_side_signs_what_the_server_checks():
    creds = auth.Credentials(
        "s" * 43,
        {"twilio": "t" * 43, "audiohook": "k" * 43},
        {"audiohook": base64.b64encode(b"x" * 32).decode()},
    )
    headers = client_headers(
        "audiohook",
        "ws://127.0.0.1:8080/audiohook",
        creds,
        {
            "Audiohook-Organization-Id": "o",
            "Audiohook-Session-Id": "s",
            "Audiohook-Correlation-Id": "c",
        },
    )
    lower = {k.lower(): v for k, v in headers.items()}
    auth.verify_audiohook_signature(
        lower, "/audiohook", ["127.0.0.1:8080"], "k" * 43, creds.audiohook_client_secret
    )
    twilio = client_headers("twilio", "ws://127.0.0.1:8080/twilio", creds)
    assert auth.verify_twilio(
        "t" * 43, twilio["X-Twilio-Signature"], ["ws://127.0.0.1:8080/twilio"]
    )
    assert client_headers("vonage", "ws://x/vonage", creds) == {
        "Authorization": "Bearer " + creds.token("vonage")
    }


def test_bearer_tokens_from_header_basic_or_query():
    basic = base64.b64encode(b"asterisk:T0k3n-from-websocket_client.conf").decode()
    assert auth.presented_token({"authorization": "Bearer abc"}, "") == "abc"
    assert (
        auth.presented_token({"authorization": f"Basic {basic}"}, "")
        == "T0k3n-from-websocket_client.conf"
    )
    assert auth.presented_token({}, "caller=%2B45&token=q%2Bw") == "q+w"
    assert auth.presented_token({"authorization": "Basic !!!"}, "") is None
    assert auth.presented_token({}, "token=") is None
    assert auth.strip_token("a=1&token=secret&b=2") == "a=1&b=2"


def test_audiosocket_sources():
    allowed = parse_sources(["127.0.0.1", "::1", "10.20.0.0/16"])
    assert source_allowed(("127.0.0.1", 5000), allowed) and source_allowed(
        ("::1", 5000, 0, 0), allowed
    )
    assert source_allowed(
        ("::ffff:10.20.3.4", 5000, 0, 0), allowed
    )  # an IPv4 peer on a dual-stack socket
    assert not source_allowed(("10.21.0.1", 5000), allowed) and not source_allowed(
        ("192.0.2.1", 1), allowed
    )
    assert not source_allowed(None, allowed) and not source_allowed(("not an ip", 1), allowed)


def test_audiosocket_from_another_address_is_closed_at_once():
    async def scenario():
        started = []

        async def run_channel(channel):
            started.append(channel)

        server = await serve("127.0.0.1", 0, run_channel, sources=["192.0.2.0/24"])
        port = server.sockets[0].getsockname()[1]
        conn = await TcpConnection.open(f"tcp://127.0.0.1:{port}")
        await conn.send(pack(KIND_UUID, uuid.uuid4().bytes))
        try:  # EOF, or a reset (the kernel's answer when unread bytes are discarded): no call
            received = await asyncio.wait_for(conn.reader.read(), 5)
        except ConnectionResetError:
            received = b""
        await conn.close()
        server.close()
        return started, received

    started, received = asyncio.run(scenario())
    assert started == [] and received == b""


# == the real app =============================================================================
@pytest.fixture(scope="module")
def served(tmp_path_factory, catalogue, classifier):
    with ServedApp(light_services(tmp_path_factory.mktemp("auth"), catalogue, classifier)) as app:
        yield app


async def _upgrade_status(url: str, headers: dict | None = None) -> int:
    try:
        async with websockets.connect(url, additional_headers=headers, open_timeout=5):
            return 101
    except websockets.InvalidStatus as exc:
        return exc.response.status_code


@pytest.mark.parametrize("protocol", ["twilio", "vonage", "telnyx", "asterisk", "raw"])
def test_media_endpoints_refuse_unauthenticated_upgrades(served, protocol):
    url = served.media_url(protocol)
    wrong = {
        "Authorization": "Bearer not-the-token-at-all",
        "X-Twilio-Signature": "AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    }
    assert asyncio.run(_upgrade_status(url)) == 401
    assert asyncio.run(_upgrade_status(url + "?token=not-the-token-at-all", wrong)) == 401


@pytest.mark.parametrize("protocol", ["vonage", "telnyx", "asterisk", "raw"])
def test_bearer_platforms_may_put_the_token_in_the_url(served, protocol):
    token = served.credentials.token(protocol)
    assert asyncio.run(_upgrade_status(f"{served.media_url(protocol)}?token={token}")) == 101
    basic = base64.b64encode(f"asterisk:{token}".encode()).decode()
    assert (
        asyncio.run(
            _upgrade_status(served.media_url(protocol), {"Authorization": f"Basic {basic}"})
        )
        == 101
    )


def test_twilio_signature_is_bound_to_the_url(served):
    url = served.media_url("twilio")
    other = auth.twilio_signature(
        served.credentials.twilio_auth_token, url.replace("/twilio", "/vonage")
    )
    assert asyncio.run(_upgrade_status(url, {"X-Twilio-Signature": other})) == 401
    good = auth.twilio_signature(served.credentials.twilio_auth_token, url)
    assert asyncio.run(_upgrade_status(url, {"X-Twilio-Signature": good})) == 101


def test_audiohook_with_a_wrong_key_is_disconnected_unauthorized(served):
    from telephony.audiohook import AudioHookPlatform

    call, result = keypad_call(served, "audiohook", "2", api_key="a-key-genesys-never-had")
    assert result.turns == [] and served.services.store.get(call.call_id) is None
    assert not any(e["type"] == "call_started" for e in result.events)
    assert AudioHookPlatform.api_key is None  # keypad_call restored the class


def test_audiohook_signature_is_required_once_a_client_secret_is_set(
    tmp_path, catalogue, classifier
):
    from telephony.audiohook import AudioHookPlatform
    from telephony.simulator import SimulatedCall

    secret = base64.b64encode(b"genesys-client-secret-32-bytes!!").decode()
    services = light_services(tmp_path, catalogue, classifier, audiosocket_enabled=False)
    services.settings.security.audiohook_client_secret = secret
    with ServedApp(services) as served:
        call, result = keypad_call(
            served, "audiohook", "2"
        )  # signs: the credentials carry the secret
        assert result.turns[0].forvaltning == "TMF"
        unsigned = dataclasses.replace(served.credentials, client_secrets={})
        call = SimulatedCall(
            served.media_url("audiohook"),
            None,
            protocol="audiohook",
            speed=4.0,
            timeout_s=10,
            credentials=unsigned,
        )
        call.events_url = served.events_url(call.call_id)
        refused = asyncio.run(asyncio.wait_for(call.run([], digits="2"), 15))
        assert refused.turns == [] and services.store.get(call.call_id) is None
        assert AudioHookPlatform.headers(
            call.call_id
        )  # the headers themselves came from the platform


def test_the_event_stream_needs_the_secret(served):
    async def status(token: str) -> int | str:
        try:
            async with websockets.connect(
                served.events_url("CA1").replace(served.secret, token)
            ) as ws:
                await asyncio.wait_for(ws.recv(), 2)
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else "closed"
        except websockets.InvalidStatus as exc:
            return exc.response.status_code
        except TimeoutError:
            return "open"
        return "message"

    assert asyncio.run(status("wrong")) == 403  # closed before the accept: HTTP 403
    assert asyncio.run(status(served.secret)) == "open"
    assert asyncio.run(status(served.credentials.softphone_token)) == 403  # not a softphone call


def test_the_softphone_token_opens_raw_and_its_own_calls_events_only(served):
    token = served.credentials.softphone_token

    async def scenario():
        async with websockets.connect(f"{served.media_url('raw')}?token={token}") as ws:
            await ws.send(json.dumps({"type": "start", "call_id": "web-own-call"}))
            await asyncio.wait_for(ws.recv(), 5)  # the greeting: the call has started
            events = f"ws://127.0.0.1:{served.port}/calls/web-own-call/events?token={token}"
            async with websockets.connect(events) as follow:
                await ws.send(json.dumps({"type": "dtmf", "digit": "2"}))
                kinds = set()
                while "routed" not in kinds:
                    kinds.add(json.loads(await asyncio.wait_for(follow.recv(), 5))["type"])
        other = f"ws://127.0.0.1:{served.port}/calls/CA-someone-else/events?token={token}"
        return kinds, await _upgrade_status(other)

    kinds, other = asyncio.run(scenario())
    assert {"dtmf", "decision", "routed"} <= kinds
    assert other == 403
    assert served.services.store.get("web-own-call").forvaltning == "TMF"


def test_queue_api_needs_the_secret(served):
    import urllib.error
    import urllib.request

    base = f"http://127.0.0.1:{served.port}/api/queues"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(base, timeout=5)
    assert refused.value.code == 401
    request = urllib.request.Request(base, headers={"Authorization": f"Bearer {served.secret}"})
    with urllib.request.urlopen(request, timeout=5) as r:
        assert "waiting" in json.loads(r.read())


def test_twilio_webhooks_need_their_signature(tmp_path, catalogue, classifier):
    from voicebot.app import create_app

    services = light_services(tmp_path, catalogue, classifier, audiosocket_enabled=False)
    services.settings.public_url = "https://bot.example.dk"
    app = create_app(services.settings, services=services)
    form = {"CallSid": "CA42", "From": "+4512345678", "To": "+4533663366"}
    with TestClient(app, base_url="http://10.0.0.5:8080") as client:
        token = app.state.credentials.twilio_auth_token
        signed = auth.twilio_signature(token, "https://bot.example.dk/twilio/voice", form.items())
        assert client.post("/twilio/voice", data=form).status_code == 403
        assert (
            client.post(
                "/twilio/voice", data=form, headers={"X-Twilio-Signature": signed + "x"}
            ).status_code
            == 403
        )
        tampered = {**form, "From": "+4599999999"}
        assert (
            client.post(
                "/twilio/voice", data=tampered, headers={"X-Twilio-Signature": signed}
            ).status_code
            == 403
        )
        ok = client.post("/twilio/voice", data=form, headers={"X-Twilio-Signature": signed})
        assert ok.status_code == 200 and "wss://bot.example.dk/twilio" in ok.text
        action = auth.twilio_signature(token, "https://bot.example.dk/twilio/action", form.items())
        assert client.post("/twilio/action", data=form).status_code == 403
        assert (
            client.post(
                "/twilio/action", data=form, headers={"X-Twilio-Signature": action}
            ).status_code
            == 200
        )


def test_every_platform_credential_is_derived_from_the_generated_secret_for_it_alone(tmp_path):
    from voicebot.config import load_settings
    from voicebot.secrets import load_credentials

    creds = load_credentials(load_settings(None, data_dir=tmp_path))
    secret = (tmp_path / "secret").read_text().strip()
    assert len(secret) >= 40 and (tmp_path / "secret").stat().st_mode & 0o777 == 0o600
    # issue 13 #10: one distinct credential per platform and purpose, none of them the master secret
    names = sorted(WEBSOCKET_CHANNELS)
    own = [creds.token(p) for p in names]
    assert (
        creds.twilio_auth_token
        == creds.token("twilio")
        == auth.derive_token(secret, "media:twilio")
    )
    assert creds.audiohook_api_key == creds.token("audiohook")
    assert len({*own, secret, creds.softphone_token}) == len(names) + 2
    assert (
        load_credentials(load_settings(None, data_dir=tmp_path)) == creds
    )  # `voicebot call` derives the same
    configured = load_credentials(
        load_settings(
            None,
            data_dir=tmp_path,
            security={
                "twilio_auth_token": "twilio-auth-token-0123456789",
                "media_tokens": {"vonage": "vonage-token-0123456789"},
            },
        )
    )
    assert configured.twilio_auth_token == "twilio-auth-token-0123456789"
    assert configured.token("vonage") == "vonage-token-0123456789" and configured.token(
        "raw"
    ) == creds.token("raw")


@pytest.mark.parametrize("protocol", ["twilio", "vonage", "telnyx", "asterisk", "raw"])
def test_a_platform_credential_opens_its_own_endpoint_only(served, protocol):
    """issue 13 #10: a leaked vendor URL with ?token= reads no other platform, no call's events, no queue."""
    import urllib.error
    import urllib.request

    token = served.credentials.token(protocol)
    for other in ["twilio", "vonage", "telnyx", "asterisk", "raw"]:
        if other != protocol:
            status = asyncio.run(
                _upgrade_status(
                    f"{served.media_url(other)}?token={token}", {"Authorization": f"Bearer {token}"}
                )
            )
            assert status == 401, other
    events = f"ws://127.0.0.1:{served.port}/calls/*/events?token={token}"
    assert asyncio.run(_upgrade_status(events)) == 403
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(
            f"http://127.0.0.1:{served.port}/api/queues?token={token}", timeout=5
        )
    assert refused.value.code == 401
    # ... and the master secret opens no media endpoint
    assert (
        asyncio.run(_upgrade_status(f"{served.media_url('vonage')}?token={served.secret}")) == 401
    )


def test_signature_time_window_is_checked_against_now():
    creds = auth.Credentials(
        "s" * 43,
        {"twilio": "t" * 43, "audiohook": "k" * 43},
        {"audiohook": base64.b64encode(b"y" * 32).decode()},
    )
    headers = {
        "Audiohook-Organization-Id": "o",
        "Audiohook-Session-Id": "s",
        "Audiohook-Correlation-Id": "c",
    }
    signed = client_headers("audiohook", "ws://h:1/audiohook", creds, headers)
    lower = {k.lower(): v for k, v in signed.items()}
    auth.verify_audiohook_signature(
        lower, "/audiohook", ["h:1"], "k" * 43, creds.audiohook_client_secret, now=time.time() + 5
    )
