"""The agent console: contact-centre agents log in, watch their forvaltninger's queues live
and claim and complete routed calls.

Served by the gateway app (`app.include_router(router)`, `async with running(app)` in its
lifespan, which opens the accounts; the queues' own upkeep is voicebot.queues.maintenance). Every check is made here on the server: an agent's API answers and live stream
hold only the queues of the agent's forvaltninger (all of them for an admin), and a claim
outside them is refused with 403. The page is plain HTML/CSS/JS from voicebot/static; it
builds the DOM with textContent only, and the Content-Security-Policy forbids inline script.

Live updates are Server-Sent Events: a snapshot of the agent's queues when the EventBus
reports a routed, claimed, completed or released call of a visible forvaltning, and every
few seconds (which also catches changes made by other gateway processes sharing Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import cache
from html import escape
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Request, Response
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    StreamingResponse,
)

from voicebot import metrics
from voicebot.account_backends import open_account_store
from voicebot.accounts import (
    SESSION_MAX_S,
    AccountStore,
    Agent,
    LoginLimiter,
    Session,
)
from voicebot.catalogue import Catalogue
from voicebot.events import ALL_CALLS, EventBus
from voicebot.queues import RoutedCall, figures
from voicebot.queues.maintenance import CLAIM_LEASE_S
from voicebot.services import Services

log = logging.getLogger("voicebot.console")

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}
SESSION_COOKIE = "vb_session"
LOGIN_CSRF_COOKIE = "vb_login_csrf"
CSRF_HEADER = "x-csrf-token"
COOKIE_PATH = "/console"

RENEW_INTERVAL_S = (
    CLAIM_LEASE_S / 4
)  # how often a connected console renews its claims (and session)
LOGIN_FORM_S = 3600  # a login form (its CSRF cookie) is good this long
STREAM_REFRESH_S = 5.0
STREAM_PING_S = 20.0  # a comment line keeps idle proxies from closing the stream
MAX_CARDS = 200  # cards per list sent to a console
MAX_LOGIN_WAITERS = 32  # logins queued for the password hasher before new ones are refused
QUEUE_EVENTS = {
    "routed", "claimed", "completed", "released", "callback_requested", "callback_done",
    "callback_failed",
}  # fmt: skip

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin", "Cache-Control": "no-store",
}  # fmt: skip


@dataclass
class ConsoleState:
    agents: AccountStore
    limiter: LoginLimiter = field(default_factory=LoginLimiter)  # the store's: shared with Redis
    # One password hash at a time: exact rate limits, and a login flood cannot take the CPU from calls.
    hashing: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    login_waiters: int = 0


# == lifespan: the agent accounts ==========================================================
@contextlib.asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[None]:
    services: Services = app.state.services
    # SQLite (data_dir/agents.db) or, with queue_backend: redis, the Redis every gateway shares
    agents = await asyncio.to_thread(open_account_store, services.settings)
    await asyncio.to_thread(agents.purge_sessions)  # and at each login (AgentStore.create_session)
    app.state.console = ConsoleState(agents, agents.login_limiter())
    try:
        yield
    finally:
        agents.close()


# == what an agent sees ======================================================================
def call_card(call: RoutedCall, catalogue: Catalogue, viewer: str | None = None) -> dict[str, Any]:
    """What a console shows of a queue record. A callback's number is on the card only for
    the agent who claimed it (`viewer`), while it is theirs to call; everyone else sees the
    masked caller."""
    forvaltning = catalogue.forvaltninger.get(call.forvaltning)
    intent = catalogue.intent(call.intent) if call.intent in catalogue.intents else None
    return {
        "call_id": call.call_id, "forvaltning": call.forvaltning,
        "forvaltning_name": forvaltning.name if forvaltning else call.forvaltning,
        "queue": catalogue.queue_name(call.forvaltning) if forvaltning else call.forvaltning,
        "language": call.language,
        "intent": call.intent, "intent_name": intent.name if intent else "ukendt ærinde",
        "confidence": round(call.confidence, 3), "explanation": call.explanation[:20],
        "transcript": call.transcript[:4000], "caller": call.caller, "status": call.status,
        "created_at": call.created_at, "claimed_by": call.claimed_by, "claimed_at": call.claimed_at,
        "kind": call.kind, "callback_number": callback_number_for(call, viewer),
    }  # fmt: skip


def callback_number_for(call: RoutedCall, viewer: str | None) -> str | None:
    mine = viewer is not None and call.status == "claimed" and call.claimed_by == viewer
    return call.callback_number if call.kind == "callback" and mine else None


def queue_ids(agent: Agent, catalogue: Catalogue, stats: dict[str, Any]) -> list[str]:
    if not agent.admin:
        return list(agent.forvaltninger)
    return list(dict.fromkeys([*catalogue.forvaltninger, *sorted(stats)]))


def snapshot(services: Services, agent: Agent) -> dict[str, Any]:
    """The agent's queues and calls; nothing of a forvaltning the agent does not belong to."""
    store, catalogue, visible = services.store, services.catalogue, agent.visible
    stats = store.stats()
    queued = store.waiting(visible)
    taken = [c for c in store.claimed(visible) if agent.admin or c.claimed_by == agent.name]
    # Callback requests are shown apart from live calls: nobody is holding the line.
    waiting = [c for c in queued if c.kind == "call"]
    claimed = [c for c in taken if c.kind == "call"]
    callbacks = [c for c in taken if c.kind == "callback"] + [
        c for c in queued if c.kind == "callback"
    ]
    callbacks_waiting: dict[str, int] = {}
    for c in queued:
        if c.kind == "callback":
            callbacks_waiting[c.forvaltning] = callbacks_waiting.get(c.forvaltning, 0) + 1
    oldest: dict[str, float] = {}
    for c in waiting:
        oldest[c.forvaltning] = min(oldest.get(c.forvaltning, c.created_at), c.created_at)
    queues = []
    for f in queue_ids(agent, catalogue, stats):
        known = catalogue.forvaltninger.get(f)
        queues.append(
            {
                "id": f,
                "name": known.name if known else f,
                "queue": catalogue.queue_name(f) if known else f,  # as agents read it
                "waiting": int(stats.get(f, {}).get("waiting", 0)) - callbacks_waiting.get(f, 0),
                "callbacks": callbacks_waiting.get(f, 0),
                "oldest_created_at": oldest.get(f),
            }
        )
    return {
        "now": time.time(), "queues": queues, "waiting_total": len(waiting),
        "waiting": [call_card(c, catalogue) for c in waiting[:MAX_CARDS]],
        "claimed": [call_card(c, catalogue) for c in claimed[:MAX_CARDS]],
        "callbacks": [call_card(c, catalogue, agent.name) for c in callbacks[:MAX_CARDS]],
        "callbacks_total": len(callbacks),
    }  # fmt: skip


