"""The durable queues (voicebot/queues/sqlite.py, records.py) at the edges their documentation
names: the order calls are served in, which forvaltninger a claim may reach, a claim's lease,
retention to the second, callbacks and their number, the wait-estimate's claim times. The
`store` fixture runs each contract test on SQLite and Redis; clock-edge tests are SQLite's."""

from __future__ import annotations

import logging
import sqlite3
import time

import pytest

from voicebot.queues import RoutedCall, SqliteQueueStore, records
from voicebot.queues import sqlite as sqlite_store
from voicebot.queues.records import DAY_S, MAX_LISTED, callback_record, retention_cutoff

from .test_queues import first_version_database

T0 = 1_700_000_000.0


def call(call_id: str = "CA1", forvaltning: str = "TMF", **kw) -> RoutedCall:
    return RoutedCall(
        call_id, forvaltning, "waste", 0.9, "min skraldespand", ["skraldespand"], **kw
    )


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    """One clock for the SQLite store and the records (retention_cutoff, default created_at)."""
    now = [T0]
    monkeypatch.setattr(sqlite_store.time, "time", lambda: now[0])
    monkeypatch.setattr(records.time, "time", lambda: now[0])
    return now


@pytest.fixture
def sqlite(tmp_path):
    s = SqliteQueueStore(tmp_path / "q.db")
    yield s
    s.close()


# -- served in order, only to their forvaltning's agents ---------------------------------------
def test_calls_are_served_oldest_first_and_claims_listed_in_claim_order(store):
    now = time.time()
    for call_id, age in (("CA3", 80), ("CA1", 100), ("CA2", 90)):  # enqueued out of order
        store.enqueue(call(call_id, created_at=now - age))
    assert [c.call_id for c in store.waiting()] == ["CA1", "CA2", "CA3"]
    assert store.claim("CA3", "anna")
    time.sleep(0.01)
    assert store.claim("CA1", "anna")
    assert [c.call_id for c in store.claimed()] == ["CA3", "CA1"]
    assert [c.call_id for c in store.waiting()] == ["CA2"]
    assert [c.call_id for c in store.calls()] == ["CA3", "CA2", "CA1"]  # newest first


def test_a_claim_reaches_only_the_forvaltninger_it_names(store):
    store.enqueue(call("CA1", "TMF"))
    assert not store.claim("CA1", "anna", [])  # an agent with no forvaltning reaches nothing
    assert not store.claim("CA1", "anna", ["KFF", "SUF"])
    assert store.get("CA1").status == "waiting" and store.get("CA1").claimed_by is None
    assert store.claim("CA1", "anna", ["KFF", "TMF"])
    claimed = store.get("CA1")
    assert (claimed.status, claimed.claimed_by) == ("claimed", "anna")
    assert claimed.claimed_at is not None


def test_listings_hold_only_the_named_forvaltninger(store):
    store.enqueue(call("CA1", "TMF"))
    store.enqueue(call("CA2", "KFF"))
    store.enqueue(call("CA3", "SUF"))
    assert {c.call_id for c in store.waiting(["TMF", "SUF"])} == {"CA1", "CA3"}
    assert store.waiting([]) == [] and store.claimed([]) == [] and store.calls([]) == []
    assert len(store.waiting(None)) == 3
    store.claim("CA2", "bo")
    assert store.claimed(["TMF"]) == [] and [c.call_id for c in store.claimed(["KFF"])] == ["CA2"]


def test_only_the_claiming_agent_completes_or_releases(store):
    store.enqueue(call("CA1"))
    assert not store.complete("CA1", "anna") and not store.release("CA1", "anna")  # not claimed
    assert store.claim("CA1", "anna")
    assert not store.complete("CA1", "bo") and not store.release("CA1", "bo")
    assert store.get("CA1").status == "claimed"
    assert store.release("CA1", "anna")
    released = store.get("CA1")
    assert (released.status, released.claimed_by, released.claimed_at) == ("waiting", None, None)
    assert store.claim("CA1", "bo") and store.complete("CA1", "bo")
    assert not store.release("CA1", "bo")  # done is done
    assert store.get("CA1").finished_at is not None


