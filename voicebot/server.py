"""The HTTP server under the gateway: uvicorn, with what one connection may cost bounded
(SECURITY.md).

uvicorn on its own keeps a connection that sends nothing open forever, lets httptools buffer a
request line or header of any size, and its `limit_concurrency` counts idle connections, so a
few hundred silent sockets answer every webhook and health check 503. Here (BoundedHttpProtocol):

- a connection must deliver a whole request within `request_timeout_s` of opening (or of its
  previous response), else it is closed (408 when it had started one);
- a header field over `max_header_bytes`, or a request line and headers over
  `max_header_total_bytes`, is answered 431 (414 for the line) and the connection closed, before
  the app or the WebSocket handshake parses anything;
- at `max_connections` a new connection closes the one that has waited longest without a
  request in progress; only when every connection is busy (a request, a call's media stream)
  is a new request answered 503. Held idle sockets never starve webhooks and health checks.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from voicebot.config import Settings
from voicebot.wsprotocol import bounded_ws_protocol

log = logging.getLogger("voicebot.server")
REASONS = {
    408: b"Request Timeout",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}
LINGER_S = 2.0  # how long a refused connection's input is read and discarded before the close


@dataclass(frozen=True)
class ConnectionLimits:
    request_timeout_s: float
    max_header_bytes: int
    max_header_total_bytes: int
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        s = settings.security
        return cls(
            s.request_timeout_s, s.max_header_bytes, s.max_header_total_bytes, s.max_connections
        )


class Refused(Exception):
    """A request answered by the protocol itself (raised from a parser callback)."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


