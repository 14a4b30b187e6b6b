"""The console's callback cards: apart from live calls, the number only on the claiming
agent's card, done and failed, and the admin's figures of the day."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from .console_helpers import (  # noqa: F401 (fixtures)
    console_app,
    console_services,
    routed_call,
    sample,
    settings_with_agents,
)
from .console_helpers import post_login as login

pytestmark = pytest.mark.usefixtures("fast_hashing")
NUMBER = "+4512345678"


def agent(app, name: str) -> tuple[TestClient, str]:
    c = TestClient(app)
    c.__enter__()
    assert login(c, name).status_code == 303
    return c, c.get("/console/api/me").json()["csrf"]


@pytest.fixture
def clients(app, services):
    services.store.enqueue(routed_call("CA1"))
    services.store.request_callback(routed_call("CB1"), NUMBER)
    made = {n: agent(app, n) for n in ("anna", "bo", "chef")}
    yield made
    for c, _ in made.values():
        c.__exit__(None, None, None)


def test_callbacks_are_shown_apart_from_live_calls(clients):
    anna, _ = clients["anna"]
    state = anna.get("/console/api/state").json()
    assert [c["call_id"] for c in state["waiting"]] == ["CA1"]
    assert [c["call_id"] for c in state["callbacks"]] == ["CB1"]
    assert state["callbacks"][0]["kind"] == "callback"
    tmf = next(q for q in state["queues"] if q["id"] == "TMF")
    assert tmf["waiting"] == 1 and tmf["callbacks"] == 1
    bo, _ = clients["bo"]  # KFF only: sees no TMF callback
    assert bo.get("/console/api/state").json()["callbacks"] == []


def test_the_number_is_only_on_the_claiming_agents_card(clients, services, monkeypatch):
    published: list[dict] = []
    publish = services.events.publish
    monkeypatch.setattr(
        services.events,
        "publish",
        lambda call_id, kind, **data: (
            published.append({"kind": kind, **data}),
            publish(call_id, kind, **data),
        ),
    )
    anna, csrf = clients["anna"]
    chef, chef_csrf = clients["chef"]
    waiting = anna.get("/console/api/state").json()["callbacks"][0]
    assert waiting["callback_number"] is None and "12345678" not in json.dumps(waiting)
    claimed = anna.post("/console/api/calls/CB1/claim", headers={"x-csrf-token": csrf})
    assert claimed.status_code == 200 and claimed.json()["callback_number"] == NUMBER
    assert anna.get("/console/api/state").json()["callbacks"][0]["callback_number"] == NUMBER
    admin_view = chef.get("/console/api/state").text  # the admin sees the card, not the number
    assert "CB1" in admin_view and "12345678" not in admin_view
    # The events other consoles hear carry no number either.
    assert published and "12345678" not in repr(published)


def test_done_and_failed_erase_the_number(clients, services):
    anna, csrf = clients["anna"]
    bo, bo_csrf = clients["bo"]
    h = {"x-csrf-token": csrf}
    services.store.request_callback(routed_call("CB2"), NUMBER)
    done_before = sample("voicebot_callbacks_completed_total", forvaltning="TMF", outcome="done")
    assert anna.post("/console/api/callbacks/CB1/done", headers=h).status_code == 409  # unclaimed
    assert anna.post("/console/api/calls/CB1/claim", headers=h).status_code == 200
    assert (
        bo.post("/console/api/callbacks/CB1/done", headers={"x-csrf-token": bo_csrf}).status_code
        == 403
    )
    done = anna.post("/console/api/callbacks/CB1/done", headers=h)
    assert done.status_code == 200 and done.json()["status"] == "done"
    assert done.json()["callback_number"] is None
    assert services.store.get("CB1").callback_number is None
    assert (
        sample("voicebot_callbacks_completed_total", forvaltning="TMF", outcome="done")
        == done_before + 1
    )
    assert anna.post("/console/api/calls/CB2/claim", headers=h).status_code == 200
    failed = anna.post("/console/api/callbacks/CB2/failed", headers=h)
    assert failed.status_code == 200 and failed.json()["status"] == "failed"
    assert services.store.get("CB2").callback_number is None
    assert anna.get("/console/api/state").json()["callbacks"] == []


def test_a_callback_needs_the_csrf_token(clients):
    anna, csrf = clients["anna"]
    anna.post("/console/api/calls/CB1/claim", headers={"x-csrf-token": csrf})
    assert anna.post("/console/api/callbacks/CB1/done").status_code == 403


def test_a_live_call_cannot_be_marked_as_a_callback(clients):
    anna, csrf = clients["anna"]
    h = {"x-csrf-token": csrf}
    assert anna.post("/console/api/calls/CA1/claim", headers=h).status_code == 200
    assert anna.post("/console/api/callbacks/CA1/done", headers=h).status_code == 409


def test_admin_sees_todays_figures_per_queue(clients):
    chef, _ = clients["chef"]
    anna, csrf = clients["anna"]
    assert anna.get("/console/api/figures").status_code == 403
    anna.post("/console/api/calls/CA1/claim", headers={"x-csrf-token": csrf})
    body = chef.get("/console/api/figures").json()
    assert body["complete"] is True
    assert body["queues"]["TMF"]["offered"] == 1 and body["queues"]["TMF"]["answered"] == 1
    assert body["queues"]["TMF"]["callbacks_requested"] == 1
