"""Issue 17 item 4: the catalogue reloads while calls are live (POST /api/reload as `voicebot
reload` sends it, and SIGHUP). A call started before the reload finishes on the catalogue it
started with; a call started after gets the new one; a bad file is refused naming the file and
the entry, and the running catalogue stays. No call is dropped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import websockets
import yaml

from tests.conftest import copy_catalogue
from tests.fakes import ServedApp, light_services
from tests.light_server import LightServer
from voicebot.catalogue import load_catalogue
from voicebot.cli import main

NEW_GREETING = "Hej igen, du taler med den nye telefonassistent. Tryk nul for en medarbejder."
NEW_HUMAN = "Nu sender vi dig videre til en af vores medarbejdere. Bliv i røret."


def edit_catalogue(path: Path, **prompts: str) -> None:
    """Rewrite prompts' Danish texts in the catalogue file, as an operator editing it would."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    for name, text in prompts.items():
        doc["prompts"][name]["da"] = text
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")


def break_catalogue(path: Path) -> None:
    """A routing table with a typo: intent `waste` sent to a forvaltning that does not exist."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["intents"]["waste"]["forvaltning"] = "TEKNIK_OG_MILJO"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")


def post_reload(port: int, secret: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/reload",
        method="POST",
        headers={"Authorization": f"Bearer {secret}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class RawCaller:
    """A caller on /raw that plays everything at once (echoes each mark) and presses keys."""

    def __init__(self, served: ServedApp, call_id: str) -> None:
        self.served, self.call_id = served, call_id
        self.hangup: dict[str, Any] | None = None

    async def __aenter__(self) -> RawCaller:
        token = self.served.credentials.token("raw")
        self.ws = await websockets.connect(f"{self.served.media_url('raw')}?token={token}")
        await self.ws.send(json.dumps({"call_id": self.call_id}))
        self.reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        async for message in self.ws:
            if isinstance(message, bytes):
                continue
            data = json.loads(message)
            if data["type"] == "mark":
                await self.ws.send(json.dumps({"type": "mark", "name": data["name"]}))
            elif data["type"] == "hangup":
                self.hangup = data

    async def hung_up(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """The bot's hangup message: how the call ended on the line."""
        deadline = time.monotonic() + timeout_s
        while self.hangup is None:
            assert time.monotonic() < deadline, f"{self.call_id}: the bot never hung up"
            await asyncio.sleep(0.02)
        return self.hangup

    async def press(self, digit: str) -> None:
        await self.ws.send(json.dumps({"type": "dtmf", "digit": digit}))

    async def __aexit__(self, *exc: object) -> None:
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
            await self.reader
        await self.ws.close()


