"""Recorded prompts (voicebot/prompts.py): the script, a prompts folder the bot plays from,
`voicebot prompts check`, refused files, and the catalogue reload with recordings."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import yaml

from telephony.base import SAMPLE_RATE, Digit
from tests.conftest import copy_catalogue
from tests.fakes import ScriptedLine, ToneSpeaker, light_services, silence, tone
from voicebot.cli import main
from voicebot.prompts import (
    PromptsError,
    RecordedSpeaker,
    import_recordings,
    load_recordings,
    prompt_script,
    text_hash,
    voiced_rms,
)
from voicebot.services import Services, prepare_catalogue, reload_catalogue
from voicebot.session import CallSession
from voicebot.speaking import PromptPlayer, pieces_of
from voicebot.waiting_prompts import load_waiting


def voice_like(seconds: float, rate: int, level: float = 0.05) -> np.ndarray:
    """A stand-in for a voice artist's take: two partials, syllable-rate modulation."""
    t = np.arange(int(seconds * rate)) / rate
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    wave = np.sin(2 * np.pi * 220 * t) + 0.5 * np.sin(2 * np.pi * 1100 * t)
    return (level * envelope * wave).astype(np.float32)


def script_of(services: Services) -> list:
    catalogue = services.catalogue
    waiting = load_waiting(services.settings, catalogue).prompts
    return prompt_script(catalogue, waiting, services.settings.languages)


def deliver(folder: Path, takes: dict[tuple[str, str], tuple[np.ndarray, int, str]]) -> Path:
    """The voice artist's delivery: <folder>/<language>/<id>.<ext>."""
    for (language, id_), (audio, rate, ext) in takes.items():
        (folder / language).mkdir(parents=True, exist_ok=True)
        sf.write(folder / language / f"{id_}.{ext}", audio, rate)
    return folder


@pytest.fixture
def recorded(tmp_path, catalogue, classifier):
    """Light services whose prompts folder has the Danish greeting (44.1 kHz FLAC) and the
    hand-off to a person (8 kHz WAV) recorded; everything else is synthesized (tones)."""
    services = light_services(tmp_path, catalogue, classifier, audiosocket_enabled=False)
    services.settings.catalogue = copy_catalogue(tmp_path)
    takes = {
        ("da", "prompt.greeting"): (voice_like(1.5, 44100), 44100, "flac"),
        ("da", "prompt.human"): (voice_like(0.8, 8000, level=0.2), 8000, "wav"),
    }
    delivery = deliver(tmp_path / "delivery", takes)
    services.settings.tts.prompts_dir = tmp_path / "prompts"
    import_recordings(delivery, tmp_path / "prompts", script_of(services))
    reload = asyncio.run(reload_catalogue(services))
    assert reload.ok, reload.error
    return services, takes


def as_played(audio: np.ndarray, rate: int) -> np.ndarray:
    return soxr.resample(audio, rate, SAMPLE_RATE)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_the_script_lists_every_text_with_a_stable_id_and_hash(tmp_path, catalogue, classifier):
    services = light_services(tmp_path, catalogue, classifier)
    lines = {(x.language, x.id): x for x in script_of(services)}
    greeting = lines[("da", "prompt.greeting")]
    assert greeting.kind == "fixed" and greeting.text == " ".join(
        catalogue.prompt("greeting", "da").split()
    )
    assert greeting.sha256 == text_hash(catalogue.prompt("greeting", "da"))
    assert lines[("en", "intent.passport.answer")].text.startswith(
        catalogue.intent("passport").answer["en"].split()[0]
    )
    assert ("da", "intent.passport.confirm") in lines
    # a template with a finite set of fillings: one line per filling, the filled text
    route = lines[("da", "prompt.route.KFF")]
    assert route.kind == "filled" and catalogue.queue_name("KFF", "da") in route.text
    assert lines[("da", "prompt.keypad_menu")].text == catalogue.keypad_menu_text("da")
    assert lines[("da", "keypad.3")].kind == "filled"
    # filled at run time with an open set: listed with the placeholder, synthesized
    assert lines[("da", "waiting.wait")].kind == "runtime"
    assert "{minutes}" in lines[("da", "waiting.wait")].text
    assert lines[("en", "language.en.offer")].text == catalogue.languages["en"].offer


def test_prompts_export_writes_a_csv_script(tmp_path, capsys):
    out = tmp_path / "script.csv"
    assert main(["prompts", "export", "--language", "en", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.read_text(encoding="utf-8").splitlines()))
    assert list(rows[0]) == ["id", "language", "kind", "text", "sha256"]
    assert {r["language"] for r in rows} == {"en"}
    assert all(r["sha256"] == text_hash(r["text"]) for r in rows)


def test_a_recorded_prompt_is_played_on_the_line_as_recorded(recorded):
    services, takes = recorded
    line = ScriptedLine([silence(0.3), Digit("0"), silence(0.5)])
    asyncio.run(asyncio.wait_for(CallSession(line, services).run(), 60))
    assert ("hand_off", "KONTAKTCENTER") in line.log
    target = voiced_rms(ToneSpeaker().speak("", None))  # the synthesized voice's level
    for mark, key in (
        ("greeting-1.0", ("da", "prompt.greeting")),
        ("human-2.0", ("da", "prompt.human")),
    ):
        sent = line.played[mark]
        audio, rate, _ = takes[key]
        expected = as_played(audio, rate)
        assert abs(len(sent) - len(expected)) < 0.01 * len(expected)  # one piece, not cut
        assert similarity(sent, expected) > 0.99  # the recording, resampled
        assert abs(20 * np.log10(voiced_rms(sent) / target)) < 0.5  # at the voice's level
    # what was not recorded is synthesized: the English offer after the greeting
    assert np.array_equal(line.played["greeting-1.1"], ToneSpeaker().speak("", None))


