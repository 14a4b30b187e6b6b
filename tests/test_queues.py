import subprocess
import sys
import time

from voicebot.queues import RoutedCall, SqliteQueueStore, mask_caller


def call(call_id="CA1", forvaltning="TMF", **kw) -> RoutedCall:
    return RoutedCall(call_id=call_id, forvaltning=forvaltning, intent="waste", confidence=0.9,
                      transcript="min skraldespand", explanation=["skraldespand"], **kw)


def test_enqueue_claim_complete(tmp_path):
    store = SqliteQueueStore(tmp_path / "q.db")
    store.enqueue(call("CA1"))
    store.enqueue(call("CA2", "KFF"))
    assert [c.call_id for c in store.waiting(["TMF"])] == ["CA1"]
    assert store.stats()["TMF"]["waiting"] == 1
    assert not store.claim("CA1", "anna", ["KFF"])  # not her forvaltning
    assert store.claim("CA1", "bo", ["TMF"])
    assert not store.claim("CA1", "cy", ["TMF"])  # already claimed
    assert store.complete("CA1", "bo")
    assert store.get("CA1").status == "done"
    assert store.get("CA1").explanation == ["skraldespand"]


def test_enqueue_is_idempotent(tmp_path):
    store = SqliteQueueStore(tmp_path / "q.db")
    store.enqueue(call("CA1"))
    store.enqueue(call("CA1"))
    assert len(store.waiting()) == 1


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


def test_stale_claims_return_to_the_queue(tmp_path):
    store = SqliteQueueStore(tmp_path / "q.db")
    store.enqueue(call("CA1"))
    store.claim("CA1", "bo", ["TMF"])
    assert store.release_stale_claims(older_than_s=3600) == 0
    time.sleep(0.05)
    assert store.release_stale_claims(older_than_s=0.01) == 1
    assert store.get("CA1").status == "waiting"


def test_retention_and_forget(tmp_path):
    store = SqliteQueueStore(tmp_path / "q.db")
    store.enqueue(call("CA_old", created_at=time.time() - 40 * 86400))
    store.enqueue(call("CA_new"))
    assert store.purge_older_than(30) == 1
    assert store.get("CA_old") is None
    assert store.forget("CA_new") and store.get("CA_new") is None


def test_caller_numbers_are_masked():
    assert mask_caller("+4512345678") == "+45 ••••••78"
    assert mask_caller("12345678") == "••••••78"
    assert mask_caller(None) is None
