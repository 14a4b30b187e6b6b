"""Adding a platform is one module and one registry line (issue 12): a fake platform,
registered once, is served by the real app, authenticated with its own credential and called
through the simulator like any other."""

from __future__ import annotations

import asyncio

import pytest
import websockets

from telephony import registry
from tests import fake_platform
from tests.fakes import ServedApp, keypad_call, light_services


@pytest.fixture
def fake_registered(monkeypatch):
    monkeypatch.setitem(
        registry.PLATFORMS, fake_platform.PLATFORM, fake_platform.platform
    )  # the one line


def test_a_fake_platform_registered_once_takes_a_call(
    fake_registered, tmp_path, catalogue, classifier
):
    services = light_services(tmp_path, catalogue, classifier, audiosocket_enabled=False)
    with ServedApp(services) as served:
        call, result = keypad_call(served, fake_platform.PLATFORM, "2")
        (turn,) = result.turns
        assert (turn.action, turn.forvaltning) == ("route", "TMF")
        record = services.store.get(call.call_id)
        assert record is not None and record.platform == fake_platform.PLATFORM
        # its own credential, not another platform's
        raw_token = served.credentials.token("raw")
        refused = served.media_url(fake_platform.PLATFORM) + f"?token={raw_token}"

        async def status() -> int:
            try:
                async with websockets.connect(refused, open_timeout=5):
                    return 101
            except websockets.InvalidStatus as exc:
                return exc.response.status_code

        assert asyncio.run(status()) == 401
    assert (
        fake_platform.PLATFORM in registry.PLATFORM_CLIENTS
        and fake_platform.PLATFORM in registry.WEBSOCKET_CHANNELS
    )


def test_the_registry_lists_each_platform_once_with_its_parts():
    for name, platform in registry.PLATFORMS.items():
        assert platform.name == name
        assert platform.client.protocol == name  # the caller side speaks as this platform
        assert (platform.channel is None) == (
            platform.check is None
        )  # a served WebSocket is always checked
        assert platform.channel is not None or platform.serve is not None
