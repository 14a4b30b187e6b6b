"""Agent accounts and console sessions, and the console's login rate limit. The commands
that manage accounts (`voicebot agents`) are in voicebot.agents.

Accounts live in their own SQLite file, data_dir/agents.db (mode 0600), not in the queue
database: credentials have another lifecycle than citizens' call records (retention purge and
`voicebot forget` touch only calls; backups and access can differ), and the queue may be in
Redis. Passwords are argon2id hashes; session tokens are stored only as SHA-256 digests, so
a copy of the file lets nobody in.

With `queue_backend: redis` the accounts, the sessions and the login limiter's counts live in
that Redis instead (voicebot.redis_accounts), so several gateways share one set of agents: an
agent logs in once and the session cookie works on every gateway. `open_account_store` picks
the back-end from the settings (voicebot.account_backends); both implement `AccountStore`.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from voicebot import sqlitedb

if TYPE_CHECKING:
    from voicebot.config import Settings

SESSION_IDLE_S = 30 * 60  # a console closed this long must log in again
SESSION_MAX_S = 12 * 3600  # and every shift logs in anew
SESSION_TOUCH_S = 30  # a session's last use is written at most this often
LOGIN_WINDOW_S = 15 * 60  # failed logins count this long
MAX_SESSIONS_PER_AGENT = 10
MIN_PASSWORD_LEN = 10
MAX_PASSWORD_LEN = 1024  # argon2 hashes anything; bound the work an attacker can ask for
NAME_RE = re.compile(r"^[a-z0-9æøå][a-z0-9æøå._-]{1,39}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    forvaltninger TEXT NOT NULL,
    admin INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    agent TEXT NOT NULL REFERENCES agents(name) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created_at REAL NOT NULL,
    seen_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_agent ON sessions (agent, created_at);
"""


def default_hasher() -> PasswordHasher:
    """argon2id with argon2-cffi's RFC 9106 low-memory profile (64 MiB, 3 passes)."""
    return PasswordHasher()


class AgentError(Exception):
    """An account that cannot be made as asked; the message says why."""


@dataclass(frozen=True)
class Agent:
    name: str
    forvaltninger: tuple[str, ...]
    admin: bool = False

    @property
    def visible(self) -> list[str] | None:
        """The forvaltninger whose queues this agent sees; None: all (admin)."""
        return None if self.admin else list(self.forvaltninger)

    def may_see(self, forvaltning: str) -> bool:
        return self.admin or forvaltning in self.forvaltninger


@dataclass(frozen=True)
class Session:
    agent: Agent
    csrf: str
    created_at: float
    seen_at: float

    @property
    def expires_at(self) -> float:
        return min(self.seen_at + SESSION_IDLE_S, self.created_at + SESSION_MAX_S)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def normalise_name(name: str) -> str:
    return name.strip().lower()


def check_new_agent(name: str, password: str, forvaltninger: list[str], admin: bool) -> str:
    """The normalised name of an account that may be made as asked; AgentError says why not."""
    name = normalise_name(name)
    if not NAME_RE.match(name):
        raise AgentError(
            f"'{name}' is not a valid agent name (2-40 of a-z, 0-9, æøå, '.', '_', '-')"
        )
    if not MIN_PASSWORD_LEN <= len(password) <= MAX_PASSWORD_LEN:
        raise AgentError(
            f"the password must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters"
        )
    if not forvaltninger and not admin:
        raise AgentError("an agent needs at least one forvaltning (or --admin)")
    return name


class PasswordCheck:
    """argon2 verification that costs the same for an unknown name as for a known one."""

    def __init__(self, hasher: PasswordHasher) -> None:
        self.hasher = hasher
        self._dummy_hash: str | None = None  # hashed for unknown names, made on first use

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    def matches(self, stored: str | None, password: str) -> bool:
        if self._dummy_hash is None:
            self._dummy_hash = self.hasher.hash(secrets.token_hex(8))
        # An unknown agent costs the same hash as a known one, so timing tells nothing.
        checked = stored if stored is not None and len(password) <= MAX_PASSWORD_LEN else None
        try:
            self.hasher.verify(checked or self._dummy_hash, password[:MAX_PASSWORD_LEN])
        except (VerificationError, InvalidHashError):
            return False
        return checked is not None

    def needs_rehash(self, stored: str) -> bool:
        """True when the hashing parameters were raised since the hash was made."""
        return self.hasher.check_needs_rehash(stored)


