"""What one phone platform is, for the gateway and for `voicebot call`: a `Platform` entry that
each platform module defines once (its channel, options, credential check, caller side and,
where it has them, a server or webhooks of its own) and telephony.registry lists.

The gateway (voicebot.gateway) serves every entry the same way: a WebSocket route at
/{name} whose upgrade is checked by `check`, a server started with the app (`serve`), and
the routes `webhooks` builds. Nothing here knows the runtime: what a platform needs from it
comes in as typed values (Upgrade, Connection, Credentials, the platform's own options).
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

import numpy as np

from telephony.auth import Credentials, NonceCache, equal, presented_token
from telephony.base import Limits, MediaChannel

if TYPE_CHECKING:
    import asyncio

    from fastapi import APIRouter
    from starlette.websockets import WebSocket


@dataclass(frozen=True)
class NoOptions:
    """A platform without settings of its own."""


@dataclass(frozen=True)
class Upgrade:
    """A WebSocket upgrade request, as a platform's credential check sees it."""

    headers: Mapping[str, str]  # case-insensitive (starlette Headers) or lower-case names
    query: str  # the raw query string
    signed_urls: Sequence[str]  # every URL the platform may have signed (as seen, TLS form, public)
    authorities: Sequence[str]  # the host[:port] values the request may have been made to
    target: str  # path and query, as sent


@dataclass(frozen=True)
class Admission:
    """A credential check's verdict on an upgrade."""

    refused: str | None = None  # why the upgrade is answered HTTP 401 (None: it is accepted)
    deferred: str | None = None  # accepted, then refused in the platform's own protocol (AudioHook)
    softphone: bool = False  # the browser softphone's token: it may follow only its own calls

    @property
    def failed(self) -> str | None:
        """Why the credentials failed, refused now or later (None: they are good)."""
        return self.refused or self.deferred


@dataclass(frozen=True)
class Connection:
    """What an accepted connection's channel is made with besides its socket."""

    limits: Limits = Limits()
    credentials: Credentials | None = None
    options: Any = NoOptions()  # the platform's options (its Platform.options type)
    admission: Admission = Admission()


class CredentialCheck(Protocol):
    def __call__(
        self, upgrade: Upgrade, credentials: Credentials, nonces: NonceCache
    ) -> Admission: ...


class Signer(Protocol):
    def __call__(
        self, url: str, credentials: Credentials, headers: dict[str, str]
    ) -> dict[str, str]: ...


RunChannel = Callable[[MediaChannel], Awaitable[None]]
ChannelFactory = Callable[["WebSocket", Connection], MediaChannel]  # (accepted WebSocket, …)
Listener = Callable[
    [Any, RunChannel, Limits], Awaitable["asyncio.Server | None"]
]  # options → server


# == the caller side, driven by telephony.simulator ============================================
class CallerSocket(Protocol):
    """What the simulator uses of a caller side's connection: a websockets client connection,
    or a connection of the platform's own (AudioSocket's TCP, `transport`)."""

    # Messages are in the platform's own form: str | bytes on a WebSocket, AudioSocket's
    # Message on its TCP connection; only the platform's caller side reads or makes them.
    async def send(self, message: Any, /) -> None: ...
    def __aiter__(self) -> AsyncIterator[Any]: ...
    async def close(self) -> None: ...
    async def __aenter__(self) -> Self: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> None: ...


class CallerTransport(Protocol):
    """A caller side's own connection maker (a class whose `open` is a classmethod)."""

    async def open(self, url: str) -> CallerSocket: ...


# A bot message as a caller side decodes it: (kind, value), the value's type set by the kind:
# ("audio", int16 samples) | ("mark", name) | ("clear", None) | ("hangup" | "control", info)
# | ("reply", a message to send back).
Decoded = tuple[str, Any]


class CallerSide(Protocol):
    """A platform's caller side. The optional parts (`new_call_id()`, `headers(call_id)`,
    `transport`, `paced`, `acks_cleared_marks`, `hears_bot`, `cleared()`) are looked up with
    getattr; telephony.simulator says what each means."""

    wire_rate: int

    def __init__(self, ws: CallerSocket, call_id: str, caller: str | None) -> None: ...
    @property
    def ws(self) -> CallerSocket: ...
    async def start(self, params: dict[str, str]) -> None: ...
    async def send_audio(self, pcm16: np.ndarray, timestamp_ms: int) -> None: ...
    async def send_dtmf(self, digit: str) -> None: ...
    async def ack_mark(self, name: str) -> None: ...
    async def stop(self) -> None: ...
    def decode(self, message: Any) -> Decoded: ...


@dataclass(frozen=True)
class WebhookSide:
    """What a platform's HTTP webhooks need from the gateway (it injects the runtime)."""

    credentials: Callable[[], Credentials]
    signed_urls: Callable[[Any], list[str]]  # request → the URLs the platform may have signed
    refused: Callable[[Any, str], None]  # request, why: counted and logged by the gateway
    public_base: Callable[[Any], str]  # request → the base URL the platform reaches us at
    queue_for: Callable[
        [str], Awaitable[str | None]
    ]  # call id → its queue while it waits to be taken
    goodbye: Callable[[], str]  # what a caller with no queue hears before the line is hung up


@dataclass(frozen=True)
class Platform:
    """One phone platform: everything the gateway and `voicebot call` need to speak it."""

    name: str
    client: type[CallerSide]  # the platform side, driven by telephony.simulator
    channel: ChannelFactory | None = None  # served as a WebSocket route at /{name}
    check: CredentialCheck | None = None  # the upgrade's credentials (required with `channel`)
    sign: Signer | None = None  # the caller side's credentials on the upgrade (None: none)
    options: type = NoOptions  # a frozen dataclass; the gateway fills it from its settings
    serve: Listener | None = None  # a server of its own (AudioSocket's TCP), started with the app
    webhooks: Callable[[WebhookSide], APIRouter] | None = None  # HTTP routes of its own


# == the bearer-token scheme, shared by several platforms ======================================
def bearer_check(name: str) -> CredentialCheck:
    """`Authorization: Bearer T`, Basic with T as the password, or `?token=T`, where T is the
    platform's own credential (telephony.auth.Credentials.token)."""

    def check(upgrade: Upgrade, credentials: Credentials, nonces: NonceCache) -> Admission:
        if equal(presented_token(upgrade.headers, upgrade.query), credentials.token(name)):
            return Admission()
        return Admission(refused="bearer token missing or wrong")

    return check


def bearer_sign(name: str) -> Signer:
    def sign(url: str, credentials: Credentials, headers: dict[str, str]) -> dict[str, str]:
        return {**headers, "Authorization": f"Bearer {credentials.token(name)}"}

    return sign


def is_loopback_host(host: str | None) -> bool:
    """localhost or a loopback address (IPv6 with or without brackets)."""
    host = (host or "").strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
