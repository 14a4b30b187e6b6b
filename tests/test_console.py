"""The agent console's API: login, sessions, CSRF, rate limits, forvaltning enforcement,
escaping, the live stream's filtering, maintenance, metrics and `voicebot agents`."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time

import pytest
from fastapi.testclient import TestClient

from voicebot import console
from voicebot.accounts import AgentStore, LoginLimiter, SlidingWindow, agents_path
from voicebot.app import create_app
from voicebot.config import ConfigError
from voicebot.queues import RedisQueueStore
from voicebot.queues.maintenance import maintenance_round

from .console_helpers import (  # noqa: F401 (fixtures)
    PASSWORD,
    console_app,
    console_services,
    route,
    routed_call,
    sample,
    settings_with_agents,
)
from .console_helpers import (
    post_login as login,
)
from .redis_server import RedisServer, free_port

pytestmark = pytest.mark.usefixtures("fast_hashing")


@pytest.fixture
def client(settings, services):
    with TestClient(create_app(settings, services)) as c:
        yield c


def agent_client(app, name: str) -> tuple[TestClient, str]:
    """A second browser: its own cookie jar, logged in as `name`; returns it and its CSRF token."""
    c = TestClient(app)
    assert login(c, name).status_code == 303
    return c, c.get("/console/api/me").json()["csrf"]


def inject(client: TestClient, services, record) -> None:
    client.portal.call(route, services, record)


# -- login and sessions ---------------------------------------------------------------
def test_login_sets_a_strict_httponly_session_cookie(client):
    assert client.get("/console", follow_redirects=False).headers["location"] == "/console/login"
    response = login(client, "Anna")
    assert response.status_code == 303 and response.headers["location"] == "/console"
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("vb_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http in this test
    me = client.get("/console/api/me").json()
    assert me["name"] == "anna" and not me["admin"]
    assert [f["id"] for f in me["forvaltninger"]] == ["KONTAKTCENTER", "TMF"]
    page = client.get("/console")
    assert (
        page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    )


def test_session_cookie_is_secure_over_https(settings, services):
    with TestClient(create_app(settings, services), base_url="https://testserver") as c:
        response = login(c, "anna")
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("vb_session="))
    assert "Secure" in cookie and "HttpOnly" in cookie


def test_wrong_password_is_refused_and_the_name_is_escaped(client):
    response = login(client, "anna", "forkert-kodeord")
    assert response.status_code == 401 and "Forkert brugernavn eller adgangskode" in response.text
    response = login(client, "<script>alert(1)</script>", "forkert-kodeord")
    assert response.status_code == 401
    assert "<script>alert(1)" not in response.text and "&lt;script&gt;alert(1)" in response.text
    assert client.get("/console/api/me").status_code == 401


def test_logout_and_expiry_end_the_session(client, settings):
    login(client, "anna")
    csrf = client.get("/console/api/me").json()["csrf"]
    assert client.post("/console/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert client.get("/console/api/me").status_code == 401
    login(client, "anna")
    agents = client.app.state.console.agents
    with agents._lock:  # an hour without the console open: past the idle limit
        agents._db.execute("UPDATE sessions SET seen_at = seen_at - 3600")
    assert client.get("/console/api/me").status_code == 401
    login(client, "bo")
    agents.remove("bo")  # a removed agent's sessions die with the account
    assert client.get("/console/api/me").status_code == 401


# -- CSRF -----------------------------------------------------------------------------
def test_login_form_needs_its_csrf_token(client):
    client.get("/console/login")  # sets the login CSRF cookie
    response = client.post(
        "/console/login", data={"name": "anna", "password": PASSWORD, "csrf": "gættet"}
    )
    assert response.status_code == 403 and "Formularen var udløbet" in response.text
    response = login(client, "anna", Origin="https://angriber.example")
    assert response.status_code == 403
    assert client.get("/console/api/me").status_code == 401


def test_api_posts_need_the_session_csrf_token(client, services):
    login(client, "anna")
    inject(client, services, routed_call("CA1"))
    assert client.post("/console/api/calls/CA1/claim").status_code == 403
    assert (
        client.post("/console/api/calls/CA1/claim", headers={"X-CSRF-Token": "forkert"}).status_code
        == 403
    )
    csrf = client.get("/console/api/me").json()["csrf"]
    evil = {"X-CSRF-Token": csrf, "Origin": "https://angriber.example"}
    assert client.post("/console/api/calls/CA1/claim", headers=evil).status_code == 403
    assert services.store.get("CA1").status == "waiting"
    assert (
        client.post("/console/api/calls/CA1/claim", headers={"X-CSRF-Token": csrf}).status_code
        == 200
    )
    assert client.post("/console/logout").status_code == 403


# -- rate limits ----------------------------------------------------------------------
def test_wrong_passwords_stop_the_guessing_address_and_never_lock_the_agent_out(client):
    attacker = TestClient(client.app, client=("203.0.113.7", 40000))
    for _ in range(5):
        assert login(attacker, "anna", "forkert-kodeord").status_code == 401
    response = login(attacker, "anna")  # even the right password: this address is stopped for now
    assert response.status_code == 429 and int(response.headers["retry-after"]) > 0
    assert "For mange mislykkede forsøg" in response.text
    assert login(attacker, "bo").status_code == 303  # other accounts are not stopped
    agent = TestClient(client.app, client=("10.20.30.40", 50000))
    assert login(agent, "anna").status_code == 303  # the real agent, at her own desk, gets in
    assert client.app.state.console.limiter.delay("anna") == 0  # and her login ends the slow-down


def test_guessing_one_account_from_many_addresses_only_delays_its_logins():
    limiter = LoginLimiter()
    for i in range(5):
        limiter.failed("Anna", f"198.51.100.{i}")
    assert limiter.delay("anna") > 0 and limiter.retry_after("anna", "10.0.0.1") == 0


def test_login_is_rate_limited_per_client_address(client):
    client.app.state.console.limiter = LoginLimiter(per_address=SlidingWindow(3, 900))
    for name in ("x1", "x2", "x3"):  # one address trying many accounts
        assert login(client, name, "forkert-kodeord").status_code == 401
    assert login(client, "bo").status_code == 429


def test_sliding_window_forgets_old_failures_and_stays_bounded():
    window = SlidingWindow(2, 60, max_keys=3)
    window.add("a", now=0)
    window.add("a", now=1)
    assert window.retry_after("a", now=2) == pytest.approx(58)
    assert window.retry_after("a", now=61) == 0
    for key in "bcde":
        window.add(key, now=5)
    assert len(window._events) == 3


# -- forvaltninger are enforced on the server -----------------------------------------
def test_agents_see_and_claim_only_their_forvaltninger(client, services):
    inject(client, services, routed_call("CA_tmf", "TMF"))
    inject(client, services, routed_call("CA_kff", "KFF", "jeg har mistet mit pas", "passport"))
    anna, anna_csrf = agent_client(client.app, "anna")
    bo, bo_csrf = agent_client(client.app, "bo")

    seen_by_bo = bo.get("/console/api/state").json()
    assert [c["call_id"] for c in seen_by_bo["waiting"]] == ["CA_kff"]
    assert [q["id"] for q in seen_by_bo["queues"]] == ["KFF"]
    assert "CA_tmf" not in json.dumps(seen_by_bo)
    card = anna.get("/console/api/state").json()["waiting"][0]
    assert card["call_id"] == "CA_tmf" and card["intent_name"] == "affald"
    assert card["explanation"] == ["skraldespand", "tømt"] and card["confidence"] == 0.91

    refused = bo.post("/console/api/calls/CA_tmf/claim", headers={"X-CSRF-Token": bo_csrf})
    assert refused.status_code == 403 and "ikke adgang" in refused.json()["detail"]
    assert services.store.get("CA_tmf").status == "waiting"
    assert (
        anna.post(
            "/console/api/calls/CA_tmf/claim", headers={"X-CSRF-Token": anna_csrf}
        ).status_code
        == 200
    )
    again = anna.post("/console/api/calls/CA_tmf/claim", headers={"X-CSRF-Token": anna_csrf})
    assert again.status_code == 409
    assert (
        bo.post("/console/api/calls/CA_tmf/complete", headers={"X-CSRF-Token": bo_csrf}).status_code
        == 403
    )
    assert (
        anna.post("/console/api/calls/nope/claim", headers={"X-CSRF-Token": anna_csrf}).status_code
        == 404
    )
    assert [c["call_id"] for c in anna.get("/console/api/state").json()["claimed"]] == ["CA_tmf"]
    done = anna.post("/console/api/calls/CA_tmf/complete", headers={"X-CSRF-Token": anna_csrf})
    assert done.status_code == 200 and done.json()["status"] == "done"
    assert bo.get("/console/api/agents").status_code == 403


def test_a_call_id_with_a_slash_is_claimed_released_and_completed(client, services):
    inject(client, services, routed_call("CA/7f/2"))
    login(client, "anna")
    csrf = {"X-CSRF-Token": client.get("/console/api/me").json()["csrf"]}
    path = "/console/api/calls/CA%2F7f%2F2"  # as console.js sends it (encodeURIComponent)
    claimed = client.post(f"{path}/claim", headers=csrf)
    assert claimed.status_code == 200 and claimed.json()["call_id"] == "CA/7f/2"
    assert client.post(f"{path}/release", headers=csrf).status_code == 200
    assert services.store.get("CA/7f/2").status == "waiting"
    assert client.post(f"{path}/claim", headers=csrf).status_code == 200
    assert client.post(f"{path}/complete", headers=csrf).status_code == 200
    assert services.store.get("CA/7f/2").status == "done"


def test_admin_sees_every_queue(client, services):
    inject(client, services, routed_call("CA_tmf", "TMF"))
    inject(client, services, routed_call("CA_kff", "KFF"))
    chef, csrf = agent_client(client.app, "chef")
    state = chef.get("/console/api/state").json()
    assert {c["call_id"] for c in state["waiting"]} == {"CA_tmf", "CA_kff"}
    assert {q["id"] for q in state["queues"]} >= set(services.catalogue.forvaltninger)
    assert next(q for q in state["queues"] if q["id"] == "TMF")["waiting"] == 1
    # Each queue tile is named as agents read it (a text, not the catalogue's per-language map)
    names = {q["id"]: q["queue"] for q in state["queues"]}
    assert names["TMF"] == services.catalogue.queue_name("TMF") and isinstance(names["TMF"], str)
    assert (
        chef.post("/console/api/calls/CA_kff/claim", headers={"X-CSRF-Token": csrf}).status_code
        == 200
    )
    assert [a["name"] for a in chef.get("/console/api/agents").json()["agents"]] == [
        "anna",
        "bo",
        "chef",
    ]


def test_a_transcript_with_markup_is_data_never_markup(client, services):
    evil = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'
    inject(client, services, routed_call("CA_x", transcript=evil))
    login(client, "anna")
    response = client.get("/console/api/state")
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.json()["waiting"][0]["transcript"] == evil  # verbatim: the page sets it as text
    page = client.get("/console")
    assert "pwned" not in page.text  # the page carries no call data at all
    assert "'unsafe-inline'" not in page.headers["content-security-policy"]
    script = client.get("/console/static/console.js").text
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script.replace("never innerHTML", "")
    assert client.get("/console/static/../app.py").status_code == 404


def test_the_console_works_on_the_redis_queue(tmp_path, settings, services):
    server = RedisServer(tmp_path / "redis", free_port()).start()
    services.store.close()
    services.store = RedisQueueStore(server.url)
    try:
        with TestClient(create_app(settings, services)) as client:
            inject(client, services, routed_call("CA_r", "TMF"))
            anna, anna_csrf = agent_client(client.app, "anna")
            bo, bo_csrf = agent_client(client.app, "bo")
            assert bo.get("/console/api/state").json()["waiting"] == []
            assert (
                bo.post(
                    "/console/api/calls/CA_r/claim", headers={"X-CSRF-Token": bo_csrf}
                ).status_code
                == 403
            )
            assert (
                anna.post(
                    "/console/api/calls/CA_r/claim", headers={"X-CSRF-Token": anna_csrf}
                ).status_code
                == 200
            )
            assert [c["call_id"] for c in anna.get("/console/api/state").json()["claimed"]] == [
                "CA_r"
            ]
            assert (
                anna.post(
                    "/console/api/calls/CA_r/complete", headers={"X-CSRF-Token": anna_csrf}
                ).status_code
                == 200
            )
            assert services.store.get("CA_r").status == "done"
    finally:
        server.stop()


# -- the live stream ------------------------------------------------------------------
def test_live_stream_holds_only_the_agents_forvaltninger(settings, services):
    agents = AgentStore(agents_path(settings))
    bo = agents.get("bo")
    token, _ = agents.create_session(bo)

    async def run() -> list[dict]:
        stream = console.agent_stream(services, agents, token, bo, refresh_s=0.05)
        assert (await anext(stream)).startswith("retry:")
        first = json.loads((await anext(stream)).split("data: ", 1)[1])
        await route(services, routed_call("CA_tmf", "TMF"))
        await route(services, routed_call("CA_kff", "KFF"))
        second = json.loads((await asyncio.wait_for(anext(stream), 5)).split("data: ", 1)[1])
        await stream.aclose()
        return [first, second]

    first, second = asyncio.run(run())
    assert first["waiting"] == []
    assert [c["call_id"] for c in second["waiting"]] == ["CA_kff"]
    assert "CA_tmf" not in json.dumps(second) and [q["id"] for q in second["queues"]] == ["KFF"]
    agents.close()


def test_live_stream_ends_when_the_session_does(settings, services):
    agents = AgentStore(agents_path(settings))
    anna = agents.get("anna")
    token, _ = agents.create_session(anna)

    async def run() -> list[str]:
        stream = console.agent_stream(services, agents, token, anna, refresh_s=0.01)
        out = [await anext(stream), await anext(stream)]
        agents.end_session(token)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(console, "RENEW_INTERVAL_S", 0.0)
            out += [chunk async for chunk in stream]
        return out

    chunks = asyncio.run(run())
    assert chunks[-1].startswith("event: logout")
    agents.close()


# -- maintenance, retention and metrics -----------------------------------------------
def test_maintenance_returns_stale_claims_and_applies_retention(settings, services):
    store = services.store
    store.enqueue(
        routed_call("CA_old", created_at=time.time() - (settings.retention_days + 1) * 86400)
    )
    store.enqueue(routed_call("CA_claimed"))
    store.enqueue(routed_call("CA_waiting", "KFF"))
    store.claim("CA_claimed", "anna")
    stale_before = sample("voicebot_queue_stale_claims_total")
    time.sleep(0.03)
    result = maintenance_round(
        store, settings.retention_days, services.catalogue.forvaltninger, lease_s=0.01, purge=True
    )
    assert (result.released, result.purged) == (1, 1)
    assert store.get("CA_old") is None and store.get("CA_claimed").status == "waiting"
    assert sample("voicebot_queue_stale_claims_total") == stale_before + 1
    assert sample("voicebot_queue_waiting", forvaltning="TMF") == 1
    assert (
        sample("voicebot_queue_waiting", forvaltning="SUF") == 0
    )  # known queues read 0, not stale


def test_claims_and_completions_are_counted(client, services):
    inject(client, services, routed_call("CA_m", created_at=time.time() - 42))
    login(client, "anna")
    csrf = client.get("/console/api/me").json()["csrf"]
    before = {
        k: sample(f"voicebot_queue_{k}", forvaltning="TMF")
        for k in ("claims_total", "completions_total", "wait_seconds_count", "wait_seconds_sum")
    }
    assert (
        client.post("/console/api/calls/CA_m/claim", headers={"X-CSRF-Token": csrf}).status_code
        == 200
    )
    assert (
        client.post("/console/api/calls/CA_m/complete", headers={"X-CSRF-Token": csrf}).status_code
        == 200
    )
    text = client.get("/metrics").text
    assert sample("voicebot_queue_claims_total", forvaltning="TMF") == before["claims_total"] + 1
    assert (
        sample("voicebot_queue_completions_total", forvaltning="TMF")
        == before["completions_total"] + 1
    )
    assert (
        sample("voicebot_queue_wait_seconds_count", forvaltning="TMF")
        == before["wait_seconds_count"] + 1
    )
    assert (
        sample("voicebot_queue_wait_seconds_sum", forvaltning="TMF") - before["wait_seconds_sum"]
        >= 42
    )
    assert 'voicebot_queue_waiting{forvaltning="TMF"} 0.0' in text


def test_a_garbage_accounts_file_stops_the_start_naming_the_file(settings, services):
    path = agents_path(settings)
    for old in path.parent.glob("agents.db*"):
        old.unlink()
    path.write_bytes(b"not a database \x00\xff" * 200)
    with (
        pytest.raises(ConfigError, match=re.escape(str(path))),
        TestClient(create_app(settings, services)),
    ):
        pass


# -- `voicebot agents` ----------------------------------------------------------------
def test_agents_command(tmp_path, monkeypatch, capsys):
    from voicebot.cli import main

    monkeypatch.setenv("VOICEBOT_DATA_DIR", str(tmp_path))
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["agents", "add", "Dorte", "--forvaltning", "kff,TMF", "--password-stdin"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["agents", "add", "eva", "--forvaltning", "NOPE", "--password-stdin"]) == 1
    assert "unknown forvaltning NOPE" in capsys.readouterr().err
    assert main(["agents", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"name": "dorte", "forvaltninger": ["KFF", "TMF"], "admin": False}
    ]
    store = AgentStore(tmp_path / "agents.db")
    assert (
        store.verify("dorte", PASSWORD) is not None
        and store.verify("dorte", "forkert-kodeord") is None
    )
    store.close()
    assert main(["agents", "remove", "dorte"]) == 0
    assert main(["agents", "remove", "dorte"]) == 1
