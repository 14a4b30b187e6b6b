"""The shared adapter parts: real-time playout, sequence reordering, the bounded inbox."""

import asyncio
import time

import pytest

from telephony.base import Audio, Hangup, Played, ProtocolError
from telephony.streams import Inbox, PacedPlayout, ReorderBuffer, split_frames


def test_split_frames_pads_the_last_frame_with_silence():
    frames = split_frames(b"\x01\x02" * 250, 320, b"\0\0")
    assert [len(f) for f in frames] == [320, 320]
    assert frames[1] == b"\x01\x02" * 90 + b"\0\0" * 70
    assert split_frames(b"\x10" * 200, 160, b"\xff")[1] == b"\x10" * 40 + b"\xff" * 120
    assert split_frames(b"", 160, b"\xff") == []


def test_playout_is_paced_in_real_time_and_reports_the_mark_after_the_audio():
    async def scenario():
        sent, played = [], []
        playout = PacedPlayout(
            lambda f: _record(sent, f), played.append, frame_s=0.02, lead_frames=2
        )
        start = time.monotonic()
        playout.enqueue([b"x" * 4] * 10, "greeting-1.0")
        while not played:
            await asyncio.sleep(0.005)
        elapsed = time.monotonic() - start
        await playout.close()
        return sent, played, elapsed

    sent, played, elapsed = asyncio.run(scenario())
    times = [t for t, _ in sent]
    assert len(sent) == 10
    assert times[1] - times[0] < 0.01  # the lead frames go at once
    assert times[-1] - times[0] == pytest.approx(0.16, abs=0.04)  # the rest at 20 ms each
    assert played == [Played("greeting-1.0")]
    assert elapsed == pytest.approx(0.2, abs=0.05)  # after the last frame has played


def test_playout_clear_drops_queued_frames_and_interrupts_their_marks():
    async def scenario():
        sent, played = [], []
        playout = PacedPlayout(lambda f: _record(sent, f), played.append, frame_s=0.02)
        playout.enqueue([b"a"] * 50, "answer-2.0")
        playout.enqueue([b"b"] * 50, "answer-2.1")
        await asyncio.sleep(0.1)
        dropped = playout.clear()
        count = len(sent)
        await asyncio.sleep(0.1)
        await playout.close()
        return sent, count, played, dropped

    sent, count, played, dropped = asyncio.run(scenario())
    assert 3 <= count <= 8 and len(sent) == count  # nothing sent after the clear
    assert dropped == ["answer-2.0", "answer-2.1"]
    assert played == [Played("answer-2.0", True), Played("answer-2.1", True)]


def test_playout_is_bounded():
    async def scenario():
        played = []
        playout = PacedPlayout(lambda f: _record([], f), played.append, frame_s=0.02, max_s=1.0)
        playout.enqueue([b"a"] * 200, "long-1.0")
        queued = playout.queued_s
        await playout.close()
        return queued

    assert asyncio.run(scenario()) <= 1.0


async def _record(log, frame):
    log.append((time.monotonic(), frame))


def test_reorder_buffer_restores_order_and_counts_late_and_lost_frames():
    buf = ReorderBuffer(depth=3)
    out = []
    for seq in (2, 4, 3, 5, 7, 6):
        out += buf.push(seq, bytes([seq]))
    assert out == [bytes([s]) for s in (2, 3, 4, 5, 6, 7)]
    assert buf.push(4, b"\x04") == [] and buf.late == 1  # arrived after its successors: dropped
    # A gap that never fills is given up after `depth` frames wait behind it.
    out = [p for seq in (9, 10, 11, 12) for p in buf.push(seq, bytes([seq]))]
    assert out == [bytes([s]) for s in (9, 10, 11, 12)] and buf.lost == 1
    # Other messages' sequence numbers are skipped, not waited for.
    assert buf.skip(13) == [] and buf.push(14, b"\x0e") == [b"\x0e"]
    assert buf.push(16, b"\x10") == [] and buf.flush() == [b"\x10"]


def test_inbox_gives_events_in_order_and_raises_protocol_errors():
    async def scenario():
        inbox = Inbox(capacity=2)
        await inbox.put(Audio(None))
        inbox.put_now(Played("m"))
        inbox.fail(ProtocolError("bad"))
        first, second = await inbox.get(), await inbox.get()
        with pytest.raises(ProtocolError, match="bad"):
            await inbox.get()
        inbox.close()
        return first, second, await inbox.get()

    first, second, after_close = asyncio.run(scenario())
    assert isinstance(first, Audio) and second == Played("m") and isinstance(after_close, Hangup)


def test_inbox_back_pressure_waits_for_room():
    async def scenario():
        inbox = Inbox(capacity=2)
        for _ in range(2):
            await inbox.put(Audio(None))
        blocked = asyncio.create_task(inbox.put(Audio(None)))
        await asyncio.sleep(0.02)
        waiting = not blocked.done()
        await inbox.get()
        await asyncio.wait_for(blocked, 1)
        return waiting, len(inbox)

    assert asyncio.run(scenario()) == (True, 2)
