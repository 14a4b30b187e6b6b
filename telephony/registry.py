"""Which platforms the gateway speaks: WebSocket path name → adapter, and the platform side
that `voicebot call --protocol NAME` plays. Adding a platform = one module + one line here
(AudioSocket is TCP, not a WebSocket route: telephony.gateway starts its server)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from telephony import audiohook, audiosocket, chan_websocket, raw, telnyx, twilio, vonage
from telephony.auth import Credentials
from telephony.base import Limits, MediaChannel


@dataclass(frozen=True)
class Connection:
    """What the gateway knows about an accepted connection besides its socket."""

    limits: Limits = Limits()
    credentials: Credentials | None = None
    auth_error: str | None = None  # AudioHook: the upgrade's signature failed (refused at open)
    on_start: Callable[[str], None] | None = None  # raw: told the call id (softphone events)


def _audiohook_key(settings, conn: Connection) -> str | None:
    return conn.credentials.audiohook_api_key if conn.credentials else settings.telephony.audiohook_api_key


# name → factory(accepted starlette WebSocket, settings, Connection) → MediaChannel; served at /{name}
WEBSOCKET_CHANNELS: dict[str, Callable[..., MediaChannel]] = {
    "twilio": lambda ws, settings, conn: twilio.TwilioChannel(ws, conn.limits),
    "vonage": lambda ws, settings, conn: vonage.VonageChannel(ws, conn.limits),
    "telnyx": lambda ws, settings, conn: telnyx.TelnyxChannel(
        ws, settings.telephony.telnyx_reorder_frames, conn.limits),
    "asterisk": lambda ws, settings, conn: chan_websocket.AsteriskWsChannel(
        ws, settings.telephony.asterisk_answer, ws.query_params.get("caller"), conn.limits),
    "audiohook": lambda ws, settings, conn: audiohook.AudioHookChannel(
        ws, _audiohook_key(settings, conn), settings.telephony.audiohook_playback, conn.limits, conn.auth_error),
    "raw": lambda ws, settings, conn: raw.RawChannel(ws, conn.limits, conn.on_start),
}

# name → the platform side (used by telephony.simulator); `voicebot call --protocol NAME`
PLATFORM_CLIENTS: dict[str, type] = {
    "twilio": twilio.TwilioPlatform,
    "vonage": vonage.VonagePlatform,
    "telnyx": telnyx.TelnyxPlatform,
    "asterisk": chan_websocket.AsteriskWsPlatform,
    "audiohook": audiohook.AudioHookPlatform,
    "raw": raw.RawPlatform,
    "audiosocket": audiosocket.AudioSocketPlatform,
}
