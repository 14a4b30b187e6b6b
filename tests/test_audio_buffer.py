"""StreamBuffer keeps exactly what the old concatenate-and-trim buffer kept."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from voicebot.audio_buffer import INITIAL_SAMPLES, StreamBuffer


class ConcatenateBuffer:
    """The listener's former buffer: concatenate every frame, trim to the bound."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.audio, self.offset = capacity, np.zeros(0, np.float32), 0

    def append(self, samples: np.ndarray) -> None:
        self.audio = np.concatenate([self.audio, samples])
        excess = len(self.audio) - self.capacity
        if excess > 0:
            self.audio, self.offset = self.audio[excess:], self.offset + excess

    def slice(self, start: int, end: int) -> np.ndarray:
        return self.audio[max(0, start - self.offset) : max(0, end - self.offset)].copy()


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(1, 50),
    frames=st.lists(st.integers(0, 70), max_size=40),
    window=st.tuples(st.integers(-10, 600), st.integers(0, 120)),
)
def test_stream_buffer_keeps_what_concatenation_kept(capacity, frames, window):
    new, old = StreamBuffer(capacity), ConcatenateBuffer(capacity)
    position = 0
    for n in frames:
        samples = np.arange(position, position + n, dtype=np.float32)
        position += n
        new.append(samples)
        old.append(samples)
        assert new.end == position and new.offset == old.offset
        start, length = window
        np.testing.assert_array_equal(
            new.slice(start, start + length), old.slice(start, start + length)
        )
        np.testing.assert_array_equal(new.slice(0, position), old.audio)


def test_appending_a_frame_does_not_copy_the_whole_buffer():
    """Frames are written in place; the array is replaced only when it doubles (a handful of
    times over a call), never once per frame."""
    buffer = StreamBuffer(16000 * 20)
    arrays = {id(buffer._data)}
    for _ in range(500):  # 10 s of 20 ms frames
        buffer.append(np.ones(320, np.float32))
        arrays.add(id(buffer._data))
    assert len(arrays) <= 4 and len(buffer) == 160000
    data = buffer._data
    for _ in range(250):  # once grown past the audio, frames go in place
        buffer.append(np.ones(320, np.float32))
    assert buffer._data is data


def test_a_short_call_holds_a_small_array():
    """A call's buffer grows with its audio, not to the 20 s bound at once: 30 calls must not
    hold 30 × 2.8 MB (the soak test measures the process)."""
    buffer = StreamBuffer(16000 * 20)
    for _ in range(50):  # one second
        buffer.append(np.ones(320, np.float32))
    assert buffer._data.nbytes <= INITIAL_SAMPLES * 4


def test_clear_lets_the_audio_go_and_keeps_the_position():
    buffer = StreamBuffer(100)
    buffer.append(np.ones(80, np.float32))
    buffer.clear()
    assert (buffer.end, len(buffer), buffer._data.size) == (80, 0, 0)
    buffer.append(np.full(10, 2.0, np.float32))
    np.testing.assert_array_equal(buffer.slice(80, 90), np.full(10, 2.0))