def test_recordings_and_synthesis_share_one_prompt_piece_by_piece(recorded):
    services, _ = recorded
    recordings = services.speaker.recordings
    greeting = services.catalogue.prompt("greeting", "da")
    said = f"{greeting} Noget nyt, der ikke er indtalt. Og en sætning mere."
    pieces = pieces_of(said, "da", recordings)
    assert [p is not None for _, p in pieces] == [True, False, False]
    assert pieces_of(greeting, "en", recordings)[0][1] is None  # a language of its own


def test_a_barge_in_during_a_recording_resumes_it_from_its_start(recorded):
    services, _ = recorded
    line = ScriptedLine([], echo_marks=False)
    player = PromptPlayer(line, services.speaker, lambda kind, **data: None)
    greeting = services.catalogue.prompt("greeting", "da")

    async def scenario() -> None:
        await player.say(greeting, "greeting", language="da")
        await player.barge_in()
        await player.resume()

    asyncio.run(scenario())
    plays = [entry for entry in line.log if entry[0] == "play"]
    assert [mark for _, mark, _ in plays] == ["greeting-1.0", "resume-2.0"]  # one mark each
    assert np.array_equal(line.played["greeting-1.0"], line.played["resume-2.0"])


def test_prompts_check_reports_missing_and_changed_recordings(recorded, tmp_path, capsys):
    services, _ = recorded
    path = services.settings.catalogue
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["prompts"]["human"]["da"] = "Et øjeblik, jeg finder en medarbejder til dig."
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump({"catalogue": str(path), "data_dir": str(tmp_path)}))
    folder = services.settings.tts.prompts_dir

    code = main(["--config", str(config), "prompts", "check", "--dir", str(folder), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1  # a recording of a changed text
    assert report["recorded"] == ["da/prompt.greeting"]
    assert report["changed"] == ["da/prompt.human"]
    assert "da/prompt.rephrase" in report["missing"] and "en/prompt.greeting" in report["missing"]
    assert "da/waiting.wait" not in report["missing"]  # composed at run time: synthesized

    # the changed text is not played: the reload synthesizes it until it is recorded again
    assert asyncio.run(reload_catalogue(services)).ok
    recordings = services.speaker.recordings
    assert recordings.find(doc["prompts"]["human"]["da"], "da") is None
    assert recordings.find(services.catalogue.prompt("greeting", "da"), "da") is not None


@pytest.mark.parametrize(
    ("take", "rate", "refused"),
    [
        (np.stack([voice_like(1.0, 16000)] * 2, axis=1), 16000, "channels"),
        (np.clip(voice_like(1.0, 22050, level=3.0), -1, 1), 22050, "clipped"),
        (np.zeros(16000, np.float32), 16000, "silent"),
    ],
    ids=["stereo", "clipped", "silent"],
)
def test_a_bad_recording_is_refused_at_start_naming_the_file(
    tmp_path, catalogue, classifier, take, rate, refused
):
    services = light_services(tmp_path, catalogue, classifier)
    script = script_of(services)
    folder = deliver(tmp_path / "prompts", {("da", "prompt.rephrase"): (take, rate, "wav")})
    (folder / "manifest.tsv").write_text(
        f"da\tprompt.rephrase\tda/prompt.rephrase.wav\t{text_hash(catalogue.prompt('rephrase', 'da'))}\n"
    )
    bad = folder / "da" / "prompt.rephrase.wav"
    with pytest.raises(PromptsError, match=refused) as err:
        load_recordings(folder, script, target_rms=0.1)
    assert str(bad) in str(err.value)
    # the start (prepare_catalogue) refuses it the same way, and an import copies nothing
    services.settings.tts.prompts_dir = folder
    with pytest.raises(PromptsError, match=str(bad)):
        prepare_catalogue(services.settings, speaker=ToneSpeaker(), voices={})
    with pytest.raises(PromptsError, match=refused):
        import_recordings(folder, tmp_path / "imported", script)
    assert not (tmp_path / "imported").exists()


def test_a_reload_keeps_calls_on_their_recordings_and_refuses_a_bad_one(recorded, tmp_path):
    services, _ = recorded
    in_call = services.for_call()
    greeting = services.catalogue.prompt("greeting", "da")
    path = services.settings.catalogue
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["prompts"]["greeting"]["da"] = "Goddag. Det her er en ny velkomst."
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    assert asyncio.run(reload_catalogue(services)).ok
    assert services.speaker.recordings.find(greeting, "da") is None  # its text changed
    assert isinstance(in_call.speaker, RecordedSpeaker)
    assert in_call.speaker.recordings.find(greeting, "da") is not None  # the call's own

    folder = services.settings.tts.prompts_dir
    sf.write(folder / "da" / "prompt.human.wav", np.stack([tone(0.5)] * 2, axis=1), 16000)
    kept = services.speaker
    status = asyncio.run(reload_catalogue(services))
    assert not status.ok and "prompt.human.wav" in (status.error or "")
    assert services.speaker is kept  # the running recordings stay
