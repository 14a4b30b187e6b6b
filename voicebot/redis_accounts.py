"""Agent accounts, console sessions and the login limiter's counts in Redis, for several
gateways on one Redis (`queue_backend: redis`): an agent added once logs in on any gateway, its
session cookie works on all of them, and removing the agent ends its sessions everywhere.

Layout (all keys under one prefix, beside the queue's):
    {p}:agents                 hash name -> JSON {password_hash, forvaltninger, admin, created_at}
    {p}:session:{sha256}       JSON {agent, csrf, created_at, seen_at}; Redis TTL = its expiry
    {p}:agent-sessions:{name}  sorted set sha256 -> created_at (an agent's sessions, bounded)
    {p}:login:{window}:{key}   sorted set of failed-login times; TTL = the window

As with SQLite, passwords are argon2id hashes and session tokens are kept only as SHA-256
digests. Creating a session and removing an agent are Lua scripts, so a login racing a removal
cannot leave a session behind.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from argon2 import PasswordHasher

from voicebot.accounts import (
    LOGIN_WINDOW_S,
    MAX_SESSIONS_PER_AGENT,
    SESSION_MAX_S,
    SESSION_TOUCH_S,
    Agent,
    AgentError,
    LoginLimiter,
    PasswordCheck,
    Session,
    check_new_agent,
    default_hasher,
    normalise_name,
    token_digest,
)

if TYPE_CHECKING:
    import redis

RETRIES = 8  # with backoff capped at 1 s: a Redis restart does not log agents out

# KEYS: agents hash, session key, agent-sessions zset. ARGV: name, record, ttl, digest,
# created_at, max sessions, session key prefix. 0 when the agent no longer exists.
_CREATE_SESSION = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
for _, d in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  if redis.call('EXISTS', ARGV[7] .. d) == 0 then redis.call('ZREM', KEYS[3], d) end
end
local n = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[6])
if n > 0 then
  for _, d in ipairs(redis.call('ZRANGE', KEYS[3], 0, n - 1)) do
    redis.call('DEL', ARGV[7] .. d)
    redis.call('ZREM', KEYS[3], d)
  end
end
redis.call('EXPIRE', KEYS[3], ARGV[8])
return 1
"""
# KEYS: agents hash, agent-sessions zset. ARGV: name, session key prefix.
_REMOVE_AGENT = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
for _, d in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do redis.call('DEL', ARGV[2] .. d) end
redis.call('DEL', KEYS[2])
return 1
"""
# KEYS: agents hash. ARGV: name, record. A re-hash never brings a removed agent back.
_UPDATE_AGENT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


def connect(url: str) -> redis.Redis:
    """A client that fails at once when Redis does not answer and rides out a short restart."""
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    try:
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=5,
            socket_connect_timeout=5,
            health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), RETRIES),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError],
        )
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError, ValueError) as exc:
        where = urlsplit(url)._replace(netloc=urlsplit(url).netloc.rpartition("@")[2]).geturl()
        raise AgentError(f"cannot reach the agent accounts in Redis at {where}: {exc}") from exc
    return client


def _ttl(session: Session, now: float) -> int:
    return max(1, math.ceil(session.expires_at - now))


class RedisWindow:
    """SlidingWindow's contract kept in Redis, so every gateway counts the same failures.
    Wall-clock times (gateways share no monotonic clock); each key expires with its window."""

    def __init__(
        self, client: redis.Redis, prefix: str, limit: int, window_s: float = LOGIN_WINDOW_S
    ) -> None:
        self._redis, self.prefix, self.limit, self.window_s = client, prefix, limit, window_s

    def _key(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    def _recent(self, key: str, now: float) -> list[tuple[str, float]]:
        pipe = self._redis.pipeline()
        pipe.zremrangebyscore(self._key(key), "-inf", now - self.window_s)
        pipe.zrange(self._key(key), 0, -1, withscores=True)
        recent: list[tuple[str, float]] = pipe.execute()[1]
        return recent

    def retry_after(self, key: str, now: float | None = None) -> float:
        now = time.time() if now is None else now
        events = self._recent(key, now)
        return self.window_s - (now - events[0][1]) if len(events) >= self.limit else 0.0

    def add(self, key: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        pipe = self._redis.pipeline()
        pipe.zadd(self._key(key), {f"{now:.6f}:{secrets.token_hex(4)}": now})
        pipe.zremrangebyrank(self._key(key), 0, -(self.limit + 1))  # keep the newest `limit`
        pipe.expire(self._key(key), math.ceil(self.window_s))
        pipe.execute()

    def clear(self, key: str) -> None:
        self._redis.delete(self._key(key))


class RedisAgentStore:
    """voicebot.accounts.AccountStore in Redis (see the module docstring for the layout)."""

    def __init__(
        self, url: str, prefix: str = "voicebot", hasher: PasswordHasher | None = None
    ) -> None:
        self.url = url
        self._redis = connect(url)
        self.prefix = prefix
        self._passwords = PasswordCheck(hasher or default_hasher())
        self._create_session = self._redis.register_script(_CREATE_SESSION)
        self._remove_agent = self._redis.register_script(_REMOVE_AGENT)
        self._update_agent = self._redis.register_script(_UPDATE_AGENT)

    # -- keys ----------------------------------------------------------------------------
    @property
    def _agents_key(self) -> str:
        return f"{self.prefix}:agents"

    @property
    def _session_prefix(self) -> str:
        return f"{self.prefix}:session:"

    def _sessions_of(self, name: str) -> str:
        return f"{self.prefix}:agent-sessions:{name}"

    # -- accounts ------------------------------------------------------------------------
    def _record(self, name: str) -> dict[str, Any] | None:
        raw = self._redis.hget(self._agents_key, name)
        return json.loads(raw) if raw else None

    @staticmethod
    def _agent(name: str, record: dict[str, Any]) -> Agent:
        return Agent(name, tuple(record["forvaltninger"]), bool(record["admin"]))

    def add(self, name: str, password: str, forvaltninger: list[str], admin: bool = False) -> Agent:
        name = check_new_agent(name, password, forvaltninger, admin)
        record: dict[str, Any] = {
            "password_hash": self._passwords.hash(password),
            "forvaltninger": sorted(set(forvaltninger)),
            "admin": admin,
            "created_at": time.time(),
        }
        if not self._redis.hsetnx(self._agents_key, name, json.dumps(record)):
            raise AgentError(f"agent '{name}' already exists")
        return Agent(name, tuple(record["forvaltninger"]), admin)

    def remove(self, name: str) -> bool:
        name = normalise_name(name)
        keys = [self._agents_key, self._sessions_of(name)]
        return bool(self._remove_agent(keys=keys, args=[name, self._session_prefix]))

    def get(self, name: str) -> Agent | None:
        name = normalise_name(name)
        record = self._record(name)
        return self._agent(name, record) if record else None

    def agents(self) -> list[Agent]:
        rows = cast("dict[str, str]", self._redis.hgetall(self._agents_key))  # decode_responses
        return [self._agent(name, json.loads(rows[name])) for name in sorted(rows)]

    def verify(self, name: str, password: str) -> Agent | None:
        """The agent if the password is right. An unknown name costs the same hash as a known one."""
        name = normalise_name(name)
        record = self._record(name)
        stored = record["password_hash"] if record else None
        if not self._passwords.matches(stored, password) or record is None or stored is None:
            return None
        if self._passwords.needs_rehash(stored):
            record["password_hash"] = self._passwords.hash(password)
            self._update_agent(keys=[self._agents_key], args=[name, json.dumps(record)])
        return self._agent(name, record)

    # -- sessions ------------------------------------------------------------------------
    def create_session(self, agent: Agent) -> tuple[str, Session]:
        token, csrf, now = secrets.token_urlsafe(32), secrets.token_urlsafe(32), time.time()
        session = Session(agent, csrf, now, now)
        digest = token_digest(token)
        record = {"agent": agent.name, "csrf": csrf, "created_at": now, "seen_at": now}
        created = self._create_session(
            keys=[self._agents_key, self._session_prefix + digest, self._sessions_of(agent.name)],
            args=[
                agent.name,
                json.dumps(record),
                _ttl(session, now),
                digest,
                now,
                MAX_SESSIONS_PER_AGENT,
                self._session_prefix,
                SESSION_MAX_S,
            ],
        )
        if not created:
            raise AgentError(f"agent '{agent.name}' no longer exists")
        return token, session

    def session(self, token: str | None, touch: bool = True) -> Session | None:
        """The live session for a cookie's token, or None (unknown, expired, agent removed)."""
        if not token:
            return None
        key = self._session_prefix + token_digest(token)
        raw = self._redis.get(key)
        if raw is None:
            return None
        record = json.loads(raw)
        agent = self.get(record["agent"])
        if agent is None:
            return None
        session = Session(agent, record["csrf"], record["created_at"], record["seen_at"])
        now = time.time()
        if now >= session.expires_at:
            self._redis.delete(key)
            return None
        if touch and now - session.seen_at > SESSION_TOUCH_S:
            session = Session(agent, session.csrf, session.created_at, now)
            record["seen_at"] = now
            # xx: a session ended meanwhile (logout, agent removed) is not brought back
            self._redis.set(key, json.dumps(record), ex=_ttl(session, now), xx=True)
        return session

    def end_session(self, token: str) -> None:
        self._redis.delete(self._session_prefix + token_digest(token))

    def purge_sessions(self) -> int:
        """Nothing to do: Redis expires each session key at its own expiry (idle or shift)."""
        return 0

    def login_limiter(self) -> LoginLimiter:
        """Failed-login counts in Redis: guessing spread over the gateways counts once."""
        p = f"{self.prefix}:login"
        return LoginLimiter(
            per_address=RedisWindow(self._redis, f"{p}:address", 20),
            per_address_account=RedisWindow(self._redis, f"{p}:address-account", 5),
            per_account=RedisWindow(self._redis, f"{p}:account", 5),
        )

    def close(self) -> None:
        self._redis.close()
