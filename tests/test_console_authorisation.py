"""Console authorisation (voicebot/console.py): which agent may see, claim and close which
forvaltning's calls, admin-only views, the session and CSRF gates, and whose card carries a
callback number. Every refusal leaves the record as it was."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from voicebot import console
from voicebot.accounts import (
    LOGIN_WINDOW_S,
    Agent,
    AgentStore,
    LoginLimiter,
    SlidingWindow,
    agents_path,
)

from .console_helpers import (  # noqa: F401 (fixtures)
    PASSWORD,
    console_app,
    console_services,
    post_login,
    route,
    routed_call,
    settings_with_agents,
)

pytestmark = pytest.mark.usefixtures("fast_hashing")

ANNA = Agent("anna", ("KONTAKTCENTER", "TMF"))
BO = Agent("bo", ("KFF",))
CHEF = Agent("chef", (), admin=True)


def browser(app, name: str) -> tuple[TestClient, dict[str, str]]:
    """A logged-in browser of its own and the headers a state change carries."""
    c = TestClient(app)
    assert post_login(c, name).status_code == 303
    return c, {"X-CSRF-Token": c.get("/console/api/me").json()["csrf"]}


def put(services, record) -> None:
    asyncio.run(route(services, record))


def state_of(record) -> tuple:
    return (record.status, record.claimed_by, record.claimed_at, record.finished_at)


# -- another forvaltning's callback ------------------------------------------------------------
@pytest.mark.parametrize("outcome", ["done", "failed"])
def test_another_forvaltnings_agent_cannot_close_a_callback_and_it_stays_claimed(
    app, services, outcome
):
    with TestClient(app):
        services.store.request_callback(routed_call("CB1", "TMF"), "+45 12345678")
        anna, anna_h = browser(app, "anna")
        bo, bo_h = browser(app, "bo")
        assert anna.post("/console/api/calls/CB1/claim", headers=anna_h).status_code == 200
        before = services.store.get("CB1")
        refused = bo.post(f"/console/api/callbacks/CB1/{outcome}", headers=bo_h)
        assert refused.status_code == 403
        assert refused.json()["detail"] == "Du har ikke adgang til denne forvaltnings kø."
        after = services.store.get("CB1")
        assert state_of(after) == state_of(before) and after.callback_number == "+45 12345678"
        published: list[tuple] = []
        real_publish = services.events.publish
        services.events.publish = lambda cid, kind, **kw: (
            published.append((cid, kind, kw)),
            real_publish(cid, kind, **kw),
        )
        ok = anna.post(f"/console/api/callbacks/CB1/{outcome}", headers=anna_h)
        assert ok.status_code == 200 and ok.json()["status"] == outcome
        assert published == [
            ("CB1", f"callback_{outcome}", {"forvaltning": "TMF", "agent": "anna"})
        ]  # the other consoles are told
        assert services.store.get("CB1").callback_number is None


def test_a_colleague_in_the_same_forvaltning_cannot_close_anothers_claim(app, services):
    """Same forvaltning, not the claimer: 409 for every verb, and nothing changes."""
    with TestClient(app):
        put(services, routed_call("CA1", "KFF"))
        services.store.request_callback(routed_call("CB1", "KFF"), "12345678")
        chef, chef_h = browser(app, "chef")
        bo, bo_h = browser(app, "bo")
        for call_id in ("CA1", "CB1"):
            assert chef.post(f"/console/api/calls/{call_id}/claim", headers=chef_h).is_success
        before = {c: state_of(services.store.get(c)) for c in ("CA1", "CB1")}
        for path, detail in (
            ("calls/CA1/claim", "Opkaldet er allerede taget af en anden."),
            ("calls/CA1/complete", "Du har ikke taget dette opkald."),
            ("calls/CA1/release", "Du har ikke taget dette opkald."),
            ("callbacks/CB1/done", "Du har ikke taget dette tilbagekald."),
            ("callbacks/CB1/failed", "Du har ikke taget dette tilbagekald."),
        ):
            refused = bo.post(f"/console/api/{path}", headers=bo_h)
            assert (refused.status_code, refused.json()["detail"]) == (409, detail), path
        assert {c: state_of(services.store.get(c)) for c in ("CA1", "CB1")} == before


def test_an_unknown_call_is_404_for_every_verb(app):
    with TestClient(app):
        anna, h = browser(app, "anna")
        for path in ("calls/nope/claim", "calls/nope/complete", "calls/nope/release",
                     "callbacks/nope/done", "callbacks/nope/failed"):  # fmt: skip
            refused = anna.post(f"/console/api/{path}", headers=h)
            assert refused.status_code == 404, path
            assert refused.json()["detail"] == "Opkaldet findes ikke (længere)."


def test_a_release_puts_the_call_back_for_the_whole_forvaltning(app, services):
    with TestClient(app):
        put(services, routed_call("CA1", "TMF"))
        anna, h = browser(app, "anna")
        assert anna.post("/console/api/calls/CA1/claim", headers=h).json()["claimed_by"] == "anna"
        released = anna.post("/console/api/calls/CA1/release", headers=h)
        assert released.status_code == 200 and released.json()["status"] == "waiting"
        assert services.store.get("CA1").claimed_by is None


# -- admin-only views --------------------------------------------------------------------------
def test_the_days_figures_and_the_agent_list_are_for_admins_only(app):
    with TestClient(app):
        anna, _ = browser(app, "anna")
        for path in ("/console/api/figures", "/console/api/agents"):
            refused = anna.get(path)
            assert (refused.status_code, refused.json()["detail"]) == (
                403,
                "Kun for administratorer.",
            )
        chef, _ = browser(app, "chef")
        assert chef.get("/console/api/figures").status_code == 200
        listed = chef.get("/console/api/agents").json()["agents"]
        assert {"name": "anna", "forvaltninger": ["KONTAKTCENTER", "TMF"], "admin": False} in listed
        assert {"name": "chef", "forvaltninger": [], "admin": True} in listed


# -- the session and CSRF gates ----------------------------------------------------------------
def test_a_state_change_needs_a_session_and_that_sessions_token(app, services):
    with TestClient(app):
        put(services, routed_call("CA1", "TMF"))
        anna, anna_h = browser(app, "anna")
        _, bo_h = browser(app, "bo")
        assert (
            TestClient(app).post("/console/api/calls/CA1/claim", headers=anna_h).status_code == 401
        )
        for headers in ({}, {"X-CSRF-Token": ""}, bo_h):  # none, empty, another session's
            refused = anna.post("/console/api/calls/CA1/claim", headers=headers)
            assert refused.status_code == 403, headers
            assert "sikkerhedstoken" in refused.json()["detail"]
        assert services.store.get("CA1").status == "waiting"
        assert anna.post("/console/logout", headers=bo_h).status_code == 403
        assert anna.get("/console/api/me").status_code == 200  # still logged in


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},  # typed in the address bar
        {"Origin": "http://testserver"},
        {"Origin": "null"},
        {},  # an older client that says nothing
    ],
)
def test_a_same_origin_request_with_the_token_is_let_through(app, services, headers):
    with TestClient(app):
        put(services, routed_call("CA1", "TMF"))
        anna, h = browser(app, "anna")
        assert (
            anna.post("/console/api/calls/CA1/claim", headers={**h, **headers}).status_code == 200
        )


def test_the_origin_header_is_ignored_when_sec_fetch_site_is_given(app, services):
    with TestClient(app):
        put(services, routed_call("CA1", "TMF"))
        anna, h = browser(app, "anna")
        foreign = {"Sec-Fetch-Site": "cross-site", "Origin": "http://testserver"}
        assert (
            anna.post("/console/api/calls/CA1/claim", headers={**h, **foreign}).status_code == 403
        )
        own = {"Sec-Fetch-Site": "same-origin", "Origin": "http://evil.example"}
        assert anna.post("/console/api/calls/CA1/claim", headers={**h, **own}).status_code == 200


def test_logging_out_ends_the_session_on_the_server(app):
    with TestClient(app):
        anna, h = browser(app, "anna")
        cookie = anna.cookies.get(console.SESSION_COOKIE)
        assert anna.post("/console/logout", headers=h).json() == {"ok": True}
        replay = TestClient(app, cookies={console.SESSION_COOKIE: cookie})
        assert replay.get("/console/api/me").status_code == 401


# -- what each agent's snapshot holds ----------------------------------------------------------
def test_an_agent_sees_only_their_own_claims_an_admin_sees_everyones(services):
    for call_id in ("CA1", "CA2", "CA3"):
        asyncio.run(route(services, routed_call(call_id, "TMF")))
    services.store.claim("CA1", "anna")
    services.store.claim("CA2", "other-tmf-agent")
    assert [c["call_id"] for c in console.snapshot(services, ANNA)["claimed"]] == ["CA1"]
    assert [c["call_id"] for c in console.snapshot(services, CHEF)["claimed"]] == ["CA1", "CA2"]
    assert [c["call_id"] for c in console.snapshot(services, BO)["claimed"]] == []


def test_a_claim_outside_the_agents_forvaltninger_is_not_shown_even_if_theirs(services):
    """An account re-made with other forvaltninger sees no call of the old ones, not even
    one it still holds."""
    services.store.enqueue(routed_call("CA_kff", "KFF"))
    services.store.claim("CA_kff", "anna")
    snap = console.snapshot(services, ANNA)
    assert snap["claimed"] == [] and "CA_kff" not in json.dumps(snap)


def test_the_queue_tiles_are_the_agents_forvaltninger_only(services):
    asyncio.run(route(services, routed_call("CA1", "KFF")))
    assert [q["id"] for q in console.snapshot(services, ANNA)["queues"]] == ["KONTAKTCENTER", "TMF"]
    assert console.snapshot(services, ANNA)["waiting"] == []


def test_an_admin_also_sees_a_queue_the_catalogue_no_longer_names(services):
    services.store.enqueue(routed_call("CA1", "GAMMEL"))  # routed before a catalogue change
    queues = console.snapshot(services, CHEF)["queues"]
    ids = [q["id"] for q in queues]
    assert ids[: len(services.catalogue.forvaltninger)] == list(services.catalogue.forvaltninger)
    assert ids.count("GAMMEL") == 1 and ids[-1] == "GAMMEL"
    old = queues[-1]
    assert (old["name"], old["queue"], old["waiting"]) == ("GAMMEL", "GAMMEL", 1)
    assert ids.count("TMF") == 1  # a catalogue queue with calls is listed once


def test_a_queue_tile_counts_live_calls_and_callbacks_apart(services):
    t = 1_000_000.0
    for call_id, age in (("CA1", 50), ("CA2", 40)):
        asyncio.run(route(services, routed_call(call_id, "TMF", created_at=t - age)))
    services.store.request_callback(routed_call("CB1", "TMF", created_at=t - 90), "12345678")
    services.store.request_callback(routed_call("CB2", "TMF", created_at=t - 80), "87654321")
    snap = console.snapshot(services, ANNA)
    tmf = next(q for q in snap["queues"] if q["id"] == "TMF")
    assert (tmf["waiting"], tmf["callbacks"], tmf["oldest_created_at"]) == (2, 2, t - 50)
    assert tmf["name"] == "Teknik- og Miljøforvaltningen"
    quiet = next(q for q in snap["queues"] if q["id"] == "KONTAKTCENTER")
    assert (quiet["waiting"], quiet["callbacks"], quiet["oldest_created_at"]) == (0, 0, None)
    assert (snap["waiting_total"], snap["callbacks_total"]) == (2, 2)
    assert [c["call_id"] for c in snap["callbacks"]] == ["CB1", "CB2"]


def test_a_callback_number_is_only_on_the_claiming_agents_card_while_claimed(services):
    services.store.request_callback(routed_call("CB1", "TMF"), "+45 12345678")

    def number(agent: Agent) -> list[str | None]:
        return [c["callback_number"] for c in console.snapshot(services, agent)["callbacks"]]

    assert number(ANNA) == [None] and number(CHEF) == [None]  # waiting: nobody's to call yet
    services.store.claim("CB1", "anna")
    assert number(ANNA) == ["+45 12345678"] and number(CHEF) == [None]
    call = services.store.get("CB1")
    assert console.callback_number_for(call, None) is None
    assert console.callback_number_for(call, "chef") is None
    live = routed_call("CA1", status="claimed", claimed_by="anna", callback_number="12345678")
    assert console.callback_number_for(live, "anna") is None  # only a callback carries it
    services.store.complete_callback("CB1", "anna")
    assert console.callback_number_for(services.store.get("CB1"), "anna") is None


def test_each_list_sent_to_a_console_is_capped(services, monkeypatch):
    monkeypatch.setattr(console, "MAX_CARDS", 2)
    for i in range(3):
        asyncio.run(route(services, routed_call(f"CA{i}", "TMF")))
        services.store.request_callback(routed_call(f"CB{i}", "TMF"), "12345678")
    snap = console.snapshot(services, ANNA)
    assert len(snap["waiting"]) == 2 and snap["waiting_total"] == 3
    assert len(snap["callbacks"]) == 2 and snap["callbacks_total"] == 3


# -- the live stream's filter ------------------------------------------------------------------
def test_the_stream_wakes_only_for_queue_events_of_the_agents_forvaltninger(services):
    async def run() -> list[bool]:
        changed = asyncio.Event()
        watcher = asyncio.create_task(console._watch(services.events, BO, changed))
        await asyncio.sleep(0)
        woken = []
        for kind, forvaltning in (
            ("routed", "TMF"),  # not hers
            ("turn", "KFF"),  # not a queue event
            ("routed", None),  # no forvaltning
            ("callback_requested", "KFF"),
        ):
            services.events.publish("CA1", kind, forvaltning=forvaltning)
            await asyncio.sleep(0.02)
            woken.append(changed.is_set())
            changed.clear()
        watcher.cancel()
        return woken

    assert asyncio.run(run()) == [False, False, False, True]


def test_the_stream_follows_the_sessions_agent_and_renews_their_claims(settings, services):
    agents = AgentStore(agents_path(settings))
    token, _ = agents.create_session(agents.get("anna"))
    asyncio.run(route(services, routed_call("CA1", "TMF")))
    services.store.claim("CA1", "anna")
    services.store._db.execute("UPDATE routed_calls SET lease_at = 0")
    stale_agent = Agent("anna", ("KFF",))  # the agent as the stream was opened with

    async def run() -> str:
        stream = console.agent_stream(services, agents, token, stale_agent, refresh_s=0.01)
        await anext(stream)
        first = await anext(stream)
        await stream.aclose()
        return first

    first = asyncio.run(run())
    assert '"call_id": "CA1"' in first  # the session's agent (TMF), not the stale one
    assert services.store.release_stale_claims(60) == 0  # the lease was renewed
    agents.close()


def chunks_until(stream, count: int, timeout_s: float = 10.0):
    async def take() -> list[str]:
        return [await asyncio.wait_for(anext(stream), timeout_s) for _ in range(count)]

    return take()


def test_a_visible_queue_event_wakes_the_stream_long_before_its_refresh(settings, services):
    agents = AgentStore(agents_path(settings))
    token, _ = agents.create_session(agents.get("bo"))

    async def run() -> dict:
        stream = console.agent_stream(services, agents, token, BO, refresh_s=3600)
        await chunks_until(stream, 2)  # retry, the first snapshot
        await asyncio.sleep(0.05)  # the stream is waiting for a change
        await route(services, routed_call("CA_kff", "KFF"))
        chunk = await asyncio.wait_for(anext(stream), 10)  # not an hour
        await stream.aclose()
        return json.loads(chunk.split("data: ", 1)[1])

    assert [c["call_id"] for c in asyncio.run(run())["waiting"]] == ["CA_kff"]
    agents.close()


def test_an_unchanged_snapshot_is_not_sent_again_only_a_ping(settings, services, monkeypatch):
    monkeypatch.setattr(console, "STREAM_PING_S", 0.0)
    agents = AgentStore(agents_path(settings))
    token, _ = agents.create_session(agents.get("anna"))

    async def run() -> list[str]:
        stream = console.agent_stream(services, agents, token, ANNA, refresh_s=0.01)
        out = await chunks_until(stream, 4)
        await stream.aclose()
        return out

    retry, first, *later = asyncio.run(run())
    assert retry == "retry: 3000\n\n" and first.startswith("event: snapshot\ndata: {")
    assert later == [": ping\n\n", ": ping\n\n"]  # the clock ("now") moved, nothing else did
    agents.close()


def test_the_stream_says_why_it_ends_when_the_session_does(settings, services, monkeypatch):
    agents = AgentStore(agents_path(settings))
    token, _ = agents.create_session(agents.get("anna"))
    agents.end_session(token)

    async def run() -> list[str]:
        return [chunk async for chunk in console.agent_stream(services, agents, token, ANNA)]

    chunks = asyncio.run(run())
    assert chunks[-1] == 'event: logout\ndata: {"reason": "Din session er udløbet."}\n\n'
    assert not any(c.startswith("event: snapshot") for c in chunks)  # nothing after the end
    agents.close()


# -- logging in --------------------------------------------------------------------------------
def logins(result: str) -> float:
    return REGISTRY.get_sample_value("voicebot_console_logins_total", {"result": result}) or 0.0


def test_each_login_outcome_is_counted_under_its_result(app):
    results = ("ok", "failed", "limited", "csrf", "busy")
    before = {r: logins(r) for r in results}
    with TestClient(app) as client:
        state = app.state.console
        state.limiter = LoginLimiter(per_address=SlidingWindow(1, LOGIN_WINDOW_S))
        assert post_login(TestClient(app, client=("10.0.0.1", 1)), "anna").status_code == 303
        assert post_login(client, "anna", "forkert-kodeord").status_code == 401
        assert post_login(client, "anna").status_code == 429
        bad_form = client.post("/console/login", data={"name": "anna", "csrf": "x"})
        assert bad_form.status_code == 403
        state.login_waiters = console.MAX_LOGIN_WAITERS
        assert post_login(TestClient(app, client=("10.0.0.2", 1)), "anna").status_code == 429
        state.login_waiters = 0
    assert {r: logins(r) - before[r] for r in results} == dict.fromkeys(results, 1.0)


def test_a_stopped_address_is_told_how_many_minutes_are_left(app):
    with TestClient(app) as client:
        for _ in range(5):
            assert post_login(client, "anna", "forkert-kodeord").status_code == 401
        stopped = post_login(client, "anna")
        assert stopped.status_code == 429
        assert LOGIN_WINDOW_S - 1 <= int(stopped.headers["retry-after"]) <= LOGIN_WINDOW_S
        assert "Prøv igen om 15 min." in stopped.text
        # failures made 14.5 minutes ago: 30 s are left, said as "1 min.", never "0 min."
        aged = SlidingWindow(5, LOGIN_WINDOW_S)
        for _ in range(5):
            aged.add("testclient anna", now=time.monotonic() - (LOGIN_WINDOW_S - 30))
        app.state.console.limiter = LoginLimiter(per_address_account=aged)
        stopped = post_login(client, "anna")
        assert 1 <= int(stopped.headers["retry-after"]) <= 30
        assert "Prøv igen om 1 min." in stopped.text


def test_the_hashers_queue_is_empty_again_after_every_login(app):
    with TestClient(app) as client:
        for password in ("forkert-kodeord", PASSWORD):
            post_login(client, "anna", password)
            assert app.state.console.login_waiters == 0


def test_a_login_name_is_cut_to_64_characters_and_shown_back(app):
    with TestClient(app) as client:
        refused = post_login(client, "  " + "n" * 100 + "  ", "forkert-kodeord")
    assert refused.status_code == 401
    assert f'value="{"n" * 64}"' in refused.text


def test_a_login_sets_the_session_and_drops_the_login_forms_cookie(app):
    with TestClient(app) as client:
        response = post_login(client, "anna")
        assert (response.status_code, response.headers["location"]) == (303, "/console")
        cookies = response.headers.get_list("set-cookie")
        assert any(c.startswith(f"{console.SESSION_COOKIE}=") for c in cookies)
        dropped = next(c for c in cookies if c.startswith(f"{console.LOGIN_CSRF_COOKIE}="))
        assert "Max-Age=0" in dropped and "Path=/console" in dropped
        back = client.get("/console/login", follow_redirects=False)
        assert (back.status_code, back.headers["location"]) == (303, "/console")
        page = client.get("/console", follow_redirects=False)
        assert page.status_code == 200 and page.headers["x-frame-options"] == "DENY"


def test_the_login_page_says_when_a_session_expired(app):
    with TestClient(app) as client:
        expired = client.get("/console/login?expired=1")
        fresh = client.get("/console/login")
    assert "Din session er udløbet. Log ind igen." in expired.text
    assert 'role="alert" hidden>' in fresh.text and 'role="alert" >' in expired.text


# -- what a card and /api/me say ---------------------------------------------------------------
def test_a_card_holds_the_record_named_as_agents_read_it_and_bounded(services):
    record = routed_call(
        "CA1", "TMF", transcript="t" * 5000, explanation=tuple(f"w{i}" for i in range(30)),
        confidence=0.123456, language="en", created_at=100.0,
    )  # fmt: skip
    card = console.call_card(record, services.catalogue)
    assert card == {
        "call_id": "CA1", "forvaltning": "TMF", "forvaltning_name": "Teknik- og Miljøforvaltningen",
        "queue": "Teknik og Miljø", "language": "en", "intent": "waste", "intent_name": "affald",
        "confidence": 0.123, "explanation": [f"w{i}" for i in range(20)],
        "transcript": "t" * 4000, "caller": "+45 ••••••78", "status": "waiting",
        "created_at": 100.0, "claimed_by": None, "claimed_at": None, "kind": "call",
        "callback_number": None,
    }  # fmt: skip


def test_a_card_of_a_forvaltning_or_intent_the_catalogue_no_longer_has_shows_the_ids(services):
    card = console.call_card(routed_call("CA1", "GAMMEL", intent="gammelt"), services.catalogue)
    assert (card["forvaltning_name"], card["queue"]) == ("GAMMEL", "GAMMEL")
    assert (card["intent"], card["intent_name"]) == ("gammelt", "ukendt ærinde")


def test_me_says_who_the_agent_is_and_names_their_forvaltninger(app, settings):
    extra = AgentStore(agents_path(settings))
    extra.add("cy", PASSWORD, ["TMF", "GAMMEL"])
    extra.close()
    with TestClient(app):
        cy, headers = browser(app, "cy")
        me = cy.get("/console/api/me").json()
    assert set(me) == {"name", "admin", "csrf", "expires_at", "forvaltninger"}
    assert (me["name"], me["admin"], me["csrf"]) == ("cy", False, headers["X-CSRF-Token"])
    assert me["expires_at"] > time.time()
    assert me["forvaltninger"] == [
        {"id": "GAMMEL", "name": "GAMMEL"},
        {"id": "TMF", "name": "Teknik- og Miljøforvaltningen"},
    ]


def test_refusals_say_why_in_danish(app, services):
    with TestClient(app):
        put(services, routed_call("CA1", "TMF"))
        nobody = TestClient(app).get("/console/api/state")
        assert nobody.json()["detail"] == "Du er ikke logget ind, eller din session er udløbet."
        anna, h = browser(app, "anna")
        no_token = anna.post("/console/api/calls/CA1/claim")
        assert no_token.json()["detail"] == (
            "Anmodningen mangler et gyldigt sikkerhedstoken. Genindlæs siden."
        )


def test_a_claim_tells_the_other_consoles_who_took_which_call(app, services):
    with TestClient(app):
        put(services, routed_call("CA1", "TMF"))
        anna, h = browser(app, "anna")
        published: list[tuple] = []
        real_publish = services.events.publish
        services.events.publish = lambda cid, kind, **kw: (
            published.append((cid, kind, kw)),
            real_publish(cid, kind, **kw),
        )
        for verb in ("claim", "release", "claim", "complete"):
            assert anna.post(f"/console/api/calls/CA1/{verb}", headers=h).status_code == 200
    told = {"forvaltning": "TMF", "agent": "anna"}
    assert published == [
        ("CA1", kind, told) for kind in ("claimed", "released", "claimed", "completed")
    ]
