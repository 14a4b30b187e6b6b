"""Phone-platform adapters: one module per platform protocol, plus G.711 codecs and resampling.

Every adapter turns its platform's wire format into the same small set of call events and
commands (telephony.base), so the call session never knows which platform it talks to.
"""
