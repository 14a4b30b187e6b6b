"""Faults: the gateway killed with SIGKILL in the middle of calls, restarted; stopped with
SIGTERM; and Redis restarted under a connected queue store. Nothing enqueued is lost, and no
platform is left hanging on a call the server can no longer serve.

The gateway here is the real app in its own process without Whisper (tests/light_server.py):
what is tested — the queue write before the hand-off, SQLite's durability, what the platform
sees when the process dies — does not depend on the recogniser, and the process starts in a
second or two instead of loading the model.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import urllib.request

import numpy as np
import pytest

from telephony.simulator import PLATFORMS, SimulatedCall
from tests.light_server import LightServer
from voicebot.queues import RedisQueueStore, RoutedCall

from .redis_server import RedisServer, free_port

CLIENT_TIMEOUT_S = 15.0  # a platform that waits longer than this for a dead server is hanging


def make_call(server: LightServer, credentials, protocol: str) -> SimulatedCall:
    media = server.url(f"/{protocol}")
    if protocol == "audiosocket":
        media = f"tcp://127.0.0.1:{server.ports['audiosocket']}"
    call = SimulatedCall(
        media, None, protocol=protocol, speed=4.0, timeout_s=120, credentials=credentials
    )
    call.events_url = server.url(f"/calls/{call.call_id}/events?token={credentials.secret}")
    return call


def waiting(server: LightServer) -> set[str]:
    url = server.url("/api/queues", "http")
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {server.secret}"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return {c["call_id"] for c in json.loads(r.read())["waiting"]}


async def in_progress(server: LightServer, credentials, protocols: list[str]) -> list[asyncio.Task]:
    """Calls that stay on the line (a long silence as the caller's turn) until the server goes."""
    tasks = []
    for protocol in protocols:
        silence = np.zeros(60 * PLATFORMS[protocol].wire_rate, np.float32)
        tasks.append(asyncio.create_task(make_call(server, credentials, protocol).run([silence])))
    deadline = time.monotonic() + 20
    while (await asyncio.to_thread(server.state))["active_calls"] < len(protocols):
        assert time.monotonic() < deadline, "the calls did not start"
        await asyncio.sleep(0.1)
    return tasks


async def ended_without_hanging(tasks: list[asyncio.Task]) -> list[str]:
    """Each call ends by itself within CLIENT_TIMEOUT_S; how each ended."""
    outcomes = []
    for task in tasks:
        try:
            result = await asyncio.wait_for(task, CLIENT_TIMEOUT_S)
            outcomes.append("closed" if result.closed_by_bot else "ended")
        except TimeoutError:
            outcomes.append("HUNG")
        except (ConnectionError, OSError) as exc:  # a reset is an end too, not a hang
            outcomes.append(type(exc).__name__)
    return outcomes


def test_kill_9_mid_call_loses_no_queued_call_and_leaves_no_platform_hanging(tmp_path):
    from voicebot.config import load_settings
    from voicebot.secrets import load_credentials

    protocols = ["twilio", "telnyx", "raw", "asterisk", "vonage", "audiosocket", "audiohook"]
    server = LightServer(tmp_path, "--vad", "silent", "--prompt-s", "0.3").start()
    try:
        credentials = load_credentials(load_settings(None, data_dir=tmp_path))

        async def before_the_kill():
            routed = []
            for protocol, digit in zip(
                protocols, "2345623", strict=True
            ):  # routed, then still waiting
                call = make_call(server, credentials, protocol)
                result = await asyncio.wait_for(call.run([], digits=digit), 30)
                assert result.turns and result.turns[0].action == "route"
                routed.append(call.call_id)
            live = await in_progress(server, credentials, protocols)
            server.kill()  # SIGKILL: no shutdown, no goodbye
            return routed, await ended_without_hanging(live)

        routed, outcomes = asyncio.run(before_the_kill())
        assert server.proc.returncode == -signal.SIGKILL
        assert "HUNG" not in outcomes, outcomes

        server.start()  # the same data directory: the same queue database and secret
        assert set(routed) <= waiting(server)  # every enqueued call is still waiting

        async def after_the_restart():
            call = make_call(server, credentials, "twilio")
            result = await asyncio.wait_for(call.run([], digits="0"), 30)
            return call.call_id, result

        call_id, result = asyncio.run(after_the_restart())
        assert result.turns[0].forvaltning == "KONTAKTCENTER" and call_id in waiting(server)

        # A graceful stop (SIGTERM) ends live calls too: closed by the server, not dropped.
        async def stopped():
            live = await in_progress(server, credentials, ["twilio", "raw", "audiosocket"])
            server.proc.send_signal(signal.SIGTERM)
            return await ended_without_hanging(live)

        outcomes = asyncio.run(stopped())
        assert "HUNG" not in outcomes, outcomes
        # uvicorn shuts down, then re-raises the signal it caught: a clean exit by SIGTERM.
        assert server.proc.wait(15) in (0, -signal.SIGTERM)
        assert "Traceback" not in server.log_path.read_text(errors="replace")
    finally:
        server.stop()


def test_redis_restarted_under_a_connected_store_loses_nothing(tmp_path):
    redis = RedisServer(tmp_path / "redis", free_port()).start()
    try:
        store = RedisQueueStore(redis.url, prefix="faults")
        store.enqueue(RoutedCall("CA-before", "SUF", "elder_care", 0.8, "hjemmehjælp"))
        redis.kill()  # SIGKILL: what survives is what the append-only file holds

        def restart_soon() -> None:
            time.sleep(0.5)
            redis.start()

        restarter = threading.Thread(target=restart_soon)
        restarter.start()
        # Routed while Redis is down: the store's retries bridge the restart.
        store.enqueue(RoutedCall("CA-during", "SUF", "elder_care", 0.8, "plejebolig"))
        restarter.join()
        assert [c.call_id for c in store.waiting(["SUF"])] == ["CA-before", "CA-during"]
        assert store.claim("CA-during", "anna", ["SUF"])  # the scripts were loaded again
        redis.kill()
        redis.start()
        fresh = RedisQueueStore(redis.url, prefix="faults")
        assert [c.call_id for c in fresh.waiting(["SUF"])] == ["CA-before"]
        assert [c.call_id for c in fresh.claimed(["SUF"])] == ["CA-during"]
        fresh.close()
        store.close()
    finally:
        redis.stop()


def test_a_long_redis_outage_fails_the_write_loudly(tmp_path, monkeypatch):
    """Beyond the retries the write raises; it never pretends to have queued the call."""
    import redis as redis_lib

    monkeypatch.setattr(
        "voicebot.queues.redis_streams.RETRIES", 1
    )  # the outage outlasts them, only sooner
    redis = RedisServer(tmp_path / "redis", free_port()).start()
    store = RedisQueueStore(redis.url, prefix="faults")
    redis.stop()
    try:
        with pytest.raises(redis_lib.ConnectionError):
            store.enqueue(RoutedCall("CA-lost", "SUF", "elder_care", 0.8, "hjemmehjælp"))
    finally:
        store.close()