def bounded_http_protocol(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """A uvicorn `http=` protocol class; one per server (the idle connections are its own)."""
    idle: dict[BoundedHttpProtocol, None] = {}  # no request in progress, longest waiting first

    class BoundedHttpProtocol(HttpToolsProtocol):
        deadline: asyncio.TimerHandle | None = None
        reading_headers = False  # between a request's first byte and the end of its headers
        header_bytes = 0  # received while reading_headers (httptools buffers a field whole)
        header_total = 0  # request line and header fields parsed so far
        lingering = False  # refused: our side is shut, input is discarded until the close

        # -- connection ------------------------------------------------------------------
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.wait_for_request()
            if open_connections(self) > limits.max_connections:
                make_room(self)

        def connection_lost(self, exc: Exception | None) -> None:
            self.stop_waiting()
            self.cancel_deadline()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            # uvicorn's own, with requests refused by a callback answered as they ask.
            if self.lingering:
                return  # answered and closing: the rest of the request is discarded
            self._unset_keepalive_if_required()
            if self.reading_headers:
                self.header_bytes += len(data)
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError as exc:
                if isinstance(exc.__context__, Refused):  # raised by a callback below
                    self.refuse(exc.__context__.status, str(exc.__context__))
                    return
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
                return
            except httptools.HttpParserUpgrade:
                if self._should_upgrade():
                    self.stop_waiting()
                    self.cancel_deadline()  # the WebSocket protocol has its own keepalive
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()
                return
            if self.reading_headers and self.header_bytes > limits.max_header_total_bytes:
                self.refuse(431, f"request headers over {limits.max_header_total_bytes} bytes")

        # -- parser callbacks --------------------------------------------------------------
        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.reading_headers, self.header_bytes, self.header_total = True, 0, 0
            if self.deadline is None:  # a pipelined request: its own time to arrive
                self.set_deadline()

        def on_url(self, url: bytes) -> None:
            self.header_total += len(url)
            if self.header_total > limits.max_header_total_bytes:
                raise Refused(414, f"request line over {limits.max_header_total_bytes} bytes")
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            size = len(name) + len(value) + 4  # "name: value\r\n"
            self.header_total += size
            if size > limits.max_header_bytes:
                raise Refused(431, f"a header field over {limits.max_header_bytes} bytes")
            if self.header_total > limits.max_header_total_bytes:
                raise Refused(431, f"request headers over {limits.max_header_total_bytes} bytes")
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self.reading_headers = False
            self.stop_waiting()  # a request is in progress: this connection is busy
            if open_connections(self) > limits.max_connections:
                raise Refused(503, f"{limits.max_connections} connections busy")
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self.cancel_deadline()  # the whole request is here; the app takes its time
            super().on_message_complete()

        def on_response_complete(self) -> None:
            pipelined = bool(self.pipeline)  # super() starts the next request, read already
            super().on_response_complete()
            if not pipelined and not self.transport.is_closing():
                self.wait_for_request()  # keep-alive: the next request has its own deadline

        # -- waiting for a request -----------------------------------------------------------
        def wait_for_request(self) -> None:
            idle[self] = None
            self.set_deadline()

        def stop_waiting(self) -> None:
            idle.pop(self, None)

        def set_deadline(self) -> None:
            self.cancel_deadline()
            self.deadline = self.loop.call_later(limits.request_timeout_s, self.request_timed_out)

        def cancel_deadline(self) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None

        def request_timed_out(self) -> None:
            self.deadline = None
            if self.transport.is_closing() or self.transport.get_protocol() is not self:
                return
            if self.reading_headers:  # it started one: say why it ends
                self.refuse(408, f"no complete request within {limits.request_timeout_s:g} s")
            else:  # nothing at all, or a body that stopped: the app sees a disconnect
                log.debug(
                    "%s: no complete request within %g s, closing",
                    self.peer,
                    limits.request_timeout_s,
                )
                self.stop_waiting()
                self.transport.close()

        # -- answers ---------------------------------------------------------------------
        @property
        def peer(self) -> str:
            return f"{self.client[0]}:{self.client[1]}" if self.client else "a peer"

        def refuse(self, status: int, why: str) -> None:
            """Answer `status` without the app, and close the connection."""
            self.stop_waiting()
            self.cancel_deadline()
            level = logging.DEBUG if status == 408 else logging.WARNING
            log.log(level, "refused a request from %s (%d): %s", self.peer, status, why)
            if self.transport.is_closing():
                return
            body = REASONS[status] + b"\n"
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                % (status, REASONS[status], len(body), body)
            )
            if not self.transport.can_write_eof():
                self.transport.close()
                return
            # Closing with unread input would reset the connection and lose the answer: send
            # it, end our side, and discard what still comes for a moment (a lingering close).
            self.transport.write_eof()
            self.lingering = True
            self.deadline = self.loop.call_later(LINGER_S, self.transport.close)

    def open_connections(protocol: HttpToolsProtocol) -> int:
        """Connections not closing (one closed a moment ago is still in the set)."""
        return sum(1 for c in protocol.connections if not c.transport.is_closing())

    def make_room(newcomer: BoundedHttpProtocol) -> None:
        """Close the connection waiting longest for a request (not the newcomer)."""
        for protocol in idle:
            if protocol is not newcomer:
                idle.pop(protocol)
                log.debug(
                    "%d connections open: closing the one idle longest", limits.max_connections
                )
                protocol.cancel_deadline()
                protocol.transport.close()
                return

    BoundedHttpProtocol.__name__ = "BoundedHttpProtocol"
    return BoundedHttpProtocol


def build_config(app: Any, settings: Settings, **options: Any) -> uvicorn.Config:
    """The uvicorn configuration `voicebot serve` runs; `options` (port, log_level, ...) are
    passed on, so tests serve the same configuration on a free port."""
    security = settings.security
    limits = ConnectionLimits.from_settings(settings)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < security.max_connections + 64:
        log.warning(
            "security.max_connections is %d but this process may open only %d files",
            security.max_connections,
            soft,
        )
    config: dict[str, Any] = {
        "host": settings.host, "port": settings.port, "timeout_graceful_shutdown": 5,
        "http": bounded_http_protocol(limits),
        "limit_concurrency": None,  # counted idle sockets; the protocol limits connections
        "timeout_keep_alive": security.keepalive_timeout_s,
        "h11_max_incomplete_event_size": security.max_header_total_bytes,  # if h11 is ever chosen
        "ws": bounded_ws_protocol(security.send_timeout_s),
        # A text frame of N characters is up to 4N bytes; the adapters check characters.
        "ws_max_size": 4 * security.max_message_bytes, "ws_max_queue": 32,
        "ws_ping_interval": security.ws_ping_interval_s, "ws_ping_timeout": security.ws_ping_timeout_s,
    }  # fmt: skip
    return uvicorn.Config(app, **{**config, **options})


def run(app: Any, settings: Settings, log_level: str = "info") -> None:
    """Serve `app` until interrupted."""
    uvicorn.Server(build_config(app, settings, log_level=log_level)).run()
