"""Callback requests in the queue store (both back-ends): lifecycle, the number kept only for
the callback and masked everywhere else, deleted by forget and retention; and the additive
migration of a SQLite queue file made before callbacks."""

import sqlite3
import time

import pytest

from voicebot.queues import RoutedCall, SqliteQueueStore
from voicebot.queues.figures import figures

NUMBER = "+4512345678"


def routed(call_id: str, forvaltning: str = "SUF", **kw) -> RoutedCall:
    return RoutedCall(
        call_id, forvaltning, "elder_care", 0.9, "min mor mangler hjemmehjælp", ["hjemmehjælp"],
        caller="+45 ••••••78", **kw,
    )  # fmt: skip


def test_callback_lifecycle_done(store):
    store.request_callback(routed("CB1"), NUMBER)
    got = store.get("CB1")
    assert got.kind == "callback" and got.status == "waiting"
    assert got.callback_number == NUMBER  # kept for the callback
    assert [c.call_id for c in store.waiting(["SUF"])] == ["CB1"]
    assert not store.complete_callback("CB1", "anna")  # not claimed yet
    assert store.claim("CB1", "anna", ["SUF"])
    assert not store.complete_callback("CB1", "bo")  # only the claiming agent
    assert store.complete_callback("CB1", "anna")
    done = store.get("CB1")
    assert done.status == "done" and done.callback_number is None  # its purpose is served
    assert done.caller == "+45 ••••••78"


def test_callback_lifecycle_failed(store):
    store.request_callback(routed("CB2"), NUMBER)
    assert store.claim("CB2", "anna")
    assert store.fail_callback("CB2", "anna")
    failed = store.get("CB2")
    assert failed.status == "failed" and failed.callback_number is None
    assert not store.fail_callback("CB2", "anna")  # once


def test_a_live_call_is_not_a_callback(store):
    store.enqueue(routed("CA1"))
    assert store.claim("CA1", "anna")
    assert not store.complete_callback("CA1", "anna")
    assert not store.fail_callback("CA1", "anna")
    assert store.get("CA1").kind == "call"


def test_a_callback_request_is_never_abandoned(store):
    store.request_callback(routed("CB3"), NUMBER)
    assert not store.abandon("CB3")
    assert store.get("CB3").status == "waiting"


def test_released_callback_keeps_its_number(store):
    store.request_callback(routed("CB4"), NUMBER)
    assert store.claim("CB4", "anna")
    assert store.release("CB4", "anna")
    assert store.get("CB4").callback_number == NUMBER


def test_the_number_is_masked_in_listings_and_repr(store):
    store.request_callback(routed("CB5"), NUMBER)
    got = store.get("CB5")
    assert "12345678" not in repr(got)
    assert "callback_number" not in got.as_dict()
    assert "12345678" not in str(got.as_dict())


def test_forget_deletes_the_number(store):
    store.request_callback(routed("CB6"), NUMBER)
    assert store.forget("CB6")
    assert store.get("CB6") is None
    assert all(c.call_id != "CB6" for c in store.calls())


def test_retention_deletes_the_number(store):
    store.request_callback(routed("CB7", created_at=time.time() - 40 * 86400), NUMBER)
    store.request_callback(routed("CB8"), NUMBER)
    assert store.purge_older_than(30) == 1
    assert store.get("CB7") is None
    assert store.get("CB8").callback_number == NUMBER


def test_a_bad_number_is_refused(store):
    with pytest.raises(ValueError):
        store.request_callback(routed("CB9"), "12")
    assert store.get("CB9") is None


def test_todays_figures_per_queue(store):
    t0 = time.time()
    store.enqueue(routed("CA1"))
    store.enqueue(routed("CA2"))
    store.enqueue(routed("CA3", "KFF"))
    store.request_callback(routed("CB1"), NUMBER)
    store.request_callback(routed("CB2"), NUMBER)
    assert store.claim("CA1", "anna") and store.abandon("CA2")
    assert store.claim("CB1", "anna") and store.complete_callback("CB1", "anna")
    got = figures(store.calls_since(t0 - 1))
    assert got["SUF"] | {"median_wait_s": 0} == {
        "offered": 2, "answered": 1, "abandoned": 1, "waiting": 0, "callbacks_requested": 2,
        "callbacks_done": 1, "callbacks_failed": 0, "median_wait_s": 0,
    }  # fmt: skip
    assert got["KFF"]["offered"] == 1 and got["KFF"]["waiting"] == 1


OLD_SCHEMA = """
CREATE TABLE routed_calls (
    call_id TEXT PRIMARY KEY, forvaltning TEXT NOT NULL, intent TEXT, confidence REAL NOT NULL,
    transcript TEXT NOT NULL, explanation TEXT NOT NULL, reason TEXT NOT NULL, caller TEXT,
    platform TEXT NOT NULL, created_at REAL NOT NULL, status TEXT NOT NULL, claimed_by TEXT,
    claimed_at REAL, finished_at REAL, lease_at REAL
);
INSERT INTO routed_calls VALUES ('OLD1', 'SUF', 'elder_care', 0.9, 'tekst', '[]', 'model',
    NULL, 'twilio', 1.0, 'waiting', NULL, NULL, NULL, NULL);
"""


def test_an_older_sqlite_file_gains_the_callback_columns(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.close()
    store = SqliteQueueStore(path)
    try:
        old = store.get("OLD1")
        assert old.kind == "call" and old.callback_number is None
        store.request_callback(routed("CB1"), NUMBER)
        assert store.get("CB1").callback_number == NUMBER
    finally:
        store.close()
