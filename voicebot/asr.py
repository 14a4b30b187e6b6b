"""Speech recognition: one CTranslate2 Whisper per process, shared by all calls.

- The encoder sees the audio that exists plus a margin (a trimmed window), not a padded
  30 s window: the encoder's cost follows its input length (README, "ASR").
- Decoding is greedy, language forced (asr.language, Danish, unless told otherwise), and
  may be biased with the catalogue's domain terms as a previous-text prompt (off by
  default: it measured worse).
- Given several languages, a decode first asks Whisper which one it hears, on the same
  encoder output (one decoder step more, no second encoding), keeps the choice only when
  it leads by asr.language_margin among those languages, and decodes forced to it: the
  turn that reveals the language is understood in it.
- AsrPool runs decodes off the event loop in a bounded pool, in three priorities: finals (a
  caller waits; up to a limit, then Overloaded and the caller is told or routed), guesses
  (speculative finals decoded in a pause; run only when no final waits, dropped unstarted
  when their call has moved on), and partials (skipped whenever anything else waits).
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import ctranslate2
import numpy as np
import tokenizers
from faster_whisper.feature_extractor import FeatureExtractor
from faster_whisper.tokenizer import Tokenizer

from telephony.base import SAMPLE_RATE
from voicebot.config import AsrSettings

FRAMES_PER_SECOND = 100  # mel frames
MAX_FRAMES = 3000  # Whisper's 30 s window
MAX_TOKENS_PER_S = 12
COMPRESSION_RATIO_LIMIT = 2.4  # Whisper's own threshold for repetitive output
REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.json")


class ModelMissing(RuntimeError):
    pass


class Overloaded(RuntimeError):
    """The ASR pool is saturated; the caller must be told, not left waiting in silence."""


@dataclass
class AsrResult:
    text: str
    avg_logprob: float
    no_speech_prob: float
    audio_s: float
    window_s: float
    asr_ms: float
    tokens: int = 0  # tokens generated over every decoding pass of this turn (what cost time)
    redecodes: int = 0  # passes after the first: the loop retry, a batch item decoded alone
    language: str = ""  # the language decoded in
    # Whisper's detection among the languages asked about (sums to 1); empty when forced.
    language_scores: dict[str, float] = field(default_factory=dict)

    @property
    def words(self) -> list[str]:
        return self.text.split()

    @property
    def likely_noise(self) -> bool:
        """Whisper's own no-speech rule. Telephone-band speech often scores high on
        no_speech_prob, so callers use this only for very short sounds (coughs, clicks)."""
        return self.no_speech_prob > 0.6 and self.avg_logprob < -1.0


# The languages a decode may be in: None, the configured one; one, forced; several, detected.
Languages = Sequence[str] | None


class Recogniser(Protocol):
    """What AsrPool needs of a recogniser (WhisperAsr; the tests' ScriptedAsr)."""

    def transcribe(
        self, audio: np.ndarray, previous_text: str | None = None, *, languages: Languages = None
    ) -> AsrResult: ...

    def transcribe_batch(
        self,
        audios: list[np.ndarray],
        previous_text: str | None = None,
        *,
        languages: Languages = None,
    ) -> list[AsrResult]: ...


def _looping(text: str) -> bool:
    """Whisper stuck in a loop: text that compresses too well, or one word three times in a row."""
    data = text.encode("utf-8")
    if len(data) > 24 and len(data) / len(zlib.compress(data)) > COMPRESSION_RATIO_LIMIT:
        return True
    words = [w.strip(".,!?").lower() for w in text.split()]
    return any(a == b == c for a, b, c in zip(words, words[1:], words[2:], strict=False))


def max_new_tokens(audio_s: float) -> int:
    """The decode cap of a turn: nobody says more than ~12 tokens a second, so a longer output
    is a decoding loop; a short fixed allowance covers punctuation and one-word turns."""
    return int(MAX_TOKENS_PER_S * audio_s) + 12


def _generated(result: Any) -> int:
    """Tokens a CTranslate2 WhisperGenerationResult holds (the library ships no types)."""
    return len(result.sequences_ids[0]) if result.sequences_ids else 0


def choose_language(
    detected: list[tuple[str, float]], languages: Sequence[str], margin: float
) -> tuple[str, dict[str, float]]:
    """Whisper's language probabilities ("<|en|>", p) restricted to `languages`: the best of
    them when it leads the next by `margin`, else the first (the call's own language)."""
    allowed = {token.strip("<|>"): p for token, p in detected}
    total = sum(allowed.get(code, 0.0) for code in languages) or 1.0
    scores = {code: allowed.get(code, 0.0) / total for code in languages}
    ranked = sorted(languages, key=lambda code: -scores[code])
    lead = scores[ranked[0]] - (scores[ranked[1]] if len(ranked) > 1 else 0.0)
    return (ranked[0] if lead >= margin else languages[0]), scores


def check_model_dir(model_dir: Path) -> None:
    missing = [f for f in REQUIRED_FILES if not (model_dir / f).exists()]
    if missing:
        raise ModelMissing(
            f"Whisper model directory {model_dir} lacks {', '.join(missing)}; "
            "run `voicebot provision` (or set asr.model_dir to a CTranslate2 Whisper model)"
        )


class WhisperAsr:
    """A CTranslate2 Whisper model with its tokenizer and mel front end. Thread-safe."""

    def __init__(self, model_dir: str | Path, settings: AsrSettings | None = None) -> None:
        self.settings = settings or AsrSettings()
        self.model_dir = Path(model_dir)
        check_model_dir(self.model_dir)
        self.model = ctranslate2.models.Whisper(
            str(self.model_dir),
            device="cpu",
            compute_type=self.settings.compute_type,
            intra_threads=self.settings.threads,
            inter_threads=self.settings.workers,
        )
        hf_tokenizer = tokenizers.Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self.tokenizer = Tokenizer(
            hf_tokenizer,
            self.model.is_multilingual,
            task="transcribe",
            language=self.settings.language,
        )
        self.features = FeatureExtractor(feature_size=self.model.n_mels)
        self._suppress = list(self.tokenizer.non_speech_tokens)

    def window_frames(self, n_frames: int, trim: bool | None = None) -> int:
        trim = self.settings.trim_window if trim is None else trim
        if not trim:
            return MAX_FRAMES
        wanted = n_frames + int(self.settings.window_margin_s * FRAMES_PER_SECOND)
        wanted = max(wanted, int(self.settings.window_min_s * FRAMES_PER_SECOND))
        wanted = min(MAX_FRAMES, wanted + wanted % 2)  # the encoder's convolutions stride by 2
        return wanted

    def language_token(self, language: str | None) -> int:
        if language is None or language == self.settings.language:
            configured: int = self.tokenizer.language  # faster_whisper ships no types
            return configured
        token: int | None = self.tokenizer.tokenizer.token_to_id(f"<|{language}|>")
        if token is None:
            raise ValueError(f"Whisper has no language '{language}'")
        return token

    def prompt_tokens(
        self, previous_text: str | None, prefix: str | None, language: str | None = None
    ) -> list[int]:
        tokens: list[int] = []
        if previous_text:
            prev = self.tokenizer.encode(" " + previous_text.strip())[:223]
            tokens = [self.tokenizer.sot_prev, *prev]
        tokens += [
            self.tokenizer.sot,
            self.language_token(language),
            self.tokenizer.transcribe,
            self.tokenizer.no_timestamps,
        ]
        if prefix:
            tokens += self.tokenizer.encode(" " + prefix.strip())
        return tokens

    def _decode(
        self, features: ctranslate2.StorageView, prompt: list[int], max_new: int, **options: object
    ) -> tuple[ctranslate2.models.WhisperGenerationResult, str]:
        result = self.model.generate(
            features,
            [prompt],
            beam_size=self.settings.beam_size,
            max_length=min(448, len(prompt) + 2 * max_new),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
            **options,
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < self.tokenizer.eot]
        # The result holds a forced prefix's tokens too, so the text is the whole turn.
        return result, self.tokenizer.decode(tokens).strip()

    def encode_and_detect(
        self, features: ctranslate2.StorageView, languages: Sequence[str] | None
    ) -> tuple[ctranslate2.StorageView, list[tuple[str, dict[str, float]]]]:
        """The encoder input for generate, and per row the language to decode in. With
        several languages the features are encoded once here and Whisper's detection reads
        that encoding; generate takes the encoder output as it is (no second encoding)."""
        rows = features.shape[0]
        if not languages or len(languages) == 1:
            language = languages[0] if languages else self.settings.language
            return features, [(language, {})] * rows
        encoded = self.model.encode(features)
        detected = self.model.detect_language(encoded)
        margin = self.settings.language_margin
        return encoded, [choose_language(d, languages, margin) for d in detected]

    def transcribe_batch(
        self,
        audios: list[np.ndarray],
        previous_text: str | None = None,
        languages: Sequence[str] | None = None,
    ) -> list[AsrResult]:
        """Several calls' turns in one pass, padded to the longest window."""
        start = time.perf_counter()
        audios = [
            np.asarray(a, dtype=np.float32)[: MAX_FRAMES * SAMPLE_RATE // FRAMES_PER_SECOND]
            for a in audios
        ]
        mels = [self.features(a, padding=160)[:, :-1] for a in audios]
        frames = max(self.window_frames(m.shape[1]) for m in mels)
        batch = np.zeros((len(mels), mels[0].shape[0], frames), dtype=np.float32)
        for i, mel in enumerate(mels):
            n = min(frames, mel.shape[1])
            batch[i, :, :n] = mel[:, :n]
        inputs, chosen = self.encode_and_detect(
            ctranslate2.StorageView.from_array(batch), languages
        )
        prompts = [self.prompt_tokens(previous_text, None, language) for language, _ in chosen]
        max_new = max_new_tokens(max(len(a) for a in audios) / SAMPLE_RATE)
        results = self.model.generate(
            inputs,
            prompts,
            beam_size=self.settings.beam_size,
            max_length=min(448, max(len(p) for p in prompts) + 2 * max_new),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )
        elapsed_ms = (time.perf_counter() - start) * 1000
        out = []
        for audio, result, (language, scores) in zip(audios, results, chosen, strict=True):
            tokens = [t for t in result.sequences_ids[0] if t < self.tokenizer.eot]
            text = self.tokenizer.decode(tokens).strip()
            if _looping(text):  # retried alone, without repeats, in the language chosen
                alone = self.transcribe(audio, previous_text, languages=[language])
                alone.language_scores = scores
                alone.tokens += _generated(result)
                alone.redecodes += 1
                alone.asr_ms += elapsed_ms
                out.append(alone)
                continue
            out.append(
                AsrResult(
                    text,
                    float(result.scores[0]) if result.scores else 0.0,
                    float(result.no_speech_prob),
                    len(audio) / SAMPLE_RATE,
                    frames / FRAMES_PER_SECOND,
                    elapsed_ms,
                    tokens=_generated(result),
                    language=language,
                    language_scores=scores,
                )
            )
        return out

    def transcribe(
        self,
        audio: np.ndarray,
        previous_text: str | None = None,
        prefix: str | None = None,
        trim: bool | None = None,
        languages: Sequence[str] | None = None,
    ) -> AsrResult:
        """Transcribe up to 30 s of 16 kHz float32 audio in one window: in asr.language, in
        languages[0] when one is given, or in the one detected among several."""
        start = time.perf_counter()
        audio = np.asarray(audio, dtype=np.float32)[: MAX_FRAMES * SAMPLE_RATE // FRAMES_PER_SECOND]
        mel = self.features(audio, padding=160)[:, :-1]
        frames = self.window_frames(mel.shape[1], trim)
        window = np.zeros((mel.shape[0], frames), dtype=np.float32)
        n = min(frames, mel.shape[1])
        window[:, :n] = mel[:, :n]
        inputs, [(language, scores)] = self.encode_and_detect(
            ctranslate2.StorageView.from_array(window[None]), languages
        )
        prompt = self.prompt_tokens(previous_text, prefix, language)
        # (With CTranslate2 4.8, max_length=N measured N/2 new tokens: hence the factor 2 in
        # _decode; max_length 8, 12, 20, 40 gave 4, 6, 10, 20 tokens on a looping turn.)
        max_new = max_new_tokens(len(audio) / SAMPLE_RATE)
        result, text = self._decode(inputs, prompt, max_new)
        tokens, redecodes = _generated(result), 0
        if _looping(text):  # Whisper's compression-ratio test: retry without repeats
            result, text = self._decode(
                inputs, prompt, max_new, no_repeat_ngram_size=3, repetition_penalty=1.2
            )
            tokens, redecodes = tokens + _generated(result), 1
        no_speech = float(result.no_speech_prob)
        logprob = float(result.scores[0]) if result.scores else 0.0  # already length-normalised
        return AsrResult(
            text=text,
            avg_logprob=logprob,
            no_speech_prob=no_speech,
            audio_s=len(audio) / SAMPLE_RATE,
            window_s=frames / FRAMES_PER_SECOND,
            asr_ms=(time.perf_counter() - start) * 1000,
            tokens=tokens,
            redecodes=redecodes,
            language=language,
            language_scores=scores,
        )


@dataclass(eq=False)  # compared by identity: it holds an array
class _Request:
    audio: np.ndarray
    previous_text: str | None
    languages: tuple[str, ...] | None  # one: forced; several: detected among them
    future: asyncio.Future[AsrResult]


class AsrPool:
    """Bounded, shared decoding for all calls (see module doc).

    Finals that wait while the workers are busy are decoded together in one batch (up to
    asr.max_batch): one encoder and decoder pass for several calls measured ~1.5× the
    throughput of decoding them one by one (README, "One model, many calls").
    """

    def __init__(self, asr: Recogniser, settings: AsrSettings) -> None:
        self.asr = asr
        self.settings = settings
        self._executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="asr")
        self._queue: deque[_Request] = deque()  # finals not yet started
        self._guesses: deque[_Request] = deque()  # speculative finals not yet started
        self._running = 0  # decodes (batches or partials) in the executor
        self._finals = 0  # finals queued or running
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def busy(self) -> bool:
        return self._running >= self.settings.workers

    @property
    def load(self) -> int:
        return self._running + len(self._queue)

    async def final(
        self,
        audio: np.ndarray,
        previous_text: str | None = None,
        languages: tuple[str, ...] | None = None,
    ) -> AsrResult:
        if self._finals >= self.settings.max_pending:
            raise Overloaded(f"{self._finals} final decodes already waiting")
        self._finals += 1
        try:
            return await self._enqueue(self._queue, audio, previous_text, languages)
        finally:
            self._finals -= 1

    async def speculative(
        self,
        audio: np.ndarray,
        previous_text: str | None = None,
        languages: tuple[str, ...] | None = None,
    ) -> AsrResult | None:
        """A final decode started before the turn has surely ended. It runs only when no
        final waits (a guess must not delay someone's real final); None when finals wait or
        asr.max_pending guesses already do. Cancel the awaiting task when the guess is
        stale: a guess not yet started is then dropped."""
        self._drop_abandoned(self._guesses)
        if self._queue or len(self._guesses) >= self.settings.max_pending:
            return None
        return await self._enqueue(self._guesses, audio, previous_text, languages)

    async def _enqueue(
        self,
        queue: deque[_Request],
        audio: np.ndarray,
        previous_text: str | None,
        languages: tuple[str, ...] | None,
    ) -> AsrResult:
        future: asyncio.Future[AsrResult] = asyncio.get_running_loop().create_future()
        queue.append(_Request(audio, previous_text, languages, future))
        self._dispatch()
        return await future

    async def partial(
        self,
        audio: np.ndarray,
        previous_text: str | None = None,
        languages: tuple[str, ...] | None = None,
    ) -> AsrResult | None:
        """A partial hypothesis, or None when the pool is busy (finals and guesses come first)."""
        if self.busy or self._queue or self._guesses:
            return None
        self._running += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._executor, self._partial_decode, audio, previous_text, languages
            )
        finally:
            self._running -= 1
            self._dispatch()

    @staticmethod
    def _drop_abandoned(queue: deque[_Request]) -> None:
        """Requests whose caller stopped waiting (a cancelled guess) are never decoded."""
        live = [r for r in queue if not r.future.done()]  # by identity: requests hold arrays
        if len(live) != len(queue):
            queue.clear()
            queue.extend(live)

    def _dispatch(self) -> None:
        while self._running < self.settings.workers:
            self._drop_abandoned(self._queue)
            self._drop_abandoned(self._guesses)
            queue = self._queue or self._guesses  # finals first
            if not queue:
                return
            first = queue.popleft()
            batch = [first]
            while (
                queue
                and len(batch) < self.settings.max_batch
                and queue[0].previous_text == first.previous_text
                and queue[0].languages == first.languages
            ):
                batch.append(queue.popleft())
            self._running += 1
            run = self._final_decode if queue is self._queue else self._speculative_decode
            task = asyncio.get_running_loop().create_task(self._decode(batch, run))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # One named entry point per kind of decode, so a sampling profiler's stacks tell partial,
    # speculative and final decodes apart (benchmarks/suites/profile.py).
    def _partial_decode(
        self, audio: np.ndarray, previous_text: str | None, languages: Languages
    ) -> AsrResult:
        return self.asr.transcribe(audio, previous_text, languages=languages)

    def _final_decode(
        self, audios: list[np.ndarray], previous_text: str | None, languages: Languages
    ) -> list[AsrResult]:
        if len(audios) == 1:
            return [self.asr.transcribe(audios[0], previous_text, languages=languages)]
        return self.asr.transcribe_batch(audios, previous_text, languages=languages)

    def _speculative_decode(
        self, audios: list[np.ndarray], previous_text: str | None, languages: Languages
    ) -> list[AsrResult]:
        return self._final_decode(audios, previous_text, languages)

    async def _decode(
        self,
        batch: list[_Request],
        run: Callable[[list[np.ndarray], str | None, Languages], list[AsrResult]],
    ) -> None:
        try:
            loop = asyncio.get_running_loop()
            audios = [r.audio for r in batch]
            first = batch[0]
            results = await loop.run_in_executor(
                self._executor, run, audios, first.previous_text, first.languages
            )
            for request, result in zip(batch, results, strict=True):
                if not request.future.done():
                    request.future.set_result(result)
        except Exception as exc:  # every waiting call must hear about it, not hang
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
        finally:
            self._running -= 1
            self._dispatch()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class LocalAgreement:
    """LocalAgreement-2 over words: commit the longest prefix that two successive
    hypotheses agree on; the rest stays tentative."""

    def __init__(self) -> None:
        self.committed: list[str] = []
        self._previous: list[str] = []

    @staticmethod
    def _key(word: str) -> str:
        return word.lower().strip(".,!?;:\"'«»")

    def update(self, hypothesis: list[str]) -> list[str]:
        """Feed a new full hypothesis of the turn; returns the newly committed words."""
        n = len(self.committed)
        if [self._key(w) for w in hypothesis[:n]] != [self._key(w) for w in self.committed]:
            # The new hypothesis disagrees with what was committed: keep the commitment,
            # compare only what comes after it.
            self._previous = hypothesis
            return []
        new, old = hypothesis[n:], self._previous[n:] if len(self._previous) > n else []
        agreed: list[str] = []
        for a, b in zip(new, old, strict=False):
            if self._key(a) != self._key(b):
                break
            agreed.append(a)
        self.committed += agreed
        self._previous = hypothesis
        return agreed

    @property
    def tentative(self) -> list[str]:
        return self._previous[len(self.committed) :]


def split_at_pauses(
    audio: np.ndarray, speech_probs: np.ndarray, window: int, max_s: float = 25.0
) -> list[np.ndarray]:
    """Cut audio longer than Whisper's window at the quietest VAD window in each piece's
    last third, so no word is cut in half. `speech_probs` has one value per `window` samples."""
    limit = int(max_s * SAMPLE_RATE)
    pieces, start = [], 0
    while len(audio) - start > limit:
        lo = (start + limit * 2 // 3) // window
        hi = min((start + limit) // window, len(speech_probs))
        cut = (lo + int(np.argmin(speech_probs[lo:hi]))) * window if hi > lo else start + limit
        pieces.append(audio[start:cut])
        start = cut
    pieces.append(audio[start:])
    return pieces