def agent_info(session: Session, catalogue: Catalogue) -> dict[str, Any]:
    agent = session.agent
    names = {
        f: catalogue.forvaltninger[f].name
        for f in agent.forvaltninger
        if f in catalogue.forvaltninger
    }
    return {
        "name": agent.name,
        "admin": agent.admin,
        "csrf": session.csrf,
        "expires_at": session.expires_at,
        "forvaltninger": [{"id": f, "name": names.get(f, f)} for f in agent.forvaltninger],
    }


# == request helpers =========================================================================
def _services(request: Request) -> Services:
    services: Services = request.app.state.services  # starlette's State is untyped
    return services


def _state(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


def _is_https(request: Request) -> bool:
    public = _services(request).settings.public_url or ""
    return request.url.scheme == "https" or public.startswith("https://")


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _same_origin(request: Request) -> bool:
    """A browser says where a request comes from (Sec-Fetch-Site, else Origin); refuse a
    foreign one whatever cookies it carries. The CSRF token is checked as well."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    return origin in (None, "null") or urlsplit(origin).netloc == request.headers.get("host")


def _tokens_match(given: str | None, expected: str | None) -> bool:
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def _set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_is_https(request),
    )


async def _session_of(request: Request) -> Session | None:
    return await asyncio.to_thread(
        _state(request).agents.session, request.cookies.get(SESSION_COOKIE)
    )


async def current_session(request: Request) -> Session:
    session = await _session_of(request)
    if session is None:
        raise HTTPException(401, "Du er ikke logget ind, eller din session er udløbet.")
    return session


CurrentSession = Annotated[Session, Depends(current_session)]


async def csrf_session(request: Request, session: CurrentSession) -> Session:
    """State-changing requests carry the session's CSRF token in a header a foreign site cannot set."""
    if not _same_origin(request) or not _tokens_match(
        request.headers.get(CSRF_HEADER), session.csrf
    ):
        raise HTTPException(403, "Anmodningen mangler et gyldigt sikkerhedstoken. Genindlæs siden.")
    return session


CsrfSession = Annotated[Session, Depends(csrf_session)]


def _api_headers(response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"


router = APIRouter(prefix="/console", tags=["console"], dependencies=[Depends(_api_headers)])


# == pages ===================================================================================
@cache
def _page(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def _login_page(
    request: Request,
    message: str = "",
    name: str = "",
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    html = (
        _page("console_login.html")
        .replace("{{csrf}}", token)
        .replace("{{name}}", escape(name))
        .replace("{{message}}", escape(message))
        .replace("{{message_hidden}}", "" if message else "hidden")
    )
    response = HTMLResponse(html, status, headers={**PAGE_HEADERS, **(headers or {})})
    _set_cookie(response, request, LOGIN_CSRF_COOKIE, token, LOGIN_FORM_S)
    return response


@router.get("", include_in_schema=False)
async def console_page(request: Request) -> Response:
    if await _session_of(request) is None:
        return RedirectResponse(f"{COOKIE_PATH}/login", 303)
    return HTMLResponse(_page("console.html"), headers=PAGE_HEADERS)


@router.get("/login", include_in_schema=False)
async def login_page(request: Request, expired: bool = False) -> Response:
    if await _session_of(request) is not None:
        return RedirectResponse(COOKIE_PATH, 303)
    return _login_page(request, "Din session er udløbet. Log ind igen." if expired else "")


@router.get("/static/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    if name not in ASSETS:
        raise HTTPException(404, "Ikke fundet")
    return FileResponse(
        STATIC / name, media_type=ASSETS[name], headers={"Cache-Control": "no-cache"}
    )


@router.post("/login", include_in_schema=False)
async def login(
    request: Request, name: str = Form(""), password: str = Form(""), csrf: str = Form("")
) -> Response:
    state = _state(request)
    name = name.strip()[:64]
    if not _same_origin(request) or not _tokens_match(csrf, request.cookies.get(LOGIN_CSRF_COOKIE)):
        metrics.LOGINS.labels("csrf").inc()
        return _login_page(request, "Formularen var udløbet. Prøv igen.", name, 403)
    if state.login_waiters >= MAX_LOGIN_WAITERS:
        metrics.LOGINS.labels("busy").inc()
        return _login_page(
            request, "Der er travlt lige nu. Prøv igen om lidt.", name, 429, {"Retry-After": "5"}
        )
    state.login_waiters += 1
    try:
        # Guessing at this account from many addresses slows its logins a little, never locks it.
        await asyncio.sleep(await asyncio.to_thread(state.limiter.delay, name))
        async with state.hashing:
            agent = await _check_login(request, state, name, password)
    finally:
        state.login_waiters -= 1
    if isinstance(agent, Response):
        return agent
    token, _ = await asyncio.to_thread(state.agents.create_session, agent)
    metrics.LOGINS.labels("ok").inc()
    log.info("agent %s logged in to the console", agent.name)
    response = RedirectResponse(COOKIE_PATH, 303)
    _set_cookie(response, request, SESSION_COOKIE, token, SESSION_MAX_S)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=COOKIE_PATH)
    return response


async def _check_login(
    request: Request, state: ConsoleState, name: str, password: str
) -> Agent | Response:
    address = _client_address(request)
    wait_s = await asyncio.to_thread(state.limiter.retry_after, name, address)
    if wait_s > 0:
        metrics.LOGINS.labels("limited").inc()
        minutes = max(1, math.ceil(wait_s / 60))
        return _login_page(
            request,
            f"For mange mislykkede forsøg. Prøv igen om {minutes} min.",
            name,
            429,
            {"Retry-After": str(math.ceil(wait_s))},
        )
    agent = await asyncio.to_thread(state.agents.verify, name, password)
    if agent is None:
        await asyncio.to_thread(state.limiter.failed, name, address)
        metrics.LOGINS.labels("failed").inc()
        return _login_page(request, "Forkert brugernavn eller adgangskode.", name, 401)
    await asyncio.to_thread(state.limiter.succeeded, name, address)
    return agent


@router.post("/logout", include_in_schema=False)
async def logout(request: Request, session: CsrfSession) -> Response:
    await asyncio.to_thread(
        _state(request).agents.end_session, request.cookies.get(SESSION_COOKIE, "")
    )
    response = JSONResponse({"ok": True})
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


# == the API =================================================================================
@router.get("/api/me")
async def me(request: Request, session: CurrentSession) -> dict[str, Any]:
    return agent_info(session, _services(request).catalogue)


@router.get("/api/state")
async def api_state(request: Request, session: CurrentSession) -> dict[str, Any]:
    return await asyncio.to_thread(snapshot, _services(request), session.agent)


@router.get("/api/agents")
async def list_agents(request: Request, session: CurrentSession) -> dict[str, Any]:
    if not session.agent.admin:
        raise HTTPException(403, "Kun for administratorer.")
    agents = await asyncio.to_thread(_state(request).agents.agents)
    return {
        "agents": [
            {"name": a.name, "forvaltninger": list(a.forvaltninger), "admin": a.admin}
            for a in agents
        ]
    }


async def _visible_call(request: Request, agent: Agent, call_id: str) -> RoutedCall:
    call = await asyncio.to_thread(_services(request).store.get, call_id)
    if call is None:
        raise HTTPException(404, "Opkaldet findes ikke (længere).")
    if not agent.may_see(call.forvaltning):
        raise HTTPException(403, "Du har ikke adgang til denne forvaltnings kø.")
    return call


async def _changed(request: Request, call: RoutedCall, kind: str, agent: Agent) -> dict[str, Any]:
    """Tell the other consoles (through the EventBus, on the event loop) and answer the new card."""
    services = _services(request)
    services.events.publish(call.call_id, kind, forvaltning=call.forvaltning, agent=agent.name)
    fresh = await asyncio.to_thread(services.store.get, call.call_id)
    return call_card(fresh or call, services.catalogue, agent.name)


@router.post("/api/calls/{call_id:path}/claim")  # ids may hold "/"
async def claim(request: Request, call_id: str, session: CsrfSession) -> dict[str, Any]:
    agent = session.agent
    call = await _visible_call(request, agent, call_id)
    store = _services(request).store
    if not await asyncio.to_thread(store.claim, call_id, agent.name, agent.visible):
        raise HTTPException(409, "Opkaldet er allerede taget af en anden.")
    if call.kind == "call":  # answered; a callback's wait is not a caller's on the line
        metrics.CLAIMS.labels(call.forvaltning).inc()
        metrics.QUEUE_WAIT.labels(call.forvaltning).observe(max(0.0, time.time() - call.created_at))
    return await _changed(request, call, "claimed", agent)


@router.post("/api/calls/{call_id:path}/complete")  # ids may hold "/"
async def complete(request: Request, call_id: str, session: CsrfSession) -> dict[str, Any]:
    agent = session.agent
    call = await _visible_call(request, agent, call_id)
    if not await asyncio.to_thread(_services(request).store.complete, call_id, agent.name):
        raise HTTPException(409, "Du har ikke taget dette opkald.")
    metrics.COMPLETIONS.labels(call.forvaltning).inc()
    return await _changed(request, call, "completed", agent)


@router.post("/api/calls/{call_id:path}/release")  # ids may hold "/"
async def release(request: Request, call_id: str, session: CsrfSession) -> dict[str, Any]:
    agent = session.agent
    call = await _visible_call(request, agent, call_id)
    if not await asyncio.to_thread(_services(request).store.release, call_id, agent.name):
        raise HTTPException(409, "Du har ikke taget dette opkald.")
    return await _changed(request, call, "released", agent)


async def _finish_callback(
    request: Request, call_id: str, session: Session, outcome: str
) -> dict[str, Any]:
    agent = session.agent
    call = await _visible_call(request, agent, call_id)
    store = _services(request).store
    finish = store.complete_callback if outcome == "done" else store.fail_callback
    if not await asyncio.to_thread(finish, call_id, agent.name):
        raise HTTPException(409, "Du har ikke taget dette tilbagekald.")
    metrics.CALLBACKS_COMPLETED.labels(call.forvaltning, outcome).inc()
    return await _changed(request, call, f"callback_{outcome}", agent)


@router.post("/api/callbacks/{call_id:path}/done")  # ids may hold "/"
async def callback_done(request: Request, call_id: str, session: CsrfSession) -> dict[str, Any]:
    """The agent called the caller back: the number is erased, the record kept (masked)."""
    return await _finish_callback(request, call_id, session, "done")


@router.post("/api/callbacks/{call_id:path}/failed")  # ids may hold "/"
async def callback_failed(request: Request, call_id: str, session: CsrfSession) -> dict[str, Any]:
    """The callback could not be made (no answer, wrong number): the number is erased too."""
    return await _finish_callback(request, call_id, session, "failed")


@router.get("/api/figures")
async def today_figures(request: Request, session: CurrentSession) -> dict[str, Any]:
    """Today's figures per queue (Copenhagen day), for the admin view."""
    if not session.agent.admin:
        raise HTTPException(403, "Kun for administratorer.")
    return await asyncio.to_thread(figures.today, _services(request).store)


# == the live stream =========================================================================
def _sse(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _watch(events: EventBus, agent: Agent, changed: asyncio.Event) -> None:
    async for event in events.subscribe(ALL_CALLS):
        if event.get("type") in QUEUE_EVENTS and agent.may_see(str(event.get("forvaltning") or "")):
            changed.set()


async def agent_stream(
    services: Services,
    agents: AccountStore,
    token: str,
    agent: Agent,
    refresh_s: float = STREAM_REFRESH_S,
) -> AsyncIterator[str]:
    """Snapshots for one agent: at once, on each visible queue event, and every refresh_s."""
    changed = asyncio.Event()
    watcher = asyncio.create_task(_watch(services.events, agent, changed))
    try:
        yield "retry: 3000\n\n"
        last_body, last_sent, last_renew = "", time.monotonic(), -math.inf
        while True:
            if time.monotonic() - last_renew >= RENEW_INTERVAL_S:
                session = await asyncio.to_thread(agents.session, token)
                if session is None:  # expired, logged out or removed: stop at once
                    yield _sse("logout", {"reason": "Din session er udløbet."})
                    return
                agent, last_renew = session.agent, time.monotonic()
                await asyncio.to_thread(services.store.renew_claims, agent.name)
            data = await asyncio.to_thread(snapshot, services, agent)
            body = json.dumps({k: v for k, v in data.items() if k != "now"}, sort_keys=True)
            if body != last_body:
                last_body, last_sent = body, time.monotonic()
                yield _sse("snapshot", data)
            elif time.monotonic() - last_sent >= STREAM_PING_S:
                last_sent = time.monotonic()
                yield ": ping\n\n"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), refresh_s)
                await asyncio.sleep(0.1)  # one snapshot for a burst of events
            changed.clear()
    finally:
        watcher.cancel()


@router.get("/api/stream")
async def stream(request: Request, session: CurrentSession) -> StreamingResponse:
    services, token = _services(request), request.cookies.get(SESSION_COOKIE, "")
    body = agent_stream(services, _state(request).agents, token, session.agent)
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
