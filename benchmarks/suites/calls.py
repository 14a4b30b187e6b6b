"""Callers for the gateway suites (e2e, concurrency): a fixed corpus of Danish utterances and
a SimulatedCall that also counts late frames and may fast-forward the greeting.

Latency is measured by telephony.simulator exactly as `voicebot call` measures it: from the
moment the caller's last loud 20 ms frame is sent to the transcript/decision event and the
first byte of bot audio. Two conveniences keep runs short without touching those windows:

- fast_forward > 1 streams the line silence during the greeting N times faster than real
  time (the bot only counts marks and stream samples, so it cannot tell); from the first
  caller turn on, everything is real time.
- After the caller's last turn the caller hangs up as soon as the decision and the first
  bot audio have arrived, instead of listening to the whole reply.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from telephony.base import FRAME_MS, SAMPLE_RATE
from telephony.codecs import resample
from telephony.simulator import SimulatedCall

LATE_MS = 20.0  # a frame that leaves more than one frame period after it was due is late


@dataclass
class Utterance:
    text: str
    intent: str
    voice: str
    audio: np.ndarray  # 16 kHz float32

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def _order_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def call_corpus(n: int, min_s: float = 3.0, max_s: float = 6.0) -> list[Utterance]:
    """`n` held-back intent sentences (intents/heldout.tsv, never trained on) spoken by
    espeak-ng with rotating voices, kept when `min_s`–`max_s` long. Deterministic: intents
    taken in turn, sentences in a fixed hash order."""
    from benchmarks.asr_eval_set import VOICES
    from models.intent_data import load_heldout
    from voicebot.tts import Speaker

    by_intent: dict[str, list[Any]] = {}
    for example in sorted(load_heldout(), key=lambda e: _order_key(e.text)):
        by_intent.setdefault(example.intent, []).append(example)
    speaker = Speaker(cache_size=2)
    out: list[Utterance] = []
    tried = 0
    queues = [by_intent[k] for k in sorted(by_intent)]
    while len(out) < n and any(queues):
        for queue in queues:
            if not queue or len(out) >= n:
                continue
            example = queue.pop(0)
            voice = VOICES[tried % len(VOICES)]
            tried += 1
            audio = speaker.speak(example.text, voice)
            if min_s <= len(audio) / SAMPLE_RATE <= max_s:
                out.append(Utterance(example.text, example.intent, voice.name, audio))
    return out


def with_pause(utterance: Utterance, pause_s: float) -> Utterance:
    """The same sentence said in two parts with a hesitation between them (shorter than
    the end-of-turn silence, so it stays one turn but the bot's speculative decode runs)."""
    from benchmarks.asr_eval_set import VOICES
    from voicebot.tts import Speaker

    words = utterance.text.split()
    half = max(1, len(words) // 2)
    voice = next(v for v in VOICES if v.name == utterance.voice)
    speaker = Speaker(cache_size=2)
    first, second = (speaker.speak(" ".join(part), voice) for part in (words[:half], words[half:]))
    audio = np.concatenate([first, np.zeros(int(pause_s * SAMPLE_RATE), np.float32), second])
    return Utterance(utterance.text, utterance.intent, utterance.voice, audio)


def to_wire(audio: np.ndarray, rate: int = 8000) -> np.ndarray:
    return resample(audio, SAMPLE_RATE, rate)


class _FrameTimer:
    """A platform whose send_audio first tells `on_frame` that a frame is leaving."""

    def __init__(self, platform: Any, on_frame: Callable[[], None]) -> None:
        self._platform = platform
        self._on_frame = on_frame

    def __getattr__(self, name: str) -> Any:
        return getattr(self._platform, name)

    async def send_audio(self, pcm: np.ndarray, ms: int) -> None:
        self._on_frame()
        await self._platform.send_audio(pcm, ms)


class BenchCall(SimulatedCall):
    """SimulatedCall plus frame-timing counters, greeting fast-forward and early hang-up."""

    def __init__(
        self, media_url: str, events_url: str | None, *, fast_forward: float = 1.0, **kwargs: Any
    ) -> None:
        self.fast_forward = max(1.0, fast_forward)
        self._greeting = self.fast_forward > 1.0
        self._n_turns = 0
        self._speech_sends = 0
        self.frames_sent = 0
        self.late_frames = 0
        self.max_late_ms = 0.0
        self.drift_ms = 0.0  # total time the caller's stream fell behind its real-time clock
        self.unsent_frames = 0  # speech frames not sent because the bot had closed the line
        self.cut_off_turns = 0  # utterances the bot's hang-up or hand-off interrupted
        self._due = 0.0  # when the next frame should leave (monotonic s; 0: not yet known)
        super().__init__(media_url, events_url, speed=1.0, **kwargs)

    @property
    def speed(self) -> float:
        if self._greeting and self._pending_marks and self._bot_quiet():
            self._greeting = (
                False  # the greeting's marks are all acknowledged: real time from here on
            )
        # Real time until the greeting's audio arrives, so the simulator's 30 s wait for it
        # keeps its real length.
        return self.fast_forward if self._greeting and self._reply else 1.0

    @speed.setter
    def speed(self, value: float) -> None:
        pass  # the speed is decided by the phase above

    async def run(
        self, turns: list[np.ndarray], params: dict[str, str] | None = None, digits: str = ""
    ):
        self._n_turns = len(turns)
        return await super().run(turns, params, digits)

    async def _send(self, platform, pcm: np.ndarray) -> list[float]:
        """SimulatedCall._send (its real-time loop, not a copy), counting each frame as it
        leaves and the speech frames the bot's hang-up left unsent."""
        frame = platform.wire_rate * FRAME_MS // 1000
        speech = len(pcm) > frame
        self._speech_sends += speech
        sent = await super()._send(_FrameTimer(platform, self._frame_leaving), pcm)
        self.frames_sent += len(sent)
        if speech:
            unsent = len(pcm) // frame - len(sent)
            self.unsent_frames += unsent
            self.cut_off_turns += unsent > 0
        return sent

    def _frame_leaving(self) -> None:
        """How late this frame leaves: the simulator's clock says when it was due; when the
        loop is behind, the clock is reset to now, so the stream falls behind real time by
        exactly that much (drift)."""
        late_ms = (time.monotonic() - self._due) * 1000
        if self.speed == 1.0 and self._due and late_ms > 0:
            self.drift_ms += late_ms
            self.max_late_ms = max(self.max_late_ms, late_ms)
            self.late_frames += late_ms > LATE_MS
        # The simulator has just set its clock to max(due, now); the next frame is due one
        # frame period later.
        self._due = self._clock + FRAME_MS / 1000 / self.speed

    def _answered(self, speech_end: float) -> bool:
        if self._speech_sends >= self._n_turns:  # the last turn: decision + first audio suffice
            decided = bool(self._events_of("decision", speech_end))
            heard = any(t >= speech_end for t in self._audio_times) or self._closed.is_set()
            return decided and heard
        return super()._answered(speech_end)


async def place_call(
    media_url: str,
    events_url_for,
    turns: list[np.ndarray],
    *,
    fast_forward: float = 1.0,
    timeout_s: float = 120.0,
) -> dict[str, Any]:
    """One call; never raises. `events_url_for(call_id)` gives the event-stream URL."""
    call = BenchCall(media_url, None, fast_forward=fast_forward, timeout_s=timeout_s)
    call.events_url = events_url_for(call.call_id)
    out: dict[str, Any] = {"call_id": call.call_id, "turns": [], "error": None}
    try:
        result = await asyncio.wait_for(call.run(turns), timeout_s + 30)
        out["turns"] = [t.as_dict() for t in result.turns]
        out["events"] = result.events
    except Exception as exc:  # a failed call is a result, not the end of the benchmark
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["events"] = [e for _, e in call.events]
    decisions = [e for e in out["events"] if e.get("type") == "decision"]
    said = [str(e.get("mark", "")) for e in out["events"] if e.get("type") == "bot_said"]
    out.update(
        greeted=any(m.startswith("greeting") for m in said),
        turns_sent=call._speech_sends,
        cut_off_turns=call.cut_off_turns,
        overloaded=sum("overloaded" in str(e.get("reason", "")) for e in decisions),
        frames_sent=call.frames_sent,
        late_frames=call.late_frames,
        max_late_ms=round(call.max_late_ms, 1),
        drift_ms=round(call.drift_ms, 1),
        unsent_frames=call.unsent_frames,
    )
    # A refused call (max_calls reached): no greeting — the gateway either closed the line or
    # told the caller it is busy and handed the call to a person (the "overloaded" prompt).
    out["refused"] = not out["greeted"] and not out["turns"] and out["error"] is None
    out["refused_with_prompt"] = out["refused"] and any(m.startswith("overloaded") for m in said)
    del out["events"]  # large; the per-turn figures above are what the report uses
    return out
