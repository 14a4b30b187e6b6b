"""The gateway: a FastAPI app with the platforms' media endpoints, the live event stream,
the queues and health/metrics. Models are loaded once at start (lifespan) and shared."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Form, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from telephony import gateway as telephony_gateway
from telephony import twilio
from telephony.base import MediaChannel, ProtocolError
from telephony.registry import WEBSOCKET_CHANNELS
from voicebot import __version__, console, metrics
from voicebot.config import Settings
from voicebot.secrets import load_or_create_secret
from voicebot.services import Services, load_services
from voicebot.session import CallSession

log = logging.getLogger("voicebot.app")


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.services = services or await asyncio.to_thread(load_services, settings)
        app.state.secret = load_or_create_secret(settings.data_dir)
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
        person without speech recognition (CallSession.refuse), never left in silence."""
        services = app.state.services
        session = CallSession(channel, services)
        try:
            if services.active_calls >= settings.max_calls:
                metrics.REFUSED_CALLS.labels(channel.platform).inc()
                log.warning("%s call to a person: %d calls in progress", channel.platform, services.active_calls)
                await session.refuse()
            else:
                await session.run()
        except ProtocolError as exc:
            metrics.PROTOCOL_ERRORS.labels(channel.platform).inc()
            log.warning("%s call closed: protocol error: %s", channel.platform, exc)
            await channel.hang_up()
        except WebSocketDisconnect:
            pass

    # -- media endpoints, one per platform (telephony.registry) --------------------------
    def media_endpoint(factory):
        async def endpoint(ws: WebSocket) -> None:
            await ws.accept()
            await run_channel(factory(ws, settings))

        return endpoint

    for name, factory in WEBSOCKET_CHANNELS.items():
        app.add_api_websocket_route(f"/{name}", media_endpoint(factory), name=f"media-{name}")
    telephony_gateway.mount(app, settings, run_channel)

    # -- Twilio's HTTP side: the incoming-call webhook and the hand-off action ----------

    @app.post("/twilio/voice")
    async def twilio_voice(request: Request, From: str | None = Form(None)) -> Response:
        base = settings.public_url or str(request.base_url).rstrip("/")
        stream_url = base.replace("https://", "wss://").replace("http://", "ws://") + "/twilio"
        xml = twilio.connect_twiml(stream_url, base + "/twilio/action", From)
        return Response(xml, media_type="application/xml")

    @app.post("/twilio/action")
    async def twilio_action(request: Request, CallSid: str = Form(...)) -> Response:
        record = await asyncio.to_thread(svc(request).store.get, CallSid)
        catalogue = svc(request).catalogue
        queue = catalogue.queue_name(record.forvaltning) if record else None
        return Response(twilio.enqueue_twiml(queue, catalogue.prompts["goodbye"]), media_type="application/xml")

    # -- live call events ------------------------------------------------------------
    @app.websocket("/calls/{call_id}/events")
    async def call_events(ws: WebSocket, call_id: str, token: str = Query("")) -> None:
        if not hmac.compare_digest(token, ws.app.state.secret):
            await ws.close(1008)
            return
        await ws.accept()

        async def forward() -> None:
            async for event in svc(ws).events.subscribe(call_id):
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
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await sender

    # -- queues, health, metrics ------------------------------------------------------
    @app.get("/api/queues")
    async def queues(request: Request, token: str = Query("")) -> JSONResponse:
        if not hmac.compare_digest(token, request.app.state.secret):
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