class AccountStore(Protocol):
    """Agent accounts and console sessions: SQLite (AgentStore) or Redis (RedisAgentStore)."""

    def add(
        self, name: str, password: str, forvaltninger: list[str], admin: bool = False
    ) -> Agent: ...
    def remove(self, name: str) -> bool: ...
    def get(self, name: str) -> Agent | None: ...
    def agents(self) -> list[Agent]: ...
    def verify(self, name: str, password: str) -> Agent | None: ...
    def create_session(self, agent: Agent) -> tuple[str, Session]: ...
    def session(self, token: str | None, touch: bool = True) -> Session | None: ...
    def end_session(self, token: str) -> None: ...
    def purge_sessions(self) -> int: ...
    def login_limiter(self) -> LoginLimiter: ...
    def close(self) -> None: ...


class AgentStore:
    """The SQLite account store (the default): data_dir/agents.db on this gateway."""

    def __init__(self, path: str | Path, hasher: PasswordHasher | None = None) -> None:
        self.path = Path(path)
        self._passwords = PasswordCheck(hasher or default_hasher())
        self._lock = threading.Lock()
        self._db = sqlitedb.connect(self.path, "agent accounts database")  # mode 0600
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _write(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        with self._lock:
            return self._db.execute(sql, params).rowcount

    @staticmethod
    def _agent(row: tuple[Any, ...]) -> Agent:
        name, forvaltninger, admin = row
        return Agent(name, tuple(json.loads(forvaltninger)), bool(admin))

    # -- accounts ------------------------------------------------------------------------
    def add(self, name: str, password: str, forvaltninger: list[str], admin: bool = False) -> Agent:
        name = check_new_agent(name, password, forvaltninger, admin)
        row = (
            name,
            self._passwords.hash(password),
            json.dumps(sorted(set(forvaltninger))),
            int(admin),
            time.time(),
        )
        try:
            self._write(
                "INSERT INTO agents (name, password_hash, forvaltninger, admin, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                row,
            )
        except sqlite3.IntegrityError:
            raise AgentError(f"agent '{name}' already exists") from None
        return Agent(name, tuple(sorted(set(forvaltninger))), admin)

    def remove(self, name: str) -> bool:
        return self._write("DELETE FROM agents WHERE name = ?", (normalise_name(name),)) > 0

    def get(self, name: str) -> Agent | None:
        rows = self._query(
            "SELECT name, forvaltninger, admin FROM agents WHERE name = ?", (normalise_name(name),)
        )
        return self._agent(rows[0]) if rows else None

    def agents(self) -> list[Agent]:
        return [
            self._agent(r)
            for r in self._query("SELECT name, forvaltninger, admin FROM agents ORDER BY name")
        ]

    def verify(self, name: str, password: str) -> Agent | None:
        """The agent if the password is right. An unknown name costs the same hash as a known one."""
        name = normalise_name(name)
        rows = self._query("SELECT password_hash FROM agents WHERE name = ?", (name,))
        stored = rows[0][0] if rows else None
        # matches() first: an unknown name costs a hash too
        if not self._passwords.matches(stored, password) or stored is None:
            return None
        if self._passwords.needs_rehash(stored):
            self._write(
                "UPDATE agents SET password_hash = ? WHERE name = ?",
                (self._passwords.hash(password), name),
            )
        return self.get(name)

    # -- sessions ------------------------------------------------------------------------
    def create_session(self, agent: Agent) -> tuple[str, Session]:
        token, csrf, now = secrets.token_urlsafe(32), secrets.token_urlsafe(32), time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                (token_digest(token), agent.name, csrf, now, now),
            )
            self._db.execute(  # bounded: an agent's oldest sessions go first
                "DELETE FROM sessions WHERE agent = ? AND token_hash NOT IN (SELECT token_hash FROM sessions "
                "WHERE agent = ? ORDER BY created_at DESC LIMIT ?)",
                (agent.name, agent.name, MAX_SESSIONS_PER_AGENT),
            )
        self.purge_sessions()  # expired sessions of every agent go at each login: no timer needed
        return token, Session(agent, csrf, now, now)

    def session(self, token: str | None, touch: bool = True) -> Session | None:
        """The live session for a cookie's token, or None (unknown, expired, agent removed)."""
        if not token:
            return None
        rows = self._query(
            "SELECT s.csrf, s.created_at, s.seen_at, a.name, a.forvaltninger, a.admin FROM sessions s "
            "JOIN agents a ON a.name = s.agent WHERE s.token_hash = ?",
            (token_digest(token),),
        )
        if not rows:
            return None
        csrf, created_at, seen_at, *agent_row = rows[0]
        session = Session(self._agent(tuple(agent_row)), csrf, created_at, seen_at)
        now = time.time()
        if now >= session.expires_at:
            self.end_session(token)
            return None
        if touch and now - seen_at > SESSION_TOUCH_S:
            self._write(
                "UPDATE sessions SET seen_at = ? WHERE token_hash = ?", (now, token_digest(token))
            )
            session = Session(session.agent, csrf, created_at, now)
        return session

    def end_session(self, token: str) -> None:
        self._write("DELETE FROM sessions WHERE token_hash = ?", (token_digest(token),))

    def purge_sessions(self) -> int:
        now = time.time()
        return self._write(
            "DELETE FROM sessions WHERE seen_at < ? OR created_at < ?",
            (now - SESSION_IDLE_S, now - SESSION_MAX_S),
        )

    def login_limiter(self) -> LoginLimiter:
        """Failed-login counts in this process (the accounts are this gateway's own)."""
        return LoginLimiter()

    def close(self) -> None:
        with self._lock:
            self._db.close()


