"""Issue 14: a caller is served in their language. Danish first; the first turn's language is
detected (Whisper's detection, scripted here) among `languages`, below asr.language_margin
the call stays Danish; "English" or key 9 switches; from then on recognition, prompts,
answers, yes/no, voice and the queue record are the caller's language."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid

import pytest
import yaml

from telephony.base import Digit
from voicebot.asr import AsrPool, AsrResult, choose_language
from voicebot.catalogue import CatalogueError, load_catalogue
from voicebot.config import PROJECT_ROOT, AsrSettings, load_settings
from voicebot.dialogue import DialoguePolicy
from voicebot.events import EventBus
from voicebot.queues import RoutedCall, SqliteQueueStore
from voicebot.services import Services, load_classifiers
from voicebot.session import CallSession
from voicebot.speaking import is_backchannel
from voicebot.tts import Voice
from voicebot.vad import SileroVad

from .conftest import copy_catalogue
from .test_session import ScriptedLine, run, silence

MARGIN = AsrSettings().language_margin


class BilingualAsr:
    """A recogniser whose caller speaks `language`: asked among several languages, Whisper's
    detection gives that language probability `p` (the real margin rule decides); the turns'
    texts come in order, heard only when the decode is in the caller's language."""

    def __init__(self, texts: list[str], language: str, p: float = 0.995) -> None:
        self.texts = list(texts)
        self.language = language
        self.p = p
        self.asked: list[tuple[str, ...]] = []  # the languages of every decode, in order

    def transcribe(self, audio, previous_text=None, prefix=None, languages=None):
        languages = tuple(languages or ("da",))
        self.asked.append(languages)
        scores: dict[str, float] = {}
        chosen = languages[0]
        if len(languages) > 1:
            detected = [
                (f"<|{code}|>", self.p if code == self.language else 0.0) for code in languages
            ]
            detected += [(f"<|{c}|>", 1 - self.p) for c in languages if c != self.language][:1]
            chosen, scores = choose_language(detected, languages, MARGIN)
        text = ""
        if len(audio) > 8000 and self.texts:
            text = self.texts[0] if chosen == self.language else "øh hvad"
        return AsrResult(
            text, -0.2, 0.01, len(audio) / 16000, 6.0, 5.0, language=chosen, language_scores=scores
        )

    def next_turn(self) -> None:
        if self.texts:
            self.texts.pop(0)


@pytest.fixture
def bilingual(tmp_path, catalogue, classifier, speaker):
    def make(asr: BilingualAsr, partials: bool = False) -> Services:
        settings = load_settings(None, data_dir=tmp_path, asr={"partials": partials})
        return Services(
            settings=settings,
            catalogue=catalogue,
            vad=SileroVad(),
            asr=AsrPool(asr, settings.asr),
            classifier=classifier,
            speaker=speaker,
            store=SqliteQueueStore(tmp_path / "q.db"),
            events=EventBus(),
            domain_prompt=None,
            voices={"da": Voice("da"), "en": Voice("en")},
        )

    return make


def recorded(svc: Services) -> list[tuple[str, dict]]:
    events: list[tuple[str, dict]] = []
    original = svc.events.publish
    svc.events.publish = lambda call_id, kind, **data: (
        events.append((kind, data)),
        original(call_id, kind, **data),
    )
    return events


def said(events) -> list[str]:
    return [d["text"] for k, d in events if k == "bot_said"]


