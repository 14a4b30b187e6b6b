"""English intent data (issue 14): the loaders find both languages, the held-back English split
never leaks into training, make-training-data speaks English with English voices, eval-intents
reports per language, and the rule choosing one model or one per language."""

import json
from pathlib import Path

import pytest

from models.intent_data import (
    asr_path,
    heldout_path,
    load_heldout,
    load_tsv,
    load_utterances,
    row_languages,
    utterances_dir,
)
from voicebot.understanding import normalize

INTENT_IDS = {
    "passport", "driving_licence", "health_card", "moving", "mitid", "parking_permit",
    "parking_fine", "waste", "building", "elder_care", "childcare_school", "job_centre",
    "social_services", "national_body", "human_agent", "emergency", "out_of_scope",
}  # fmt: skip


def test_loaders_find_both_languages_and_keep_them_apart():
    danish, english = load_utterances(), load_utterances(language="en")
    assert {e.intent for e in danish} == INTENT_IDS == {e.intent for e in english}
    counts = {i: sum(e.intent == i for e in english) for i in INTENT_IDS}
    assert min(n for i, n in counts.items() if i != "out_of_scope") >= 60, counts
    assert counts["out_of_scope"] >= 150
    # The Danish loader reads intents/utterances/*.txt only, not the en/ directory inside it.
    # (Single Danish words an English caller says too, "boligstøtte", may be in both.)
    assert all(len(t.split()) == 1 for t in {e.text for e in danish} & {e.text for e in english})
    assert "my husband collapsed" not in {e.text for e in danish}
    assert utterances_dir("en") == utterances_dir() / "en"
    assert asr_path("train", "en").name == "train_asr_en.tsv"
    assert asr_path("heldout").name == "heldout_asr.tsv"
    with pytest.raises(ValueError, match="unknown language"):
        load_utterances(language="sv")


def test_english_held_back_split_has_every_intent_and_says_english():
    heldout = load_heldout("en")
    assert {e.intent for e in heldout} == INTENT_IDS
    assert min(sum(e.intent == i for e in heldout) for i in INTENT_IDS) >= 15
    assert set(row_languages(heldout_path("en"))) == {"en"}
    assert set(row_languages(heldout_path("da"))) == {"da"}  # no column: the default


@pytest.mark.parametrize("language", ["da", "en"])
def test_held_back_split_never_overlaps_training(language):
    """Neither exactly nor after the model's own normalisation (case, punctuation), and not
    with the other language's training data either."""
    training = load_utterances(language="da") + load_utterances(language="en")
    heldout = load_heldout(language)
    assert not {e.text for e in heldout} & {e.text for e in training}
    assert not {normalize(e.text) for e in heldout} & {normalize(e.text) for e in training}


def test_english_asr_transcripts_come_from_english_sentences_in_the_right_split():
    train_rows = load_tsv(asr_path("train", "en"))
    heldout_texts = {e.text for e in load_heldout("en")}
    training_texts = {e.text for e in load_utterances(language="en")}
    from models.intent_data import read_tsv

    sources = {r["source_text"] for r in read_tsv(asr_path("train", "en"), ("source_text",))}
    assert train_rows and sources <= training_texts and not sources & heldout_texts
    held = {r["source_text"] for r in read_tsv(asr_path("heldout", "en"), ("source_text",))}
    assert held and held <= heldout_texts
    voices = {r["voice"].split("/")[0] for r in read_tsv(asr_path("train", "en"), ("voice",))}
    assert voices and all(v.startswith("en") for v in voices)


def test_english_renditions_use_english_voices_and_an_english_asr():
    from models.intent_data import Example
    from models.make_training_data import VOICES_EN, make_training_data, renditions

    items = renditions([Example("my bin was not emptied", "waste")], 2, VOICES_EN)
    assert len(items) == 2 and all(r.voice.name.startswith("en") for r in items)

    class DanishAsr:  # make_training_data must refuse to transcribe English as Danish
        class settings:
            language = "da"

    with pytest.raises(ValueError, match="'en'"):
        make_training_data(DanishAsr(), language="en")  # type: ignore[arg-type]