def test_stats_count_only_waiting_calls_with_the_longest_wait(store):
    now = time.time()
    store.enqueue(call("CA1", created_at=now - 30))
    store.enqueue(call("CA2", created_at=now - 10))
    store.enqueue(call("CA3", "KFF", created_at=now - 5))
    store.claim("CA3", "bo")
    stats = store.stats()
    assert set(stats) == {"TMF"}
    assert stats["TMF"]["waiting"] == 2
    assert 30 <= stats["TMF"]["longest_wait_s"] < 40
    assert stats["TMF"]["longest_wait_s"] == round(stats["TMF"]["longest_wait_s"], 1)


# -- retention and forgetting ------------------------------------------------------------------
def test_retention_deletes_exactly_what_is_older_than_the_limit(store):
    now = time.time()
    store.enqueue(call("CA_past", created_at=now - 30 * DAY_S - 60))
    store.enqueue(call("CA_within", created_at=now - 30 * DAY_S + 60))
    store.enqueue(call("CA_29", created_at=now - 29 * DAY_S))
    assert store.purge_older_than(30) == 1
    assert store.get("CA_past") is None
    assert {c.call_id for c in store.waiting()} == {"CA_within", "CA_29"}
    assert store.purge_older_than(30) == 0


def test_retention_keeps_a_record_created_exactly_at_the_cutoff(sqlite, clock):
    sqlite.enqueue(call("CA_edge", created_at=T0 - 30 * DAY_S))
    sqlite.enqueue(call("CA_before", created_at=T0 - 30 * DAY_S - 0.5))
    assert sqlite.purge_older_than(30) == 1
    assert sqlite.get("CA_edge") is not None and sqlite.get("CA_before") is None


def test_retention_cutoff_is_that_many_days_ago(clock):
    assert retention_cutoff(30) == T0 - 30 * 86400
    assert retention_cutoff(0) == T0


def test_a_purge_or_forget_empties_the_wal_of_the_deleted_rows(sqlite):
    sqlite.enqueue(call("CA1"))
    wal = sqlite.path.with_name(sqlite.path.name + "-wal")
    assert wal.stat().st_size > 0
    assert sqlite.forget("CA1")
    assert wal.stat().st_size == 0
    sqlite.enqueue(call("CA_old", created_at=time.time() - 40 * DAY_S))
    assert wal.stat().st_size > 0
    assert sqlite.purge_older_than(30) == 1
    assert wal.stat().st_size == 0


def test_nothing_to_purge_or_forget_leaves_the_wal_alone(sqlite, monkeypatch):
    checkpoints: list[None] = []
    monkeypatch.setattr(sqlite, "_checkpoint", lambda: checkpoints.append(None))
    sqlite.enqueue(call("CA1"))
    assert sqlite.purge_older_than(30) == 0 and not sqlite.forget("nope")
    assert checkpoints == []


def test_a_checkpoint_blocked_by_a_reader_is_left_for_the_next(sqlite, caplog):
    sqlite.enqueue(call("CA1"))
    sqlite.enqueue(call("CA2"))
    reader = sqlite3.connect(sqlite.path)
    reader.execute("BEGIN")
    reader.execute("SELECT * FROM routed_calls").fetchall()
    with caplog.at_level(logging.INFO, logger="voicebot.queues"):
        assert sqlite.forget("CA1")
    reader.close()
    assert caplog.messages == ["queue database busy: the WAL is emptied at the next checkpoint"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="voicebot.queues"):
        assert sqlite.forget("CA2")
    assert "next checkpoint" not in caplog.text


# -- a claim's lease (SQLite's clock) ----------------------------------------------------------
def test_a_claim_expires_after_its_lease_and_not_before(sqlite, clock):
    sqlite.enqueue(call("CA1"))
    assert sqlite.claim("CA1", "anna")
    clock[0] = T0 + 120
    assert sqlite.release_stale_claims(120) == 0  # exactly the lease: still hers
    clock[0] = T0 + 120.5
    assert sqlite.release_stale_claims(120) == 1
    back = sqlite.get("CA1")
    assert (back.status, back.claimed_by, back.claimed_at) == ("waiting", None, None)
    assert sqlite.claim("CA1", "bo")