# == detection on the first turn ==========================================================
def test_an_english_first_turn_is_understood_and_answered_in_english(bilingual, speaker, catalogue):
    asr = BilingualAsr(["My father is not breathing, please help"], "en")
    svc = bilingual(asr)
    events = recorded(svc)
    speech = speaker.speak("My father is not breathing, please help.", Voice("en"))
    run(CallSession(ScriptedLine([silence(0.5), speech, silence(1.5)]), svc))
    prompts = said(events)
    # The greeting is Danish, then one English sentence.
    assert prompts[0].startswith(catalogue.prompt("greeting", "da"))
    assert prompts[0].endswith("For English, just speak English.")
    # The turn that revealed the language was decoded in it and understood in it.
    assert asr.asked[0] == ("da", "en")
    assert ("language", "en") in [(k, d.get("language")) for k, d in events if k == "language"]
    decision = next(d for k, d in events if k == "decision")
    assert (decision["action"], decision["language"]) == ("emergency", "en")
    assert prompts[1] == catalogue.intent("emergency").answer["en"]
    assert [d["language"] for k, d in events if k == "bot_said"][1] == "en"
    record = svc.store.get("CA-test")
    assert record is not None and record.language == "en"


def test_after_the_language_is_known_every_decode_is_forced_to_it(bilingual, speaker):
    class GreetingFirst(BilingualAsr):
        """Hears "Hello" while detecting, the request only when decoding in English alone."""

        def transcribe(self, audio, previous_text=None, prefix=None, languages=None):
            result = super().transcribe(audio, previous_text, prefix, languages)
            if result.text:
                result.text = "Hello" if len(self.asked[-1]) > 1 else "I want to speak to someone"
            return result

    asr = GreetingFirst(["x"], "en")
    svc = bilingual(asr)
    events = recorded(svc)
    hello = speaker.speak("Hello.", Voice("en"))
    request = speaker.speak("I want to speak to someone.", Voice("en"))
    run(CallSession(ScriptedLine([silence(0.5), hello, silence(1.5), request, silence(1.5)]), svc))
    # "Hello" alone is no errand (the bot listens on) but it was English: the call is.
    assert [d["reason"] for k, d in events if k == "listening"] == ["greeting only"]
    assert asr.asked[0] == ("da", "en") and asr.asked[-1] == ("en",)
    record = svc.store.get("CA-test")
    assert (record.forvaltning, record.language) == ("KONTAKTCENTER", "en")


def test_below_the_margin_the_call_stays_danish(bilingual, speaker, catalogue):
    # Whisper is unsure (0.55 against 0.45): not enough to leave Danish.
    asr = BilingualAsr(["min skraldespand er ikke blevet tømt"], "da", p=0.55)
    asr.language = "da"
    svc = bilingual(asr)
    events = recorded(svc)
    speech = speaker.speak("Min skraldespand er ikke blevet tømt i denne uge.")
    run(CallSession(ScriptedLine([silence(0.5), speech, silence(1.5)]), svc))
    assert not [d for k, d in events if k == "language"]
    assert said(events)[1] == catalogue.prompt("route", "da").format(queue="Teknik og Miljø")
    assert svc.store.get("CA-test").language == "da"


def test_an_unsure_english_detection_keeps_danish():
    chosen, scores = choose_language(
        [("<|en|>", 0.5), ("<|da|>", 0.4), ("<|de|>", 0.1)], ["da", "en"], 0.2
    )
    assert chosen == "da" and scores["en"] == pytest.approx(0.5 / 0.9)
    chosen, _ = choose_language([("<|en|>", 0.7), ("<|da|>", 0.2)], ["da", "en"], 0.2)
    assert chosen == "en"
    # Languages not configured never win, however likely.
    chosen, _ = choose_language(
        [("<|de|>", 0.9), ("<|da|>", 0.06), ("<|en|>", 0.04)], ["da", "en"], 0.0
    )
    assert chosen == "da"


