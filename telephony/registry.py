"""Which platforms the gateway speaks: WebSocket path name → adapter, and the platform side
that `voicebot call --protocol NAME` plays. Adding a platform = one module + one line here."""

from __future__ import annotations

from collections.abc import Callable

from telephony import twilio
from telephony.base import MediaChannel

# name → factory(accepted starlette WebSocket, settings) → MediaChannel; served at /{name}
WEBSOCKET_CHANNELS: dict[str, Callable[..., MediaChannel]] = {
    "twilio": lambda ws, settings: twilio.TwilioChannel(ws),
}

# name → the platform side (used by telephony.simulator)
PLATFORM_CLIENTS: dict[str, type] = {
    "twilio": twilio.TwilioPlatform,
}
