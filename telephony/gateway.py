"""Platform endpoints that are not a plain WebSocket route from telephony.registry, set up by
`mount(app, settings, run_channel)` when the app is created (see voicebot.app):

- the Asterisk AudioSocket TCP server (telephony.audiosocket), started and stopped with the
  app's lifespan, after the models are loaded; its address is in app.state.audiosocket;
- the browser softphone page at /softphone (voicebot/static/softphone.html, which speaks the
  /raw protocol). /raw needs a token: asked for from this machine directly (loopback peer and
  Host, no proxy headers, no public_url), the page comes with a softphone token embedded, which
  opens /raw and the events of the softphone's own calls and nothing else; otherwise the page
  asks for the token (data_dir/secret).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path

from fastapi import Request
from fastapi.responses import HTMLResponse

from telephony import audiosocket
from telephony.base import Limits, MediaChannel, log

STATIC_DIR = Path(__file__).resolve().parent.parent / "voicebot" / "static"


SOFTPHONE_HEADERS = {
    "Cache-Control": "no-store", "X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
}  # fmt: skip


def mount(app, settings, run_channel: Callable[[MediaChannel], Awaitable[None]]) -> None:
    """Add the non-registry platform endpoints to `app` (the Twilio HTTP side lives in voicebot.app)."""
    from voicebot.app import is_local_request

    app.state.audiosocket = None

    @app.get("/softphone", include_in_schema=False)
    async def softphone(request: Request) -> HTMLResponse:
        embed = (settings.security.softphone_embed_token and not settings.public_url
                 and is_local_request(request))
        token = request.app.state.credentials.softphone_token if embed else ""
        page = (STATIC_DIR / "softphone.html").read_text(encoding="utf-8").replace("{{token}}", token)
        return HTMLResponse(page, headers=SOFTPHONE_HEADERS)

    tel = settings.telephony
    if not tel.audiosocket_enabled:
        return
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_):
        async with inner(app_) as state:
            server = None
            try:
                server = await audiosocket.serve(tel.audiosocket_host, tel.audiosocket_port, run_channel,
                                                 settings.security.audiosocket_sources, Limits.from_settings(settings))
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
