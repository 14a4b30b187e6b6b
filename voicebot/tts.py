"""Danish speech synthesis with espeak-ng (library and Danish data from `espeakng-loader`).

espeak-ng keeps global state and is not thread-safe, so one process-wide engine renders
under a lock. Prompts repeat across calls, so rendered audio is cached per (text, voice).
Output is 16 kHz float32 mono, the rate the telephony adapters take.
"""

from __future__ import annotations

import ctypes
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import espeakng_loader
import numpy as np

from telephony.base import SAMPLE_RATE
from telephony.codecs import resample

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


@dataclass(frozen=True)
class Voice:
    name: str = "da"  # espeak-ng voice, optionally with a variant: "da+f3", "da+m2"
    rate_wpm: int = 165
    pitch: int = 50  # 0..99
    pitch_range: int = 50  # 0..99


class EspeakEngine:
    """A process-wide espeak-ng instance."""

    _lock = threading.Lock()
    _instance: EspeakEngine | None = None

    def __init__(self) -> None:
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.restype = ctypes.c_int
        self._lib.espeak_Initialize.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        data_dir = espeakng_loader.get_data_path().encode()
        self.sample_rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_dir, 0)
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak-ng failed to initialise with data at {data_dir!r}")
        self._chunks: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._on_samples)  # keep a reference: C holds it
        self._lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def shared(cls) -> EspeakEngine:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _on_samples(
        self, wav: ctypes._Pointer[ctypes.c_short], count: int, _events: int | None
    ) -> int:
        if wav and count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0  # 0 = continue

    def synthesize(self, text: str, voice: Voice) -> np.ndarray:
        """Render text; returns int16 samples at self.sample_rate."""
        encoded = text.encode("utf-8") + b"\0"
        with self._lock:
            if self._lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
                raise ValueError(f"espeak-ng has no voice '{voice.name}'")
            self._lib.espeak_SetParameter(_PARAM_RATE, voice.rate_wpm, 0)
            self._lib.espeak_SetParameter(_PARAM_PITCH, voice.pitch, 0)
            self._lib.espeak_SetParameter(_PARAM_RANGE, voice.pitch_range, 0)
            self._chunks = []
            buf = ctypes.create_string_buffer(encoded)
            self._lib.espeak_Synth(buf, len(encoded), 0, 0, 0, _CHARS_UTF8, None, None)
            self._lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


class TextToSpeech(Protocol):
    """What the prompt player needs of a speaker (Speaker; the tests' ToneSpeaker)."""

    def speak(self, text: str, voice: Voice | None = None) -> np.ndarray: ...


class Speaker:
    """Turns Danish text into 16 kHz float32 audio, with an LRU cache of rendered prompts."""

    def __init__(self, voice: Voice | None = None, cache_size: int = 256) -> None:
        self.voice = voice or Voice()
        self._engine = EspeakEngine.shared()
        self._cache: OrderedDict[tuple[str, Voice], np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()

    def speak(self, text: str, voice: Voice | None = None) -> np.ndarray:
        voice = voice or self.voice
        key = (text, voice)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        pcm = self._engine.synthesize(text, voice)
        audio = resample(pcm.astype(np.float32) / 32768.0, self._engine.sample_rate, SAMPLE_RATE)
        audio = trim_silence(audio)
        with self._cache_lock:
            self._cache[key] = audio
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return audio


def trim_silence(audio: np.ndarray, threshold: float = 1e-3, keep_s: float = 0.05) -> np.ndarray:
    """Drop leading and trailing silence (espeak adds some, recordings more); keeps a short
    margin."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if loud.size == 0:
        return audio
    keep = int(keep_s * SAMPLE_RATE)
    return audio[max(0, loud[0] - keep) : loud[-1] + keep]
