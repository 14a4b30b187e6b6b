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
from pathlib import Path
from typing import Any

import numpy as np

from telephony.base import FRAME_MS, SAMPLE_RATE
from telephony.codecs import resample
from telephony.simulator import SimulatedCall

LATE_MS = 20.0  # a frame that leaves more than one frame period after it was due is late


# The corpora a gateway suite can drive (benchmarks/README.md): real Danish speech cut at
# pauses, English requests in espeak-ng English, and espeak-ng Danish, the worst case (Whisper
# base garbles it, loops to the token cap and re-decodes).
CORPORA = {
    "real-da": "real Danish speech (../shared/data/danish-speech), cut at VAD pauses into 2–8 s turns",
    "en": "English requests (benchmarks/data/english_requests.tsv), espeak-ng English",
    "espeak-da": "held-back Danish intent sentences, espeak-ng Danish (worst case)",
}
ENGLISH_REQUESTS = Path(__file__).resolve().parents[1] / "data" / "english_requests.tsv"
TURN_S = (2.0, 8.0)  # real turns: what one caller says before the bot answers


@dataclass
class Utterance:
    text: str  # "" when no transcript exists (the real clips)
    intent: str  # "" when unlabelled
    voice: str  # the espeak-ng voice, or the recording's name
    audio: np.ndarray  # 16 kHz float32
    corpus: str = "espeak-da"

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


ENGLISH_VOICES = ("en", "en-us+f3", "en+m3", "en-us+f1")


def english_corpus(n: int, min_s: float = 2.0, max_s: float = 8.0) -> list[Utterance]:
    """Up to `n` English requests spoken by espeak-ng English voices in turn."""
    from models.intent_data import read_tsv
    from voicebot.tts import Speaker, Voice

    speaker = Speaker(cache_size=2)
    out: list[Utterance] = []
    for k, row in enumerate(read_tsv(ENGLISH_REQUESTS)):
        if len(out) >= n:
            break
        voice = Voice(ENGLISH_VOICES[k % len(ENGLISH_VOICES)], 160)
        audio = speaker.speak(row["text"], voice)
        if min_s <= len(audio) / SAMPLE_RATE <= max_s:
            out.append(Utterance(row["text"], row["intent"], voice.name, audio, "en"))
    return out


def speech_bounds(probs: np.ndarray, window: int, threshold: float = 0.5) -> tuple[int, int]:
    """First and last sample of speech by the VAD (the whole audio when it hears none)."""
    speech = np.flatnonzero(probs >= threshold)
    if not speech.size:
        return 0, len(probs) * window
    return int(speech[0]) * window, (int(speech[-1]) + 1) * window


def real_turns(n: int, min_s: float = TURN_S[0], max_s: float = TURN_S[1]) -> list[Utterance]:
    """Up to `n` turns of real Danish speech: each recording cut at its quietest VAD window
    wherever it runs past `max_s` (voicebot.asr.split_at_pauses), every piece trimmed to its
    speech ±0.1 s, kept when `min_s`–`max_s` long. Unlabelled: no intent, no transcript."""
    from benchmarks.suites.asr import speech_sources
    from voicebot.asr import split_at_pauses
    from voicebot.vad import WINDOW, SileroVad

    vad = SileroVad()
    margin = int(0.1 * SAMPLE_RATE)
    out: list[Utterance] = []
    for k, source in enumerate(speech_sources()):
        for j, piece in enumerate(
            split_at_pauses(source, vad.stream().push(source), WINDOW, max_s)
        ):
            start, end = speech_bounds(vad.stream().push(piece), WINDOW)
            turn = piece[max(0, start - margin) : end + margin]
            if min_s <= len(turn) / SAMPLE_RATE <= max_s:
                out.append(Utterance("", "", f"recording{k}.{j}", turn, "real-da"))
    # Interleave long and short recordings' turns so a small n still spans speakers.
    out.sort(key=lambda u: _order_key(u.voice))
    return out[:n]


def corpus(name: str, n: int) -> list[Utterance]:
    """`n` utterances of one of CORPORA (fewer when the corpus has fewer)."""
    if name == "real-da":
        return real_turns(n)
    if name == "en":
        return english_corpus(n)
    if name == "espeak-da":
        return [Utterance(u.text, u.intent, u.voice, u.audio, name) for u in call_corpus(n)]
    raise ValueError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}")


def with_pause(utterance: Utterance, pause_s: float) -> Utterance:
    """The same turn with a hesitation in the middle (shorter than the end-of-turn silence,
    so it stays one turn but the bot's speculative decode runs): the audio is split at its
    quietest VAD window in the middle third, so no word is cut."""
    from voicebot.vad import WINDOW, SileroVad

    probs = SileroVad().stream().push(utterance.audio)
    lo, hi = len(probs) // 3, max(len(probs) // 3 + 1, 2 * len(probs) // 3)
    cut = (lo + int(np.argmin(probs[lo:hi]))) * WINDOW if len(probs) > 2 else len(utterance.audio)
    audio = np.concatenate(
        [
            utterance.audio[:cut],
            np.zeros(int(pause_s * SAMPLE_RATE), np.float32),
            utterance.audio[cut:],
        ]
    )
    return Utterance(utterance.text, utterance.intent, utterance.voice, audio, utterance.corpus)


def decode_records(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per turn, what the bot's decode cost (the session's transcript events): decode ms,
    tokens generated over all passes, re-decodes, and the encoder window."""
    keys = ("turn", "asr_ms", "tokens", "redecodes", "window_s")
    return [{k: e.get(k) for k in keys} for e in events if e.get("type") == "transcript"]


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
    out["decodes"] = decode_records(out["events"])
    del out["events"]  # large; the per-turn figures above are what the report uses
    return out
