"""The platforms, served: every entry of telephony.registry the same way, with no platform named
here. For each platform its options are filled from the settings, its WebSocket route checks
the upgrade with the platform's own credential check, its server (AudioSocket's TCP) runs with
the app's lifespan, and its webhooks (Twilio's) get the runtime they need injected.

Every call id is admitted here before the session sees the call (`CallIds`): it must be a
valid id (telephony.base.CALL_ID), not the id of a live call, and not one with a queue record;
otherwise the call is refused with the platform's own close. The browser softphone's page is
served here too (/softphone, voicebot/static/softphone.html, which speaks /raw): asked for
from this machine directly (loopback peer and Host, no proxy headers, no public_url), it
comes with the softphone token embedded, which opens /raw and the events of the softphone's
own calls while they last, and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import HTMLResponse, PlainTextResponse

from telephony.auth import Credentials, request_target
from telephony.base import (
    CLOSE_POLICY,
    CallEvent,
    CallStart,
    HandOff,
    Limits,
    MediaChannel,
    ProtocolError,
    valid_call_id,
)  # fmt: skip
from telephony.platform import Connection, Platform, Upgrade, WebhookSide
from telephony.registry import PLATFORMS
from telephony.simulator import Endpoints
from voicebot import metrics
from voicebot.config import ConfigError, Settings

log = logging.getLogger("voicebot.gateway")
STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_SOFTPHONE_CALLS = 64  # softphone calls whose events the softphone token may follow
WAITING_STATUSES = ("waiting", "claimed")  # a record whose caller may still be put in a queue
SOFTPHONE_HEADERS = {
    "Cache-Control": "no-store", "X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
}  # fmt: skip


# == settings → the platforms' typed options ====================================================
def limits_of(settings: Settings) -> Limits:
    return Limits(settings.security.max_message_bytes, settings.security.send_timeout_s)


def platform_options(settings: Settings, platform: Platform) -> object:
    """The platform's options dataclass, each field from the setting `<platform>_<field>` of
    the telephony (or else security) section, e.g. telephony.telnyx_reorder_frames."""
    values = {}
    for f in dataclasses.fields(platform.options):
        key = f"{platform.name}_{f.name}"
        section = next(
            (s for s in (settings.telephony, settings.security) if key in type(s).model_fields),
            None,
        )
        if section is None:
            raise ConfigError(
                f"telephony.{key}: no setting for option {f.name!r} of platform {platform.name}"
            )
        values[f.name] = getattr(section, key)
    return platform.options(**values)


def endpoints(settings: Settings) -> Endpoints:
    """Where this gateway listens, for `voicebot call`."""
    tel = settings.telephony
    return Endpoints(settings.port, tel.audiosocket_host, tel.audiosocket_port)


# == requests ===================================================================================
def peer(conn: Request | WebSocket) -> str:
    return conn.client.host if conn.client else "unknown"


def request_urls(conn: Request | WebSocket, public_url: str | None) -> list[str]:
    """The URLs a platform may have signed for this request: as the request shows it (and
    its TLS form, for a TLS proxy that does not say so), and under the public URL."""
    scope = conn.scope
    target = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
    if scope.get("query_string"):
        target += "?" + scope["query_string"].decode("latin-1")
    websocket = scope["type"] == "websocket"
    plain, tls = ("ws", "wss") if websocket else ("http", "https")
    host = conn.headers.get("host", "")
    urls = [f"{scope.get('scheme', plain)}://{host}{target}", f"{tls}://{host}{target}"]
    if public_url:
        public = urlsplit(public_url)
        scheme = {"https": tls, "http": plain}.get(public.scheme, public.scheme)
        urls.append(f"{scheme}://{public.netloc}{public.path.rstrip('/')}{target}")
    return list(dict.fromkeys(urls))


def upgrade_of(ws: WebSocket, public_url: str | None) -> Upgrade:
    hosts = [ws.headers.get("host", "")]
    if public_url:
        hosts.append(urlsplit(public_url).netloc)
    return Upgrade(
        headers=ws.headers,
        query=ws.scope.get("query_string", b"").decode("latin-1"),
        signed_urls=request_urls(ws, public_url),
        authorities=hosts,
        target=request_target(str(ws.url)),
    )


def is_local_request(request: Request) -> bool:
    """A browser on this machine talking to us directly: loopback peer, a loopback Host (not a
    DNS-rebound name) and no proxy in between."""
    if any(
        h in request.headers
        for h in ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip", "via")
    ):
        return False
    host = urlsplit("//" + request.headers.get("host", "")).hostname or ""
    try:
        peer_ok = (
            request.client is not None and ipaddress.ip_address(request.client.host).is_loopback
        )
    except ValueError:
        peer_ok = False
    if host == "localhost":
        return peer_ok
    try:
        return peer_ok and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def refuse_upgrade(ws: WebSocket, endpoint: str, why: str, status: int = 401) -> None:
    """An HTTP answer to the upgrade (never an accepted-then-closed socket), and a WARNING."""
    metrics.AUTH_FAILURES.labels(endpoint).inc()
    log.warning("refused a %s connection from %s: %s", endpoint, peer(ws), why)
    text = "unauthorized\n" if status == 401 else "forbidden\n"
    try:
        await ws.send_denial_response(PlainTextResponse(text, status))
    except RuntimeError:  # a server without the denial-response extension: it answers HTTP 403
        await ws.close(1008)


# == call ids ===================================================================================
class CallIds:
    """The ids of live calls, and which of them the softphone started (it may follow those)."""

    def __init__(self, lookup: Callable[[str], object | None]) -> None:
        self._lookup = lookup  # call id → its queue record, if it has one (a blocking call)
        self.live: set[str] = set()
        self.softphone: dict[
            str, asyncio.Event
        ] = {}  # call id → set when the call ends; insertion-ordered

    async def admit(self, start: CallStart, softphone: bool) -> None:
        """Raises ProtocolError (the platform's own close) for an id that may not start a call."""
        call_id = start.call_id
        if not valid_call_id(call_id):
            raise ProtocolError(f"call id {call_id[:40]!r} is not a valid call id", CLOSE_POLICY)
        if call_id in self.live:
            raise ProtocolError(f"call id {call_id} is already in use by a live call", CLOSE_POLICY)
        self.live.add(call_id)  # before the lookup: a second start with this id waits for nothing
        try:
            recorded = await asyncio.to_thread(self._lookup, call_id)
        except BaseException:
            self.live.discard(call_id)
            raise
        if recorded is not None:
            self.live.discard(call_id)
            raise ProtocolError(f"call id {call_id} already has a queue record", CLOSE_POLICY)
        if softphone:
            self.softphone[call_id] = asyncio.Event()
            while len(self.softphone) > MAX_SOFTPHONE_CALLS:
                self.softphone.pop(next(iter(self.softphone))).set()

    def ended(self, call_id: str) -> None:
        self.live.discard(call_id)
        ended = self.softphone.pop(call_id, None)
        if ended is not None:
            ended.set()


class AdmittedChannel(MediaChannel):
    """A platform's channel whose call id is admitted (CallIds.admit) before the session sees
    the call; everything else is the platform's."""

    def __init__(self, inner: MediaChannel, calls: CallIds, softphone: bool = False) -> None:
        self.inner = inner
        self.calls = calls
        self.softphone = softphone
        self.call_id: str | None = None  # once admitted

    @property
    def platform(self) -> str:  # type: ignore[override]
        return self.inner.platform

    @property
    def error(self) -> ProtocolError | None:
        return self.inner.error

    @error.setter
    def error(self, value: ProtocolError | None) -> None:
        self.inner.error = value

    @property
    def echo_cancelled(self) -> bool:  # type: ignore[override]
        return self.inner.echo_cancelled

    @property
    def can_play(self) -> bool:
        return self.inner.can_play

    async def events(self) -> AsyncIterator[CallEvent]:
        async for event in self.inner.events():
            if isinstance(event, CallStart):
                try:
                    await self.calls.admit(event, self.softphone)
                except ProtocolError as exc:
                    self.inner.error = exc  # the platform closes with its code
                    raise
                self.call_id = event.call_id
            yield event

    async def play(self, audio: np.ndarray, mark: str) -> None:
        await self.inner.play(audio, mark)

    async def clear(self) -> None:
        await self.inner.clear()

    async def hang_up(self) -> None:
        await self.inner.hang_up()

    async def hand_off(self, target: HandOff) -> None:
        await self.inner.hand_off(target)

    def release(self) -> None:
        if self.call_id is not None:
            self.calls.ended(self.call_id)


RunAdmitted = Callable[[AdmittedChannel], Awaitable[None]]  # runs one admitted call


# == serving ====================================================================================
def mount(
    app: FastAPI,
    settings: Settings,
    run_channel: RunAdmitted,
    queue_for: Callable[[str], Awaitable[str | None]],
    goodbye: Callable[[], str],
) -> None:
    """Every registered platform's WebSocket route and webhooks, and the softphone page. The
    platforms' own servers start with `servers()` in the app's lifespan."""
    limits = limits_of(settings)

    def websocket_endpoint(platform: Platform) -> Callable[[WebSocket], Awaitable[None]]:
        options = platform_options(settings, platform)
        channel, check = platform.channel, platform.check
        assert channel is not None and check is not None

        async def endpoint(ws: WebSocket) -> None:
            creds: Credentials = ws.app.state.credentials
            admission = check(upgrade_of(ws, settings.public_url), creds, ws.app.state.nonces)
            if admission.refused is not None:
                await refuse_upgrade(ws, platform.name, admission.refused)
                return
            if (
                admission.deferred is not None
            ):  # refused in the platform's own protocol, after the accept
                metrics.AUTH_FAILURES.labels(platform.name).inc()
                log.warning(
                    "refusing a %s connection from %s: %s",
                    platform.name,
                    peer(ws),
                    admission.deferred,
                )
            await ws.accept()
            inner = channel(ws, Connection(limits, creds, options, admission))
            await run_channel(AdmittedChannel(inner, ws.app.state.call_ids, admission.softphone))

        return endpoint

    def refused(request: Request, why: str) -> None:
        metrics.AUTH_FAILURES.labels(request.url.path).inc()
        log.warning("refused %s from %s: %s", request.url.path, peer(request), why)

    side = WebhookSide(
        credentials=lambda: app.state.credentials,
        signed_urls=lambda request: request_urls(request, settings.public_url),
        refused=refused,
        public_base=lambda request: settings.public_url or str(request.base_url).rstrip("/"),
        queue_for=queue_for,
        goodbye=goodbye,
    )
    for platform in PLATFORMS.values():
        if platform.channel is not None:
            app.add_api_websocket_route(
                f"/{platform.name}", websocket_endpoint(platform), name=f"media-{platform.name}"
            )
        if platform.webhooks is not None:
            app.include_router(platform.webhooks(side))

    @app.get("/softphone", include_in_schema=False)
    async def softphone(request: Request) -> HTMLResponse:
        embed = (
            settings.security.softphone_embed_token
            and not settings.public_url
            and is_local_request(request)
        )
        token = request.app.state.credentials.softphone_token if embed else ""
        page = (
            (STATIC_DIR / "softphone.html").read_text(encoding="utf-8").replace("{{token}}", token)
        )
        return HTMLResponse(page, headers=SOFTPHONE_HEADERS)


@asynccontextmanager
async def servers(
    app: FastAPI, settings: Settings, run_channel: RunAdmitted
) -> AsyncIterator[None]:
    """The platforms' own servers (AudioSocket's TCP), for the app's lifespan. One platform's
    port must not take the others down: a server that cannot start is logged loudly. The
    address of each is in app.state.<name> (e.g. app.state.audiosocket)."""
    limits = limits_of(settings)
    started: list[tuple[str, asyncio.Server]] = []

    async def run(channel: MediaChannel) -> None:
        await run_channel(AdmittedChannel(channel, app.state.call_ids))

    for platform in PLATFORMS.values():
        if platform.serve is None:
            continue
        setattr(app.state, platform.name, None)
        options = platform_options(settings, platform)
        try:
            server = await platform.serve(options, run, limits)
        except OSError as exc:
            log.error("%s server not started (%s): %s", platform.name, options, exc)
            continue
        if server is not None:
            address = server.sockets[0].getsockname()[:2]
            setattr(app.state, platform.name, address)
            log.info("%s listening on %s:%d", platform.name, *address)
            started.append((platform.name, server))
    try:
        yield
    finally:
        for name, server in started:
            server.close()
            if hasattr(server, "close_clients"):  # Python 3.12+ waits for open calls
                server.close_clients()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)
            setattr(app.state, name, None)
