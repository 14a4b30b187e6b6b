"""Audio quality through each telephony protocol.

Known Danish sentences (espeak-ng via voicebot.tts.Speaker, 16 kHz) — and, when present, the
real Danish recording ../shared/data/danish-speech/readalongs-dan (37 s, one speaker, with
its text) — are sent as each platform sends caller audio — by the platform-side class `voicebot call` uses (its codec, rate, framing,
Telnyx's occasional out-of-order frame) — and decoded by the bot's adapter for that platform
(its parse path, with the per-call streaming resampler). The result is transcribed by the real
ASR and scored with WER against the text; "Δ" is the difference to the direct 16 kHz path, and
"vs direct" is the WER of the path's transcript against the direct path's transcript. The SNR
column compares the decoded audio with the source after aligning the resampler's delay: it
shows what band-limiting to 8 kHz and G.711 cost, independent of the ASR.

    .venv/bin/python -m benchmarks.audio_quality [--model var/models/whisper-base-ct2] [--json]

Every clip gets the same 100 ms of trailing silence on every path (the direct one too) and the
decoded audio is cut to the input's length, so the paths differ only by what the protocol
does to the audio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from telephony import audiohook, audiosocket, chan_websocket, raw, telnyx, twilio, vonage
from telephony.base import FRAME_MS, SAMPLE_RATE, Audio
from telephony.codecs import float_to_pcm16, resample
from voicebot.config import PROJECT_ROOT

SENTENCES = [
    "Jeg skal have fornyet mit pas, inden jeg rejser til Spanien i juli.",
    "Min skraldespand er ikke blevet tømt i denne uge.",
    "Jeg vil gerne søge om en beboerlicens til parkering på Østerbro.",
    "Min mor på femogfirs år har brug for hjemmehjælp om morgenen.",
    "Jeg har mistet mit sundhedskort og skal bruge et nyt.",
    "Hvornår kan mit barn starte i børnehave efter sommerferien?",
]
REAL_CLIP = (
    PROJECT_ROOT.parent / "shared" / "data" / "danish-speech" / "readalongs-dan" / "dan_ap_dan.wav"
)
MAX_CHUNK_S = 25.0  # Whisper's window is 30 s: longer recordings are cut at pauses
TAIL_S = 0.1  # silence after the speech, so the resamplers' delay is flushed into the output

# name → (protocol, platform-side attributes): every inbound codec path the adapters have
PATHS: dict[str, tuple[str, dict]] = {
    "raw (16 kHz PCM)": ("raw", {}),
    "vonage 16 kHz L16": ("vonage", {}),
    "vonage 8 kHz L16": ("vonage", {"wire_rate": 8000}),
    "asterisk slin16": ("asterisk", {"format": "slin16", "wire_rate": 16000}),
    "asterisk ulaw": ("asterisk", {}),
    "asterisk alaw": ("asterisk", {"format": "alaw"}),
    "audiosocket slin 8 kHz": ("audiosocket", {}),
    "twilio μ-law": ("twilio", {}),
    "telnyx PCMU (reordered)": ("telnyx", {}),
    "telnyx PCMA": ("telnyx", {"encoding": "PCMA", "swap_every": 0}),
    "audiohook PCMU": ("audiohook", {}),
}


class _Capture:
    """Stands in for both sockets: collects what the platform side sends, takes what the
    adapter answers."""

    headers: dict = {}
    query_params: dict = {}

    def __init__(self) -> None:
        self.messages: list[str | bytes] = []

    async def send(self, message: str | bytes) -> None:
        self.messages.append(message)

    async def send_text(self, text: str) -> None:
        pass

    async def send_bytes(self, data: bytes) -> None:
        pass

    async def close(self, code: int = 1000) -> None:
        pass


def _server_side(protocol: str):
    """The bot's adapter for `protocol` and a function feeding it one wire message."""
    ws = _Capture()
    if protocol == "twilio":
        ch = twilio.TwilioChannel(ws)
        return lambda m: [ch.parse(m)]
    if protocol == "vonage":
        ch = vonage.VonageChannel(ws)
        return lambda m: [ch.parse(m)]
    if protocol == "telnyx":
        ch = telnyx.TelnyxChannel(ws)
        return ch.parse
    if protocol == "asterisk":
        ch = chan_websocket.AsteriskWsChannel(ws, answer=False)
        return lambda m: [ch.parse(m)]
    if protocol == "raw":
        ch = raw.RawChannel(ws)
        return ch.parse
    if protocol == "audiosocket":
        ch = audiosocket.AudioSocketChannel(None, None)

        def feed(m: bytes) -> list:
            kind, length = audiosocket.HEADER.unpack(m[:3])
            return [ch.parse(audiosocket.Message(kind, m[3 : 3 + length]))]

        return feed
    if protocol == "audiohook":
        ch = audiohook.AudioHookChannel(ws, api_key=None)
        return ch.on_message
    raise ValueError(f"no adapter for {protocol!r}")


