"""Platform endpoints that are not a plain WebSocket route from telephony.registry: set up
by `mount(app, settings, run_call)` when the app is created (see voicebot.app)."""

from __future__ import annotations


def mount(app, settings, run_call) -> None:
    """Add non-registry platform endpoints to `app` (the Twilio HTTP side lives in voicebot.app)."""
    return None
