"""The gateway: a FastAPI app with the platforms' media endpoints, the live event stream,
the queues and health/metrics. Models are loaded once at start (lifespan) and shared.

Nothing here runs open (SECURITY.md): every media endpoint checks its platform's credentials
on the upgrade (telephony.auth), the Twilio webhooks their signature, the event stream and the
queue API the shared secret, and the console its own login.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from telephony import auth, twilio
from telephony import gateway as telephony_gateway
from telephony.base import Limits, MediaChannel, ProtocolError
from telephony.registry import WEBSOCKET_CHANNELS, Connection
from voicebot import __version__, console, metrics
from voicebot.config import ConfigError, Settings
from voicebot.privacy import install_log_masking
from voicebot.secrets import load_credentials, load_or_create_secret
from voicebot.services import Services, load_services
from voicebot.session import CallSession

log = logging.getLogger("voicebot.app")
MAX_SOFTPHONE_CALLS = 64  # softphone calls whose events the softphone token may follow


def _peer(conn: Request | WebSocket) -> str:
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


def is_local_request(request: Request) -> bool:
    """A browser on this machine talking to us directly: loopback peer, a loopback Host (not a
    DNS-rebound name) and no proxy in between."""
    if any(h in request.headers for h in ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip", "via")):
        return False
    host = urlsplit("//" + request.headers.get("host", "")).hostname or ""
    try:
        peer_ok = request.client is not None and ipaddress.ip_address(request.client.host).is_loopback
    except ValueError:
        peer_ok = False
    if host == "localhost":
        return peer_ok
    try:
        return peer_ok and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    if settings.privacy.record_audio:
        # The purpose check is in the settings; recording itself does not exist in this build,
        # and a setting that silently does nothing would mislead a DPIA.
        raise ConfigError("privacy.record_audio: audio recording is not implemented in this build "
                          f"(purpose given: {settings.privacy.recording_purpose!r}); nothing would be recorded")
    install_log_masking()
    limits = Limits.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        install_log_masking()  # again: the server may have configured logging since
        app.state.services = services or await asyncio.to_thread(load_services, settings)
        app.state.secret = load_or_create_secret(settings.data_dir)
        app.state.credentials = load_credentials(settings, app.state.secret)
        app.state.nonces = auth.NonceCache()
        app.state.softphone_calls = {}  # call id → None, insertion-ordered (bounded)
        log.info("voicebot %s ready on %s:%d", __version__, settings.host, settings.port)
        async with console.running(app):  # agent accounts; stale-claim and retention tasks
            yield
        app.state.services.close()

    app = FastAPI(title="voicebot", version=__version__, lifespan=lifespan)
    app.include_router(console.router)

    def svc(request_or_ws) -> Services:
        return request_or_ws.app.state.services

    async def run_channel(channel: MediaChannel) -> None:
        """One call on any transport. At capacity the caller is told and routed to a
        person without speech recognition (CallSession.refuse), never left in silence. A
        protocol error is logged and closes only this call, with the protocol's own signal."""
        services = app.state.services
        session = CallSession(channel, services)
        admitted = services.admit()  # before any await: calls arriving together count at once
        try:
            if not admitted:
                metrics.REFUSED_CALLS.labels(channel.platform).inc()
                log.warning("%s call to a person: %d calls in progress", channel.platform, services.active_calls)
                await session.refuse()
            else:
                await session.run()
        except ProtocolError as exc:
            metrics.PROTOCOL_ERRORS.labels(channel.platform).inc()
            log.warning("%s call %s closed: protocol error (%d): %s", channel.platform,
                        session.call_id or "(not started)", exc.close_code, exc)
            channel.error = channel.error or exc
            await channel.hang_up()
        except WebSocketDisconnect:
            pass
        except Exception:  # a bug of ours: this call ends, the server and other calls go on
            metrics.CALL_ERRORS.labels(channel.platform).inc()
            log.exception("%s call %s failed", channel.platform, session.call_id or "(not started)")
            with contextlib.suppress(Exception):
                await channel.hang_up()
        finally:
            if admitted:
                services.release()

    # -- who may connect ----------------------------------------------------------------
    def media_auth(name: str, ws: WebSocket) -> tuple[str | None, Connection]:
        """(why the upgrade is refused or None, what the channel needs to know)."""
        creds: auth.Credentials = ws.app.state.credentials
        conn = Connection(limits, creds)
        if name == "twilio":
            signature = ws.headers.get("x-twilio-signature")
            if not auth.verify_twilio(creds.twilio_auth_token, signature, request_urls(ws, settings.public_url)):
                return "X-Twilio-Signature missing or wrong", conn
        elif name == "audiohook":
            # X-API-KEY is checked at the open, where AudioHook expects "unauthorized".
            if creds.audiohook_client_secret:
                hosts = [ws.headers.get("host", "")]
                if settings.public_url:
                    hosts.append(urlsplit(settings.public_url).netloc)
                try:
                    auth.verify_audiohook_signature(
                        ws.headers, auth.request_target(str(ws.url)), hosts, creds.audiohook_api_key,
                        creds.audiohook_client_secret, nonces=ws.app.state.nonces)
                except auth.SignatureError as exc:
                    return None, Connection(limits, creds, auth_error=f"signature: {exc}")
        else:
            token = auth.presented_token(ws.headers, ws.scope.get("query_string", b"").decode("latin-1"))
            if name == "raw" and auth.equal(token, creds.softphone_token):
                calls = ws.app.state.softphone_calls

                def followed(call_id: str) -> None:  # the softphone may follow this call's events
                    calls[call_id] = None
                    while len(calls) > MAX_SOFTPHONE_CALLS:
                        calls.pop(next(iter(calls)))

                return None, Connection(limits, creds, on_start=followed)
            if not auth.equal(token, creds.token(name)):
                return "bearer token missing or wrong", conn
        return None, conn

    async def refuse_upgrade(ws: WebSocket, endpoint: str, why: str) -> None:
        metrics.AUTH_FAILURES.labels(endpoint).inc()
        log.warning("refused a %s connection from %s: %s", endpoint, _peer(ws), why)
        try:
            await ws.send_denial_response(PlainTextResponse("unauthorized\n", 401))
        except RuntimeError:  # a server without the denial-response extension: HTTP 403
            await ws.close(1008)

    # -- media endpoints, one per platform (telephony.registry) --------------------------
    def media_endpoint(name: str, factory):
        async def endpoint(ws: WebSocket) -> None:
            why, conn = media_auth(name, ws)
            if why is not None:
                await refuse_upgrade(ws, name, why)
                return
            await ws.accept()
            channel = factory(ws, settings, conn)
            try:
                await run_channel(channel)
            finally:
                if conn.on_start is not None and getattr(channel, "call_id", None):
                    ws.app.state.softphone_calls.pop(channel.call_id, None)

        return endpoint

    for name, factory in WEBSOCKET_CHANNELS.items():
        app.add_api_websocket_route(f"/{name}", media_endpoint(name, factory), name=f"media-{name}")
    telephony_gateway.mount(app, settings, run_channel)

    # -- Twilio's HTTP side: the incoming-call webhook and the hand-off action ----------
    async def twilio_form(request: Request) -> dict[str, str]:
        """The webhook's form, once its X-Twilio-Signature is checked (403 otherwise)."""
        form = await request.form()
        params = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
        creds: auth.Credentials = request.app.state.credentials
        if not auth.verify_twilio(creds.twilio_auth_token, request.headers.get("x-twilio-signature"),
                                  request_urls(request, settings.public_url), params):
            metrics.AUTH_FAILURES.labels(request.url.path).inc()
            log.warning("refused %s from %s: X-Twilio-Signature missing or wrong", request.url.path,
                        _peer(request))
            raise HTTPException(403, "X-Twilio-Signature missing or wrong")
        return dict(params)

    @app.post("/twilio/voice")
    async def twilio_voice(request: Request) -> Response:
        form = await twilio_form(request)
        base = settings.public_url or str(request.base_url).rstrip("/")
        stream_url = base.replace("https://", "wss://").replace("http://", "ws://") + "/twilio"
        xml = twilio.connect_twiml(stream_url, base + "/twilio/action", form.get("From"))
        return Response(xml, media_type="application/xml")

    @app.post("/twilio/action")
    async def twilio_action(request: Request) -> Response:
        form = await twilio_form(request)
        call_sid = form.get("CallSid")
        if not call_sid:
            raise HTTPException(422, "CallSid missing")
        record = await asyncio.to_thread(svc(request).store.get, call_sid)
        catalogue = svc(request).catalogue
        queue = catalogue.queue_name(record.forvaltning) if record else None
        return Response(twilio.enqueue_twiml(queue, catalogue.prompts["goodbye"]), media_type="application/xml")

    # -- live call events ------------------------------------------------------------
    def may_follow(ws: WebSocket, call_id: str, token: str) -> bool:
        creds: auth.Credentials = ws.app.state.credentials
        if auth.equal(token, creds.secret):
            return True
        return auth.equal(token, creds.softphone_token) and call_id in ws.app.state.softphone_calls

    @app.websocket("/calls/{call_id}/events")
    async def call_events(ws: WebSocket, call_id: str, token: str = Query("")) -> None:
        if not may_follow(ws, call_id, token):
            metrics.AUTH_FAILURES.labels("events").inc()
            log.warning("refused an event stream for call %s to %s: token missing or wrong", call_id[:64], _peer(ws))
            await ws.close(1008)
            return
        await ws.accept()

        async def forward() -> None:
            async for event in svc(ws).events.subscribe(call_id):
                async with asyncio.timeout(settings.security.send_timeout_s):  # a follower that stopped reading
                    await ws.send_json(event)

        # Stop forwarding as soon as the subscriber goes away, not at the next event.
        sender = asyncio.create_task(forward())
        try:
            while (await ws.receive())["type"] != "websocket.disconnect":
                pass
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError, TimeoutError):
                await sender

    # -- queues, health, metrics ------------------------------------------------------
    @app.get("/api/queues")
    async def queues(request: Request, token: str = Query("")) -> JSONResponse:
        given = token or auth.presented_token(request.headers, "") or ""
        if not auth.equal(given, request.app.state.secret):
            metrics.AUTH_FAILURES.labels("api-queues").inc()
            raise HTTPException(401, "token required")
        store = svc(request).store
        waiting = await asyncio.to_thread(store.waiting)
        return JSONResponse({"stats": await asyncio.to_thread(store.stats),
                             "waiting": [c.as_dict() for c in waiting]})

    @app.get("/healthz")
    async def healthz(request: Request) -> JSONResponse:
        services = svc(request)
        return JSONResponse({
            "status": "ok", "version": __version__, "active_calls": services.active_calls,
            "asr_load": services.asr.load, "model": str(settings.whisper_dir.name),
        })  # fmt: skip

    @app.get("/metrics")
    async def prometheus_metrics(request: Request) -> Response:
        stats = await asyncio.to_thread(svc(request).store.stats)
        metrics.set_queue_lengths(stats, svc(request).catalogue.forvaltninger)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=PlainTextResponse)
    async def index() -> str:
        return "voicebot: Danish phone triage. /healthz, /metrics, /twilio (WebSocket)\n"

    return app