async def _through(protocol: str, attrs: dict, audio: np.ndarray) -> np.ndarray:
    from telephony.registry import PLATFORM_CLIENTS

    cls = PLATFORM_CLIENTS[protocol]
    ws = _Capture()
    new_id = getattr(cls, "new_call_id", None)
    platform = cls(ws, new_id() if new_id else "CA" + "0" * 32, "+4512345678")
    for key, value in attrs.items():
        setattr(platform, key, value)
    if protocol == "audiohook":
        platform.opened.set()  # no bot here to answer `open`
    await platform.start({})
    rate = platform.wire_rate
    wire = np.concatenate(
        [resample(audio, SAMPLE_RATE, rate), np.zeros(int(TAIL_S * rate), np.float32)]
    )
    pcm = float_to_pcm16(wire)
    frame = rate * FRAME_MS // 1000
    pcm = np.concatenate([pcm, np.zeros((-len(pcm)) % frame, np.int16)])
    for i, start in enumerate(range(0, len(pcm), frame)):
        await platform.send_audio(pcm[start : start + frame], i * FRAME_MS)
    if hasattr(platform, "_held") and platform._held is not None:  # Telnyx's frame held back
        ws.messages.append(platform._held)
    feed = _server_side(protocol)
    out = []
    for message in ws.messages:
        result = feed(message)
        if asyncio.iscoroutine(result):
            result = await result
        out += [e.samples for e in result if isinstance(e, Audio)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def through_protocol(path: str, audio: np.ndarray) -> np.ndarray:
    """16 kHz float32 caller audio → the platform's wire format → the adapter → 16 kHz float32."""
    protocol, attrs = PATHS[path]
    return asyncio.run(_through(protocol, attrs, np.asarray(audio, np.float32)))


def aligned_snr_db(
    reference: np.ndarray, degraded: np.ndarray, max_lag: int = 1600
) -> tuple[float, int]:
    """SNR of `degraded` against `reference` after removing the best delay (0..max_lag
    samples) and gain; returns (dB, lag)."""
    n = min(len(reference), len(degraded) - max_lag)
    if n <= 0:
        return float("-inf"), 0
    ref = reference[:n].astype(np.float64)
    size = 1 << int(np.ceil(np.log2(n + max_lag + n)))
    corr = np.fft.irfft(
        np.fft.rfft(degraded[: n + max_lag], size) * np.conj(np.fft.rfft(ref, size)), size
    )
    lag = int(np.argmax(corr[: max_lag + 1]))
    deg = degraded[lag : lag + n].astype(np.float64)
    gain = float(np.dot(deg, ref) / (np.dot(ref, ref) or 1.0))
    noise = deg - gain * ref
    return 10 * np.log10(
        (np.dot(gain * ref, gain * ref) + 1e-12) / (np.dot(noise, noise) + 1e-12)
    ), lag


def split_at_pauses(
    audio: np.ndarray, max_s: float = MAX_CHUNK_S, rate: int = SAMPLE_RATE
) -> list[np.ndarray]:
    """Cut a long recording into pieces of at most `max_s`, each at the quietest 200 ms in
    the second half of the allowed span (a pause between sentences, not a word)."""
    chunks, window = [], rate // 5
    while len(audio) > max_s * rate:
        lo, hi = int(max_s * rate / 2), int(max_s * rate) - window
        energy = np.convolve(audio[lo : hi + window] ** 2, np.ones(window), "valid")
        cut = lo + int(np.argmin(energy)) + window // 2
        chunks.append(audio[:cut])
        audio = audio[cut:]
    return [*chunks, audio]


@dataclass
class Clip:
    reference: str
    chunks: list[np.ndarray]  # 16 kHz float32, each ≤ 30 s, transcribed apart and joined


@dataclass
class PathResult:
    path: str
    wer: float
    cer: float
    wer_vs_direct: float
    snr_db: float
    hypotheses: list[str]

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "wer": round(self.wer, 4),
            "cer": round(self.cer, 4),
            "wer_vs_direct": round(self.wer_vs_direct, 4),
            "snr_db": round(self.snr_db, 1),
            "hypotheses": self.hypotheses,
        }


