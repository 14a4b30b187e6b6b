"""Load and soak: 30 simultaneous synthetic calls against the real app in its own process
(tests/light_server.py: everything but Whisper, whose place a recogniser taking 50–150 ms
takes), across six platform protocols, each line calling again as soon as its call ends.

CI runs a short version (LINES calls at a time for SHORT_S seconds); the full soak runs with
`pytest tests/test_soak.py --soak-minutes 10` or VOICEBOT_SOAK_MINUTES=10. Asserted: no call
fails and the server logs no traceback; the server's RSS after the warm-up grows less than
RSS_GROWTH_MB; every routed call is in the queue store exactly once (and nothing else is);
after the last call every session is gone (no active calls, no EventBus subscribers, no task
of a session or channel left). The figures are printed (run with -s to see them) and written
to soak.json in the test's temporary directory.

Also here: the call beyond capacity (max_calls) is routed to a person with a spoken notice.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from pathlib import Path

import psutil
import pytest
import websockets

from telephony.codecs import resample
from telephony.simulator import PLATFORMS, SimulatedCall
from tests.fakes import ServedApp, light_services
from tests.light_server import LightServer

pytestmark = pytest.mark.soak

LINES = 30
SHORT_S = 40.0
RSS_GROWTH_MB = 50.0
PROTOCOLS = ["twilio", "telnyx", "raw", "vonage", "asterisk", "audiosocket"]
SENTENCE = "Min skraldespand er ikke blevet tømt i denne uge."


def soak_seconds(config) -> float:
    minutes = config.getoption("--soak-minutes") or float(
        os.environ.get("VOICEBOT_SOAK_MINUTES", "0") or 0
    )
    return minutes * 60 if minutes else SHORT_S


async def line(
    server: LightServer, credentials, protocol: str, audio, until: float, results: list
) -> None:
    """One phone line: call, and call again, until `until`."""
    media = server.url(f"/{protocol}")
    if protocol == "audiosocket":
        media = f"tcp://127.0.0.1:{server.ports['audiosocket']}"
    while time.monotonic() < until:
        call = SimulatedCall(
            media, None, protocol=protocol, speed=1.0, timeout_s=60, credentials=credentials
        )
        call.events_url = server.url(f"/calls/{call.call_id}/events?token={credentials.secret}")
        entry = {"call_id": call.call_id, "protocol": protocol, "error": None, "routed": False}
        try:
            result = await asyncio.wait_for(call.run([audio]), 90)
            entry["routed"] = any(e.get("type") == "routed" for e in result.events)
            entry["forvaltning"] = result.turns[-1].forvaltning if result.turns else None
        except Exception as exc:  # a failed call is a finding, not the end of the soak
            entry["error"] = f"{type(exc).__name__}: {exc}"
        results.append(entry)


def test_thirty_simultaneous_calls(tmp_path: Path, request, speaker):
    from voicebot.config import load_settings
    from voicebot.secrets import load_credentials

    duration_s = soak_seconds(request.config)
    # RSS rises while allocator arenas and onnxruntime's arena reach their working size, then
    # holds (measured: flat from about 150 s at this load, Python object count flat
    # throughout); growth is measured after that.
    warmup_s = min(180.0, max(10.0, duration_s / 4))
    speech = speaker.speak(SENTENCE)
    audio = {p: resample(speech, 16000, PLATFORMS[p].wire_rate) for p in PROTOCOLS}
    results: list[dict] = []
    rss: list[tuple[float, int]] = []
    curve: list[dict] = []

    with LightServer(tmp_path, "--vad", "silero", "--max-calls", "32") as server:
        credentials = load_credentials(load_settings(None, data_dir=tmp_path))
        process = psutil.Process(server.ports["pid"])

        async def sample_rss(start: float, until: float) -> None:
            while time.monotonic() < until:
                rss.append((time.monotonic() - start, process.memory_info().rss))
                if len(rss) % 15 == 1:  # every 30 s: what lives in the server besides bytes
                    state = await asyncio.to_thread(server.state)
                    curve.append(
                        {
                            "t_s": round(rss[-1][0]),
                            "rss_mb": round(rss[-1][1] / 2**20, 1),
                            "calls": len(results),
                            **{
                                k: state[k]
                                for k in ("python_objects", "threads", "tasks", "active_calls")
                            },
                        }
                    )
                await asyncio.sleep(2.0)

        async def soak() -> None:
            start = time.monotonic()
            until = start + duration_s
            sampler = asyncio.create_task(sample_rss(start, until))
            lines = [
                line(
                    server,
                    credentials,
                    PROTOCOLS[i % len(PROTOCOLS)],
                    audio[PROTOCOLS[i % len(PROTOCOLS)]],
                    until,
                    results,
                )
                for i in range(LINES)
            ]
            await asyncio.gather(*lines)
            await sampler

        asyncio.run(soak())
        deadline = time.monotonic() + 30  # hang-ups are processed; sessions wind down
        state = server.state()
        while (
            state["active_calls"] or state["session_tasks"] or state["subscribers"]
        ) and time.monotonic() < deadline:
            time.sleep(0.2)
            state = server.state()
        final_rss = state["rss"]
        with sqlite3.connect(tmp_path / "voicebot.db") as db:
            stored = dict(
                db.execute("SELECT call_id, COUNT(*) FROM routed_calls GROUP BY call_id").fetchall()
            )
    log = server.log_path.read_text(errors="replace")

    errors = [r for r in results if r["error"]]
    routed = {r["call_id"] for r in results if r["routed"]}
    after_warmup = [v for t, v in rss if t >= warmup_s] or [rss[-1][1]]
    baseline = after_warmup[0]
    figures = {
        "duration_s": duration_s,
        "lines": LINES,
        "calls": len(results),
        "routed": len(routed),
        "errors": len(errors),
        "rss_start_mb": round(rss[0][1] / 2**20, 1),
        "rss_after_warmup_mb": round(baseline / 2**20, 1),
        "rss_peak_mb": round(max(v for _, v in rss) / 2**20, 1),
        "rss_end_mb": round(final_rss / 2**20, 1),
        "rss_growth_after_warmup_mb": round((max(final_rss, *after_warmup) - baseline) / 2**20, 1),
        "per_protocol": {p: sum(r["protocol"] == p for r in results) for p in PROTOCOLS},
        "curve": curve,
    }
    (tmp_path / "soak.json").write_text(json.dumps(figures, indent=1))
    print("\nsoak figures:", json.dumps(figures))

    assert not errors, errors[:5]
    assert "Traceback" not in log, log[-3000:]
    assert len(results) >= LINES and len(routed) == len(results)  # every call was routed …
    assert all(stored.get(call_id) == 1 for call_id in routed)  # … and is in the queue exactly once
    assert set(stored) == routed  # and nothing else is
    assert state == {**state, "active_calls": 0, "subscribers": 0, "session_tasks": []}
    assert figures["rss_growth_after_warmup_mb"] < RSS_GROWTH_MB, figures


def test_the_call_beyond_capacity_hears_so_and_reaches_a_person(tmp_path, catalogue, classifier):
    """max_calls=32: the 33rd caller is told it is busy and routed to KONTAKTCENTER, not left in silence."""
    services = light_services(tmp_path, catalogue, classifier, audiosocket_enabled=False)
    services.settings.max_calls = 32
    overloaded = catalogue.prompt("overloaded", "da")

    with ServedApp(services) as served:
        token = served.credentials.token("raw")

        async def hold(n: int, release: asyncio.Event) -> None:
            async with websockets.connect(f"{served.media_url('raw')}?token={token}") as ws:
                await ws.send(json.dumps({"call_id": f"web-hold-{n}"}))
                reader = asyncio.create_task(ws.recv())
                await release.wait()
                reader.cancel()

        async def scenario():
            release = asyncio.Event()
            holders = [asyncio.create_task(hold(n, release)) for n in range(32)]
            deadline = time.monotonic() + 20
            while services.active_calls < 32 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert services.active_calls == 32
            call = SimulatedCall(
                served.media_url("twilio"),
                None,
                speed=4.0,
                timeout_s=20,
                credentials=served.credentials,
            )
            call.events_url = served.events_url(call.call_id)
            result = await asyncio.wait_for(call.run([]), 30)
            release.set()
            await asyncio.gather(*holders)
            return call.call_id, result

        call_id, result = asyncio.run(scenario())
        said = [e["text"] for e in result.events if e["type"] == "bot_said"]
        assert said == [overloaded] and len(result.reply_audio) > 0  # told, never silence
        record = services.store.get(call_id)
        assert (
            record.forvaltning == "KONTAKTCENTER"
            and "capacity" in record.reason
            and record.status == "waiting"
        )
        deadline = time.monotonic() + 10
        while services.active_calls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert services.active_calls == 0
