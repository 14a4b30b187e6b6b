"""The Redis Streams queue store: a consumer group shared by several gateway processes on
several machines."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from typing import Any, cast

from voicebot.queues.records import (
    MAX_CLAIM_TIMES,
    MAX_FIGURES,
    MAX_LISTED,
    RoutedCall,
    callback_record,
    retention_cutoff,
)

log = logging.getLogger("voicebot.queues")

# Layout (all keys under one prefix):
#   {p}:call:{id}          hash: the record (status fields plain, the rest as JSON in `record`)
#   {p}:queue:{F}          stream per forvaltning; one entry per routed call, consumer group `agents`
#   {p}:calls, {p}:calls:{F}   sorted sets of call ids by creation time (listing, retention)
#   {p}:forvaltninger      set of forvaltninger that have a stream
#   {p}:claims:{F}         sorted set: live calls claimed, by claim time (the wait estimate)
# A callback request's hash also holds `kind` and `callback_number` as plain fields, so the
# number can be erased when the callback is done or failed.
# Every entry is delivered at once to the group's consumer "_waiting", so a waiting call is
# an entry pending on "_waiting". Agents pick a call by id, so a claim is an XCLAIM of that
# entry to the agent's consumer; a stale claim (idle past its lease) is XCLAIMed back to
# "_waiting"; done calls are XACKed and XDELed, so streams stay as small as the queues.
# Each change of state is one Lua script: atomic across all gateways.
GROUP = "agents"
WAITING = "_waiting"
RETRIES = 8  # with backoff capped at 1 s: about 5 s of a Redis restart is bridged
_BACK_TO_WAITING = {"status": "waiting", "claimed_by": "", "claimed_at": ""}

_ENQUEUE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.pcall('XGROUP', 'CREATE', KEYS[2], ARGV[5], '0', 'MKSTREAM')
local entry = redis.call('XADD', KEYS[2], '*', 'call_id', ARGV[1])
redis.call('XREADGROUP', 'GROUP', ARGV[5], ARGV[6], 'COUNT', 1000, 'STREAMS', KEYS[2], '>')
redis.call('HSET', KEYS[1], 'call_id', ARGV[1], 'forvaltning', ARGV[2], 'status', 'waiting',
           'created_at', ARGV[3], 'entry', entry, 'record', ARGV[4],
           'claimed_by', '', 'claimed_at', '', 'finished_at', '')
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
redis.call('SADD', KEYS[5], ARGV[2])
if #ARGV > 6 then redis.call('HSET', KEYS[1], unpack(ARGV, 7)) end
return 1
"""
# KEYS: call, stream. ARGV: group, to consumer, min idle ms, required status, required
# owner ('' = any), then field/value pairs to set.
_MOVE = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= ARGV[4] then return 0 end
if ARGV[5] ~= '' and redis.call('HGET', KEYS[1], 'claimed_by') ~= ARGV[5] then return 0 end
local entry = redis.call('HGET', KEYS[1], 'entry')
local got = redis.call('XCLAIM', KEYS[2], ARGV[1], ARGV[2], ARGV[3], entry, 'JUSTID')
if #got == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
return 1
"""
# KEYS: call, stream. ARGV: group, required status, required owner ('' = any), field/values.
_FINISH = """
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[2] then return 0 end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[1], 'claimed_by') ~= ARGV[3] then return 0 end
local entry = redis.call('HGET', KEYS[1], 'entry')
redis.call('XACK', KEYS[2], ARGV[1], entry)
redis.call('XDEL', KEYS[2], entry)
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
return 1
"""
# KEYS: stream. ARGV: group, consumer. Resets the idle time of the consumer's entries.
_RENEW = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1000, ARGV[2])
if #pending == 0 then return 0 end
local args = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], '0'}
for _, e in ipairs(pending) do args[#args + 1] = e[1] end
args[#args + 1] = 'JUSTID'
return #redis.call(unpack(args))
"""
# KEYS: call, stream, all-calls index, forvaltning index. ARGV: group, call id.
_FORGET = """
local entry = redis.call('HGET', KEYS[1], 'entry')
if entry then
  redis.call('XACK', KEYS[2], ARGV[1], entry)
  redis.call('XDEL', KEYS[2], entry)
end
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
return redis.call('DEL', KEYS[1])
"""


def _num(value: str | None) -> float | None:
    return float(value) if value else None


