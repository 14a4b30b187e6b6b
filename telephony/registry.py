"""Which platforms the gateway speaks: WebSocket path name → adapter, and the platform side
that `voicebot call --protocol NAME` plays. Adding a platform = one module + one line here
(AudioSocket is TCP, not a WebSocket route: telephony.gateway starts its server)."""

from __future__ import annotations

from collections.abc import Callable

from telephony import audiohook, audiosocket, chan_websocket, raw, telnyx, twilio, vonage
from telephony.base import MediaChannel

# name → factory(accepted starlette WebSocket, settings) → MediaChannel; served at /{name}
WEBSOCKET_CHANNELS: dict[str, Callable[..., MediaChannel]] = {
    "twilio": lambda ws, settings: twilio.TwilioChannel(ws),
    "vonage": lambda ws, settings: vonage.VonageChannel(ws),
    "telnyx": lambda ws, settings: telnyx.TelnyxChannel(ws, settings.telephony.telnyx_reorder_frames),
    "asterisk": lambda ws, settings: chan_websocket.AsteriskWsChannel(
        ws, settings.telephony.asterisk_answer, ws.query_params.get("caller")),
    "audiohook": lambda ws, settings: audiohook.AudioHookChannel(
        ws, settings.telephony.audiohook_api_key, settings.telephony.audiohook_playback),
    "raw": lambda ws, settings: raw.RawChannel(ws),
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
