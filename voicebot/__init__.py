"""voicebot: an offline, CPU-only Danish phone-triage speech bot."""

__version__ = "0.1.0"
