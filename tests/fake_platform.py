"""A platform that exists only for tests: the whole of what adding a platform takes (issue 12),
in one module. It speaks the raw protocol's wire format under its own name, path and
credential."""

from __future__ import annotations

from telephony.platform import Platform, bearer_check, bearer_sign
from telephony.raw import RawChannel, RawPlatform

PLATFORM = "fakeline"


class FakeLineChannel(RawChannel):
    platform = PLATFORM

    def _start(self, msg: dict):
        start = super()._start(msg)
        return type(start)(start.call_id, PLATFORM, start.caller, start.params)


class FakeLinePlatform(RawPlatform):
    protocol = PLATFORM


platform = Platform(
    PLATFORM,
    client=FakeLinePlatform,
    channel=lambda ws, conn: FakeLineChannel(ws, conn.limits),
    check=bearer_check(PLATFORM),
    sign=bearer_sign(PLATFORM),
)