# == login rate limit =====================================================================
class Window(Protocol):
    """Recent events per key: in this process (SlidingWindow) or in Redis (RedisWindow)."""

    def retry_after(self, key: str, now: float | None = None) -> float: ...
    def add(self, key: str, now: float | None = None) -> None: ...
    def clear(self, key: str) -> None: ...


class SlidingWindow:
    """At most `limit` events per key in `window_s`; at most `max_keys` keys remembered."""

    def __init__(self, limit: int, window_s: float, max_keys: int = 10_000) -> None:
        self.limit, self.window_s, self.max_keys = limit, window_s, max_keys
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float]:
        events = self._events.get(key, deque())
        while events and now - events[0] >= self.window_s:
            events.popleft()
        return events

    def retry_after(self, key: str, now: float | None = None) -> float:
        """Seconds until the key may try again; 0 if it may now."""
        now = time.monotonic() if now is None else now
        events = self._recent(key, now)
        return self.window_s - (now - events[0]) if len(events) >= self.limit else 0.0

    def add(self, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        events = self._recent(key, now)
        events.append(now)
        while len(events) > self.limit:
            events.popleft()
        self._events[key] = events
        self._events.move_to_end(key)
        while len(self._events) > self.max_keys:
            self._events.popitem(last=False)

    def clear(self, key: str) -> None:
        self._events.pop(key, None)


@dataclass
class LoginLimiter:
    """Failed logins are held against the address they come from: per address (trying many
    accounts) and per address and account (guessing one password); a blocked attempt is
    refused before any password hash is computed. An account is never locked, since that would
    let anyone who knows an agent's name keep the agent out: failures on an account from
    anywhere (guessing spread over many addresses) only delay its logins a little."""

    per_address: Window = field(default_factory=lambda: SlidingWindow(20, LOGIN_WINDOW_S))
    per_address_account: Window = field(default_factory=lambda: SlidingWindow(5, LOGIN_WINDOW_S))
    per_account: Window = field(default_factory=lambda: SlidingWindow(5, LOGIN_WINDOW_S))
    account_delay_s: float = 1.0  # for each login to an account with that many recent failures

    @staticmethod
    def _pair(name: str, address: str) -> str:
        return f"{address} {normalise_name(name)}"

    def retry_after(self, name: str, address: str) -> float:
        """Seconds until this address may try this account again; 0 if it may now."""
        return max(
            self.per_address.retry_after(address),
            self.per_address_account.retry_after(self._pair(name, address)),
        )

    def delay(self, name: str) -> float:
        """How long to wait before checking a password for this account."""
        return self.account_delay_s if self.per_account.retry_after(normalise_name(name)) else 0.0

    def failed(self, name: str, address: str) -> None:
        self.per_address.add(address)
        self.per_address_account.add(self._pair(name, address))
        self.per_account.add(normalise_name(name))

    def succeeded(self, name: str, address: str) -> None:
        self.per_address_account.clear(self._pair(name, address))
        self.per_account.clear(normalise_name(name))


def agents_path(settings: Settings) -> Path:
    return settings.data_dir / "agents.db"
