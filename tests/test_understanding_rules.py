"""What a trigger-phrase rule matches and decides, what the classifier wrapper reports
(alternatives, explanation, calibration) and the features it shares with training
(voicebot/understanding.py; issue 19: survivors of mutation testing)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from voicebot.understanding import (
    IntentClassifier,
    IntentModel,
    Understanding,
    normalize,
    softmax,
    text_features,
)


# == the rules ===============================================================================
def test_a_trigger_phrase_decides_with_full_confidence_and_names_itself(classifier):
    u = classifier.classify("Min mor BLØDER!")
    assert u == Understanding("emergency", 1.0, [], ["bløder"], rule="trigger phrase 'bløder'")


def test_emergency_wins_over_another_rule_in_the_same_turn(classifier, catalogue):
    danish = IntentClassifier(classifier.model, catalogue, "da")
    # human_agent comes first in the catalogue; its phrase is heard first in the turn too.
    u = danish.classify("medarbejder, min mor er faldet")
    assert u.intent == "emergency" and u.rule == "trigger phrase 'er faldet'"
    assert danish.classify("jeg vil tale med en medarbejder").intent == "human_agent"


def test_a_phrase_matches_whole_words_at_either_end_of_the_turn(classifier):
    assert classifier.classify("bløder").rule == "trigger phrase 'bløder'"
    assert classifier.classify("omstilling tak").rule == "trigger phrase 'omstilling'"
    for near_miss in ("blødere kanter på bordet", "omstillingen af skolerne", "ubrand"):
        assert classifier.classify(near_miss).rule is None, near_miss


def test_the_rules_are_the_classifiers_language_and_default_to_the_catalogues(
    classifier, catalogue
):
    default = IntentClassifier(classifier.model, catalogue)
    assert default.language == catalogue.default_language == "da"
    assert default.classify("det brænder").rule == "trigger phrase 'det brænder'"
    english = IntentClassifier(classifier.model, catalogue, "en")
    assert english.language == "en"
    assert english.classify("I need a new driving licence").intent == "driving_licence"
    assert english.classify("driving licence").rule == "trigger phrase 'driving licence'"
    assert default.classify("driving licence").rule is None  # not a Danish rule
    nowhere = IntentClassifier(classifier.model, catalogue, "xx")  # no phrases in that language
    assert nowhere.classify("det brænder").rule is None


# == the model's answer ======================================================================
def test_the_answer_is_the_most_probable_intent_with_the_next_two_as_alternatives(classifier):
    text = "jeg skal have et nyt pas til min datter og min søn skal også have pas og kørekort"
    u = classifier.classify(text)
    probs = classifier.model.probabilities([normalize(text)])[0]
    ranked = sorted(zip(classifier.model.classes, probs, strict=True), key=lambda cp: -cp[1])
    assert (u.intent, u.confidence) == (ranked[0][0], pytest.approx(ranked[0][1]))
    assert u.alternatives == [(c, pytest.approx(p)) for c, p in ranked[1:3]]
    assert u.rule is None
    assert classifier.classify(text, explain=False).explanation == []


def test_a_turn_with_no_words_is_out_of_scope_with_nothing_else(classifier):
    assert classifier.classify("  ...  ") == Understanding("out_of_scope", 0.0, [], [])


def test_the_explanation_is_at_most_three_words_each_once_that_mattered(classifier):
    long = classifier.classify(
        "jeg skal have et nyt pas til min datter og min søn skal også have pas og kørekort"
    )
    assert long.explanation == ["kørekort", "også", "min"]  # the three largest drops
    # both "pas" lower the probability by more than 0.01: named once
    assert classifier.classify("pas til mig og pas til min søn").explanation == ["pas"]
    # "tak" changes nothing: a two-word turn is not explained by both words
    assert classifier.classify("kørekort tak").explanation == ["kørekort"]
    assert classifier.classify("skraldespand skraldespand ikke tømt").explanation == []


def test_as_dict_rounds_to_four_places_and_keeps_every_field():
    u = Understanding("passport", 0.123456, [("mitid", 0.0123456)], ["pas"], rule=None)
    assert u.as_dict() == {
        "intent": "passport",
        "confidence": 0.1235,
        "alternatives": [["mitid", 0.0123]],
        "explanation": ["pas"],
        "rule": None,
    }


# == the model file ==========================================================================
def test_a_missing_model_names_the_file_and_how_to_make_it(tmp_path):
    how = r"train it with `voicebot train-intents`$"
    with pytest.raises(FileNotFoundError, match=r"intent\.onnx \(\+ intent\.json\); " + how):
        IntentModel(tmp_path / "intent.onnx")
    (tmp_path / "intent.onnx").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=how):
        IntentModel(tmp_path / "intent.onnx")  # the vocabulary file alone is missing


def test_the_intent_session_runs_on_one_thread(classifier):
    """Every call's classification shares the cores with Whisper: one thread per run."""
    options = IntentModel(classifier.model.path)._session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)


