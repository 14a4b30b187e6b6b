"""uvicorn's WebSocket protocol with bounded sends: a peer that stops reading cannot hold a
call, a socket or memory.

uvicorn waits for the transport to drain below its high-water mark before each send; a peer
that never reads keeps it full, so the send waits forever, and closing the transport waits to
flush a buffer that never empties. Here such a wait gives up after `send_timeout_s`: the
transport is aborted (its buffer freed, the socket closed), the app's send raises
ClientDisconnected, and the call ends. The adapters also time their sends out
(telephony.streams.send_ws); this makes sure the socket and its buffer go too.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uvicorn._types import ASGISendEvent
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

log = logging.getLogger("voicebot.app")


def bounded_ws_protocol(send_timeout_s: float) -> type[WebSocketsSansIOProtocol] | str:
    """A uvicorn `ws=` protocol class, or "auto" when this uvicorn has no sans-I/O protocol."""
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    except ImportError:  # an older uvicorn: the adapters' own send timeouts still apply
        log.warning(
            "uvicorn without websockets_sansio_impl: a stalled peer's socket is freed only "
            "by the keepalive ping timeout"
        )
        return "auto"

    class BoundedWebSocketProtocol(WebSocketsSansIOProtocol):
        async def send(self, message: ASGISendEvent) -> None:
            if not self.writable.is_set():
                try:
                    async with asyncio.timeout(send_timeout_s):
                        await self.writable.wait()
                except TimeoutError:
                    client = f"{self.client[0]}:{self.client[1]}" if self.client else "a peer"
                    log.warning(
                        "%s has not read for %.1f s: dropping the connection",
                        client,
                        send_timeout_s,
                    )
                    self.transport.abort()  # connection_lost() follows: writable set, disconnected
                    await asyncio.sleep(0)
                except asyncio.CancelledError:
                    # The app gave up on this send (its own timeout, or the call ended): the
                    # peer is not draining and the message is lost, so the connection goes too.
                    self.transport.abort()
                    raise
            await super().send(message)

        def keepalive_timeout(self) -> None:
            super().keepalive_timeout()
            if self.transport.get_write_buffer_size():
                self.transport.abort()  # close() would wait for a flush that never comes

    BoundedWebSocketProtocol.__name__ = "BoundedWebSocketProtocol"
    return BoundedWebSocketProtocol
