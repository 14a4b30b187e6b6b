"""Privacy by default: no audio kept (and no recording without a purpose), logs masked and
free of transcripts, retention applied by the running app, and `voicebot forget` removing a
call everywhere, on both queue back-ends, down to the bytes in the files."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from voicebot.config import ConfigError, load_settings
from voicebot.privacy import install_log_masking, mask_log_text
from voicebot.queues import RedisQueueStore, RoutedCall, SqliteQueueStore

from .redis_server import free_port

MARKER = "hemmeligt-ærinde-7f3a"  # a transcript text we can look for in files and logs


def routed(call_id: str, created_at: float | None = None, transcript: str = MARKER) -> RoutedCall:
    return RoutedCall(
        call_id=call_id,
        forvaltning="TMF",
        intent="waste",
        confidence=0.9,
        transcript=transcript,
        caller="+45 ••••••78",
        created_at=created_at or time.time(),
    )


# == recordings =================================================================================
def test_no_audio_is_kept_by_default_and_recording_needs_a_purpose(tmp_path):
    settings = load_settings(None, data_dir=tmp_path)
    assert settings.privacy.record_audio is False and settings.log_transcripts is False
    with pytest.raises(ConfigError, match="recording_purpose"):
        load_settings(None, data_dir=tmp_path, privacy={"record_audio": True})
    with pytest.raises(ConfigError, match="recording_purpose"):
        load_settings(
            None, data_dir=tmp_path, privacy={"record_audio": True, "recording_purpose": "  "}
        )


def test_recording_with_a_purpose_is_refused_as_not_implemented(tmp_path):
    from voicebot.app import create_app

    settings = load_settings(
        None,
        data_dir=tmp_path,
        privacy={"record_audio": True, "recording_purpose": "kvalitetssikring"},
    )
    with pytest.raises(ConfigError, match="not implemented"):
        create_app(settings)


# == logs ======================================================================================
def test_every_log_record_is_masked(caplog):
    install_log_masking()
    log = logging.getLogger("voicebot.test")
    with caplog.at_level(logging.INFO, logger="voicebot.test"):
        log.info("caller said %s", "mit cpr er 230590-1234")
        log.info("from +45 12 34 56 78 via %s", "ws://h/calls/x/events?token=abcdefghijk123")
        log.warning("header Authorization: Bearer %s", "s3cr3t-t0ken-value")
        log.info(
            "call CA%s and 7b0c4b5e-2f3a-4f8e-9d6a-1c2b3d4e5f60 on 127.0.0.1:54321",
            "1234567890abcdef",
        )
    text = caplog.text
    assert "230590" not in text and "[CPR]" in text
    assert "12 34 56 78" not in text and "abcdefghijk123" not in text and "s3cr3t" not in text
    assert (
        "CA1234567890abcdef" in text
        and "7b0c4b5e-2f3a-4f8e-9d6a-1c2b3d4e5f60" in text
        and "127.0.0.1:54321" in text
    )


def test_log_masking_keeps_ids_and_addresses():
    assert (
        mask_log_text("ast-1761245643.1 v3:1234567890123 10.0.0.1:9092")
        == "ast-1761245643.1 v3:1234567890123 10.0.0.1:9092"
    )
    assert mask_log_text("ring 12345678") == "ring [NUMMER]"


def test_logs_hold_no_transcript_by_default(tmp_path, catalogue, classifier, speaker, caplog):
    from tests.fakes import ScriptedLine, heard_services, silence
    from voicebot.session import CallSession

    text = "min skraldespand er ikke blevet tømt og mit nummer er 12 34 56 78"
    services = heard_services(tmp_path, catalogue, classifier, speaker, text)
    line = ScriptedLine(
        [silence(0.5), speaker.speak("Min skraldespand er ikke blevet tømt."), silence(1.5)]
    )
    with caplog.at_level(logging.DEBUG):
        asyncio.run(asyncio.wait_for(CallSession(line, services).run(), 60))
    record = services.store.get("CA-test")
    assert (
        record is not None and "[NUMMER]" in record.transcript and "12 34" not in record.transcript
    )
    assert "skraldespand" not in caplog.text and "12 34 56 78" not in caplog.text
    assert "CA-test" in caplog.text  # the call is logged, what was said is not


# == retention ==================================================================================
def test_the_running_app_applies_retention_at_start(tmp_path, catalogue, classifier):
    from tests.fakes import light_services
    from voicebot.app import create_app

    services = light_services(tmp_path, catalogue, classifier, audiosocket_enabled=False)
    days = services.settings.retention_days
    services.store.enqueue(routed("CA-old", created_at=time.time() - (days + 1) * 86400))
    services.store.enqueue(routed("CA-new"))
    with TestClient(create_app(services.settings, services=services)):
        deadline = time.monotonic() + 10
        while services.store.get("CA-old") is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert services.store.get("CA-old") is None and services.store.get("CA-new") is not None


# == forget =====================================================================================
def test_forget_removes_a_call_from_sqlite_down_to_the_file_bytes(tmp_path, monkeypatch, capsys):
    from voicebot.cli import main

    db = tmp_path / "voicebot.db"
    store = SqliteQueueStore(db)
    store.enqueue(routed("CA-forget", transcript=MARKER))
    store.enqueue(routed("CA-keep", transcript="et andet opkald"))
    store.claim("CA-forget", "anna")
    monkeypatch.setenv("VOICEBOT_DATA_DIR", str(tmp_path))
    assert main(["forget", "CA-forget"]) == 0
    assert "removed CA-forget" in capsys.readouterr().out
    assert store.get("CA-forget") is None and store.get("CA-keep") is not None
    store.close()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("voicebot.db*"))
    assert MARKER.encode() not in on_disk and b"et andet opkald" in on_disk
    assert main(["forget", "CA-forget"]) == 0
    assert "no data held" in capsys.readouterr().out


def test_forget_finds_the_database_serve_was_started_with(tmp_path, monkeypatch, capsys):
    from voicebot.cli import main

    db = tmp_path / "elsewhere" / "calls.db"  # `voicebot serve --db elsewhere/calls.db`
    store = SqliteQueueStore(db)
    store.enqueue(routed("CA-db", transcript=MARKER))
    monkeypatch.setenv("VOICEBOT_DATA_DIR", str(tmp_path / "data"))
    assert main(["forget", "CA-db", "--db", str(db)]) == 0
    assert "removed CA-db" in capsys.readouterr().out
    assert store.get("CA-db") is None
    store.close()


def test_forget_refuses_when_it_finds_no_store_and_creates_none(tmp_path, monkeypatch, capsys):
    from voicebot.cli import main

    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("VOICEBOT_DATA_DIR", str(data))
    assert main(["forget", "CA-x"]) != 0
    err = capsys.readouterr().err
    assert str(data / "voicebot.db") in err and "nothing was deleted" in err
    assert main(["forget", "CA-x", "--db", str(tmp_path / "missing.db")]) != 0
    assert str(tmp_path / "missing.db") in capsys.readouterr().err
    assert list(data.iterdir()) == [] and not (tmp_path / "missing.db").exists()


def test_forget_refuses_when_redis_cannot_be_reached(tmp_path, monkeypatch, capsys):
    from voicebot.cli import main

    monkeypatch.setenv("VOICEBOT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("VOICEBOT_QUEUE_BACKEND", "redis")
    monkeypatch.setenv("VOICEBOT_REDIS_URL", f"redis://:hemmelig@127.0.0.1:{free_port()}/0")
    monkeypatch.setattr("voicebot.queues.redis_streams.RETRIES", 0)
    assert main(["forget", "CA-x"]) != 0
    err = capsys.readouterr().err
    assert "cannot be reached" in err and "hemmelig" not in err
    assert list(tmp_path.iterdir()) == []


def test_database_files_and_the_secret_are_readable_by_their_owner_only(tmp_path, fast_hashing):
    import os
    import stat

    from voicebot.accounts import AgentStore
    from voicebot.secrets import load_or_create_secret

    old_umask = os.umask(0o022)  # a usual umask: files are world-readable unless made private
    try:
        queue = SqliteQueueStore(tmp_path / "voicebot.db")
        queue.enqueue(routed("CA-mode"))  # the WAL and SHM files exist from here
        agents = AgentStore(tmp_path / "agents.db")
        agents.add("anna", "korrekt-hest-batteri", ["TMF"])
        load_or_create_secret(tmp_path)
        files = [p for p in tmp_path.iterdir() if p.is_file()]
        assert {p.name for p in files} >= {
            "voicebot.db",
            "voicebot.db-wal",
            "voicebot.db-shm",
            "agents.db",
            "agents.db-wal",
            "agents.db-shm",
            "secret",
        }
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
        assert all(mode & 0o077 == 0 for mode in modes.values()), modes
        queue.close()
        agents.close()
    finally:
        os.umask(old_umask)


def test_forget_removes_a_call_from_redis_everywhere(redis_server, tmp_path, monkeypatch, capsys):
    import redis

    from voicebot.cli import main

    prefix = "voicebot"  # the prefix the gateway uses
    store = RedisQueueStore(redis_server.url, prefix=prefix)
    call_id, keep = f"CA-{uuid.uuid4().hex[:8]}", f"CA-{uuid.uuid4().hex[:8]}"
    store.enqueue(routed(call_id))
    store.enqueue(routed(keep, transcript="et andet opkald"))
    store.claim(call_id, "anna")  # its stream entry is pending on an agent's consumer
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    stream = f"{prefix}:queue:TMF"
    assert any(f["call_id"] == call_id for _, f in client.xrange(stream))
    monkeypatch.setenv("VOICEBOT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("VOICEBOT_QUEUE_BACKEND", "redis")
    monkeypatch.setenv("VOICEBOT_REDIS_URL", redis_server.url)
    assert main(["forget", call_id]) == 0
    assert f"removed {call_id}" in capsys.readouterr().out
    assert not client.exists(f"{prefix}:call:{call_id}")
    assert all(
        f["call_id"] != call_id for _, f in client.xrange(stream)
    )  # the stream entry is gone
    assert (
        client.zscore(f"{prefix}:calls", call_id) is None
        and client.zscore(f"{prefix}:calls:TMF", call_id) is None
    )
    pending = client.xpending_range(stream, "agents", "-", "+", 100)
    assert [
        client.xrange(stream, p["message_id"], p["message_id"])[0][1]["call_id"] for p in pending
    ] == [keep]
    assert store.get(keep) is not None and [c.call_id for c in store.waiting()] == [keep]
    deadline = time.monotonic() + 10  # the append-only file is rewritten without the record
    while time.monotonic() < deadline and _aof_holds(redis_server.directory, MARKER):
        time.sleep(0.1)
    assert list(redis_server.directory.rglob("*.aof")) and not _aof_holds(
        redis_server.directory, MARKER
    )
    store.forget(keep)
    store.close()
    client.close()


def _aof_holds(directory: Path, marker: str) -> bool:
    """Whether any append-only file holds `marker`. Redis renames its temp-rewriteaof files
    while we read, so a file that vanished between listing and reading is skipped."""
    for path in directory.rglob("*.aof"):
        try:
            if marker.encode() in path.read_bytes():
                return True
        except FileNotFoundError:
            continue
    return False