def espeak_clips(sentences: list[str] = SENTENCES) -> list[Clip]:
    from voicebot.tts import Speaker

    speaker = Speaker()
    return [Clip(s, [speaker.speak(s)]) for s in sentences]


def real_clips(path: Path = REAL_CLIP) -> list[Clip]:
    if not path.exists():
        return []
    from faster_whisper.audio import decode_audio

    text = " ".join(path.with_suffix(".txt").read_text(encoding="utf-8").split())
    return [Clip(text, split_at_pauses(decode_audio(str(path), sampling_rate=SAMPLE_RATE)))]


def _padded(chunk: np.ndarray) -> np.ndarray:
    return np.concatenate([chunk, np.zeros(int(TAIL_S * SAMPLE_RATE), np.float32)]).astype(
        np.float32
    )


def evaluate(clips: list[Clip], transcribe) -> list[PathResult]:
    """Every path for every clip; `transcribe(audio) -> text`."""
    from models.evaluation import error_rates

    refs = [c.reference for c in clips]

    def hear(chunks: list[np.ndarray]) -> str:
        return " ".join(transcribe(c) for c in chunks).strip()

    direct = [hear([_padded(ch) for ch in c.chunks]) for c in clips]
    results = [
        PathResult(
            "direct 16 kHz",
            **error_rates(refs, direct),
            wer_vs_direct=0.0,
            snr_db=float("inf"),
            hypotheses=direct,
        )
    ]
    for path in PATHS:
        hyps, snrs = [], []
        for clip in clips:
            decoded = []
            for chunk in clip.chunks:
                source = _padded(chunk)
                out = through_protocol(path, chunk)[: len(source)]
                out = np.concatenate([out, np.zeros(len(source) - len(out), np.float32)])
                snrs.append(aligned_snr_db(source, out)[0])
                decoded.append(out)
            hyps.append(hear(decoded))
        rates = error_rates(refs, hyps)
        results.append(
            PathResult(
                path,
                rates["wer"],
                rates["cer"],
                error_rates(direct, hyps)["wer"],
                float(np.mean(snrs)),
                hyps,
            )
        )
    return results


def _table(title: str, results: list[PathResult]) -> str:
    base = results[0].wer
    lines = [
        title,
        f"{'path':26} {'WER':>6} {'Δ WER':>7} {'CER':>6} {'vs direct':>9} {'SNR dB':>7}",
    ]
    for r in results:
        snr = "—" if r.snr_db == float("inf") else f"{r.snr_db:.1f}"
        lines.append(
            f"{r.path:26} {r.wer:6.3f} {r.wer - base:+7.3f} {r.cer:6.3f} {r.wer_vs_direct:9.3f} {snr:>7}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(PROJECT_ROOT / "var" / "models" / "whisper-base-ct2"))
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-real", action="store_true", help="skip the real recording")
    args = p.parse_args(argv)
    from voicebot.asr import WhisperAsr

    start = time.monotonic()
    asr = WhisperAsr(Path(args.model))

    def transcribe(audio: np.ndarray) -> str:
        return asr.transcribe(audio).text

    sets = {f"{len(SENTENCES)} Danish sentences, espeak-ng": espeak_clips()}
    if not args.no_real and (real := real_clips()):
        sets[
            f"real Danish speech, {REAL_CLIP.name} ({sum(len(c) for c in real[0].chunks) / SAMPLE_RATE:.0f} s)"
        ] = real
    results = {title: evaluate(clips, transcribe) for title, clips in sets.items()}
    if args.json:
        print(
            json.dumps(
                {t: [r.as_dict() for r in rs] for t, rs in results.items()},
                ensure_ascii=False,
                indent=1,
            )
        )
        return 0
    print(f"ASR {Path(args.model).name}; {time.monotonic() - start:.0f} s\n")
    print("\n\n".join(_table(t, rs) for t, rs in results.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
