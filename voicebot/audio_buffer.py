"""A call's recent audio, bounded, with appends that cost the frame, not the buffer.

`np.concatenate([buffer, frame])` per 20 ms frame copies the whole buffer each time: with a
21 s bound that is ~340k samples fifty times a second per call (measured ~0.4 ms a frame,
~20 ms of CPU per call-second; at 32 calls a third of a core). Here the samples live in an
array of up to twice the bound; a frame is written after the last one, and only when the array
is full are the newest `capacity` samples moved to the front, once per `capacity` samples.

The array starts small and doubles as the call goes on: most calls are short, and a 2.8 MB
array per call would be made resident whole by the allocator once it serves such sizes from
its heap (glibc raises its mmap threshold after the first large free), ~85 MB at 30 calls.
"""

from __future__ import annotations

import numpy as np

INITIAL_SAMPLES = 2 * 16000  # the array's first size: two seconds at 16 kHz


class StreamBuffer:
    """The last `capacity` samples of a stream, addressed by stream position."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be ≥ 1, got {capacity}")
        self.capacity = capacity
        self._data = np.zeros(min(2 * capacity, INITIAL_SAMPLES), dtype=np.float32)
        self._start = 0  # index in _data of the oldest kept sample
        self._stop = 0  # index in _data after the newest sample
        self.offset = 0  # stream position of the oldest kept sample

    @property
    def end(self) -> int:
        """Stream position after the newest sample."""
        return self.offset + self._stop - self._start

    def __len__(self) -> int:
        return self._stop - self._start

    def append(self, samples: np.ndarray) -> None:
        samples = np.asarray(samples, dtype=np.float32)
        if not len(self._data):  # released by clear()
            self._data = np.zeros(min(2 * self.capacity, INITIAL_SAMPLES), dtype=np.float32)
        if len(samples) >= self.capacity:  # only the newest `capacity` can be kept
            self.offset = self.end + len(samples) - self.capacity
            self._data[: self.capacity] = samples[-self.capacity :]
            self._start, self._stop = 0, self.capacity
            return
        needed = self._stop + len(samples)
        if needed > len(self._data) and len(self._data) < 2 * self.capacity:  # grow: double
            grown = np.zeros(min(2 * self.capacity, max(needed, 2 * len(self._data))), np.float32)
            grown[: len(self)] = self._data[self._start : self._stop]
            self._data, self._stop, self._start = grown, len(self), 0
        if self._stop + len(samples) > len(self._data):  # full: keep the newest, at the front
            keep = min(len(self), self.capacity - len(samples))
            self._data[:keep] = self._data[self._stop - keep : self._stop]
            self.offset += len(self) - keep
            self._start, self._stop = 0, keep
        self._data[self._stop : self._stop + len(samples)] = samples
        self._stop += len(samples)
        excess = len(self) - self.capacity
        if excess > 0:
            self._start += excess
            self.offset += excess

    def slice(self, start: int, end: int) -> np.ndarray:
        """A copy of stream positions [start, end) that are still kept."""
        a = self._start + min(max(0, start - self.offset), len(self))
        b = self._start + min(max(0, end - self.offset), len(self))
        return self._data[a : max(a, b)].copy()

    def clear(self) -> None:
        """Forget the samples and let their memory go now (the stream position stays)."""
        self.offset = self.end
        self._start = self._stop = 0
        self._data = np.zeros(0, dtype=np.float32)
