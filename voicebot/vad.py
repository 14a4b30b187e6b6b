"""Voice activity detection (Silero VAD, the ONNX file shipped in faster-whisper) and
end-of-turn detection.

One onnxruntime session serves every call; each call keeps its own recurrent state and
context in a VadStream. Endpointer turns per-window speech probabilities into turn events.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import faster_whisper
import numpy as np
import onnxruntime as ort

from telephony.base import SAMPLE_RATE
from telephony.codecs import frame_rms
from voicebot.config import EndpointingSettings

WINDOW = 512  # samples per Silero window at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous window Silero v5+ expects in front of each window
WINDOW_MS = WINDOW * 1000 // SAMPLE_RATE


def silero_path() -> Path:
    assets = Path(faster_whisper.__file__).parent / "assets"
    candidates = sorted(assets.glob("silero_vad*.onnx"))
    if not candidates:
        raise FileNotFoundError(f"no Silero VAD ONNX file in {assets}")
    return candidates[-1]


class SpeechProbabilities(Protocol):
    """One call's VAD: 16 kHz audio in, one speech probability per 32 ms window out."""

    def push(self, audio: np.ndarray) -> np.ndarray: ...


class VoiceDetector(Protocol):
    """What the listener needs of a VAD (SileroVad; the tests' DeafVad): a stream per call."""

    def stream(self) -> SpeechProbabilities: ...


class SileroVad:
    """The shared model. `run` is thread-safe (onnxruntime sessions allow concurrent runs)."""

    def __init__(self, path: str | Path | None = None) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.path = Path(path) if path else silero_path()
        self._session = ort.InferenceSession(
            str(self.path), opts, providers=["CPUExecutionProvider"]
        )

    def stream(self) -> VadStream:
        return VadStream(self)

    def run(
        self, windows: np.ndarray, h: np.ndarray, c: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        probs, h, c = self._session.run(None, {"input": windows, "h": h, "c": c})
        return np.asarray(probs).reshape(-1), h, c


class VadStream:
    """One call's VAD state: feed 16 kHz float audio, get one probability per 32 ms window."""

    def __init__(self, model: SileroVad) -> None:
        self._model = model
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def push(self, audio: np.ndarray) -> np.ndarray:
        self._pending = np.concatenate([self._pending, np.asarray(audio, dtype=np.float32)])
        n = len(self._pending) // WINDOW
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        chunk, self._pending = self._pending[: n * WINDOW], self._pending[n * WINDOW :]
        frames = chunk.reshape(n, WINDOW)
        contexts = np.vstack([self._context[None, :], frames[:-1, -CONTEXT:]])
        self._context = frames[-1, -CONTEXT:].copy()
        probs = np.empty(n, dtype=np.float32)
        # The LSTM state must run window by window; one session.run per window.
        for i in range(n):
            x = np.concatenate([contexts[i], frames[i]])[None, :]
            p, self._h, self._c = self._model.run(x, self._h, self._c)
            probs[i] = p[0]
        return probs


class TurnEvent(StrEnum):
    SPEECH_START = "speech_start"
    SPEECH_END = "speech_end"


@dataclass
class Endpoint:
    event: TurnEvent
    sample: int  # position in the call's 16 kHz stream where speech started / ended


class Endpointer:
    """Speech onset after `min_speech_ms` of speech; end of turn after `silence_ms` of silence.

    Hysteresis: a window counts as speech above `speech_threshold` and as silence below
    threshold - 0.15, so a dip in the middle of a word does not end the turn.
    """

    def __init__(self, settings: EndpointingSettings) -> None:
        self.settings = settings
        self.in_speech = False
        self.speech_start = 0
        self.last_speech = 0  # sample index just after the last speech window
        self._onset_run = 0
        self._silence_run = 0
        self._position = 0  # samples seen

    @property
    def silence_ms(self) -> int:
        return self._silence_run * WINDOW_MS

    def update(self, probs: np.ndarray) -> list[Endpoint]:
        events = []
        on, off = self.settings.speech_threshold, self.settings.speech_threshold - 0.15
        min_onset = max(1, self.settings.min_speech_ms // WINDOW_MS)
        end_windows = max(1, self.settings.silence_ms // WINDOW_MS)
        for p in probs:
            self._position += WINDOW
            if not self.in_speech:
                self._onset_run = self._onset_run + 1 if p >= on else 0
                if self._onset_run >= min_onset:
                    self.in_speech = True
                    self.speech_start = self._position - self._onset_run * WINDOW
                    self.last_speech = self._position
                    self._silence_run = 0
                    events.append(Endpoint(TurnEvent.SPEECH_START, self.speech_start))
            else:
                if p >= off:
                    self._silence_run = 0
                    self.last_speech = self._position
                else:
                    self._silence_run += 1
                    if self._silence_run >= end_windows:
                        events.append(self._end())
        return events

    def force_end(self) -> Endpoint:
        """End the turn now (a confident, complete partial transcript)."""
        return self._end()

    def _end(self) -> Endpoint:
        self.in_speech = False
        self._onset_run = 0
        self._silence_run = 0
        return Endpoint(TurnEvent.SPEECH_END, self.last_speech)


# -- where the speech began ------------------------------------------------------------------
# Silero can be slow to call speech after a long quiet stretch (a caller who listened to a 9 s
# greeting): measured on espeak-ng turns after 9 s of line silence, its onset came up to 2 s
# after the first word, beyond the listener's pre-roll, and Whisper lost the words before it
# ("my husband fell and he is not moving" heard as "and see it not moving"). The signal's
# energy says where the speech began: walk back from the VAD's onset while the line carries
# sound above its quiet level, across the short gaps between words.
ONSET_FRAME = 320  # 20 ms at 16 kHz
ONSET_MAX_BACK_S = 2.0  # never further back than this before the VAD's onset
ONSET_MAX_GAP_MS = 250  # a quieter stretch this short is a pause inside the utterance
ONSET_NOISE_S = 1.0  # the line's quiet level is measured over this much audio before that
ONSET_FLOOR_RMS = 10 ** (-50 / 20)  # -50 dBFS: below this a frame is quiet on any line
ONSET_ABOVE_NOISE = 4.0  # +12 dB over the quiet level counts as sound


def speech_onset(audio: np.ndarray, vad_onset: int) -> int:
    """The index in `audio` where the speech that the VAD called at `vad_onset` began: the
    first loud frame of the stretch that runs into the VAD's onset (gaps up to
    ONSET_MAX_GAP_MS allowed), at most ONSET_MAX_BACK_S earlier; `vad_onset` itself when the
    line before it is quiet or as loud as the speech (nothing tells where it began)."""
    frame = ONSET_FRAME
    back = min(vad_onset, int(ONSET_MAX_BACK_S * SAMPLE_RATE)) // frame
    if back == 0:
        return vad_onset
    first = vad_onset - back * frame  # the oldest frame the walk may reach
    noise = audio[max(0, first - int(ONSET_NOISE_S * SAMPLE_RATE)) : first]
    quiet = frame_rms(noise, frame)
    level = float(np.percentile(quiet, 20)) if len(quiet) else 0.0
    loud = frame_rms(audio[first:vad_onset], frame) > max(
        ONSET_FLOOR_RMS, ONSET_ABOVE_NOISE * level
    )
    max_gap = ONSET_MAX_GAP_MS * SAMPLE_RATE // 1000 // frame
    onset, gap = back, 0  # in frames from `first`; walk back from the VAD's onset
    for i in range(back - 1, -1, -1):
        if loud[i]:
            onset, gap = i, 0
        else:
            gap += 1
            if gap > max_gap:
                break
    return first + onset * frame
