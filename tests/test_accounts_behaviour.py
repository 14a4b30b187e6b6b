"""Agent accounts (voicebot/accounts.py) at the edges the documentation names: which names and
passwords make an account, argon2id verification (unknown names, over-long passwords, raised
parameters), session expiry and its bound per agent, and the login limiter's windows."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from voicebot import accounts
from voicebot.accounts import (
    LOGIN_WINDOW_S,
    MAX_PASSWORD_LEN,
    MAX_SESSIONS_PER_AGENT,
    MIN_PASSWORD_LEN,
    SESSION_IDLE_S,
    SESSION_MAX_S,
    SESSION_TOUCH_S,
    Agent,
    AgentError,
    AgentStore,
    LoginLimiter,
    Session,
    SlidingWindow,
    check_new_agent,
)

from .console_helpers import FAST_HASHER, PASSWORD

T0 = 1_000_000.0


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    now = [T0]
    monkeypatch.setattr(accounts.time, "time", lambda: now[0])
    return now


@pytest.fixture
def agents(tmp_path):
    store = AgentStore(tmp_path / "agents.db", hasher=FAST_HASHER)
    store.add("anna", PASSWORD, ["TMF", "KONTAKTCENTER"])
    yield store
    store.close()


# -- which accounts may be made ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["ab", "a" * 40, "æble.ø_å-9", "  Anna  ", "9x"])
def test_a_name_of_2_to_40_allowed_characters_makes_an_account(name):
    assert check_new_agent(name, PASSWORD, ["TMF"], False) == name.strip().lower()


@pytest.mark.parametrize("name", ["a", "a" * 41, "-anna", ".anna", "an na", "anna!", "", "a\nb"])
def test_other_names_are_refused_saying_what_a_name_may_hold(name):
    with pytest.raises(AgentError, match="is not a valid agent name .2-40 of a-z"):
        check_new_agent(name, PASSWORD, ["TMF"], False)


@pytest.mark.parametrize("length", [MIN_PASSWORD_LEN, MAX_PASSWORD_LEN])
def test_a_password_of_10_to_1024_characters_is_accepted(length):
    assert (MIN_PASSWORD_LEN, MAX_PASSWORD_LEN) == (10, 1024)
    assert check_new_agent("anna", "p" * length, ["TMF"], False) == "anna"


@pytest.mark.parametrize("length", [MIN_PASSWORD_LEN - 1, MAX_PASSWORD_LEN + 1])
def test_a_shorter_or_longer_password_is_refused(length):
    with pytest.raises(AgentError, match="the password must be 10 to 1024 characters"):
        check_new_agent("anna", "p" * length, ["TMF"], False)


def test_an_agent_needs_a_forvaltning_unless_admin():
    with pytest.raises(AgentError, match="at least one forvaltning"):
        check_new_agent("anna", PASSWORD, [], False)
    assert check_new_agent("chef", PASSWORD, [], True) == "chef"
    assert check_new_agent("bo", PASSWORD, ["KFF"], False) == "bo"


def test_an_account_is_stored_normalised_with_its_forvaltninger_sorted_once(agents):
    added = agents.add(" Bo ", PASSWORD, ["KFF", "TMF", "KFF"])
    assert added == Agent("bo", ("KFF", "TMF"), False)
    assert agents.get("BO") == added
    with pytest.raises(AgentError, match="agent 'bo' already exists"):
        agents.add("bo", PASSWORD, ["KFF"])
    assert [a.name for a in agents.agents()] == ["anna", "bo"]
    assert agents.remove("Bo") and not agents.remove("bo")
    assert agents.get("bo") is None


def test_an_admin_sees_every_forvaltning_an_agent_only_their_own():
    admin, agent = Agent("chef", (), True), Agent("anna", ("TMF",))
    assert admin.visible is None and admin.may_see("KFF")
    assert agent.visible == ["TMF"] and agent.may_see("TMF") and not agent.may_see("KFF")


# -- passwords ---------------------------------------------------------------------------------
def test_the_right_password_lets_the_agent_in_under_any_spelling_of_the_name(agents):
    assert agents.verify(" ANNA ", PASSWORD) == Agent("anna", ("KONTAKTCENTER", "TMF"), False)
    assert agents.verify("anna", PASSWORD + "x") is None
    assert agents.verify("nobody", PASSWORD) is None


def test_a_password_of_exactly_1024_characters_works_and_one_beyond_is_never_truncated(tmp_path):
    store = AgentStore(tmp_path / "agents.db", hasher=FAST_HASHER)
    longest = "k" * MAX_PASSWORD_LEN
    store.add("anna", longest, ["TMF"])
    assert store.verify("anna", longest) is not None
    # the first 1024 characters are right, but a password the account was not given is refused
    assert store.verify("anna", longest + "k") is None


def test_an_unknown_name_is_refused_even_with_the_dummy_hashs_password(monkeypatch, tmp_path):
    store = AgentStore(tmp_path / "agents.db", hasher=FAST_HASHER)
    monkeypatch.setattr(accounts.secrets, "token_hex", lambda n: "dummy-password")
    assert store.verify("nobody", "dummy-password") is None


def test_a_hash_made_with_weaker_parameters_is_upgraded_at_the_next_login(tmp_path):
    path = tmp_path / "agents.db"
    old = AgentStore(path, hasher=FAST_HASHER)
    old.add("anna", PASSWORD, ["TMF"])
    old.close()
    stronger = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    store = AgentStore(path, hasher=stronger)
    hash_of = "SELECT password_hash FROM agents WHERE name = 'anna'"
    before = store._db.execute(hash_of).fetchone()[0]
    assert store.verify("anna", PASSWORD) == Agent("anna", ("TMF",), False)
    after = store._db.execute(hash_of).fetchone()[0]
    assert after != before and not stronger.check_needs_rehash(after)
    assert stronger.verify(after, PASSWORD)
    assert store.verify("anna", PASSWORD) is not None
    assert store._db.execute(hash_of).fetchone()[0] == after  # no second rehash


# -- sessions ----------------------------------------------------------------------------------
def test_a_session_expires_after_30_idle_minutes_to_the_second(agents, clock):
    assert SESSION_IDLE_S == 30 * 60
    token, session = agents.create_session(agents.get("anna"))
    assert session.expires_at == T0 + SESSION_IDLE_S
    clock[0] = T0 + SESSION_IDLE_S - 1
    assert agents.session(token, touch=False) is not None
    clock[0] = T0 + SESSION_IDLE_S
    assert agents.session(token) is None
    clock[0] = T0  # an expired session is ended, not merely hidden
    assert agents.session(token) is None


def test_using_a_session_keeps_it_alive_but_touches_it_at_most_every_30_seconds(agents, clock):
    assert SESSION_TOUCH_S == 30
    token, _ = agents.create_session(agents.get("anna"))
    clock[0] = T0 + SESSION_TOUCH_S
    assert agents.session(token).seen_at == T0  # not yet written
    clock[0] = T0 + SESSION_TOUCH_S + 1
    assert agents.session(token, touch=False).seen_at == T0  # a look that does not touch
    touched = agents.session(token)
    assert touched.seen_at == T0 + SESSION_TOUCH_S + 1
    assert touched.expires_at == T0 + SESSION_TOUCH_S + 1 + SESSION_IDLE_S
    clock[0] = T0 + SESSION_IDLE_S + 10  # idle since the touch for less than 30 minutes
    assert agents.session(token) is not None


def test_a_session_lasts_at_most_12_hours_whichever_comes_first():
    session = Session(Agent("anna", ("TMF",)), "csrf", created_at=T0, seen_at=T0 + SESSION_MAX_S)
    assert session.expires_at == T0 + SESSION_MAX_S
    fresh = Session(Agent("anna", ("TMF",)), "csrf", created_at=T0, seen_at=T0)
    assert fresh.expires_at == T0 + SESSION_IDLE_S


def test_an_agent_keeps_at_most_10_sessions_the_oldest_go_first(agents, clock):
    anna = agents.get("anna")
    agents.add("bo", PASSWORD, ["KFF"])
    bos, _ = agents.create_session(agents.get("bo"))
    tokens = []
    for i in range(MAX_SESSIONS_PER_AGENT + 2):
        clock[0] = T0 + i
        tokens.append(agents.create_session(anna)[0])
    alive = [t for t in tokens if agents.session(t, touch=False) is not None]
    assert alive == tokens[2:]  # the newest 10
    assert agents.session(bos, touch=False) is not None  # another agent's session is untouched


def test_no_session_without_a_token_an_unknown_token_or_after_logout(agents):
    token, session = agents.create_session(agents.get("anna"))
    assert agents.session(None) is None and agents.session("") is None
    assert agents.session("not-" + token) is None
    assert agents.session(token) == session
    agents.end_session(token)
    assert agents.session(token) is None


def test_removing_an_agent_ends_their_sessions(agents):
    token, _ = agents.create_session(agents.get("anna"))
    agents.remove("anna")
    assert agents.session(token) is None


def test_a_login_purges_every_agents_expired_sessions(agents, clock):
    agents.add("bo", PASSWORD, ["KFF"])
    stale, _ = agents.create_session(agents.get("bo"))
    clock[0] = T0 + SESSION_IDLE_S + 1
    agents.create_session(agents.get("anna"))
    count = agents._db.execute("SELECT COUNT(*) FROM sessions WHERE agent = 'bo'").fetchone()[0]
    assert count == 0
    assert agents.session(stale) is None


def test_purging_keeps_a_session_idle_for_less_than_30_minutes(agents, clock):
    agents.create_session(agents.get("anna"))
    clock[0] = T0 + SESSION_IDLE_S - 1
    assert agents.purge_sessions() == 0
    clock[0] = T0 + SESSION_IDLE_S + 1
    assert agents.purge_sessions() == 1


# -- the login limiter -------------------------------------------------------------------------
def test_a_locked_out_address_stays_locked_for_its_15_minute_window():
    assert LOGIN_WINDOW_S == 15 * 60
    window = SlidingWindow(5, LOGIN_WINDOW_S)
    for i in range(5):
        assert window.retry_after("a", now=i) == 0.0
        window.add("a", now=i)
    assert window.retry_after("a", now=4) == LOGIN_WINDOW_S - 4  # counted from the first
    assert window.retry_after("a", now=LOGIN_WINDOW_S - 1) == 1.0  # the first failure ages out
    assert window.retry_after("a", now=LOGIN_WINDOW_S) == 0.0
    assert window.retry_after("b", now=4) == 0.0  # another key is not stopped


def test_a_window_remembers_the_latest_failures_only():
    window = SlidingWindow(2, 60)
    for t in (0, 10, 20):
        window.add("a", now=t)
    assert list(window._events["a"]) == [10, 20]
    assert window.retry_after("a", now=30) == 40  # counted from the older one still held
    window.clear("a")
    assert window.retry_after("a", now=30) == 0.0
    window.clear("never-seen")  # clearing an unknown key is harmless


def test_a_full_window_forgets_the_least_recently_failed_key():
    window = SlidingWindow(1, 60, max_keys=2)
    window.add("a", now=0)
    window.add("b", now=0)
    window.add("a", now=1)  # a is used again: b is now the oldest
    window.add("c", now=2)
    assert window.retry_after("a", now=3) > 0 and window.retry_after("c", now=3) > 0
    assert window.retry_after("b", now=3) == 0.0


def test_five_failures_stop_that_address_for_that_account_only():
    limiter = LoginLimiter()
    for _ in range(4):
        limiter.failed("anna", "203.0.113.7")
    assert limiter.retry_after("anna", "203.0.113.7") == 0
    assert limiter.delay("anna") == 0.0  # four failures do not slow the account yet
    limiter.failed("Anna", "203.0.113.7")  # the name is normalised
    assert 0 < limiter.retry_after("ANNA ", "203.0.113.7") <= LOGIN_WINDOW_S
    assert limiter.retry_after("bo", "203.0.113.7") == 0
    assert limiter.retry_after("anna", "203.0.113.8") == 0
    assert limiter.delay("anna") == 1.0


def test_the_address_limit_holds_even_when_the_account_pair_is_clear():
    limiter = LoginLimiter(per_address=SlidingWindow(2, LOGIN_WINDOW_S))
    limiter.failed("x1", "203.0.113.7")
    limiter.failed("x2", "203.0.113.7")
    assert limiter.retry_after("anna", "203.0.113.7") > 0  # max of the two windows, not min


def test_a_successful_login_clears_its_account_but_not_the_addresss_other_failures():
    limiter = LoginLimiter(per_address=SlidingWindow(6, LOGIN_WINDOW_S))
    for _ in range(5):
        limiter.failed("anna", "203.0.113.7")
    limiter.succeeded("anna", "203.0.113.7")
    assert limiter.retry_after("anna", "203.0.113.7") == 0 and limiter.delay("anna") == 0.0
    limiter.failed("bo", "203.0.113.7")  # the sixth failure from this address
    assert limiter.retry_after("anna", "203.0.113.7") > 0