def _eval_json(args: list[str], capsys) -> dict:
    from voicebot.cli import main

    assert main(["eval-intents", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_intents_reports_each_language(tmp_path: Path, capsys):
    tsv = tmp_path / "both.tsv"
    tsv.write_text(
        "text\tintent\tlanguage\n"
        "min skraldespand er ikke blevet tømt\twaste\tda\n"
        "hvad bliver vejret i morgen\tout_of_scope\tda\n"
        "my husband collapsed and is not breathing\temergency\ten\n",
        encoding="utf-8",
    )
    report = _eval_json([str(tsv)], capsys)
    assert set(report["languages"]) == {"da", "en"}
    assert report["languages"]["da"]["n"] == 2 and report["languages"]["en"]["n"] == 1
    assert report["n"] == 3  # and the whole file, as before
    from voicebot.cli import main

    assert main(["eval-intents", str(tsv)]) == 0
    out = capsys.readouterr().out
    assert "== language da" in out and "== language en" in out and "== all languages" in out


def test_eval_intents_language_option_labels_rows_without_a_column(tmp_path: Path, capsys):
    tsv = tmp_path / "en.tsv"
    tsv.write_text("text\tintent\nI lost my yellow card\thealth_card\n", encoding="utf-8")
    assert set(_eval_json([str(tsv), "--language", "en"], capsys)["languages"]) == {"en"}
    assert set(_eval_json([str(tsv)], capsys)["languages"]) == {"da"}


# Clear requests written for this test, in neither the training nor the held-back data.
CLEAR_ENGLISH = {
    "passport": ["my passport runs out in May and I need a new one", "how much is a passport for an adult",
                 "I lost my passport on the train"],
    "driving_licence": ["I want to renew my driver's license", "can I swap my Indian driving licence",
                        "my driving licence card was stolen"],
    "health_card": ["I lost my yellow health card", "I would like a different GP", "where is my gule kort"],
    "moving": ["I have moved to a new flat and must register it", "how do I report my change of address",
               "we move to Amager on the first"],
    "mitid": ["I cannot log in because my MitID is locked", "I need to get MitID", "the MitID activation code"],
    "parking_permit": ["I want to buy a resident parking permit", "can my guests get a parking permit",
                       "my beboerlicens must change to my new car"],
    "parking_fine": ["I want to complain about my parking ticket", "how can I pay a parking fine",
                     "I got a parking fine but I had a permit"],
    "waste": ["nobody emptied our garbage bins", "I have an old sofa to throw away",
              "which bin is for plastic bottles"],
    "building": ["do I need a building permit for a new carport", "any news on my building case",
                 "I want to build an extension to my house"],
    "elder_care": ["my old mother needs home help", "the home carer did not visit my father",
                   "how do I get a care home place for my dad"],
    "childcare_school": ["I need a kindergarten place for my son", "how do I enroll my daughter in school",
                         "we are waiting for a vuggestue place"],
    "job_centre": ["I am unemployed and need cash benefit", "I have to cancel my jobcenter meeting",
                   "where can I learn Danish for free"],
    "social_services": ["I think the child next door is neglected", "my disabled son needs support",
                        "I am homeless and need a place to sleep"],
    "national_body": ["I need a tax card for my job", "can I get housing benefit for my flat",
                      "when is the state pension paid"],
    "human_agent": ["I want to talk to a real person", "please transfer me to a human",
                    "can I speak to somebody"],
    "emergency": ["my wife collapsed in the kitchen", "there's a fire in our flat",
                  "my father is not breathing anymore"],
    "out_of_scope": ["what will the weather be like tomorrow", "sorry I dialled the wrong number",
                     "my private landlord will not return my deposit"],
}  # fmt: skip


@pytest.fixture(scope="module")
def english_classifier():
    """The English model as the runtime loads it: intent_en.onnx beside the Danish one."""
    from models.train_intents import model_path_for
    from voicebot.catalogue import load_catalogue
    from voicebot.config import load_settings
    from voicebot.understanding import IntentClassifier, IntentModel

    settings = load_settings(None)
    model = IntentModel(model_path_for("en", settings.intent_model))
    assert model.meta["languages"] == ["en"]
    return IntentClassifier(model, load_catalogue(settings.catalogue))


def test_clear_english_requests_are_understood(english_classifier):
    seen = {e.text for e in load_utterances(language="en") + load_heldout("en")}
    assert not {t for texts in CLEAR_ENGLISH.values() for t in texts} & seen
    wrong = [
        (text, intent, english_classifier.classify(text, explain=False).intent)
        for intent, texts in CLEAR_ENGLISH.items()
        for text in texts
        if english_classifier.classify(text, explain=False).intent != intent
    ]
    assert not wrong


def test_english_emergencies_are_acted_on_at_once(english_classifier):
    """Emergency acts at the confirm threshold already (voicebot/dialogue.py): every English
    emergency must reach it."""
    from voicebot.config import load_settings

    confirm = load_settings(None).dialogue.thresholds("en").confirm
    # The issue's own examples first (they are in the training data too).
    issue = ["my husband collapsed", "there's a fire", "he is not breathing"]
    for text in issue + CLEAR_ENGLISH["emergency"] + ["my mother fell and she is bleeding"]:
        u = english_classifier.classify(text, explain=False)
        assert u.intent == "emergency" and u.confidence >= confirm, (text, u.intent, u.confidence)


def test_train_intents_puts_each_language_in_its_own_file(tmp_path: Path):
    from models.train_intents import model_path_for

    danish = tmp_path / "intent.onnx"
    assert model_path_for("da", danish) == danish
    assert model_path_for("en", danish) == tmp_path / "intent_en.onnx"
