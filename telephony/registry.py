"""Which platforms the gateway speaks: one line per platform. Each module's `platform` entry
(telephony.platform.Platform) carries its channel, options, credential check, caller side
and any server or webhooks of its own; adding a platform = one module + one line here."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from telephony import audiohook, audiosocket, chan_websocket, raw, telnyx, twilio, vonage
from telephony.auth import Credentials
from telephony.platform import CallerSide, ChannelFactory, Platform

PLATFORMS: dict[str, Platform] = {}


def register(platform: Platform) -> Platform:
    if platform.channel is not None and platform.check is None:
        raise ValueError(f"platform {platform.name}: a WebSocket channel needs a credential check")
    PLATFORMS[platform.name] = platform
    return platform


register(twilio.platform)
register(vonage.platform)
register(telnyx.platform)
register(chan_websocket.platform)
register(audiohook.platform)
register(raw.platform)
register(audiosocket.platform)


class _View(Mapping[str, Any]):
    """A live view of one part of every registered platform (a platform without it is left out)."""

    def __init__(self, part: Callable[[Platform], Any]) -> None:
        self._part = part

    def __getitem__(self, name: str) -> Any:
        value = self._part(PLATFORMS[name])
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return (name for name, p in PLATFORMS.items() if self._part(p) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


# name → factory(accepted WebSocket, Connection) → MediaChannel; served at /{name}
WEBSOCKET_CHANNELS: Mapping[str, ChannelFactory] = _View(lambda p: p.channel)
# name → the platform side (telephony.simulator); `voicebot call --protocol NAME`
PLATFORM_CLIENTS: Mapping[str, type[CallerSide]] = _View(lambda p: p.client)


def client_headers(
    protocol: str, url: str, credentials: Credentials, headers: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The upgrade headers with which `protocol`'s platform connects to `url`."""
    sign = PLATFORMS[protocol].sign
    out = dict(headers or {})
    return sign(url, credentials, out) if sign is not None else out
