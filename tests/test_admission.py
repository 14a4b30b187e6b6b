"""Issue 13 #5: `max_calls` holds when calls arrive together. The slot is reserved when the
connection is taken, before any await, so calls that connect at once cannot all pass."""

from __future__ import annotations

import asyncio
import json
import time

import websockets

from tests.fakes import ServedApp, light_services

MAX_CALLS = 2
CALLERS = 5


def test_calls_arriving_together_cannot_exceed_max_calls(tmp_path, catalogue, classifier):
    services = light_services(tmp_path, catalogue, classifier, audiosocket_enabled=False)
    services.settings.max_calls = MAX_CALLS
    with ServedApp(services) as served:
        url = f"{served.media_url('raw')}?token={served.credentials.token('raw')}"
        most_active = 0

        async def scenario() -> None:
            nonlocal most_active
            sockets = [await websockets.connect(url) for _ in range(CALLERS)]  # all connected first
            try:
                for n, ws in enumerate(sockets):
                    await ws.send(json.dumps({"call_id": f"together-{n}"}))
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    most_active = max(most_active, services.active_calls)
                    refused = [c for c in services.store.calls() if "capacity" in c.reason]
                    if len(refused) >= CALLERS - MAX_CALLS:
                        break
                    await asyncio.sleep(0.05)
            finally:
                for ws in sockets:
                    await ws.close()

        asyncio.run(scenario())
        refused = {c.call_id for c in services.store.calls() if "capacity" in c.reason}
        assert most_active <= MAX_CALLS
        assert (
            len(refused) == CALLERS - MAX_CALLS
        )  # the others heard "mange opkald" and went to a person
        deadline = time.monotonic() + 10
        while services.active_calls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert services.active_calls == 0  # every slot given back
