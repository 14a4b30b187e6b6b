"""Request bounds in the app itself, before Starlette parses anything (cookies, forms, auth):
header sizes (431) and body sizes (413; a webhook's form is parsed before its signature is
checked, so an unbounded one would be buffered for anyone).

The server (voicebot/server.py) already refuses oversized headers on the wire; this holds for
any server the app runs under (and for tests' clients), and makes the Cookie header safe to
parse: the standard library's cookie unquoting, which Starlette uses, is quadratic in the
backslashes of a quoted value on Python before 3.11.10 (62 KiB of them held the event loop,
and every live call on it, for 8 s). A backslash is not a cookie character (RFC 6265 4.1.1);
such cookies are none of ours, so they are dropped, in linear time, before anyone parses them.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voicebot.config import SecuritySettings

log = logging.getLogger("voicebot.app")


def oversized(
    headers: list[tuple[bytes, bytes]], max_header_bytes: int, max_total_bytes: int
) -> str | None:
    """Why these headers are too large, or None."""
    total = 0
    for name, value in headers:
        size = len(name) + len(value) + 4  # "name: value\r\n"
        if size > max_header_bytes:
            return f"a header field over {max_header_bytes} bytes"
        total += size
    if total > max_total_bytes:
        return f"request headers over {max_total_bytes} bytes"
    return None


def without_escaped_cookies(value: bytes) -> bytes:
    """The Cookie header without the pairs whose value holds a backslash."""
    return b";".join(pair for pair in value.split(b";") if b"\\" not in pair).strip()


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length" and value.strip().isdigit():
            return int(value)
    return None


class RequestLimits:
    """ASGI middleware: 431 for oversized headers (HTTP and WebSocket upgrades), 413 for a
    body over `max_body_bytes` (declared or streamed), escaped cookies dropped."""

    def __init__(self, app: ASGIApp, security: SecuritySettings) -> None:
        self.app = app
        self.max_header_bytes = security.max_header_bytes
        self.max_total_bytes = security.max_header_total_bytes
        self.max_body_bytes = security.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        why = oversized(headers, self.max_header_bytes, self.max_total_bytes)
        if why is not None:
            client = scope.get("client") or ("a peer", 0)
            log.warning("refused a request from %s (431): %s", client[0], why)
            await self.refuse(scope, send)
            return
        if any(name == b"cookie" and b"\\" in value for name, value in headers):
            scope = {
                **scope,
                "headers": [
                    (name, without_escaped_cookies(value)) if name == b"cookie" else (name, value)
                    for name, value in headers
                ],
            }
        if scope["type"] == "http":
            if (declared_length(headers) or 0) > self.max_body_bytes:
                await self.too_large(send)
                return
            receive = self.bounded(receive)
        await self.app(scope, receive, send)

    def bounded(self, receive: Receive) -> Receive:
        """`receive`, raising 413 (answered by the app's exception handling) once the body
        outgrows the limit: a chunked body declares no length."""
        received = 0

        async def receive_bounded() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                raise HTTPException(413, f"request body over {self.max_body_bytes} bytes")
            return message

        return receive_bounded

    async def too_large(self, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"connection", b"close"),
                ],
            }
        )
        await send(
            {
                "type": "http.response.body",
                "body": f"request body over {self.max_body_bytes} bytes\n".encode(),
            }
        )

    @staticmethod
    async def refuse(scope: Scope, send: Send) -> None:
        start: dict[str, Any] = {
            "status": 431,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")],
        }
        body = b"Request Header Fields Too Large\n"
        if scope["type"] == "http":
            await send({"type": "http.response.start", **start})
            await send({"type": "http.response.body", "body": body})
        elif "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", **start})
            await send({"type": "websocket.http.response.body", "body": body})
        else:  # a server without denial responses: refused as a 403
            await send({"type": "websocket.close", "code": 1008})