def test_a_renewal_starts_the_lease_anew_for_that_agents_claims_only(sqlite, clock):
    for call_id in ("CA1", "CA2"):
        sqlite.enqueue(call(call_id))
    sqlite.claim("CA1", "anna")
    sqlite.claim("CA2", "bo")
    clock[0] = T0 + 100
    assert sqlite.renew_claims("anna") == 1
    clock[0] = T0 + 150
    assert sqlite.release_stale_claims(120) == 1
    assert sqlite.get("CA1").claimed_by == "anna" and sqlite.get("CA2").status == "waiting"
    assert sqlite.get("CA1").claimed_at == T0  # the claim time stays: it is when she answered


def test_a_claim_from_before_leases_expires_from_its_claim_time(tmp_path, clock):
    path = tmp_path / "q.db"
    store = SqliteQueueStore(path)
    store.enqueue(call("CA1"))
    store.claim("CA1", "anna")
    store._db.execute("UPDATE routed_calls SET lease_at = NULL")  # as migrated from an old file
    clock[0] = T0 + 60
    assert store.release_stale_claims(120) == 0
    clock[0] = T0 + 121
    assert store.release_stale_claims(120) == 1
    store.close()


def test_migration_adds_every_later_column_with_its_default(tmp_path):
    db = first_version_database(
        tmp_path / "old.db",
        "INSERT INTO routed_calls VALUES ('CA0', 'TMF', 'waste', 0.9, 'x', '[]', 'model', NULL, "
        "'twilio', 1.0, 'waiting', NULL, NULL, NULL)",
    )
    store = SqliteQueueStore(db)
    old_call = store.get("CA0")
    assert (old_call.kind, old_call.language, old_call.callback_number) == ("call", "da", None)
    cols = {r[1] for r in store._db.execute("PRAGMA table_info(routed_calls)")}
    assert {"lease_at", "kind", "callback_number", "language"} <= cols
    store.close()
    SqliteQueueStore(db).close()  # a second open finds nothing to add


def test_an_existing_database_only_is_opened_when_asked(tmp_path):
    from voicebot.queues import StoreError

    with pytest.raises((StoreError, Exception)):
        SqliteQueueStore(tmp_path / "absent.db", create=False)
    assert not (tmp_path / "absent.db").exists()


# -- callbacks ---------------------------------------------------------------------------------
def test_a_callback_number_is_kept_until_the_callback_is_done_then_erased(store):
    store.request_callback(call("CA1"), " +45 12 34 56 78 ")
    waiting = store.get("CA1")
    assert (waiting.kind, waiting.status, waiting.callback_number) == (
        "callback",
        "waiting",
        "+45 12 34 56 78",
    )
    assert not store.complete_callback("CA1", "anna")  # not claimed yet
    assert store.claim("CA1", "anna")
    assert not store.complete_callback("CA1", "bo")  # only the claiming agent
    assert store.get("CA1").callback_number == "+45 12 34 56 78"
    assert store.complete_callback("CA1", "anna")
    done = store.get("CA1")
    assert (done.status, done.callback_number) == ("done", None) and done.finished_at


def test_a_failed_callback_is_marked_failed_and_its_number_erased(store):
    store.request_callback(call("CA1"), "12345678")
    store.claim("CA1", "anna")
    assert store.fail_callback("CA1", "anna")
    failed = store.get("CA1")
    assert (failed.status, failed.callback_number) == ("failed", None)
    assert not store.fail_callback("CA1", "anna")


def test_a_live_call_is_not_finished_as_a_callback_nor_a_callback_abandoned(store):
    store.enqueue(call("CA1"))
    store.claim("CA1", "anna")
    assert not store.complete_callback("CA1", "anna") and not store.fail_callback("CA1", "anna")
    assert store.get("CA1").status == "claimed"
    store.request_callback(call("CB1"), "12345678")
    assert not store.abandon("CB1")
    assert store.get("CB1").status == "waiting"