class Events:
    """Every call's events, from /calls/*/events with the master secret."""

    def __init__(self, served: ServedApp) -> None:
        self.served, self.seen = served, []

    async def __aenter__(self) -> Events:
        url = f"ws://127.0.0.1:{self.served.port}/calls/*/events?token={self.served.secret}"
        self.ws = await websockets.connect(url)
        self.reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        async for message in self.ws:
            self.seen.append(json.loads(message))

    async def said(self, call_id: str, purpose: str, timeout_s: float = 30.0) -> str:
        """The text of the bot's first prompt of `purpose` in this call."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for e in self.seen:
                if (
                    e["call_id"] == call_id
                    and e["type"] == "bot_said"
                    and e["mark"].startswith(f"{purpose}-")
                ):
                    return e["text"]
            await asyncio.sleep(0.02)
        raise AssertionError(f"{call_id} never said a {purpose} prompt: {self.seen}")

    async def ended(self, call_id: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(e["call_id"] == call_id and e["type"] == "call_ended" for e in self.seen):
            assert time.monotonic() < deadline, f"{call_id} did not end"
            await asyncio.sleep(0.02)

    async def __aexit__(self, *exc: object) -> None:
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
            await self.reader
        await self.ws.close()


def test_a_reload_under_live_calls_changes_only_new_calls_and_a_bad_file_is_refused(
    tmp_path, catalogue, classifier
):
    path = copy_catalogue(tmp_path)
    services = light_services(tmp_path, catalogue, classifier, audiosocket_enabled=False)
    services.settings.catalogue = path
    old = load_catalogue(path)

    with ServedApp(services) as served:

        async def scenario() -> dict[str, Any]:
            async with Events(served) as events, RawCaller(served, "before-reload") as before:
                greeting = await events.said("before-reload", "greeting")
                assert greeting.startswith(old.prompt("greeting", "da"))

                edit_catalogue(path, greeting=NEW_GREETING, human=NEW_HUMAN)
                status, body = await asyncio.to_thread(post_reload, served.port, served.secret)
                assert status == 200 and body["last_reload"]["ok"], body

                async with RawCaller(served, "after-reload") as after:
                    assert (await events.said("after-reload", "greeting")).startswith(NEW_GREETING)
                    await before.press("0")  # to a person: the hand-off prompt of its catalogue
                    await after.press("0")
                    said_before = await events.said("before-reload", "human")
                    said_after = await events.said("after-reload", "human")
                    await events.ended("before-reload")
                    await events.ended("after-reload")
                    hangups = (await before.hung_up(), await after.hung_up())

                break_catalogue(path)
                status, refused = await asyncio.to_thread(post_reload, served.port, served.secret)
                async with RawCaller(served, "after-refusal"):
                    greeting_after_refusal = await events.said("after-refusal", "greeting")
            return {
                "said_before": said_before,
                "said_after": said_after,
                "hangups": hangups,
                "refused": (status, refused),
                "greeting_after_refusal": greeting_after_refusal,
            }

        result = asyncio.run(scenario())
        records = {c.call_id: c for c in services.store.calls()}

    assert result["said_before"] == old.prompt("human", "da")
    assert result["said_after"] == NEW_HUMAN
    # neither call was dropped: both handed to a person, both waiting in the queue
    for hangup in result["hangups"]:
        assert hangup is not None and hangup["reason"] == "handoff"
    assert records["before-reload"].status == records["after-reload"].status == "waiting"

    status, refused = result["refused"]
    assert status == 422 and not refused["last_reload"]["ok"]
    error = refused["last_reload"]["error"]
    assert str(path) in error and "intents.waste.forvaltning" in error  # the file and the entry
    assert result["greeting_after_refusal"].startswith(
        NEW_GREETING
    )  # the last good catalogue runs on
    assert services.catalogue.intents["waste"].forvaltning == old.intents["waste"].forvaltning


def test_reload_needs_the_master_secret(tmp_path, catalogue, classifier):
    services = light_services(tmp_path, catalogue, classifier, audiosocket_enabled=False)
    services.settings.catalogue = copy_catalogue(tmp_path)
    with ServedApp(services) as served:
        assert post_reload(served.port, "not-the-secret")[0] == 401


@pytest.fixture
def light_server(tmp_path):
    path = copy_catalogue(tmp_path)
    server = LightServer(tmp_path / "gw", env={"VOICEBOT_CATALOGUE": str(path)}).start()
    yield server, path
    server.stop()


def catalogue_status(server: LightServer) -> dict[str, Any]:
    request = urllib.request.Request(
        server.url("/api/catalogue", "http"), headers={"Authorization": f"Bearer {server.secret}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wait_for_reload(server: LightServer, since: float | None) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        status = catalogue_status(server)
        if status["last_reload"]["at"] != since:
            return status
        assert time.monotonic() < deadline, "the gateway did not reload"
        time.sleep(0.05)


def test_sighup_reloads_the_running_gateway_and_keeps_it_on_a_bad_file(light_server, caplog):
    """The gateway process itself (tests/light_server.py: the real app, fake speech)."""
    server, path = light_server
    first = catalogue_status(server)
    edit_catalogue(path, greeting=NEW_GREETING)
    os.kill(server.ports["pid"], signal.SIGHUP)
    reloaded = wait_for_reload(server, first["last_reload"]["at"])
    assert reloaded["last_reload"]["ok"] and reloaded["sha256"] != first["sha256"]

    break_catalogue(path)
    os.kill(server.ports["pid"], signal.SIGHUP)
    refused = wait_for_reload(server, reloaded["last_reload"]["at"])
    assert not refused["last_reload"]["ok"]
    assert "intents.waste.forvaltning" in refused["last_reload"]["error"]
    assert refused["sha256"] == reloaded["sha256"]  # the running catalogue stayed
    assert server.proc.poll() is None  # SIGHUP's default action (terminate) is not taken
    log = server.log_path.read_text()
    assert "catalogue reload refused" in log and str(path) in log


def test_voicebot_reload_command(light_server, monkeypatch, capsys):
    server, path = light_server
    monkeypatch.setenv("VOICEBOT_DATA_DIR", str(server.data_dir))
    url = server.url("", "http")
    edit_catalogue(path, greeting=NEW_GREETING)
    assert main(["reload", "--url", url]) == 0
    assert "catalogue reloaded from" in capsys.readouterr().out

    break_catalogue(path)
    assert main(["reload", "--url", url]) == 1
    err = capsys.readouterr().err
    assert "refused" in err and "intents.waste.forvaltning" in err and str(path) in err

    monkeypatch.setenv("VOICEBOT_DATA_DIR", str(server.data_dir / "elsewhere"))
    assert main(["reload", "--url", url]) == 2
    assert "is `voicebot serve` running with this data_dir?" in capsys.readouterr().err


def test_a_call_keeps_the_classifier_and_catalogue_it_started_with(tmp_path, catalogue, classifier):
    """What CallSession gets (Services.for_call) is pinned: the catalogue, the classifier built
    from it (its trigger phrases) and the domain prompt; the call slots stay shared."""
    from voicebot.services import reload_catalogue

    path = copy_catalogue(tmp_path)
    services = light_services(tmp_path, catalogue, classifier, audiosocket_enabled=False)
    services.settings.catalogue = path
    in_call = services.for_call()
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["intents"]["waste"]["trigger_phrases"] = {
        "da": ["storskraldsordningen"],
        "en": ["bulky waste scheme"],
    }
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")

    assert asyncio.run(reload_catalogue(services)).ok
    assert services.classifier.classify("storskraldsordningen").rule  # the new rule, for new calls
    assert not in_call.classifier.classify("storskraldsordningen").rule  # not in the call
    assert in_call.catalogue is catalogue and services.catalogue is not catalogue
    assert services.admit() and in_call.active_calls == 1  # one count of calls for both
    services.release()