def test_the_model_reads_its_classes_vocabulary_and_temperature(classifier, tmp_path):
    model = classifier.model
    meta = json.loads(model.path.with_suffix(".json").read_text(encoding="utf-8"))
    assert model.classes == meta["classes"] and model.vocabulary == meta["vocabulary"]
    assert model.temperature == meta["temperature"] != 1.0
    assert "vocabulary" not in model.meta and model.meta["classes"] == meta["classes"]
    # A model exported without calibration is served uncalibrated (temperature 1).
    shutil.copy(model.path, tmp_path / "intent.onnx")
    del meta["temperature"]
    (tmp_path / "intent.json").write_text(json.dumps(meta), encoding="utf-8")
    assert IntentModel(tmp_path / "intent.onnx").temperature == 1.0


def test_a_higher_temperature_makes_the_model_less_sure(classifier):
    model = IntentModel(classifier.model.path)
    text = ["jeg skal forny mit kørekort"]
    logits = model.scores(model.counts(text))
    model.temperature = 1.0
    sharp = model.probabilities(text)[0]
    np.testing.assert_allclose(sharp, softmax(logits)[0], atol=1e-9)
    model.temperature = 4.0
    flat = model.probabilities(text)[0]
    assert flat.max() < sharp.max() and np.argmax(flat) == np.argmax(sharp)


def test_counts_count_every_occurrence_of_a_known_feature_and_ignore_unknown_ones(classifier):
    model = classifier.model
    counts = model.counts(["pas pas", "zzqx"])
    assert counts.shape == (2, len(model.vocabulary))
    assert counts[0, model.vocabulary["w:pas"]] == 2.0
    assert counts[0, model.vocabulary["c:pas"]] == 2.0
    assert counts[1].sum() == 0.0  # nothing of "zzqx" is in the vocabulary


def test_softmax_takes_a_single_row_too():
    np.testing.assert_allclose(softmax(np.array([0.0, np.log(3.0)])), [0.25, 0.75])


# == features shared with training ===========================================================
def test_normalize_composes_accents_and_keeps_danish_letters_and_digits():
    assert normalize("  Café?  Ring 112!! Æbler, ØL og Å ") == "café ring 112 æbler øl og å"
    assert normalize("cafe\u0301") == "café"  # a decomposed é is one letter, not a break
    assert normalize("...") == ""


def test_text_features_are_words_bigrams_and_3_to_5_grams_with_word_edges():
    assert text_features("Nyt pas") == [
        "w:nyt",
        "w:pas",
        "b:nyt_pas",
        "c: ny",
        "c:nyt",
        "c:yt ",
        "c: nyt",
        "c:nyt ",
        "c: nyt ",
        "c: pa",
        "c:pas",
        "c:as ",
        "c: pas",
        "c:pas ",
        "c: pas ",
    ]


def test_a_short_word_still_gives_one_gram_of_each_length():
    assert text_features("å") == ["w:å", "c: å ", "c: å ", "c: å "]
    assert text_features("ok") == ["w:ok", "c: ok", "c:ok ", "c: ok ", "c: ok "]
