"""The gateway: a FastAPI app with the platforms' media endpoints (voicebot.gateway, from
telephony.registry), the live event stream, the queues and health/metrics. Models are loaded
once at start (lifespan) and shared.

Nothing here runs open (SECURITY.md): every media endpoint checks its platform's credentials
on the upgrade, the Twilio webhooks their signature, the event stream and the queue API the
master secret, and the console its own login.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import HTTPConnection

from telephony import auth
from telephony.base import ProtocolError
from voicebot import __version__, console, gateway, metrics
from voicebot.config import ConfigError, Settings
from voicebot.gateway import AdmittedChannel, CallIds, refuse_upgrade
from voicebot.httplimits import RequestLimits
from voicebot.privacy import install_log_masking
from voicebot.queues import maintenance as queue_maintenance
from voicebot.secrets import load_credentials, load_or_create_secret
from voicebot.services import Services, load_services, reload_catalogue
from voicebot.session import CallSession

log = logging.getLogger("voicebot.app")
ALL_CALLS_PATH = "*"  # /calls/*/events: every call (the master secret only)


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    if settings.privacy.record_audio:
        # The purpose check is in the settings; recording itself does not exist in this build,
        # and a setting that silently does nothing would mislead a DPIA.
        raise ConfigError(
            "privacy.record_audio: audio recording is not implemented in this build "
            f"(purpose given: {settings.privacy.recording_purpose!r}); nothing would be recorded"
        )
    install_log_masking()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        install_log_masking()  # again: the server may have configured logging since
        app.state.services = services or await asyncio.to_thread(load_services, settings)
        app.state.secret = load_or_create_secret(settings.data_dir)
        app.state.credentials = load_credentials(settings, app.state.secret)
        app.state.nonces = auth.NonceCache()
        app.state.call_ids = CallIds(app.state.services.store.get)
        if not settings.public_url:
            log.warning(
                "public_url is not set: Twilio's media stream URL is taken from each webhook's "
                "Host and offered as wss:// (Twilio refuses ws://); set public_url to the https:// "
                "address Twilio reaches this gateway at"
            )
        log.info("voicebot %s ready on %s:%d", __version__, settings.host, settings.port)
        loaded = app.state.services
        upkeep = queue_maintenance.running(loaded.store, settings, loaded.catalogue.forvaltninger)
        # Stale claims and retention run whether or not anyone opens the console.
        async with upkeep, gateway.servers(app, settings, run_channel), console.running(app):
            with reload_on_sighup(app):
                yield
        app.state.services.close()

    # The API schema and its pages are not for callers or scanners: off (SECURITY.md).
    app = FastAPI(
        title="voicebot",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.include_router(console.router)
    app.add_middleware(RequestLimits, security=settings.security)  # before anything parses headers

    def svc(request_or_ws: HTTPConnection) -> Services:
        services: Services = request_or_ws.app.state.services  # starlette's State is untyped
        return services

    async def run_channel(channel: AdmittedChannel) -> None:
        """One call on any transport. At capacity the caller is told and routed to a
        person without speech recognition (CallSession.refuse), never left in silence. A
        protocol error is logged and closes only this call, with the protocol's own signal."""
        services = app.state.services
        # The call keeps the catalogue it starts with: a reload only changes later calls.
        session = CallSession(channel, services.for_call())
        admitted = services.admit()  # before any await: calls arriving together count at once
        try:
            if not admitted:
                metrics.REFUSED_CALLS.labels(channel.platform).inc()
                log.warning(
                    "%s call to a person: %d calls in progress",
                    channel.platform,
                    services.active_calls,
                )
                await session.refuse()
            else:
                await session.run()
        except ProtocolError as exc:
            metrics.PROTOCOL_ERRORS.labels(channel.platform).inc()
            log.warning(
                "%s call %s closed: protocol error (%d): %s",
                channel.platform,
                session.call_id or "(not started)",
                exc.close_code,
                exc,
            )
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
            channel.release()
            if admitted:
                services.release()

    async def queue_for(call_id: str) -> str | None:
        """The queue a caller is put in by the platform: only while its record still waits to
        be taken (an abandoned or missing record gets a goodbye, not a phantom queue entry)."""
        services: Services = app.state.services
        record = await asyncio.to_thread(services.store.get, call_id)
        if record is None or record.status not in gateway.WAITING_STATUSES:
            return None
        return services.catalogue.queue_name(record.forvaltning)

    gateway.mount(
        app,
        settings,
        run_channel,
        queue_for,
        lambda: app.state.services.catalogue.prompt(
            "goodbye", app.state.services.catalogue.default_language
        ),
    )

    # -- live call events ------------------------------------------------------------
    @app.websocket("/calls/{call_id}/events")
    async def call_events(ws: WebSocket, call_id: str, token: str = Query("")) -> None:
        """The master secret opens any call's events (and /calls/*/events, every call's); the
        softphone token only those of a live call the softphone itself started, until it ends."""
        creds: auth.Credentials = ws.app.state.credentials
        ended: asyncio.Event | None = None
        if auth.equal(token, creds.secret):
            key = None if call_id == ALL_CALLS_PATH else call_id
        elif (
            auth.equal(token, creds.softphone_token) and call_id in ws.app.state.call_ids.softphone
        ):
            key, ended = call_id, ws.app.state.call_ids.softphone[call_id]
        else:
            await refuse_upgrade(
                ws, "events", f"token missing or wrong for call {call_id[:64]!r}", 403
            )
            return
        await ws.accept()

        async def forward() -> None:
            async for event in svc(ws).events.subscribe(key):
                async with asyncio.timeout(
                    settings.security.send_timeout_s
                ):  # a follower that stopped reading
                    await ws.send_json(event)
                if ended is not None and event["type"] == "call_ended":
                    return

        async def until_ended() -> None:  # the softphone's call has ended: its events end with it
            if ended is not None:
                await ended.wait()
                await asyncio.wait(
                    {sender}, timeout=settings.security.send_timeout_s
                )  # call_ended goes out
                await ws.close()

        # Stop forwarding as soon as the subscriber goes away, not at the next event.
        sender = asyncio.create_task(forward())
        closer = asyncio.create_task(until_ended())
        try:
            while (await ws.receive())["type"] != "websocket.disconnect":
                pass
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            for task in (sender, closer):
                task.cancel()
                with contextlib.suppress(
                    asyncio.CancelledError, WebSocketDisconnect, RuntimeError, TimeoutError
                ):
                    await task

    # -- queues, health, metrics ------------------------------------------------------
    @app.get("/api/queues")
    async def queues(request: Request, token: str = Query("")) -> JSONResponse:
        given = token or auth.presented_token(request.headers, "") or ""
        if not auth.equal(given, request.app.state.secret):
            metrics.AUTH_FAILURES.labels("api-queues").inc()
            log.warning(
                "refused /api/queues from %s: token missing or wrong", gateway.peer(request)
            )
            raise HTTPException(401, "token required")
        store = svc(request).store
        waiting = await asyncio.to_thread(store.waiting)
        return JSONResponse(
            {
                "stats": await asyncio.to_thread(store.stats),
                "waiting": [c.as_dict() for c in waiting],
            }
        )

    # -- catalogue reload (SIGHUP does the same) ---------------------------------------
    def require_secret(request: Request, endpoint: str) -> None:
        given = auth.presented_token(request.headers, "") or ""
        if not auth.equal(given, request.app.state.secret):
            metrics.AUTH_FAILURES.labels(endpoint).inc()
            log.warning(
                "refused %s from %s: token missing or wrong", endpoint, gateway.peer(request)
            )
            raise HTTPException(401, "token required")

    def catalogue_status(services: Services) -> dict[str, object]:
        return {
            "path": str(settings.catalogue),
            "sha256": services.catalogue_sha256,
            "loaded_at": services.catalogue_loaded_at,
            "intents": len(services.catalogue.intents),
            "forvaltninger": sorted(services.catalogue.forvaltninger),
            "last_reload": {
                "ok": services.last_reload.ok,
                "error": services.last_reload.error,
                "at": services.last_reload.at,
            },
        }

    @app.get("/api/catalogue")
    async def catalogue_in_use(request: Request) -> JSONResponse:
        require_secret(request, "api-catalogue")
        return JSONResponse(catalogue_status(svc(request)))

    @app.post("/api/reload")
    async def reload(request: Request) -> JSONResponse:
        """Validate and swap in the catalogue file (`voicebot reload`); 422 and the reason
        (file and entry) when it is refused, the running catalogue unchanged."""
        require_secret(request, "api-reload")
        status = await reload_catalogue(svc(request))
        return JSONResponse(catalogue_status(svc(request)), 200 if status.ok else 422)

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


@contextlib.contextmanager
def reload_on_sighup(app: FastAPI) -> Iterator[None]:
    """SIGHUP reloads the catalogue (as `voicebot reload` does), where the server's event loop
    runs in the main thread (`voicebot serve`); elsewhere (a test client's thread) there is
    no signal to take and the endpoint alone does it."""
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[object]] = set()

    def on_sighup() -> None:
        log.info("SIGHUP: reloading the catalogue")
        task = loop.create_task(reload_catalogue(app.state.services))
        pending.add(task)
        task.add_done_callback(pending.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, on_sighup)
    except (ValueError, RuntimeError, NotImplementedError):  # not the main thread, or Windows
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
