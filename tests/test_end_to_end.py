"""A real call, end to end: the server with the real Whisper base model, utterances
synthesized with espeak-ng streamed by `voicebot call` as Twilio would, and the call must
land in the right forvaltning's queue.

Which of these depend on understanding (checked with the classifier forced to out_of_scope):
the two English request tests at the end fail then; the keypad tests and the English-prompts
test (`test_an_english_caller_is_served_in_english_through_twilio`, which ends with a person
whether or not the request was understood) still pass: they test plumbing and language."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf

from voicebot.catalogue import load_catalogue
from voicebot.config import PROJECT_ROOT
from voicebot.tts import Voice

pytestmark = pytest.mark.model
VOICEBOT = [sys.executable, "-m", "voicebot"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, whisper_dir):
    data = tmp_path_factory.mktemp("data")
    port = free_port()
    env = {
        **os.environ,
        "VOICEBOT_DATA_DIR": str(data),
        "VOICEBOT_ASR__MODEL_DIR": str(whisper_dir),
        "VOICEBOT_PORT": str(port),
    }
    log = open(data / "server.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [*VOICEBOT, "--log-level", "warning", "serve"],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("server did not start: " + (data / "server.log").read_text())
    assert proc.poll() is None, (data / "server.log").read_text()
    yield env, port, data
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


def place_call(env, audio: list[Path], *options: str) -> list[dict]:
    out = subprocess.run(
        [*VOICEBOT, "call", *map(str, audio), "--json", "--speed", "2", *options],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def queued(env) -> list[dict]:
    out = subprocess.run(
        [*VOICEBOT, "queues", "--json"],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["waiting"]


def test_keypad_fallback_after_speech_reaches_the_contact_centre_queue(server, speaker, tmp_path):
    """The keypad fallback (it presses 0, so it passes whatever the recogniser hears: the
    routing by understanding is test_loopback_speech.py and, with the real model, below).
    A caller asks for a person. Whisper base hears espeak-ng Danish through a phone line
    badly (README), so the caller behaves as people do when not understood: says it again,
    slower, then follows the keypad menu and presses 0. Either way the call must reach the
    contact centre's queue, with what the caller said."""
    env, _, _ = server
    first, again = tmp_path / "caller.wav", tmp_path / "again.wav"
    sf.write(first, speaker.speak("Jeg vil gerne tale med et menneske."), 16000)
    sf.write(again, speaker.speak("Jeg vil gerne tale med et menneske.", Voice("da", 130)), 16000)
    turns = place_call(
        env, [first, again], "--dtmf", "0", "--save-reply", str(tmp_path / "reply.wav")
    )
    assert turns, "the bot made no decision"
    last = turns[-1]
    assert (last["action"], last["forvaltning"]) == ("human", "KONTAKTCENTER"), turns
    assert turns[0]["transcript"], turns  # the recogniser heard the first turn
    assert set(last["latency_ms"]) == {
        "speech_end_to_transcript",
        "speech_end_to_decision",
        "speech_end_to_first_audio",
    }
    spoken = [c for c in queued(env) if c["forvaltning"] == "KONTAKTCENTER" and c["transcript"]]
    assert len(spoken) == 1 and spoken[0]["intent"] == "human_agent"
    assert spoken[0]["caller"].endswith("78")
    reply, rate = sf.read(tmp_path / "reply.wav")
    assert rate == 8000 and len(reply) > rate * 3  # greeting + hand-off prompt were heard


def test_real_danish_speech_is_transcribed(whisper_dir):
    """The recogniser on a real Danish speaker (../shared readalongs clip, 74 words): the
    README's measured WER is 0.46; a broken model, window or decoding would be far worse."""
    from faster_whisper.audio import decode_audio

    from models.evaluation import error_rates
    from voicebot.asr import WhisperAsr

    clip = (
        PROJECT_ROOT.parent / "shared" / "data" / "danish-speech" / "readalongs-dan" / "dan_ap_dan"
    )
    if not clip.with_suffix(".wav").exists():
        pytest.skip("../shared/data/danish-speech is not beside the project")
    audio = decode_audio(str(clip.with_suffix(".wav")), sampling_rate=16000)
    asr = WhisperAsr(whisper_dir)
    half = len(audio) // 2  # two turn-sized pieces
    text = " ".join(asr.transcribe(piece).text for piece in (audio[:half], audio[half:]))
    wer = error_rates([clip.with_suffix(".txt").read_text(encoding="utf-8")], [text])["wer"]
    assert wer < 0.65, (wer, text)


def test_zero_on_the_keypad_reaches_a_person(server):
    env, _, _ = server
    turns = place_call(env, [], "--dtmf", "0")
    assert turns[-1]["action"] == "human" and turns[-1]["forvaltning"] == "KONTAKTCENTER"


def english_texts() -> set[str]:
    """Everything the bot may say in English, as the catalogue writes it."""
    from voicebot.catalogue import load_catalogue

    catalogue = load_catalogue(PROJECT_ROOT / "intents" / "catalogue.yaml")
    texts = {t["en"] for t in catalogue.prompts.values()}
    texts |= {catalogue.keypad_menu_text("en")}
    texts |= {
        catalogue.prompt("route", "en").format(queue=catalogue.queue_name(f, "en"))
        for f in catalogue.forvaltninger
    }
    for intent in catalogue.intents.values():
        texts |= {intent.confirm["en"]}
        if intent.answer:
            texts |= {intent.answer["en"]}
            texts |= {f"{intent.answer['en']} {catalogue.prompt('after_answer', 'en')}"}
    return texts


