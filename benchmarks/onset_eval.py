"""Where a caller's turn starts after a long quiet stretch: how much of the first words the
decode would lose, with Silero's onset alone and with the listener's walk back over the
signal (voicebot.vad.speech_onset).

A caller listens to a prompt (9 s of line silence on the caller's side), then speaks. Each
utterance is put after that silence at every 4 ms shift of Silero's 32 ms window grid (the
grid falls anywhere in a real call), fed to the shared Silero model and the Endpointer with
the shipped endpointing settings in 20 ms frames, as the gateway does. The decode starts
PRE_ROLL_S (listening.py) before the onset; **lost** is how much speech lies before that start
(reference: the first 10 ms frame of the line signal above -40 dBFS). Two kinds of silence:
digital zeros (what Twilio sends for a muted line) and -50 dBFS line noise.

Utterances: held-back requests spoken by espeak-ng (Danish and English voices) and the 13 real
NST Danish clips, all through the phone line (8 kHz μ-law).

    python -m benchmarks.onset_eval [--json] [--per-language 20]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import soundfile as sf

from benchmarks.vad_eval import NST
from models.intent_data import load_heldout
from telephony.base import SAMPLE_RATE
from telephony.codecs import frame_rms, phone_line, resample
from voicebot.config import EndpointingSettings
from voicebot.listening import PRE_ROLL_S
from voicebot.tts import Speaker, Voice
from voicebot.vad import Endpointer, SileroVad, TurnEvent, speech_onset

QUIET_S = 9.0
FRAME = SAMPLE_RATE // 50  # 20 ms, as the gateway hands audio to the listener
SHIFTS_MS = range(0, 32, 4)
VOICES = {"da": (Voice("da", 150, 50), Voice("da+f3", 135, 65)), "en": (Voice("en-us", 160),)}


def utterances(per_language: int) -> list[tuple[str, np.ndarray]]:
    speaker = Speaker(cache_size=2)
    rng = np.random.default_rng(22)
    items = []
    for language, voices in VOICES.items():
        texts = [e.text for e in load_heldout(language)]
        for k, text in enumerate(rng.choice(texts, size=per_language, replace=False)):
            clean = speaker.speak(str(text), voices[k % len(voices)])
            items.append((f"espeak-{language}", phone_line(clean, snr_db=None)))
    for path in sorted(NST.glob("*.wav")):
        audio, rate = sf.read(path, dtype="float32")
        mono = resample(audio.mean(axis=1) if audio.ndim == 2 else audio, rate, SAMPLE_RATE)
        items.append(("real-da", phone_line(mono, snr_db=None)))
    return items


def first_speech(audio: np.ndarray) -> int:
    hop = SAMPLE_RATE // 100
    return int(np.argmax(frame_rms(audio, hop) > 10 ** (-40 / 20))) * hop


def vad_onset(vad: SileroVad, audio: np.ndarray) -> int | None:
    stream, endpointer = vad.stream(), Endpointer(EndpointingSettings())
    for i in range(0, len(audio), FRAME):
        for event in endpointer.update(stream.push(audio[i : i + FRAME])):
            if event.event is TurnEvent.SPEECH_START:
                return event.sample
    return None


def evaluate(per_language: int) -> dict:
    vad = SileroVad()
    pre_roll = int(PRE_ROLL_S * SAMPLE_RATE)
    rows: dict[str, dict[str, list[float]]] = {}
    for kind, speech in utterances(per_language):
        for quiet in ("zeros", "noise -50 dBFS"):
            for shift in SHIFTS_MS:
                n = int((QUIET_S + shift / 1000) * SAMPLE_RATE)
                lead = np.zeros(n, np.float32)
                if quiet != "zeros":
                    lead = np.random.default_rng(shift).normal(0, 10 ** (-50 / 20), n)
                audio = np.concatenate([lead.astype(np.float32), speech])
                truth = n + first_speech(speech)
                onset = vad_onset(vad, audio)
                if onset is None:
                    continue
                walked = speech_onset(audio, onset)
                cell = rows.setdefault(f"{kind}, {quiet}", {"silero": [], "walked": []})
                for name, start in (("silero", onset), ("walked", walked)):
                    cell[name].append(max(0, start - pre_roll - truth) * 1000 / SAMPLE_RATE)
    return {
        key: {
            "turns": len(cell["silero"]),
            **{
                name: {
                    "turns_losing_speech": int(sum(v > 0 for v in values)),
                    "lost_ms_max": round(max(values), 1),
                    "lost_ms_mean": round(float(np.mean(values)), 1),
                }
                for name, values in cell.items()
            },
        }
        for key, cell in sorted(rows.items())
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--per-language", type=int, default=20)
    args = parser.parse_args(argv)
    result = evaluate(args.per_language)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"Decode start {PRE_ROLL_S} s before the onset, after {QUIET_S:g} s of quiet, "
        f"{len(SHIFTS_MS)} window shifts per utterance"
    )
    print("| utterances, quiet | turns | Silero onset: turns losing speech, max lost ms | "
          "walked back: turns losing speech, max lost ms |")  # fmt: skip
    print("|---|---:|---:|---:|")
    for key, r in result.items():
        s, w = r["silero"], r["walked"]
        print(
            f"| {key} | {r['turns']} | {s['turns_losing_speech']}, {s['lost_ms_max']:g} | "
            f"{w['turns_losing_speech']}, {w['lost_ms_max']:g} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
