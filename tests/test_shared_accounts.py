"""Issue 17 item 3: with `queue_backend: redis`, agent accounts, console sessions and the login
limiter live in Redis, so two gateways on one Redis share one set of agents. A real
redis-server (tests/redis_server.py) and two apps, each with its own data_dir."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from voicebot.account_backends import open_account_store
from voicebot.accounts import SESSION_IDLE_S, AgentStore
from voicebot.app import create_app
from voicebot.cli import main
from voicebot.console import SESSION_COOKIE
from voicebot.queues import RedisQueueStore
from voicebot.redis_accounts import RedisAgentStore

from .console_helpers import PASSWORD, make_services, make_settings
from .console_helpers import post_login as login
from .redis_server import free_port

pytestmark = pytest.mark.usefixtures("fast_hashing")


@pytest.fixture
def redis_url(redis_server):
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()  # each test starts with no agents
    client.close()
    return redis_server.url


@pytest.fixture
def shell_env(tmp_path, redis_url, monkeypatch):
    """`voicebot agents ...` as an operator runs it on a third machine with the shared settings."""
    monkeypatch.setenv("VOICEBOT_DATA_DIR", str(tmp_path / "shell"))
    monkeypatch.setenv("VOICEBOT_QUEUE_BACKEND", "redis")
    monkeypatch.setenv("VOICEBOT_REDIS_URL", redis_url)


def agents_cli(monkeypatch, *argv: str) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    return main(["agents", *argv])


def gateway(data_dir: Path, redis_url: str, catalogue) -> TestClient:
    settings = make_settings(data_dir, queue_backend="redis", redis_url=redis_url)
    services = make_services(settings, catalogue)
    services.store.close()
    services.store = RedisQueueStore(redis_url)
    return TestClient(create_app(settings, services))


@pytest.fixture
def gateways(tmp_path, redis_url, catalogue):
    with (
        gateway(tmp_path / "a", redis_url, catalogue) as a,
        gateway(tmp_path / "b", redis_url, catalogue) as b,
    ):
        yield a, b


def use_session(client: TestClient, token: str) -> None:
    client.cookies.set(SESSION_COOKIE, token)


def test_an_agent_added_once_logs_in_on_one_gateway_and_its_session_works_on_the_other(
    gateways, shell_env, monkeypatch, capsys
):
    a, b = gateways
    assert agents_cli(monkeypatch, "add", "Dorte", "--forvaltning", "KFF", "--password-stdin") == 0
    assert agents_cli(monkeypatch, "list", "--json") == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == [
        {"name": "dorte", "forvaltninger": ["KFF"], "admin": False}
    ]
    response = login(a, "dorte")
    assert response.status_code == 303
    token = response.cookies[SESSION_COOKIE]

    use_session(b, token)  # the same cookie, sent to the other gateway (no sticky sessions)
    me = b.get("/console/api/me")
    assert me.status_code == 200 and me.json()["name"] == "dorte"
    assert b.get("/console/api/state").status_code == 200
    # the other gateway also takes a fresh login of the same agent
    assert login(TestClient(b.app), "dorte").status_code == 303


def test_removing_the_agent_ends_its_sessions_on_both_gateways(gateways, shell_env, monkeypatch):
    a, b = gateways
    assert agents_cli(monkeypatch, "add", "bo", "--forvaltning", "KFF", "--password-stdin") == 0
    token_a = login(a, "bo").cookies[SESSION_COOKIE]
    token_b = login(b, "bo").cookies[SESSION_COOKIE]
    use_session(a, token_b)  # each gateway now holds a session made on the other
    use_session(b, token_a)
    assert a.get("/console/api/me").status_code == 200
    assert b.get("/console/api/me").status_code == 200

    assert agents_cli(monkeypatch, "remove", "bo") == 0
    assert a.get("/console/api/me").status_code == 401
    assert b.get("/console/api/me").status_code == 401
    assert login(a, "bo").status_code == 401  # and it cannot log in again anywhere


def test_logout_on_one_gateway_ends_the_session_on_the_other(gateways, shell_env, monkeypatch):
    a, b = gateways
    assert agents_cli(monkeypatch, "add", "anna", "--forvaltning", "TMF", "--password-stdin") == 0
    assert login(a, "anna").status_code == 303
    use_session(b, a.cookies[SESSION_COOKIE])
    csrf = a.get("/console/api/me").json()["csrf"]
    assert a.post("/console/logout", headers={"x-csrf-token": csrf}).status_code == 200
    assert b.get("/console/api/me").status_code == 401


def test_failed_logins_count_on_every_gateway(gateways, shell_env, monkeypatch):
    """Guessing one account's password on gateway A, then B: the limit is one, not one each."""
    a, b = gateways
    assert agents_cli(monkeypatch, "add", "eva", "--forvaltning", "KFF", "--password-stdin") == 0
    for _ in range(5):
        assert login(a, "eva", "forkert-kodeord").status_code == 401
    refused = login(b, "eva")  # even the right password waits: this address is limited
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0


def test_sessions_expire_by_redis_ttl_and_the_store_is_chosen_by_the_backend(tmp_path, redis_url):
    import redis

    settings = make_settings(tmp_path, queue_backend="redis", redis_url=redis_url)
    store = open_account_store(settings)
    assert isinstance(store, RedisAgentStore)
    agent = store.add("finn", PASSWORD, ["KFF"])
    token, _ = store.create_session(agent)
    client = redis.Redis.from_url(redis_url)
    (key,) = client.keys("voicebot:session:*")
    assert 0 < client.ttl(key) <= SESSION_IDLE_S
    client.delete(key)  # what Redis does when the TTL runs out
    assert store.session(token) is None
    store.close()
    client.close()
    assert not (tmp_path / "agents.db").exists()  # nothing written to this gateway's disk

    sqlite = open_account_store(make_settings(tmp_path / "default"))
    assert isinstance(sqlite, AgentStore)  # SQLite stays the default
    sqlite.close()


def test_an_unreachable_redis_is_a_message_naming_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VOICEBOT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("VOICEBOT_QUEUE_BACKEND", "redis")
    monkeypatch.setenv("VOICEBOT_REDIS_URL", f"redis://:hemmeligt@127.0.0.1:{free_port()}/0")
    assert main(["agents", "list"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the agent accounts in Redis at redis://127.0.0.1:" in err
    assert "hemmeligt" not in err
