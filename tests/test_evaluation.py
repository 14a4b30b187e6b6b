"""WER/CER with Danish normalisation, manifests, and intent metrics on known inputs."""

import math

import pytest

from models.evaluation import (
    error_rates,
    expected_calibration_error,
    intent_metrics,
    load_manifest,
    normalize_danish,
)  # fmt: skip


def test_danish_normalisation():
    assert normalize_danish("Pas, 3 uger!") == "pas tre uger"
    assert normalize_danish("Det koster 25 kr.") == "det koster femogtyve kr"
    assert normalize_danish("P-afgift på Østerbro") == "p afgift på østerbro"


def test_known_error_rates():
    assert error_rates(["jeg skal have et pas"], ["jeg skal have et pas"])["wer"] == 0.0
    # one substitution in five words
    assert error_rates(["jeg skal have et pas"], ["jeg skal have et pers"])["wer"] == pytest.approx(
        0.2
    )
    # corpus WER sums errors: 1 error over 5 + 2 words = 1/7
    r = error_rates(["jeg skal have et pas", "hej med"], ["jeg skal have et pers", "hej med"])
    assert r["wer"] == pytest.approx(1 / 7)
    assert error_rates(["tre uger"], ["3 uger"])["wer"] == 0.0  # numbers are words
    assert math.isnan(error_rates([""], ["noget"])["wer"])


def test_manifest_paths_are_relative_to_the_manifest(tmp_path):
    (tmp_path / "sub").mkdir()
    manifest = tmp_path / "sub" / "m.tsv"
    manifest.write_text("# comment\na.wav\tHej med dig\n\n/abs/b.wav\tpas\n", encoding="utf-8")
    items = load_manifest(manifest)
    assert [str(i.audio) for i in items] == [str(tmp_path / "sub" / "a.wav"), "/abs/b.wav"]
    assert items[0].reference == "Hej med dig"
    manifest.write_text("no tab here\n", encoding="utf-8")
    with pytest.raises(ValueError, match="m.tsv:1"):
        load_manifest(manifest)


def test_intent_metrics_on_a_known_confusion():
    gold = ["passport", "passport", "waste", "out_of_scope", "out_of_scope"]
    pred = ["passport", "waste", "waste", "out_of_scope", "passport"]
    m = intent_metrics(gold, pred, [0.9, 0.6, 0.8, 0.7, 0.5])
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["per_intent_recall"] == {"out_of_scope": 0.5, "passport": 0.5, "waste": 1.0}
    assert m["oos_false_accept_rate"] == pytest.approx(
        0.5
    )  # one of two OOS calls taken as an errand
    assert m["oos_precision"] == 1.0 and m["oos_recall"] == 0.5
    # macro-F1: passport P=1/2 R=1/2 F=1/2; waste P=1/2 R=1 F=2/3; oos P=1 R=1/2 F=2/3
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)
    assert sum(map(sum, m["confusion"])) == 5


def test_expected_calibration_error():
    assert expected_calibration_error([1.0, 1.0], [True, True]) == pytest.approx(0.0)
    assert expected_calibration_error([0.9, 0.9], [False, False]) == pytest.approx(0.9)


def test_eval_intents_reports_the_dialogues_first_action(tmp_path, capsys):
    import json

    from voicebot.cli import main

    tsv = tmp_path / "calls.tsv"
    tsv.write_text(
        "text\tintent\nmin skraldespand er ikke blevet tømt\twaste\n"
        "min mand er faldet og bløder\temergency\nhvad bliver vejret i morgen\tout_of_scope\n",
        encoding="utf-8",
    )
    assert main(["eval-intents", str(tsv), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    turn = report["first_turn"]
    assert turn["n"] == 3 and turn["acts_right"] >= 2  # the waste route and the 112 answer
    assert turn["acts_right"] + turn["acts_wrong"] + turn["confirms"] + turn["rephrase"] == 3


def test_one_tsv_reader_keeps_empty_transcripts_only_when_asked(tmp_path):
    from models.intent_data import load_tsv

    path = tmp_path / "heard.tsv"
    path.write_text("text\tintent\n  mit pas \tpassport\n\tpassport\n", encoding="utf-8")
    assert [(e.text, e.intent) for e in load_tsv(path)] == [("mit pas", "passport")]
    assert [e.text for e in load_tsv(path, keep_empty=True)] == ["mit pas", ""]
    (tmp_path / "bad.tsv").write_text("sentence\tlabel\nx\ty\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.tsv"):
        load_tsv(tmp_path / "bad.tsv")