# == explicit switch ========================================================================
def test_saying_english_switches_the_call_and_the_next_turn_is_decoded_in_english(
    bilingual, speaker, catalogue
):
    # A Danish-detected first turn that is only the word "English".
    asr = BilingualAsr(["English."], "da")
    svc = bilingual(asr)
    events = recorded(svc)
    word = speaker.speak("English.")
    request = speaker.speak("I want to speak to someone.", Voice("en"))

    class Line(ScriptedLine):
        async def play(self, audio, mark):
            await super().play(audio, mark)
            if mark.startswith("language-"):  # the switch was said: the next turn is English
                asr.texts, asr.language = ["I want to speak to someone"], "en"

    run(CallSession(Line([silence(0.5), word, silence(2.0), request, silence(1.5)]), svc))
    decisions = [d for k, d in events if k == "decision"]
    assert decisions[0]["action"] == "language" and decisions[0]["language"] == "en"
    assert catalogue.prompt("language_switched", "en") in said(events)
    assert ("en",) in asr.asked  # after the switch: forced to English
    assert decisions[-1]["action"] == "human" and decisions[-1]["language"] == "en"
    assert catalogue.prompt("human", "en") in said(events)
    assert svc.store.get("CA-test").language == "en"


def test_key_9_switches_to_english_and_the_menu_offers_it(bilingual, catalogue):
    asr = BilingualAsr([], "da")
    svc = bilingual(asr)
    events = recorded(svc)
    run(CallSession(ScriptedLine([silence(0.3), Digit("7"), silence(0.5), Digit("7"), silence(0.5),
                                  Digit("9"), silence(0.5), Digit("0"), silence(0.5)]), svc))  # fmt: skip
    prompts = said(events)
    menu = next(p for p in prompts if p.startswith(catalogue.keypad_menu_text("da")))
    assert menu.endswith("For English, press 9.")
    assert catalogue.prompt("language_switched", "en") in prompts
    assert prompts[-1] == catalogue.prompt("human", "en")
    assert svc.store.get("CA-test").language == "en"