def test_an_english_caller_is_served_in_english_through_twilio(server, tmp_path):
    """Issue 14: a caller who speaks English (espeak-ng English through the Twilio endpoint's
    8 kHz μ-law) hears Danish only in the greeting; the first turn's language is detected,
    that turn is decoded and understood in English, every prompt after it is English, and
    the queue record says English. If the bot does not understand the request it is asked
    again in English; the caller then asks for a person."""
    from voicebot.tts import Speaker

    env, _, _ = server
    english = Speaker(Voice("en"))
    request, person = tmp_path / "request.wav", tmp_path / "person.wav"
    sf.write(request, english.speak("I need a new passport. My old one has expired."), 16000)
    sf.write(person, english.speak("I want to speak to someone."), 16000)
    out = subprocess.run(
        [*VOICEBOT, "call", str(request), str(person), "--protocol", "twilio", "--json",
         "--dialogue", "--speed", "2"],
        env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    turns = [json.loads(line) for line in lines if line.startswith("{")]
    prompts = [line for line in lines if line.startswith("bot [")]
    assert prompts[0].startswith("bot [da]: Goddag") and prompts[0].endswith(
        "For English, just speak English."
    )
    first = turns[0]
    assert first["language"] == "en", turns
    assert "need" in first["transcript"].lower(), turns  # decoded in English, not in Danish
    english = english_texts()
    # Under load the first turn may take over 1.5 s to decode: "one moment" is then said
    # before the language is known, in Danish and English (tests/test_language.py).
    catalogue = load_catalogue(PROJECT_ROOT / "intents" / "catalogue.yaml")
    busy = f"{catalogue.prompt('busy', 'da')} {catalogue.prompt('busy', 'en')}"
    for line in prompts[1:]:
        if line == f"bot [da]: {busy}":
            continue
        assert line.startswith("bot [en]: "), prompts
        assert line.removeprefix("bot [en]: ") in english, line
    last = turns[-1]
    assert (last["action"], last["language"]) in {("human", "en"), ("answer", "en")}, turns
    if last["action"] == "human":
        spoken = [c for c in queued(env) if "someone" in c["transcript"]]
        assert len(spoken) == 1 and spoken[0]["language"] == "en", spoken


def test_transcribe_json_says_the_detected_language(server, speaker, tmp_path):
    env, _, _ = server
    from voicebot.tts import Speaker

    clip = tmp_path / "english.wav"
    sf.write(clip, Speaker(Voice("en")).speak("I need a new passport."), 16000)

    def transcribe(*options: str) -> dict:
        out = subprocess.run(
            [*VOICEBOT, "transcribe", str(clip), "--json", *options],
            env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    detected = transcribe()
    assert detected["language"] == "en" and "passport" in detected["text"].lower(), detected
    assert detected["language_scores"]["en"] > 0.9
    assert transcribe("--language", "da")["language"] == "da"


def english_call(env, tmp_path: Path, text: str) -> tuple[list[dict], list[str]]:
    """One English turn (espeak-ng English, through the Twilio endpoint's 8 kHz μ-law), no
    key pressed: the bot's decisions and the prompts the caller heard."""
    from voicebot.tts import Speaker

    request = tmp_path / "request.wav"
    sf.write(request, Speaker(Voice("en")).speak(text), 16000)
    out = subprocess.run(
        [*VOICEBOT, "call", str(request), "--protocol", "twilio", "--json", "--dialogue",
         "--speed", "2"],
        env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    turns = [json.loads(line) for line in lines if line.startswith("{")]
    return turns, [line for line in lines if line.startswith("bot [")]


# Requests Whisper base hears (nearly) word for word in espeak-ng English through a phone line
# (measured: WER 0.0 on both), so what decides the outcome is the understanding. With the
# classifier forced to out_of_scope both tests fail (the bot asks the caller to rephrase).
def test_an_english_request_is_routed_to_its_queue_by_what_the_bot_understood(server, tmp_path):
    from voicebot.catalogue import load_catalogue

    env, _, _ = server
    turns, prompts = english_call(
        env, tmp_path, "I need a place in a kindergarten for my daughter."
    )
    (turn,) = turns  # one turn was enough: no rephrase, no keypad
    assert (turn["action"], turn["intent"], turn["forvaltning"], turn["language"]) == (
        "route", "childcare_school", "BUF", "en"
    ), turns  # fmt: skip
    catalogue = load_catalogue(PROJECT_ROOT / "intents" / "catalogue.yaml")
    routed = catalogue.prompt("route", "en").format(queue=catalogue.queue_name("BUF", "en"))
    assert prompts[-1] == f"bot [en]: {routed}", prompts
    # The call's own record, found by what the bot heard (Whisper may write "kinder garden").
    waiting = queued(env)
    record = [c for c in waiting if c["transcript"] == turn["transcript"]]
    assert len(record) == 1, (turn, waiting)
    assert (record[0]["forvaltning"], record[0]["intent"], record[0]["language"]) == (
        "BUF", "childcare_school", "en"
    )  # fmt: skip


def test_an_english_question_is_answered_with_its_answer(server, tmp_path):
    from voicebot.catalogue import load_catalogue

    env, _, _ = server
    turns, prompts = english_call(env, tmp_path, "I need to renew my passport.")
    first = turns[0]
    assert (first["action"], first["intent"], first["language"]) == ("answer", "passport", "en")
    answer = load_catalogue(PROJECT_ROOT / "intents" / "catalogue.yaml").intent("passport")
    assert any(line.startswith(f"bot [en]: {answer.answer['en']}") for line in prompts), prompts