class RedisQueueStore:
    """Redis Streams back-end; every gateway process on every machine shares one Redis.

    Durability is Redis's: run it with `appendonly yes` and `appendfsync always` (as SQLite's
    synchronous=FULL). With the default `everysec`, a killed server can lose the last second
    or two of writes, since Redis postpones AOF writes while a background fsync runs.
    """

    def __init__(self, url: str, prefix: str = "voicebot") -> None:
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        # decode_responses: every reply is str. redis-py types replies as bytes | str whatever
        # the connection decodes, so the replies read below are cast to what they are.
        # A Redis restart (a few hundred ms with AOF) must not fail the call being routed: retry
        # for a few seconds. Every script is safe to retry (enqueue checks that the call is new).
        self._redis = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=5,
            socket_connect_timeout=5,
            health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), RETRIES),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError],
        )
        self._redis.ping()  # fail at start, not at the first routed call
        self._warn_if_not_durable()
        self.prefix = prefix
        self._enqueue = self._redis.register_script(_ENQUEUE)
        self._move = self._redis.register_script(_MOVE)
        self._finish = self._redis.register_script(_FINISH)
        self._renew = self._redis.register_script(_RENEW)
        self._forget = self._redis.register_script(_FORGET)

    def _warn_if_not_durable(self) -> None:
        import redis

        try:
            config = self._redis.config_get("append*")
        except redis.ResponseError:  # CONFIG is often disabled on managed Redis
            return
        if config.get("appendonly") != "yes" or config.get("appendfsync") != "always":
            log.warning(
                "Redis runs with appendonly=%s appendfsync=%s: a crash may lose queued calls "
                "(use appendonly yes, appendfsync always)",
                config.get("appendonly"),
                config.get("appendfsync"),
            )

    # -- keys ----------------------------------------------------------------------------
    def _call_key(self, call_id: str) -> str:
        return f"{self.prefix}:call:{call_id}"

    def _stream(self, forvaltning: str) -> str:
        return f"{self.prefix}:queue:{forvaltning}"

    def _claims(self, forvaltning: str) -> str:
        return f"{self.prefix}:claims:{forvaltning}"

    def _index(self, forvaltning: str | None = None) -> str:
        return f"{self.prefix}:calls" + (f":{forvaltning}" if forvaltning else "")

    def _forvaltninger(self, only: list[str] | None = None) -> list[str]:
        known = sorted(cast("set[str]", self._redis.smembers(f"{self.prefix}:forvaltninger")))
        return known if only is None else [f for f in known if f in only]

    # -- records -------------------------------------------------------------------------
    @staticmethod
    def _from_hash(h: dict[str, str]) -> RoutedCall:
        return RoutedCall(
            call_id=h["call_id"],
            forvaltning=h["forvaltning"],
            **json.loads(h["record"]),
            created_at=float(h["created_at"]),
            status=h["status"],
            claimed_by=h["claimed_by"] or None,
            claimed_at=_num(h["claimed_at"]),
            finished_at=_num(h["finished_at"]),
            callback_number=h.get("callback_number") or None,
        )

    def _records(self, call_ids: list[str]) -> list[RoutedCall]:
        pipe = self._redis.pipeline(transaction=False)
        for call_id in call_ids:
            pipe.hgetall(self._call_key(call_id))
        return [self._from_hash(h) for h in pipe.execute() if h]

    def _pending_calls(self, forvaltning: str, consumer: str) -> list[RoutedCall]:
        """The calls whose entries are pending on one consumer, oldest entry first."""
        stream = self._stream(forvaltning)
        pending = self._redis.xpending_range(
            stream, GROUP, "-", "+", MAX_LISTED, consumername=consumer
        )
        if not pending:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for p in pending:
            pipe.xrange(stream, p["message_id"], p["message_id"], count=1)
        ids = [entries[0][1]["call_id"] for entries in pipe.execute() if entries]
        return self._records(ids)

    def _consumers(self, forvaltning: str) -> list[str]:
        summary = self._redis.xpending(self._stream(forvaltning), GROUP)
        return [c["name"] for c in summary.get("consumers") or []]

    # -- the interface -------------------------------------------------------------------
    def enqueue(self, call: RoutedCall) -> None:
        extra = (
            ["kind", call.kind, "callback_number", call.callback_number or ""]
            if call.kind != "call"
            else []
        )
        record = {
            k: v
            for k, v in asdict(call).items()
            if k
            not in (
                "call_id",
                "forvaltning",
                "created_at",
                "status",
                "claimed_by",
                "claimed_at",
                "finished_at",
                "callback_number",
            )
        }
        f = call.forvaltning
        self._enqueue(
            keys=[
                self._call_key(call.call_id),
                self._stream(f),
                self._index(),
                self._index(f),
                f"{self.prefix}:forvaltninger",
            ],
            args=[
                call.call_id,
                f,
                repr(call.created_at),
                json.dumps(record, ensure_ascii=False),
                GROUP,
                WAITING,
                *extra,
            ],
        )

    def get(self, call_id: str) -> RoutedCall | None:
        h = cast("dict[str, str]", self._redis.hgetall(self._call_key(call_id)))
        return self._from_hash(h) if h else None

    def waiting(self, forvaltninger: list[str] | None = None) -> list[RoutedCall]:
        found = [
            c for f in self._forvaltninger(forvaltninger) for c in self._pending_calls(f, WAITING)
        ]
        return sorted((c for c in found if c.status == "waiting"), key=lambda c: c.created_at)[
            :MAX_LISTED
        ]

    def claimed(self, forvaltninger: list[str] | None = None) -> list[RoutedCall]:
        found = [
            c
            for f in self._forvaltninger(forvaltninger)
            for consumer in self._consumers(f)
            if consumer != WAITING
            for c in self._pending_calls(f, consumer)
        ]
        return sorted((c for c in found if c.status == "claimed"), key=lambda c: c.claimed_at or 0)[
            :MAX_LISTED
        ]

    def calls(self, forvaltninger: list[str] | None = None, limit: int = 200) -> list[RoutedCall]:
        limit = min(limit, MAX_LISTED)
        if forvaltninger is None:
            ids = cast("list[str]", self._redis.zrevrange(self._index(), 0, limit - 1))
        else:
            scored = [
                item
                for f in forvaltninger
                for item in cast(
                    "list[tuple[str, float]]",
                    self._redis.zrevrange(self._index(f), 0, limit - 1, withscores=True),
                )
            ]
            ids = [call_id for call_id, _ in sorted(scored, key=lambda s: -s[1])[:limit]]
        return self._records(ids)

    def _forvaltning_of(self, call_id: str) -> str | None:
        return cast("str | None", self._redis.hget(self._call_key(call_id), "forvaltning"))

    def _run_move(
        self,
        call_id: str,
        to: str,
        min_idle_ms: int,
        status: str,
        owner: str,
        fields: dict[str, Any],
    ) -> bool:
        f = self._forvaltning_of(call_id)
        if f is None:
            return False
        pairs = [str(x) for kv in fields.items() for x in kv]
        return bool(
            self._move(
                keys=[self._call_key(call_id), self._stream(f)],
                args=[GROUP, to, min_idle_ms, status, owner, *pairs],
            )
        )

    def _run_finish(self, call_id: str, status: str, owner: str, fields: dict[str, Any]) -> bool:
        f = self._forvaltning_of(call_id)
        if f is None:
            return False
        pairs = [str(x) for kv in fields.items() for x in kv]
        return bool(
            self._finish(
                keys=[self._call_key(call_id), self._stream(f)], args=[GROUP, status, owner, *pairs]
            )
        )

    def claim(self, call_id: str, agent: str, forvaltninger: list[str] | None = None) -> bool:
        f = self._forvaltning_of(call_id)
        if f is None or (forvaltninger is not None and f not in forvaltninger):
            return False
        now = time.time()
        fields = {"status": "claimed", "claimed_by": agent, "claimed_at": repr(now)}
        claimed = self._run_move(call_id, f"agent:{agent}", 0, "waiting", "", fields)
        if claimed and self._kind_of(call_id) == "call":
            self._note_claim(f, call_id, now)
        return claimed

    def _kind_of(self, call_id: str) -> str:
        return cast("str | None", self._redis.hget(self._call_key(call_id), "kind")) or "call"

    def _note_claim(self, forvaltning: str, call_id: str, at: float) -> None:
        """Keep the claim time for the wait estimate (the latest MAX_CLAIM_TIMES per queue)."""
        key = self._claims(forvaltning)
        pipe = self._redis.pipeline(transaction=False)
        pipe.zadd(key, {call_id: at})
        pipe.zremrangebyrank(key, 0, -MAX_CLAIM_TIMES - 1)
        pipe.execute()

    def complete(self, call_id: str, agent: str) -> bool:
        return self._run_finish(
            call_id,
            "claimed",
            agent,
            {"status": "done", "finished_at": repr(time.time()), "callback_number": ""},
        )

    def release(self, call_id: str, agent: str) -> bool:
        return self._run_move(call_id, WAITING, 0, "claimed", agent, _BACK_TO_WAITING)

    def abandon(self, call_id: str) -> bool:
        if self._kind_of(call_id) != "call":  # a callback request has no caller on the line
            return False
        return self._run_finish(
            call_id, "waiting", "", {"status": "abandoned", "finished_at": repr(time.time())}
        )

    def renew_claims(self, agent: str) -> int:
        return sum(
            self._renew(keys=[self._stream(f)], args=[GROUP, f"agent:{agent}"])
            for f in self._forvaltninger()
        )

    def release_stale_claims(self, older_than_s: float) -> int:
        """Claims idle past their lease (XPENDING IDLE) go back to "_waiting" (XCLAIM with
        the same min-idle, so a renewal that comes in between wins)."""
        min_idle_ms = max(1, int(older_than_s * 1000))
        released = 0
        for f in self._forvaltninger():
            stream = self._stream(f)
            for consumer in self._consumers(f):
                if consumer == WAITING:
                    continue
                stale = self._redis.xpending_range(
                    stream, GROUP, "-", "+", MAX_LISTED, consumername=consumer, idle=min_idle_ms
                )
                for p in stale:
                    entries = cast(
                        "list[tuple[str, dict[str, str]]]",
                        self._redis.xrange(stream, p["message_id"], p["message_id"], count=1),
                    )
                    if entries:
                        call_id = entries[0][1]["call_id"]
                        released += self._run_move(
                            call_id, WAITING, min_idle_ms, "claimed", "", _BACK_TO_WAITING
                        )
        return released

    def stats(self) -> dict[str, dict[str, float]]:
        """Exact counts (XPENDING summary); the longest wait among the first MAX_LISTED entries."""
        now, out = time.time(), {}
        for f in self._forvaltninger():
            summary = self._redis.xpending(self._stream(f), GROUP)
            n = next(
                (int(c["pending"]) for c in summary.get("consumers") or [] if c["name"] == WAITING),
                0,
            )
            waiting = (
                [c for c in self._pending_calls(f, WAITING) if c.status == "waiting"] if n else []
            )
            if waiting:
                oldest = min(c.created_at for c in waiting)
                out[f] = {"waiting": n, "longest_wait_s": round(now - oldest, 1)}
        return out

    def purge_older_than(self, days: int) -> int:
        cutoff = retention_cutoff(days)
        purged = 0
        for _ in range(10_000):  # bounded: 500 per round
            old = cast(
                "list[str]",
                self._redis.zrangebyscore(self._index(), "-inf", f"({cutoff}", start=0, num=500),
            )
            if not old:
                break
            purged += sum(self._forget_one(call_id) for call_id in old)
        for f in self._forvaltninger():  # claim times of calls forgotten outside this purge
            self._redis.zremrangebyscore(self._claims(f), "-inf", f"({cutoff}")
        if purged:
            self._rewrite_aof()
        return purged

    def forget(self, call_id: str) -> bool:
        found = self._forget_one(call_id)
        if found:
            self._rewrite_aof()
        return found

    def _forget_one(self, call_id: str) -> bool:
        f = self._forvaltning_of(call_id) or ""
        if f:
            self._redis.zrem(self._claims(f), call_id)
        return bool(
            self._forget(
                keys=[self._call_key(call_id), self._stream(f), self._index(), self._index(f)],
                args=[GROUP, call_id],
            )
        )

    # -- waiting: the wait estimate, callbacks, a day's figures ----------------------------
    def claim_times(
        self, forvaltning: str, since: float, limit: int = MAX_CLAIM_TIMES
    ) -> list[float]:
        """When live calls of a queue were claimed since `since`, oldest first (the latest
        `limit`)."""
        got = cast(
            "list[tuple[str, float]]",
            self._redis.zrevrangebyscore(
                self._claims(forvaltning),
                "+inf",
                repr(since),
                start=0,
                num=min(limit, MAX_CLAIM_TIMES),
                withscores=True,
            ),
        )
        return sorted(score for _, score in got)

    def request_callback(self, call: RoutedCall, number: str) -> None:
        self.enqueue(callback_record(call, number))

    def _finish_callback(self, call_id: str, agent: str, status: str) -> bool:
        if self._kind_of(call_id) != "callback":
            return False
        fields = {"status": status, "finished_at": repr(time.time()), "callback_number": ""}
        return self._run_finish(call_id, "claimed", agent, fields)

    def complete_callback(self, call_id: str, agent: str) -> bool:
        return self._finish_callback(call_id, agent, "done")

    def fail_callback(self, call_id: str, agent: str) -> bool:
        return self._finish_callback(call_id, agent, "failed")

    def calls_since(self, since: float, limit: int = MAX_FIGURES) -> list[RoutedCall]:
        """Records created since `since`, oldest first (at most `limit`; MAX_FIGURES), read
        in pipelined batches."""
        ids = cast(
            "list[str]",
            self._redis.zrangebyscore(
                self._index(), repr(since), "+inf", start=0, num=min(limit, MAX_FIGURES)
            ),
        )
        return [c for i in range(0, len(ids), 500) for c in self._records(ids[i : i + 500])]

    def _rewrite_aof(self) -> None:
        """The append-only file keeps every write, deleted records included, until Redis
        rewrites it: ask for that now (managed Redis may refuse; then its own schedule applies)."""
        import redis

        try:
            self._redis.bgrewriteaof()
        except redis.ResponseError as exc:
            log.info(
                "Redis did not rewrite its append-only file now (%s): deleted records stay in it "
                "until its next rewrite",
                exc,
            )

    def close(self) -> None:
        self._redis.close()
