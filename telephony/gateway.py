"""Platform endpoints that are not a plain WebSocket route from telephony.registry, set up by
`mount(app, settings, run_channel)` when the app is created (see voicebot.app):

- the Asterisk AudioSocket TCP server (telephony.audiosocket), started and stopped with the
  app's lifespan, after the models are loaded; its address is in app.state.audiosocket;
- the browser softphone page at /softphone (voicebot/static/softphone.html, which speaks the
  /raw protocol).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path

from telephony import audiosocket
from telephony.base import MediaChannel, log

STATIC_DIR = Path(__file__).resolve().parent.parent / "voicebot" / "static"


def mount(app, settings, run_channel: Callable[[MediaChannel], Awaitable[None]]) -> None:
    """Add the non-registry platform endpoints to `app` (the Twilio HTTP side lives in voicebot.app)."""
    from fastapi.responses import FileResponse

    app.state.audiosocket = None

    @app.get("/softphone", include_in_schema=False)
    async def softphone() -> FileResponse:
        return FileResponse(STATIC_DIR / "softphone.html", media_type="text/html; charset=utf-8")

    tel = settings.telephony
    if not tel.audiosocket_enabled:
        return
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_):
        async with inner(app_) as state:
            server = None
            try:
                server = await audiosocket.serve(tel.audiosocket_host, tel.audiosocket_port, run_channel)
            except OSError as exc:
                # One platform's port must not take the others down; say so loudly.
                log.error("AudioSocket server not started on %s:%d: %s", tel.audiosocket_host,
                          tel.audiosocket_port, exc)
            if server is not None:
                app_.state.audiosocket = server.sockets[0].getsockname()[:2]
                log.info("AudioSocket (Asterisk) listening on %s:%d", *app_.state.audiosocket)
            try:
                yield state
            finally:
                if server is not None:
                    server.close()
                    if hasattr(server, "close_clients"):  # Python 3.12+ waits for open calls
                        server.close_clients()
                    with suppress(TimeoutError):
                        await asyncio.wait_for(server.wait_closed(), 5)
                    app_.state.audiosocket = None

    app.router.lifespan_context = lifespan
