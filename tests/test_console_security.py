"""The agent console's defences not covered in test_console.py: nothing without a session,
every state change bound to the agent's forvaltninger and to same-origin requests, and the
login CSRF cookie as strict as the session cookie."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from voicebot.app import create_app

from .console_helpers import (
    add_agents,
    make_services,
    make_settings,
    post_login,
    route,
    routed_call,
)

pytestmark = pytest.mark.usefixtures("fast_hashing")


@pytest.fixture
def app(tmp_path, catalogue):
    settings = make_settings(tmp_path)
    add_agents(settings)
    return create_app(settings, make_services(settings, catalogue))


def login(client: TestClient, name: str) -> str:
    """Log in and return the session's CSRF token for state changes."""
    assert post_login(client, name).status_code == 303
    return client.get("/console/api/me").json()["csrf"]


def test_nothing_without_a_session(app):
    with TestClient(app) as client:
        for path in (
            "/console/api/me",
            "/console/api/state",
            "/console/api/agents",
            "/console/api/stream",
        ):
            assert client.get(path).status_code == 401, path
        assert client.post("/console/api/calls/CA1/claim").status_code == 401
        assert client.get("/console", follow_redirects=False).status_code == 303


def test_the_login_csrf_cookie_is_httponly_and_strict(app):
    with TestClient(app) as client:
        cookie = next(
            c
            for c in client.get("/console/login").headers.get_list("set-cookie")
            if c.startswith("vb_login_csrf=")
        )
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie


def test_a_cross_site_request_is_refused_even_with_the_token(app):
    with TestClient(app) as client:
        csrf = login(client, "anna")
        client.portal.call(route, app.state.services, routed_call("CA1"))
        for headers in (
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},
            {"Origin": "http://testserver.evil.example"},
        ):
            refused = client.post(
                "/console/api/calls/CA1/claim", headers={"X-CSRF-Token": csrf, **headers}
            )
            assert refused.status_code == 403, headers
        assert app.state.services.store.get("CA1").status == "waiting"
        ok = client.post(
            "/console/api/calls/CA1/claim",
            headers={"X-CSRF-Token": csrf, "Sec-Fetch-Site": "same-origin"},
        )
        assert ok.status_code == 200


def test_release_and_complete_are_bound_to_the_agent_and_forvaltning(app):
    with TestClient(app) as anna, TestClient(app) as bo, TestClient(app) as chef:
        anna_csrf, bo_csrf, chef_csrf = login(anna, "anna"), login(bo, "bo"), login(chef, "chef")
        anna.portal.call(route, app.state.services, routed_call("CA1"))
        assert (
            anna.post(
                "/console/api/calls/CA1/claim", headers={"X-CSRF-Token": anna_csrf}
            ).status_code
            == 200
        )
        # Another forvaltning's agent: refused before the store is asked.
        assert (
            bo.post("/console/api/calls/CA1/release", headers={"X-CSRF-Token": bo_csrf}).status_code
            == 403
        )
        # Even an admin cannot release or complete a call another agent holds.
        assert (
            chef.post(
                "/console/api/calls/CA1/release", headers={"X-CSRF-Token": chef_csrf}
            ).status_code
            == 409
        )
        assert (
            chef.post(
                "/console/api/calls/CA1/complete", headers={"X-CSRF-Token": chef_csrf}
            ).status_code
            == 409
        )
        # One agent's CSRF token is worthless in another's session.
        assert (
            bo.post(
                "/console/api/calls/CA1/release", headers={"X-CSRF-Token": anna_csrf}
            ).status_code
            == 403
        )
        assert app.state.services.store.get("CA1").claimed_by == "anna"
        assert (
            anna.post(
                "/console/api/calls/CA1/release", headers={"X-CSRF-Token": anna_csrf}
            ).status_code
            == 200
        )