def test_completing_a_call_erases_any_callback_number(store):
    store.request_callback(call("CA1"), "12345678")
    store.claim("CA1", "anna")
    assert store.complete("CA1", "anna")
    assert store.get("CA1").callback_number is None


@pytest.mark.parametrize("number", ["123", "+45 1234 5678", "123456789012345"])
def test_a_callback_number_has_3_to_15_digits(number):
    record = callback_record(call("CA1", status="claimed"), number)
    assert (record.kind, record.status, record.callback_number) == ("callback", "waiting", number)


@pytest.mark.parametrize("number", ["12", "1234567890123456", "+45 ab", ""])
def test_other_callback_numbers_are_refused(number):
    with pytest.raises(ValueError, match="^a callback number has 3 to 15 digits$"):
        callback_record(call("CA1"), number)


# -- the wait estimate's claim times -----------------------------------------------------------
def test_claim_times_are_the_latest_live_claims_since_oldest_first(sqlite, clock):
    for i in range(5):
        sqlite.enqueue(call(f"CA{i}", created_at=T0 - 100))
    sqlite.request_callback(call("CB1", created_at=T0 - 100), "12345678")
    sqlite.enqueue(call("CK1", "KFF", created_at=T0 - 100))
    for i, call_id in enumerate(["CA0", "CA1", "CA2", "CB1", "CK1", "CA3"]):
        clock[0] = T0 + i
        assert sqlite.claim(call_id, "anna")
    sqlite.release("CA3", "anna")  # put back: not served
    assert sqlite.claim_times("TMF", since=T0 + 1) == [T0 + 1, T0 + 2]  # since is inclusive
    assert sqlite.claim_times("TMF", since=T0, limit=2) == [T0 + 1, T0 + 2]  # the latest two
    assert sqlite.claim_times("KFF", since=0) == [T0 + 4]


def test_claim_times_and_listings_are_capped(sqlite):
    assert sqlite.claim_times("TMF", since=0, limit=10**9) == []
    for i in range(3):
        sqlite.enqueue(call(f"CA{i}", created_at=T0 + i))
    assert len(sqlite.calls(limit=2)) == 2
    assert len(sqlite.calls(limit=10**9)) == 3
    assert MAX_LISTED == 1000


def test_calls_since_are_the_records_created_since_oldest_first(sqlite):
    for i in range(4):
        sqlite.enqueue(call(f"CA{i}", created_at=T0 + i))
    assert [c.call_id for c in sqlite.calls_since(T0 + 1)] == ["CA1", "CA2", "CA3"]
    assert [c.call_id for c in sqlite.calls_since(T0 + 1, limit=2)] == ["CA1", "CA2"]


# -- what a record says ------------------------------------------------------------------------
def test_a_records_wait_ends_when_it_is_claimed_or_finished(clock):
    waiting = call("CA1", created_at=T0 - 40)
    assert waiting.wait_s == 40
    assert call("CA1", created_at=T0 - 40, claimed_at=T0 - 10).wait_s == 30
    assert call("CA1", created_at=T0 - 40, finished_at=T0 - 5).wait_s == 35
    assert call("CA1", created_at=T0 - 40, claimed_at=T0 - 30, finished_at=T0).wait_s == 10
    assert call("CA1", created_at=T0 + 5).wait_s == 0.0  # a clock step never makes it negative


def test_as_dict_holds_the_wait_rounded_and_never_the_callback_number(clock):
    record = call("CA1", created_at=T0 - 12.345, callback_number="12345678", kind="callback")
    d = record.as_dict()
    assert "callback_number" not in d and d["wait_s"] == 12.3
    assert d["call_id"] == "CA1" and d["kind"] == "callback"
    assert "12345678" not in repr(record)


def test_a_listing_of_calls_holds_the_newest_200_unless_asked_otherwise(store):
    now = time.time()
    for i in range(201):
        store.enqueue(call(f"CA{i:03}", created_at=now - 1000 + i))
    listed = store.calls()
    assert len(listed) == 200 and listed[0].call_id == "CA200" and listed[-1].call_id == "CA001"
