"""Promises made in README and SECURITY.md that no test held (issue 19): each test here fails
when its behaviour is removed from the code (README, "Testing", lists the bug planted for each)."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time

import pytest
from argon2 import PasswordHasher, Type
from fastapi.testclient import TestClient

from telephony import auth
from telephony.audiosocket import AudioSocketChannel
from voicebot import accounts, console, secrets
from voicebot.accounts import SESSION_MAX_S, AgentStore, LoginLimiter, agents_path
from voicebot.app import create_app
from voicebot.config import SecuritySettings
from voicebot.listening import BARGE_IN_MS_ECHO
from voicebot.queues import RedisQueueStore, RoutedCall, SqliteQueueStore, maintenance
from voicebot.queues.forget import forget_call

from .console_helpers import (
    PASSWORD,
    add_agents,
    login_csrf,
    make_services,
    make_settings,
    post_login,
    route,
    routed_call,
)
from .fakes import light_services
from .test_audiohook import HEADERS, OPEN_PARAMS, channel, sent
from .test_auth import AH_KEY, AH_SECRET, AH_TARGET


# == AudioHook ================================================================================
def test_audiohook_open_with_another_organization_than_the_header_is_refused():
    async def scenario(organization: str) -> tuple[list, list[dict]]:
        ch, genesys = channel()
        params = {**OPEN_PARAMS, "organizationId": organization}
        ch.ws.feed(genesys.msg("open", params), genesys.msg("close", {"reason": "end"}), None)
        return [e async for e in ch.events()], sent(ch)

    events, messages = asyncio.run(scenario("00000000-0000-4000-8000-000000000000"))
    assert events == [] and messages[0]["type"] == "disconnect"
    assert messages[0]["parameters"]["reason"] == "unauthorized"
    # The same id in other letter case is the same organisation.
    events, messages = asyncio.run(scenario(HEADERS["audiohook-organization-id"].upper()))
    assert events and messages[0]["type"] == "opened"


def _signed(now: int, nonce: str | None = None, **overrides: str) -> dict[str, str]:
    headers = {
        "host": "bot.example.dk",
        "audiohook-organization-id": HEADERS["audiohook-organization-id"],
        "audiohook-session-id": HEADERS["audiohook-session-id"],
        "audiohook-correlation-id": HEADERS["audiohook-correlation-id"],
        "x-api-key": AH_KEY,
    }
    signed = auth.sign_audiohook(
        headers, AH_TARGET, "bot.example.dk", AH_KEY, AH_SECRET, now=now, nonce=nonce
    )
    return {**headers, **{k.lower(): v for k, v in signed.items()}, **overrides}


def _check(headers: dict[str, str], now: float) -> None:
    auth.verify_audiohook_signature(headers, AH_TARGET, ["bot.example.dk"], AH_KEY, AH_SECRET, now)


def test_an_audiohook_signature_past_its_expires_time_is_refused():
    now = 1_700_000_000
    headers = _signed(now)
    _check(headers, now + 1)
    # "expires" a second ago (beyond the clock skew), though "created" is still recent.
    expired = headers["signature-input"].replace(
        f"expires={now + int(auth.MAX_AGE_S)}", f"expires={now - int(auth.CLOCK_SKEW_S) - 1}"
    )
    assert expired != headers["signature-input"]
    resigned = _resign(headers, expired)
    with pytest.raises(auth.SignatureError, match="expired"):
        _check(resigned, now + 1)


def _resign(headers: dict[str, str], signature_input: str) -> dict[str, str]:
    """The same request with changed signature parameters, correctly signed over them."""
    params = dict(re.findall(r';(\w+)=("[^"]*"|\d+)', signature_input))
    values = {k: (v.strip('"') if v.startswith('"') else int(v)) for k, v in params.items()}
    base = auth.signature_base(
        list(auth.AUDIOHOOK_COMPONENTS),
        list(values.items()),
        {
            "@request-target": AH_TARGET,
            "@authority": "bot.example.dk",
            **{c: headers[c] for c in auth.AUDIOHOOK_COMPONENTS if not c.startswith("@")},
        },
    )
    import base64
    import hashlib
    import hmac

    mac = hmac.new(base64.b64decode(AH_SECRET), base.encode(), hashlib.sha256).digest()
    return {
        **headers,
        "signature-input": signature_input,
        "signature": f"sig1=:{base64.b64encode(mac).decode()}:",
    }


def test_an_audiohook_signature_with_a_short_nonce_is_refused():
    now = 1_700_000_000
    _check(_signed(now, nonce="n" * auth.MIN_NONCE_CHARS), now)
    with pytest.raises(auth.SignatureError, match="nonce"):
        _check(_signed(now, nonce="n" * (auth.MIN_NONCE_CHARS - 1)), now)
    assert auth.MIN_NONCE_CHARS >= 22  # the reference server's minimum


# == secrets =================================================================================
def test_a_stored_secret_shorter_than_16_characters_stops_the_start(tmp_path):
    (tmp_path / "secret").write_text("f" * 15 + "\n", encoding="utf-8")
    with pytest.raises(OSError, match="fewer than 16"):
        secrets.load_or_create_secret(tmp_path)
    (tmp_path / "secret").write_text("f" * 16 + "\n", encoding="utf-8")
    assert secrets.load_or_create_secret(tmp_path) == "f" * 16


@pytest.mark.parametrize(
    "field", [{"media_tokens": {"raw": "x" * 15}}, {"twilio_auth_token": "x" * 15}]
)
def test_configured_media_tokens_shorter_than_16_characters_are_refused(field):
    with pytest.raises(ValueError, match="at least 16"):
        SecuritySettings(**field)
    SecuritySettings(**{k: ({"raw": "x" * 16} if isinstance(v, dict) else "x" * 16)
                        for k, v in field.items()})  # fmt: skip


# == the softphone's embedded token ===========================================================
@pytest.mark.parametrize(
    "proxy_header",
    [None, {"Forwarded": "for=203.0.113.9"}, {"X-Real-IP": "203.0.113.9"}, {"Via": "1.1 proxy"}],
)
def test_the_softphone_token_is_embedded_only_for_a_direct_local_browser(
    tmp_path, catalogue, classifier, proxy_header
):
    services = light_services(tmp_path, catalogue, classifier)
    app = create_app(services.settings, services=services)
    with TestClient(app, base_url="http://127.0.0.1:8080", client=("127.0.0.1", 50000)) as c:
        token = app.state.credentials.softphone_token
        page = c.get("/softphone", headers=proxy_header or {}).text
    assert (token in page) is (proxy_header is None)


@pytest.mark.parametrize(
    "setting", [{"public_url": "https://bot.example.dk"}, {"softphone_embed_token": False}]
)
def test_no_softphone_token_is_embedded_with_a_public_url_or_when_switched_off(
    tmp_path, catalogue, classifier, setting
):
    services = light_services(tmp_path, catalogue, classifier)
    if "public_url" in setting:
        services.settings.public_url = setting["public_url"]
    else:
        services.settings.security.softphone_embed_token = False
    app = create_app(services.settings, services=services)
    with TestClient(app, base_url="http://127.0.0.1:8080", client=("127.0.0.1", 50000)) as c:
        page = c.get("/softphone").text
    assert app.state.credentials.softphone_token not in page


# == barge-in on lines that echo ==============================================================
def test_audiosocket_lines_echo_so_a_barge_in_needs_400_ms_of_speech():
    assert AudioSocketChannel.echo_cancelled is False
    assert BARGE_IN_MS_ECHO == 400


# == the console's sessions, cookies and logins ==============================================
@pytest.fixture
def console_app(tmp_path, catalogue, fast_hashing):
    def make(**overrides):
        settings = make_settings(tmp_path, **overrides)
        add_agents(settings)
        services = make_services(settings, catalogue)
        return create_app(settings, services), services

    return make


@pytest.mark.parametrize("public_url, secure", [("https://bot.example.dk", True), (None, False)])
def test_the_session_cookie_is_secure_behind_an_https_public_url(console_app, public_url, secure):
    """TLS ends at a proxy: the request arrives as http, the public_url says https."""
    app, _ = console_app(public_url=public_url)
    with TestClient(app) as client:
        page = client.get("/console/login")
        csrf = login_csrf(page.text)
        client.cookies.set(console.LOGIN_CSRF_COOKIE, page.cookies[console.LOGIN_CSRF_COOKIE])
        response = client.post(
            "/console/login",
            data={"name": "anna", "password": PASSWORD, "csrf": csrf},
            follow_redirects=False,
        )
    assert response.status_code == 303
    cookies = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
    session = next(v for v in cookies if v.startswith(console.SESSION_COOKIE + "="))
    assert ("; secure" in session.lower()) is secure
    assert f"max-age={12 * 3600}" in session.lower()


def test_a_console_session_ends_12_hours_after_login_however_active(tmp_path, monkeypatch):
    assert SESSION_MAX_S == 12 * 3600
    store = AgentStore(tmp_path / "agents.db", hasher=PasswordHasher(time_cost=1, memory_cost=1024))
    store.add("anna", PASSWORD, ["TMF"])
    clock = [1_000_000.0]
    monkeypatch.setattr(accounts.time, "time", lambda: clock[0])
    token, _ = store.create_session(store.verify("anna", PASSWORD))
    while clock[0] < 1_000_000.0 + SESSION_MAX_S - 600:  # active every 10 minutes
        clock[0] += 600
        assert store.session(token) is not None
    clock[0] = 1_000_000.0 + SESSION_MAX_S + 1
    assert store.session(token) is None


def test_console_sessions_past_the_12_hour_cap_are_purged_though_recently_active(
    tmp_path, monkeypatch
):
    store = AgentStore(tmp_path / "agents.db", hasher=PasswordHasher(time_cost=1, memory_cost=1024))
    store.add("anna", PASSWORD, ["TMF"])
    clock = [1_000_000.0]
    monkeypatch.setattr(accounts.time, "time", lambda: clock[0])
    token, _ = store.create_session(store.verify("anna", PASSWORD))
    count = "SELECT COUNT(*) FROM sessions"
    while clock[0] < 1_000_000.0 + SESSION_MAX_S - 600:  # in use all shift long
        clock[0] += 600
        assert store.session(token) is not None
        assert store.purge_sessions() == 0
    clock[0] = 1_000_000.0 + SESSION_MAX_S + 1
    store._db.execute("UPDATE sessions SET seen_at = ?", (clock[0] - 60,))  # seen a minute ago
    assert store._db.execute(count).fetchone()[0] == 1
    assert store.purge_sessions() == 1
    assert store._db.execute(count).fetchone()[0] == 0


def test_idle_console_sessions_are_purged(tmp_path, monkeypatch):
    store = AgentStore(tmp_path / "agents.db", hasher=PasswordHasher(time_cost=1, memory_cost=1024))
    store.add("anna", PASSWORD, ["TMF"])
    clock = [1_000_000.0]
    monkeypatch.setattr(accounts.time, "time", lambda: clock[0])
    store.create_session(store.verify("anna", PASSWORD))
    clock[0] += accounts.SESSION_IDLE_S + 1
    assert store.purge_sessions() == 1


def test_the_production_password_hash_is_argon2id_with_the_rfc_9106_low_memory_profile():
    hasher = accounts.default_hasher()
    params = hasher._parameters
    assert (params.type, params.time_cost, params.memory_cost, params.parallelism) == (
        Type.ID,
        3,
        64 * 1024,
        4,
    )
    assert hasher.hash("x").startswith("$argon2id$v=19$m=65536,t=3,p=4$")


def test_passwords_are_hashed_one_at_a_time(console_app, monkeypatch):
    app, _ = console_app()
    running, most = [0], [0]
    lock = threading.Lock()
    real_verify = AgentStore.verify

    def slow_verify(self, name, password):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        return real_verify(self, name, password)

    monkeypatch.setattr(AgentStore, "verify", slow_verify)
    with TestClient(app) as first, TestClient(app) as second:
        results: list[int] = []
        threads = [
            threading.Thread(target=lambda c=c, n=n: results.append(post_login(c, n).status_code))
            for c, n in ((first, "anna"), (second, "bo"))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == [303, 303] and most[0] == 1


def test_logins_beyond_the_hashers_queue_are_answered_429_with_retry_after(console_app):
    app, _ = console_app()
    with TestClient(app) as client:
        app.state.console.login_waiters = console.MAX_LOGIN_WAITERS
        busy = post_login(client, "anna")
        app.state.console.login_waiters = 0
        assert post_login(client, "anna").status_code == 303
    assert busy.status_code == 429 and busy.headers["retry-after"] == "5"


def test_one_address_trying_many_accounts_is_stopped_after_20_failures():
    limiter = LoginLimiter()
    for i in range(20):
        assert limiter.retry_after(f"agent{i}", "198.51.100.7") == 0
        limiter.failed(f"agent{i}", "198.51.100.7")
    assert limiter.retry_after("someone-else", "198.51.100.7") > 0
    assert limiter.retry_after("someone-else", "198.51.100.8") == 0  # another address


# == queue maintenance =======================================================================
def _record(call_id: str) -> RoutedCall:
    return RoutedCall(call_id, "TMF", "waste", 0.9, "min skraldespand", [], "model", None, "twilio")


def test_a_claim_not_renewed_for_2_minutes_goes_back_to_the_queue(tmp_path, monkeypatch):
    assert maintenance.CLAIM_LEASE_S == 120.0
    store = SqliteQueueStore(tmp_path / "q.db")
    store.enqueue(_record("CA1"))
    assert store.claim("CA1", "anna")
    claimed_at = time.time()
    clock = [claimed_at + 115]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    assert maintenance.maintenance_round(store, 30).released == 0
    assert store.get("CA1").status == "claimed"
    clock[0] = claimed_at + 125
    assert maintenance.maintenance_round(store, 30).released == 1
    assert store.get("CA1").status == "waiting"


def test_the_retention_purge_runs_at_start_and_then_hourly(monkeypatch):
    clock, purges, rounds = [0.0], [], []

    def fake_round(store, days, queues, lease_s, purge):
        rounds.append(clock[0])
        if purge:
            purges.append(clock[0])
        return maintenance.RoundResult(0, 0)

    async def fake_sleep(seconds):
        clock[0] += seconds
        if clock[0] > 2.5 * 3600:
            raise asyncio.CancelledError

    async def inline(fn, *args):
        return fn(*args)

    monkeypatch.setattr(maintenance, "maintenance_round", fake_round)
    monkeypatch.setattr(maintenance.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(maintenance.asyncio, "sleep", fake_sleep)
    monkeypatch.setattr(maintenance.asyncio, "to_thread", inline)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(maintenance.maintain(None, 30))
    assert rounds[:2] == [0.0, maintenance.INTERVAL_S]  # stale claims every 15 s
    assert purges == [0.0, 3600.0, 7200.0]


# == Redis ===================================================================================


def test_redis_without_appendfsync_always_is_warned_about(redis_server, caplog):
    import redis

    admin = redis.Redis.from_url(redis_server.url)
    admin.config_set("appendonly", "yes")
    for fsync, warned in (("everysec", True), ("always", False)):
        admin.config_set("appendfsync", fsync)
        caplog.clear()
        with caplog.at_level(logging.WARNING, "voicebot.queues"):
            RedisQueueStore(redis_server.url).close()
        assert ("appendfsync=everysec" in caplog.text) is warned, fsync


def test_forget_also_cleans_a_sqlite_file_left_from_before_a_switch_to_redis(
    redis_server, tmp_path
):
    settings = make_settings(tmp_path, queue_backend="redis", redis_url=redis_server.url)
    old = SqliteQueueStore(settings.db_path)
    old.enqueue(_record("CAold"))
    old.close()
    found = forget_call(settings, "CAold")
    assert found == [f"SQLite queue file {settings.db_path}"]
    reopened = SqliteQueueStore(settings.db_path, create=False)
    assert reopened.get("CAold") is None
    reopened.close()


# == what health and metrics endpoints show ==================================================
def test_healthz_and_metrics_hold_no_call_data(console_app):
    app, services = console_app()
    secret_words = "hemmelig-skraldespand-4711"
    with TestClient(app) as client:
        call = routed_call("CA_private_42", transcript=secret_words)
        client.portal.call(route, services, call)
        bodies = client.get("/healthz").text + client.get("/metrics").text
    for datum in ("CA_private_42", secret_words, "••••••78", "skraldespand"):
        assert datum not in bodies


def test_agents_db_holds_no_call_data(console_app):
    app, services = console_app()
    with TestClient(app) as client:
        client.portal.call(route, services, routed_call("CA_private_43", transcript="hemmelig"))
        assert post_login(client, "anna").status_code == 303
    raw = agents_path(services.settings).read_bytes()
    assert b"CA_private_43" not in raw and b"hemmelig" not in raw
