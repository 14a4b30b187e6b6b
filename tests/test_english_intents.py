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
    tsv.write_text("text\tintent\tlanguage\n"
                   "min skraldespand er ikke blevet tømt\twaste\tda\n"
                   "hvad bliver vejret i morgen\tout_of_scope\tda\n"
                   "my husband collapsed and is not breathing\temergency\ten\n",
                   encoding="utf-8")
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