def test_the_language_key_may_not_take_a_menu_key(tmp_path):
    path = copy_catalogue(tmp_path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["languages"]["en"]["key"] = "2"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(CatalogueError, match=r"languages\.en\.key"):
        load_catalogue(path)


# == the catalogue in both languages =========================================================
@pytest.mark.parametrize(
    ("edit", "entry"),
    [
        (lambda d: d["prompts"]["rephrase"].pop("en"), "prompts.rephrase"),
        (lambda d: d["intents"]["passport"]["answer"].pop("en"), "intents.passport.answer"),
        (lambda d: d["intents"]["waste"]["confirm"].pop("en"), "intents.waste.confirm"),
        (lambda d: d["keypad"]["3"]["label"].pop("en"), "keypad.3.label"),
        (lambda d: d["no_words"].pop("en"), "no_words"),
        (lambda d: d["intents"]["emergency"]["trigger_phrases"].pop("en"), "intents.emergency.trigger_phrases"),
    ],
)  # fmt: skip
def test_a_text_missing_in_a_language_fails_the_start_naming_the_entry(tmp_path, edit, entry):
    path = copy_catalogue(tmp_path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(CatalogueError) as err:
        load_catalogue(path, ["da", "en"])
    assert str(path) in str(err.value) and entry in str(err.value) and "'en'" in str(err.value)


def test_a_configured_language_the_catalogue_does_not_serve_fails_the_start(tmp_path):
    with pytest.raises(CatalogueError, match=r"languages\.de"):
        load_catalogue(copy_catalogue(tmp_path), ["da", "de"])


def test_an_unknown_language_code_in_settings_fails_naming_the_field():
    from voicebot.config import ConfigError

    with pytest.raises(ConfigError, match="languages"):
        load_settings(None, languages=["da", "xx"])
    with pytest.raises(ConfigError, match="asr.language"):
        load_settings(None, languages=["en"])


def test_english_answers_carry_the_same_sources_and_every_english_placeholder_is_checked(
    tmp_path, catalogue
):
    # One source and date per intent, for the answer in every language.
    answered = [i for i in catalogue.intents.values() if i.answer and i.action != "emergency"]
    assert answered and all(i.answer["en"].strip() and i.source and i.checked for i in answered)
    path = copy_catalogue(tmp_path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["prompts"]["route"]["en"] = "Putting you through to {evil}."
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(CatalogueError, match=r"prompts\.route\.en.*\{evil\}"):
        load_catalogue(path)


# == understanding per language ==============================================================
def test_english_emergency_and_person_rules_and_danish_fire_is_a_number(tmp_path, catalogue):
    classifiers = load_classifiers(load_settings(None, data_dir=tmp_path), catalogue)
    en, da = classifiers["en"], classifiers["da"]
    for text in ("Call an ambulance", "There is a fire in the kitchen", "my wife is not breathing"):
        u = en.classify(text)
        assert u.intent == "emergency" and u.rule, text
    for text in ("I want to speak to someone", "Can I talk to an agent", "a person please"):
        u = en.classify(text)
        assert u.intent == "human_agent" and u.rule, text
    # "fire" is Danish for four: no Danish rule fires on it.
    assert da.classify("jeg har fire børn").rule is None


def test_a_language_uses_its_own_intent_model_when_one_is_shipped(tmp_path, catalogue):
    import shutil

    from voicebot.config import Settings

    shipped = Settings().intent_model
    for suffix in (".onnx", ".json"):
        shutil.copyfile(shipped.with_suffix(suffix), tmp_path / f"intent{suffix}")
        shutil.copyfile(shipped.with_suffix(suffix), tmp_path / f"intent_en{suffix}")
    settings = load_settings(None, data_dir=tmp_path, intent_model=tmp_path / "intent.onnx")
    classifiers = load_classifiers(settings, catalogue)
    assert classifiers["en"].model is not classifiers["da"].model
    (tmp_path / "intent_en.onnx").unlink()
    classifiers = load_classifiers(settings, catalogue)
    assert classifiers["en"].model is classifiers["da"].model  # one shared model
    assert classifiers["en"].language == "en" and classifiers["da"].language == "da"


def test_english_yes_no_and_backchannels(catalogue, classifier):
    from voicebot.services import load_classifier

    policy = DialoguePolicy(catalogue, classifier, load_settings(None).dialogue)
    policy.set_language("en", load_classifier(load_settings(None), catalogue, "en"))
    assert policy._yes_no("Yes, that's right") == "yes"
    assert policy._yes_no("No, it is about parking") == "no"
    assert policy.text("goodbye") == catalogue.prompt("goodbye", "en")
    assert is_backchannel("yeah right", "en") and not is_backchannel("yeah right", "da")
    assert is_backchannel("ja ja", "da")


# == the agent sees the language ===============================================================
def test_the_language_is_kept_in_sqlite_and_a_database_from_before_gets_the_column(tmp_path):
    path = tmp_path / "q.db"
    store = SqliteQueueStore(path)
    store.enqueue(RoutedCall("CA-en", "KFF", "passport", 0.9, "I need a passport", language="en"))
    store.close()
    assert SqliteQueueStore(path).get("CA-en").language == "en"
    # A database made before languages: the column is added, old calls were Danish.
    old = tmp_path / "old.db"
    db = sqlite3.connect(old)
    db.executescript(
        "CREATE TABLE routed_calls (call_id TEXT PRIMARY KEY, forvaltning TEXT NOT NULL,"
        " intent TEXT, confidence REAL NOT NULL, transcript TEXT NOT NULL, explanation TEXT"
        " NOT NULL, reason TEXT NOT NULL, caller TEXT, platform TEXT NOT NULL, created_at REAL"
        " NOT NULL, status TEXT NOT NULL, claimed_by TEXT, claimed_at REAL, finished_at REAL,"
        " lease_at REAL);"
        "INSERT INTO routed_calls VALUES ('CA-old', 'TMF', 'waste', 0.8, 'skrald', '[]', '',"
        " NULL, 'twilio', 1.0, 'waiting', NULL, NULL, NULL, NULL);"
    )
    db.commit()
    db.close()
    migrated = SqliteQueueStore(old)
    assert migrated.get("CA-old").language == "da"
    migrated.enqueue(RoutedCall("CA-new", "KFF", "passport", 0.9, "passport", language="en"))
    assert migrated.get("CA-new").language == "en"


def test_the_language_is_kept_in_redis(tmp_path):
    from voicebot.queues import RedisQueueStore

    from .redis_server import RedisServer, free_port

    server = RedisServer(tmp_path / "redis", free_port()).start()
    try:
        store = RedisQueueStore(server.url, prefix=f"test-{uuid.uuid4().hex[:8]}")
        store.enqueue(RoutedCall("CA-en", "KFF", "passport", 0.9, "a passport", language="en"))
        assert store.get("CA-en").language == "en"
        assert [c.language for c in store.waiting(["KFF"])] == ["en"]
        store.close()
    finally:
        server.stop()


def test_the_console_card_says_the_callers_language(catalogue):
    from voicebot.console import call_card

    card = call_card(RoutedCall("CA-en", "KFF", "passport", 0.9, "x", language="en"), catalogue)
    assert card["language"] == "en" and card["queue"] == "Borgerservice"
    js = (PROJECT_ROOT / "voicebot" / "static" / "console.js").read_text(encoding="utf-8")
    assert "English-speaking caller" in js


def test_voicebot_call_json_gives_every_turn_its_language(tmp_path):
    """Through the Twilio endpoint of a served bot: key 9 switches to English, 0 reaches a person."""
    from .light_server import LightServer

    with LightServer(tmp_path, "--vad", "silent", "--prompt-s", "0.2") as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBOT_")}
        env["VOICEBOT_DATA_DIR"] = str(tmp_path)
        out = subprocess.run(
            [sys.executable, "-m", "voicebot", "call", "--protocol", "twilio", "--dtmf", "90",
             "--json", "--speed", "4", "--url", server.url("/twilio")],
            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert out.returncode == 0, out.stderr
    turns = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert [(t["action"], t["language"]) for t in turns] == [("language", "en"), ("human", "en")]
    calls = SqliteQueueStore(tmp_path / "voicebot.db", create=False).calls()
    assert [(c.forvaltning, c.language) for c in calls] == [("KONTAKTCENTER", "en")]


def test_the_waiting_prompts_follow_the_callers_language(bilingual):
    """A caller switched to English hears the closed-queue, wait and callback prompts in
    English too, not Danish."""
    session = CallSession(ScriptedLine([]), bilingual(BilingualAsr([], "en")))
    assert session.waiting.language == "da"
    session._switch_language("en", "asked", {})
    assert session.waiting.language == "en"


def test_while_the_language_is_unknown_one_moment_is_said_in_every_language(
    bilingual, speaker, catalogue
):
    """A first turn slow to decode gets "et øjeblik" — and its English twin, since the caller
    may not speak Danish and their language is not known yet."""

    class SlowAsr(BilingualAsr):
        def transcribe(self, audio, previous_text=None, prefix=None, languages=None):
            time.sleep(2.0)
            return super().transcribe(audio, previous_text, prefix, languages)

    svc = bilingual(SlowAsr(["I need a new passport"], "en"))
    events = recorded(svc)
    speech = speaker.speak("I need a new passport.", Voice("en"))
    run(CallSession(ScriptedLine([silence(0.5), speech, silence(3.0)]), svc))
    busy = [d["text"] for k, d in events if k == "bot_said" and d["mark"].startswith("busy-")]
    assert busy, said(events)
    assert catalogue.prompt("busy", "da") in busy[0] and catalogue.prompt("busy", "en") in busy[0]


def test_the_danish_prior_keeps_a_call_danish_unless_whisper_is_nearly_sure():
    # Real Danish through the phone line is heard as English at up to 0.98 by Whisper base;
    # only a near-certain lead of another language leaves Danish (asr.language_margin 0.95).
    def chosen(p_en: float) -> str:
        detected = [("<|en|>", p_en), ("<|da|>", 1 - p_en)]
        return choose_language(detected, ("da", "en"), AsrSettings().language_margin)[0]

    assert [chosen(p) for p in (0.6, 0.9, 0.97)] == ["da", "da", "da"]
    assert [chosen(p) for p in (0.98, 0.999)] == ["en", "en"]
