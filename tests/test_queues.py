"""The queue store contract, run against every back-end: SQLite and Redis Streams."""

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from voicebot.privacy import mask_caller
from voicebot.queues import RedisQueueStore, RoutedCall, SqliteQueueStore

from .redis_server import RedisServer, free_port


def call(call_id="CA1", forvaltning="TMF", **kw) -> RoutedCall:
    return RoutedCall(
        call_id=call_id,
        forvaltning=forvaltning,
        intent="waste",
        confidence=0.9,
        transcript="min skraldespand",
        explanation=["skraldespand"],
        **kw,
    )


def test_enqueue_claim_complete(store):
    store.enqueue(call("CA1"))
    store.enqueue(call("CA2", "KFF"))
    assert [c.call_id for c in store.waiting(["TMF"])] == ["CA1"]
    assert store.stats()["TMF"]["waiting"] == 1
    assert not store.claim("CA1", "anna", ["KFF"])  # not her forvaltning
    assert store.claim("CA1", "bo", ["TMF"])
    assert not store.claim("CA1", "cy", ["TMF"])  # already claimed
    assert "TMF" not in store.stats()
    assert [c.call_id for c in store.claimed(["TMF"])] == ["CA1"]
    assert store.claimed(["KFF"]) == []
    assert not store.complete("CA1", "cy")  # only the agent who claimed it
    assert store.complete("CA1", "bo")
    done = store.get("CA1")
    assert done.status == "done" and done.claimed_by == "bo"
    assert done.explanation == ["skraldespand"]
    assert done.wait_s >= 0 and done.finished_at >= done.claimed_at


def test_enqueue_is_idempotent(store):
    store.enqueue(call("CA1"))
    store.enqueue(call("CA1"))
    assert len(store.waiting()) == 1


def test_waiting_is_oldest_first_and_filtered(store):
    now = time.time()
    store.enqueue(call("CA_new", created_at=now))
    store.enqueue(call("CA_old", created_at=now - 60))
    store.enqueue(call("CA_kff", "KFF", created_at=now - 120))
    assert [c.call_id for c in store.waiting(["TMF"])] == ["CA_old", "CA_new"]
    assert store.waiting([]) == []
    stats = store.stats()
    assert stats["TMF"]["waiting"] == 2 and stats["TMF"]["longest_wait_s"] >= 59
    assert {c.call_id for c in store.calls(["KFF"])} == {"CA_kff"}
    assert [c.call_id for c in store.calls(limit=2)] == ["CA_new", "CA_old"]


def test_record_round_trips(store):
    original = call("CA1", caller="+45 ••••••78", platform="twilio", reason="model")
    store.enqueue(original)
    got = store.get("CA1")
    assert got.as_dict() | {"wait_s": 0} == original.as_dict() | {"wait_s": 0}
    assert store.get("nope") is None


def test_release_and_abandon(store):
    store.enqueue(call("CA1"))
    store.enqueue(call("CA2"))
    assert store.claim("CA1", "bo")
    assert not store.release("CA1", "cy")
    assert store.release("CA1", "bo")
    assert store.get("CA1").status == "waiting" and store.get("CA1").claimed_by is None
    assert store.claim("CA1", "cy")  # back in the queue, anyone may take it
    assert store.abandon("CA2")
    assert store.get("CA2").status == "abandoned"
    assert not store.abandon("CA1")  # claimed calls are not abandoned
    assert [c.call_id for c in store.waiting()] == []


def test_stale_claims_return_to_the_queue(store):
    store.enqueue(call("CA1"))
    store.claim("CA1", "bo", ["TMF"])
    assert store.release_stale_claims(older_than_s=3600) == 0
    time.sleep(0.05)
    assert store.release_stale_claims(older_than_s=0.01) == 1
    assert store.get("CA1").status == "waiting"
    assert [c.call_id for c in store.waiting(["TMF"])] == ["CA1"]


def test_renewed_claims_are_kept(store):
    store.enqueue(call("CA1"))
    store.claim("CA1", "bo")
    time.sleep(0.12)
    assert store.renew_claims("bo") == 1  # the agent's console is still connected
    assert store.renew_claims("cy") == 0
    assert store.release_stale_claims(older_than_s=0.1) == 0
    assert store.get("CA1").status == "claimed"


def test_retention_and_forget(store):
    store.enqueue(call("CA_old", created_at=time.time() - 40 * 86400))
    store.enqueue(call("CA_new"))
    assert store.purge_older_than(30) == 1
    assert store.get("CA_old") is None
    assert [c.call_id for c in store.waiting()] == ["CA_new"]
    assert store.forget("CA_new") and store.get("CA_new") is None
    assert not store.forget("CA_new")
    assert store.waiting() == [] and store.calls() == []


