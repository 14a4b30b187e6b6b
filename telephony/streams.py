"""Parts the platform adapters share: a socket reader that hands events to the session
(`ReaderChannel` + `Inbox`), real-time outbound pacing (`PacedPlayout`), fixed-size framing
and sequence reordering.

Why a reader task: several platforms need replies the session knows nothing about (Genesys
ping → pong, close → closed, even after the session has finished), and paced playback makes
`Played` events of its own. So each channel reads its socket in its own task and queues call
events; the session consumes them from `events()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from abc import abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from telephony.base import (
    CLOSE_INVALID,
    MAX_MARKS,
    CallEvent,
    Hangup,
    Limits,
    MediaChannel,
    Played,
    ProtocolError,
    close_reason,
    log,
)  # fmt: skip

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

INBOX_EVENTS = 250  # ≈ 5 s of 20 ms audio frames before the reader stops reading the socket
MAX_PLAYOUT_S = 120.0  # outbound audio one channel may have queued (prompts are seconds long)


class Inbox:
    """Bounded hand-over of call events from a socket reader to the session, in order.

    The reader waits for room (back-pressure on the socket). Events the adapter makes itself
    (Played, errors) never wait: the session may be the one calling, e.g. clear() during a
    barge-in. Once closed (the channel is hung up) everything is dropped and get() returns a
    Hangup, so a session still listening ends."""

    def __init__(self, capacity: int = INBOX_EVENTS) -> None:
        self._items: deque[CallEvent | ProtocolError] = deque()
        self._capacity = capacity
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, event: CallEvent) -> None:
        while len(self._items) >= self._capacity and not self.closed:
            self._room.clear()
            await self._room.wait()
        self._append(event)

    def put_now(self, event: CallEvent | ProtocolError) -> None:
        # Bounded by the callers (one Played per mark, marks bounded by the playout queue),
        # with a hard stop twice the capacity in case of a bug.
        if len(self._items) >= 2 * self._capacity:
            log.warning("inbox full: dropping %s", type(event).__name__)
            return
        self._append(event)

    def fail(self, error: ProtocolError) -> None:
        self.put_now(error)

    def _append(self, item: CallEvent | ProtocolError) -> None:
        if self.closed:
            return
        self._items.append(item)
        self._ready.set()

    async def get(self) -> CallEvent:
        while not self._items:
            if self.closed:
                return Hangup("closed")  # the channel was hung up: end the session's loop
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if len(self._items) < self._capacity:
            self._room.set()
        if isinstance(item, ProtocolError):
            raise item
        return item

    def close(self) -> None:
        self.closed = True
        self._items.clear()
        self._room.set()
        self._ready.set()


class ReaderChannel(MediaChannel):
    """A MediaChannel whose socket is read by its own task (see the module doc). Subclasses
    implement `read_events()`: parse the socket until the call ends, yielding call events."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.inbox = Inbox()
        self.limits = limits or Limits()
        self._reader: asyncio.Task[None] | None = None
        self._send_failed = False

    @abstractmethod
    def read_events(self) -> AsyncIterator[CallEvent]:
        """The platform's messages as call events, until the connection ends."""

    async def events(self) -> AsyncIterator[CallEvent]:
        if self._reader is None:
            self._reader = asyncio.create_task(self._pump(), name=f"{self.platform}-reader")
        while True:
            event = await self.inbox.get()
            yield event
            if isinstance(event, Hangup):
                return

    async def _pump(self) -> None:
        try:
            async for event in self.read_events():
                await self.inbox.put(event)
                if isinstance(event, Hangup):
                    return
        except ProtocolError as exc:
            self.error = exc
            self.inbox.fail(exc)
            return
        except (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError) as exc:
            # Input no parser anticipated: still the platform's fault, never a crash.
            log.debug("%s: unparsable input", self.platform, exc_info=True)
            self.error = ProtocolError(f"malformed {self.platform} message: {exc!r}", CLOSE_INVALID)
            self.inbox.fail(self.error)
            return
        self.inbox.put_now(Hangup("disconnected"))

    def send_failed(self) -> None:
        """A send did not go through (the peer is gone or stopped reading): end the call. The
        session sees a Hangup after what is already queued, and hangs up."""
        if not self._send_failed:
            self._send_failed = True
            self.inbox.put_now(Hangup("send failed"))

    async def stop_reading(self) -> None:
        self.inbox.close()
        await cancel_and_wait(self._reader)


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """event.wait() with a timeout. Not asyncio.wait_for: before Python 3.12 that can swallow
    a cancellation of the caller arriving just as the event is set."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        done, _ = await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()
    return bool(done)


async def cancel_and_wait(task: asyncio.Task[None] | None) -> None:
    """Cancel a helper task and wait until it has stopped. Unlike awaiting it under
    suppress(CancelledError), this never swallows a cancellation of the *calling* task (the
    session cancels its input worker while that worker may be in here)."""
    if task is None or task is asyncio.current_task():
        return
    task.cancel()
    await asyncio.wait({task})


async def websocket_messages(ws: WebSocket) -> AsyncIterator[str | bytes]:
    """Text and binary messages of an accepted starlette WebSocket until it closes."""
    from starlette.websockets import WebSocketDisconnect

    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                yield message["text"]
            elif message.get("bytes") is not None:
                yield message["bytes"]
    except (WebSocketDisconnect, RuntimeError):  # RuntimeError: receive after the close
        return


def parse_json_object(text: str, what: str = "a message") -> dict[str, Any]:
    """One JSON object, or a ProtocolError (close 1007): malformed JSON, nesting too deep for
    the parser, or JSON that is not an object."""
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise ProtocolError(f"malformed JSON: {str(exc)[:80]}", CLOSE_INVALID) from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"{what} must be a JSON object", CLOSE_INVALID)
    return msg


async def send_ws(
    ws: WebSocket, message: str | bytes, timeout_s: float = Limits.send_timeout_s
) -> bool:
    """Send on a starlette WebSocket. False if the connection is gone, or the peer has not
    taken the message within `timeout_s` (it stopped reading: its buffers are full). The
    caller then ends the call; one stuck peer never holds a session, or memory, for long."""
    try:
        async with asyncio.timeout(timeout_s):
            if isinstance(message, bytes):
                await ws.send_bytes(message)
            else:
                await ws.send_text(message)
        return True
    except TimeoutError:
        log.warning("a peer has not read for %.1f s: closing its call", timeout_s)
        return False
    except Exception as exc:  # WebSocketDisconnect, ClientDisconnected, RuntimeError after close
        log.debug("send on a closed WebSocket: %s", exc)
        return False


async def close_ws(
    ws: WebSocket, error: BaseException | None, timeout_s: float = Limits.send_timeout_s
) -> None:
    """Close a starlette WebSocket with the close code `error` calls for (1000 without one).
    Bounded: a peer that does not read cannot hold the close either."""
    code, reason = close_reason(error)
    with contextlib.suppress(Exception):  # already closed by the peer, or it stopped reading
        async with asyncio.timeout(timeout_s):
            await ws.close(code, reason)


def split_frames(payload: bytes, frame_bytes: int, silence: bytes) -> list[bytes]:
    """Cut audio into frames of exactly `frame_bytes`, padding the last with silence
    (`silence` is one sample's bytes: b"\\0\\0" for PCM, b"\\xff" for μ-law, b"\\xd5" for A-law)."""
    short = (-len(payload)) % frame_bytes
    if short:
        payload += silence * (short // len(silence))
    return [payload[i : i + frame_bytes] for i in range(0, len(payload), frame_bytes)]


class PacedPlayout:
    """Outbound audio sent in real time, one frame every `frame_s`, for platforms that do not
    pace (Asterisk AudioSocket) or buffer little (Vonage, Genesys).

    The first `lead_frames` of a talk spurt go at once, so network jitter does not starve the
    platform. A mark is reported played (`on_played`) once every frame before it has been
    sent and its time has passed; `clear()` drops queued frames and reports their marks
    interrupted. Bounded: at most `max_s` of audio is queued (longer prompts are cut, logged)."""

    MAX_LATE_S = 0.5  # fell this far behind (a stalled loop): restart the clock, do not burst

    def __init__(
        self,
        send: Callable[[bytes], Awaitable[None]],
        on_played: Callable[[Played], None],
        frame_s: float = 0.02,
        lead_frames: int = 0,
        max_s: float = MAX_PLAYOUT_S,
        name: str = "playout",
    ) -> None:
        self._send = send
        self._on_played = on_played
        self._frame_s = frame_s
        self._lead_frames = lead_frames
        self._max_frames = int(max_s / frame_s)
        self._queue: deque[bytes | str] = deque()  # frames and mark names, in order
        self._queued_frames = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._timers: dict[
            str, asyncio.TimerHandle
        ] = {}  # marks sent, waiting for the lead to play
        self._name = name
        self.frames_sent = 0
        self.closed = False
        self._clears = 0  # a frame popped before a clear must not go out after it

    @property
    def queued_s(self) -> float:
        return self._queued_frames * self._frame_s

    def enqueue(self, frames: list[bytes], mark: str) -> None:
        if self.closed:
            self._on_played(Played(mark, interrupted=True))
            return
        room = self._max_frames - self._queued_frames
        if len(frames) > room:
            log.warning(
                "%s: %.1f s of audio queued already; cutting a prompt to %.1f s",
                self._name,
                self.queued_s,
                max(room, 0) * self._frame_s,
            )
            frames = frames[: max(room, 0)]
        self._queue.extend(frames)
        self._queued_frames += len(frames)
        self._queue.append(mark)
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._name)

    def clear(self) -> list[str]:
        """Drop what has not been sent; returns the marks reported interrupted."""
        marks = [item for item in self._queue if isinstance(item, str)]
        self._queue.clear()
        self._queued_frames = 0
        self._clears += 1
        for name, timer in list(self._timers.items()):
            timer.cancel()
            marks.insert(0, name)
        self._timers.clear()
        for name in marks:
            self._on_played(Played(name, interrupted=True))
        return marks

    async def close(self) -> None:
        self.closed = True
        self.clear()
        await cancel_and_wait(self._task)

    def _played_later(self, name: str, at: float) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.pop(name, None)
            self._on_played(Played(name))

        self._timers[name] = loop.call_at(at, fire)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due: float | None = None  # when the next frame is due; None between talk spurts
        lead_s = self._lead_frames * self._frame_s
        while True:
            if not self._queue:
                due = None
                self._wake.clear()
                await self._wake.wait()
                continue
            item = self._queue.popleft()
            if isinstance(item, str):
                # Its frames are sent; the platform still holds up to lead_s of them.
                at = (due if due is not None else loop.time()) + lead_s
                self._played_later(item, at)
                continue
            self._queued_frames -= 1
            now = loop.time()
            if due is None or now - due > self.MAX_LATE_S:
                due = now - lead_s
            elif due > now:
                clears = self._clears
                await asyncio.sleep(due - now)
                if clears != self._clears:
                    continue  # cleared while waiting: this frame is dropped too
            try:
                await self._send(item)
            except Exception as exc:  # the connection is gone: nothing more can be played
                log.debug("%s: send failed (%s); stopping playout", self._name, exc)
                self.clear()
                return
            self.frames_sent += 1
            due += self._frame_s


class MarkLedger:
    """The marks a channel sent and the platform has not echoed yet, and those a clear cut
    off (their echoes mean "discarded"). Both are bounded by MAX_MARKS, so a platform that
    never echoes cannot make a channel remember more."""

    def __init__(self) -> None:
        self.pending: list[str] = []
        self.cleared: dict[str, None] = {}  # insertion-ordered, so the oldest can go

    def sent(self, mark: str) -> None:
        self.pending = [*self.pending[-(MAX_MARKS - 1) :], mark]

    def clear(self) -> list[str]:
        """Cut off every pending mark; returns them."""
        cut, self.pending = self.pending, []
        self.cleared.update(dict.fromkeys(cut))
        if len(self.cleared) > MAX_MARKS:  # echoes that never came: forget the oldest
            self.cleared = dict.fromkeys(list(self.cleared)[-MAX_MARKS:])
        return cut

    def take_cleared(self, mark: str) -> bool:
        """Whether `mark` was cut off by a clear (then it is forgotten)."""
        if mark in self.cleared:
            del self.cleared[mark]
            return True
        return False

    def take_pending(self, mark: str) -> bool:
        """Whether `mark` was sent and not yet echoed (then it is forgotten)."""
        if mark in self.pending:
            self.pending.remove(mark)
            return True
        return False

    def echoed(self, mark: str) -> Played:
        """The platform echoed `mark`: played in full, or discarded by a clear."""
        self.take_pending(mark)
        return Played(mark, interrupted=self.take_cleared(mark))


@dataclass
class ReorderBuffer:
    """Puts inbound frames back in sequence order. Up to `depth` frames wait for a missing
    one; then the gap is given up (counted as lost). A frame older than what has already been
    released is late and dropped (counted). Sequence numbers of other messages are `skip()`ped
    so they do not look like gaps."""

    depth: int = 5
    next_seq: int | None = None
    pending: dict[int, bytes | None] = field(default_factory=dict)
    late: int = 0
    lost: int = 0
    reordered: int = 0

    def push(self, seq: int, payload: bytes | None) -> list[bytes]:
        if self.next_seq is None:
            self.next_seq = seq
        if seq < self.next_seq or seq in self.pending:
            self.late += payload is not None
            return []
        if seq != self.next_seq and payload is not None:
            self.reordered += 1
        self.pending[seq] = payload
        out = self._release()
        if len(self.pending) > self.depth:
            first = min(self.pending)
            self.lost += first - self.next_seq
            self.next_seq = first
            out += self._release()
        return out

    def skip(self, seq: int) -> list[bytes]:
        return self.push(seq, None)

    def flush(self) -> list[bytes]:
        out = [p for _, p in sorted(self.pending.items()) if p is not None]
        self.pending.clear()
        return out

    def _release(self) -> list[bytes]:
        out = []
        while self.next_seq in self.pending:
            payload = self.pending.pop(self.next_seq)
            if payload is not None:
                out.append(payload)
            self.next_seq += 1
        return out
