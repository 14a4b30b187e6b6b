"""What one connection may cost the HTTP server (voicebot/server.py, voicebot/httplimits.py):
idle and slow connections are closed, held idle sockets never starve the webhooks and health
checks, oversized headers are answered (431) and closed before anything parses them, and
WebSockets are pinged. The real app under the real server configuration, on a free port."""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
from contextlib import ExitStack, contextmanager, suppress
from urllib.parse import urlencode

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from telephony import auth
from tests.fakes import ServedApp, light_services
from voicebot.config import SecuritySettings


@contextmanager
def served(tmp_path, catalogue, classifier, max_calls: int = 32, **security):
    services = light_services(tmp_path, catalogue, classifier, audiosocket_enabled=False)
    services.settings.max_calls = max_calls
    for name, value in security.items():
        setattr(services.settings.security, name, value)
    with ServedApp(services) as app:
        yield app


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
    )  # no TIME_WAIT
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a timeout fails the test)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def request(port: int, head: str, body: bytes = b"", extra: bytes = b"") -> bytes:
    with connect(port) as sock:
        sock.sendall(head.encode() + extra + b"Connection: close\r\n\r\n" + body)
        return read_all(sock)


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def healthz(port: int) -> int:
    return status(request(port, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"))


def signed_twilio_voice(served_app: ServedApp) -> int:
    url = f"http://127.0.0.1:{served_app.port}/twilio/voice"
    params = [("CallSid", "CAidle"), ("From", "+4512345678")]
    signature = auth.twilio_signature(served_app.credentials.twilio_auth_token, url, params)
    body = urlencode(params).encode()
    head = (
        f"POST /twilio/voice HTTP/1.1\r\nHost: 127.0.0.1:{served_app.port}\r\nX-Twilio-Signature: {signature}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
    )
    return status(request(served_app.port, head, body))


def closed_by_server(sock: socket.socket, within_s: float) -> bool:
    sock.settimeout(within_s)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def upgrade_head(path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    ).encode()


# == idle and slow connections ================================================================
def test_held_idle_connections_never_starve_health_checks_or_webhooks_and_are_closed(
    tmp_path, catalogue, classifier
):
    with (
        served(tmp_path, catalogue, classifier, request_timeout_s=1.0, max_connections=100) as app,
        ExitStack() as stack,
    ):
        # More silent sockets than connections allowed (and than uvicorn's old limit of 192).
        idle = [stack.enter_context(connect(app.port)) for _ in range(250)]
        time.sleep(0.2)
        assert healthz(app.port) == 200
        assert signed_twilio_voice(app) == 200  # new calls still come in
        assert request(app.port, "GET /console/login HTTP/1.1\r\nHost: 127.0.0.1\r\n").startswith(
            b"HTTP/1.1 200"
        )
        # Every one of them is closed: made room for others, or after the request timeout.
        assert all(closed_by_server(sock, 5.0) for sock in idle)


def test_a_slow_request_is_answered_408_and_closed_after_the_request_timeout(
    tmp_path, catalogue, classifier
):
    with (
        served(tmp_path, catalogue, classifier, request_timeout_s=1.0) as app,
        connect(app.port) as sock,
    ):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sock.settimeout(0.2)
        response, deadline = b"", time.monotonic() + 10
        while not response and time.monotonic() < deadline:  # a header line every 0.2 s, forever
            sock.sendall(b"X-Slow: a\r\n")
            with suppress(TimeoutError):
                response = sock.recv(65536)
        assert status(response) == 408
        assert closed_by_server(sock, 5.0)


def test_an_idle_keep_alive_connection_is_closed_but_a_websocket_is_not_idle(
    tmp_path, catalogue, classifier
):
    from websockets.sync.client import connect as ws_connect

    with (
        served(
            tmp_path, catalogue, classifier, request_timeout_s=0.5, keepalive_timeout_s=0.5
        ) as app,
        connect(app.port) as sock,
        ws_connect(app.events_url("CAlive")) as follower,
    ):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        assert closed_by_server(sock, 5.0)
        time.sleep(
            1.5
        )  # three request timeouts: a WebSocket is a call or a follower, not an idle socket
        follower.ping().wait(5)


def test_a_request_in_progress_outlives_the_request_timeout_also_when_pipelined(
    tmp_path, catalogue, classifier
):
    import asyncio

    with (
        served(tmp_path, catalogue, classifier, request_timeout_s=0.5) as app,
        connect(app.port) as sock,
    ):

        async def slow() -> dict:  # an app that takes its time: the request itself had arrived
            await asyncio.sleep(1.5)
            return {"slow": True}

        app.app.add_api_route("/_slow", slow)
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /_slow HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /_slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert read_all(sock).count(b"HTTP/1.1 200 OK") == 3


# == the connection limit (503) ===============================================================
def test_a_request_is_answered_503_only_when_every_connection_is_busy(
    tmp_path, catalogue, classifier
):
    from websockets.sync.client import connect as ws_connect

    with (
        served(tmp_path, catalogue, classifier, max_calls=2, max_connections=20) as app,
        ExitStack() as stack,
    ):
        followers = [stack.enter_context(ws_connect(app.events_url(f"CA{n}"))) for n in range(20)]
        assert healthz(app.port) == 503
        followers.pop().close()
        time.sleep(0.2)
        assert healthz(app.port) == 200


# == header sizes =============================================================================
def test_an_oversized_cookie_is_refused_at_once_and_the_loop_goes_on(
    tmp_path, catalogue, classifier
):
    with served(tmp_path, catalogue, classifier) as app:
        slowest, done = [0.0], threading.Event()

        def health_checks() -> None:  # what the calls' loop does meanwhile
            while not done.is_set():
                started = time.monotonic()
                assert healthz(app.port) == 200
                slowest[0] = max(slowest[0], time.monotonic() - started)
                time.sleep(0.02)

        checker = threading.Thread(target=health_checks)
        checker.start()
        try:
            cookie = b'Cookie: a="' + b"\\" * (60 * 1024) + b'"\r\n'
            response = request(
                app.port, "GET /console/login HTTP/1.1\r\nHost: 127.0.0.1\r\n", extra=cookie
            )
            time.sleep(0.2)
        finally:
            done.set()
            checker.join(30)
        assert status(response) == 431
        assert slowest[0] < 1.0


def test_escaped_cookies_are_dropped_before_starlette_parses_them():
    from voicebot.httplimits import RequestLimits, without_escaped_cookies

    async def cookies(request: Request) -> JSONResponse:
        return JSONResponse(request.cookies)

    app = RequestLimits(Starlette(routes=[Route("/", cookies)]), SecuritySettings())
    client = TestClient(app)
    escaped = '"' + "\\" * 7000 + '"'
    assert client.get("/", headers={"Cookie": f"session=abc; evil={escaped}; csrf=x"}).json() == {
        "session": "abc",
        "csrf": "x",
    }
    assert client.get("/", headers={"Cookie": "x" * 9000}).status_code == 431
    assert without_escaped_cookies(b'a=1; b="\\"') == b"a=1"


@pytest.mark.parametrize(
    "headers",
    [
        [b"X-Big: " + b"a" * 9000],  # one field over 8 KiB
        [b"X-Big%d: " % n + b"a" * 7000 for n in range(5)],  # 35 KB in fields under 8 KiB each
        [b"X-Big: " + b"a" * 200_000],  # more than the server reads at once
    ],
)
def test_an_upgrade_with_oversized_headers_is_answered_431_and_closed(
    tmp_path, catalogue, classifier, headers
):
    with served(tmp_path, catalogue, classifier) as app, connect(app.port) as sock:
        sock.sendall(upgrade_head("/raw") + b"".join(h + b"\r\n" for h in headers) + b"\r\n")
        assert status(read_all(sock)) == 431


def test_a_request_line_and_headers_that_never_end_are_cut_off(tmp_path, catalogue, classifier):
    with served(tmp_path, catalogue, classifier) as app, connect(app.port) as sock:
        sock.sendall(upgrade_head("/raw") + b"X-Endless: ")
        for _ in range(100):  # 400 KB in pieces, which httptools would buffer without end
            sock.sendall(b"a" * 4096)
            time.sleep(0.001)
        assert status(read_all(sock)) == 431


# == body sizes ===============================================================================
def test_a_webhook_body_over_the_limit_is_refused_413_before_it_is_buffered(
    tmp_path, catalogue, classifier
):
    with served(tmp_path, catalogue, classifier, max_body_bytes=64 * 1024) as app:
        head = "POST /twilio/voice HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        declared = request(app.port, head + f"Content-Length: {1 << 30}\r\n")  # and no body at all
        assert status(declared) == 413
        with connect(app.port) as sock:  # a chunked body declares no length: counted as it comes
            sock.sendall(head.encode() + b"Transfer-Encoding: chunked\r\n\r\n")
            sock.settimeout(0.05)
            response, chunk = b"", b"a=" + b"b" * 8190
            for _ in range(1000):  # up to 8 MB, until the server answers
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                with suppress(TimeoutError):
                    if response := sock.recv(65536):
                        break
            assert status(response) == 413
        assert signed_twilio_voice(app) == 200  # a webhook's own few hundred bytes


# == WebSocket keepalive ======================================================================
def test_a_websocket_peer_that_never_answers_pings_is_disconnected(tmp_path, catalogue, classifier):
    with (
        served(
            tmp_path, catalogue, classifier, ws_ping_interval_s=0.3, ws_ping_timeout_s=0.3
        ) as app,
        connect(app.port) as sock,
    ):
        path = f"/calls/CAsilent/events?token={app.secret}"
        sock.sendall(upgrade_head(path) + b"\r\n")
        frames = read_all(sock)  # never reads a frame nor answers one
        assert frames.startswith(b"HTTP/1.1 101")
        body = frames.split(b"\r\n\r\n", 1)[1]
        assert body[0] & 0x0F == 0x9  # a ping first
        assert b"\x88" in body and b"keepalive ping timeout" in body  # then the close