def test_enqueued_call_survives_a_killed_process(tmp_path):
    db = tmp_path / "q.db"
    code = (
        "import os\n"
        "from voicebot.queues import SqliteQueueStore, RoutedCall\n"
        f"s = SqliteQueueStore({str(db)!r})\n"
        "s.enqueue(RoutedCall('CA9', 'SUF', 'elder_care', 0.8, 'hjemmehjælp'))\n"
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == -9
    assert [c.call_id for c in SqliteQueueStore(db).waiting(["SUF"])] == ["CA9"]


def first_version_database(db: Path, *rows: str) -> Path:
    """A queue database as the first release wrote it (before leases, callbacks, language),
    with the given INSERT statements run in it."""
    import sqlite3

    with sqlite3.connect(db) as old:
        old.execute(
            "CREATE TABLE routed_calls (call_id TEXT PRIMARY KEY, forvaltning TEXT NOT NULL, "
            "intent TEXT, confidence REAL NOT NULL, transcript TEXT NOT NULL, explanation TEXT NOT NULL, "
            "reason TEXT NOT NULL, caller TEXT, platform TEXT NOT NULL, created_at REAL NOT NULL, "
            "status TEXT NOT NULL, claimed_by TEXT, claimed_at REAL, finished_at REAL)"
        )
        for row in rows:
            old.execute(row)
    return db


def test_old_sqlite_databases_are_migrated(tmp_path):
    store = SqliteQueueStore(first_version_database(tmp_path / "old.db"))
    store.enqueue(call("CA1"))
    assert store.claim("CA1", "bo") and store.renew_claims("bo") == 1


def test_redis_loses_nothing_when_client_and_server_are_killed(tmp_path):
    server = RedisServer(tmp_path / "redis", free_port()).start()
    try:
        code = (
            "import os\n"
            "from voicebot.queues import RedisQueueStore, RoutedCall\n"
            f"s = RedisQueueStore({server.url!r})\n"
            "s.enqueue(RoutedCall('CA9', 'SUF', 'elder_care', 0.8, 'hjemmehjælp'))\n"
            "s.enqueue(RoutedCall('CA8', 'SUF', 'elder_care', 0.7, 'plejebolig'))\n"
            "s.claim('CA8', 'bo')\n"
            "os.kill(os.getpid(), 9)\n"
        )
        assert subprocess.run([sys.executable, "-c", code]).returncode == -9
        server.kill()  # between enqueue and claim: Redis dies without saving
        server.start()  # same dir: the append-only file is replayed
        store = RedisQueueStore(server.url)
        assert [c.call_id for c in store.waiting(["SUF"])] == ["CA9"]
        assert [c.call_id for c in store.claimed(["SUF"])] == ["CA8"]  # the claim survived too
        assert store.claim("CA9", "anna", ["SUF"])
        time.sleep(0.05)
        assert store.release_stale_claims(0.01) == 2  # both agents are gone: back to the queue
        assert [c.call_id for c in store.waiting()] == ["CA9", "CA8"]
        store.close()
    finally:
        server.stop()


def test_caller_numbers_are_masked():
    assert mask_caller("+4512345678") == "+45 ••••••78"
    assert mask_caller("12345678") == "••••••78"
    assert mask_caller(None) is None


def test_a_garbage_database_file_stops_the_start_naming_the_file(tmp_path, monkeypatch, capsys):
    from voicebot.cli import main
    from voicebot.config import ConfigError
    from voicebot.queues import open_store

    db = tmp_path / "voicebot.db"
    db.write_bytes(b"this is not SQLite \x00\xff" * 100)
    with pytest.raises(ConfigError, match=re.escape(str(db))):
        open_store("sqlite", db)
    monkeypatch.setenv("VOICEBOT_DATA_DIR", str(tmp_path))
    assert main(["queues"]) == 2  # what `serve` meets at start, as a CLI error
    assert str(db) in capsys.readouterr().err
    assert db.read_bytes().startswith(b"this is not SQLite")  # left as it was


def test_queue_maintenance_applies_retention_on_its_own(tmp_path):
    """The purge is the queue package's duty, run without any console (the app's lifespan
    enters `maintenance.running`)."""
    import asyncio

    from voicebot.config import load_settings
    from voicebot.queues import maintenance

    settings = load_settings(None, data_dir=tmp_path)
    store = SqliteQueueStore(tmp_path / "q.db")
    store.enqueue(call("CA_old", created_at=time.time() - (settings.retention_days + 1) * 86400))
    store.enqueue(call("CA_new"))

    async def run() -> None:
        async with maintenance.running(store, settings, ["TMF"]):
            while store.get("CA_old") is not None:
                await asyncio.sleep(0.02)

    asyncio.run(asyncio.wait_for(run(), 10))
    assert store.get("CA_new") is not None
    store.close()
