"""The pure logic behind the intent-model comparison and the training-data filter:
CER, the CER filter, sentence-grouped folds, the winner rule, bootstrap clusters,
the report's section markers. Only toy models are trained here."""

from pathlib import Path

import numpy as np
import pytest

from models.compare_intents.data import Variant
from models.compare_intents.families import torch_available
from models.compare_intents.neural import char_vocabulary, encode_chars
from models.compare_intents.report import BEGIN, END, write_section
from models.compare_intents.rules import TIE_BAND, select_first_rule, select_winner
from models.compare_intents.scoring import best_by_cv, cluster_bootstrap, macro_f1
from models.evaluation import first_turn, intent_metrics
from models.intent_data import Example
from models.train_intents import (
    AsrExample,
    char_error_rate,
    filter_asr,
    load_asr_examples,
    sample_weights,
    sentence_folds,
    sentence_of,
)


def _asr(text: str, intent: str, source: str, cer: float) -> AsrExample:
    return AsrExample(text, intent, "asr", source, cer)


def test_char_error_rate_normalises_before_counting():
    assert char_error_rate("Mit pas, 3 uger!", "mit pas tre uger") == 0.0
    assert char_error_rate("pas", "pers") == pytest.approx(2 / 3)  # a→e, +r
    assert char_error_rate("pas", "") == 1.0
    assert char_error_rate("", "") == 0.0


def test_filter_keeps_written_rows_and_drops_garbage_transcripts():
    written = Example("jeg har mistet mit pas", "passport")
    good = _asr("jeg har mistet mit pas", "passport", written.text, 0.0)
    garbage = _asr("– – som du –", "passport", written.text, 0.95)
    assert filter_asr([written, good, garbage], 0.5) == [written, good]
    assert filter_asr([written, good, garbage], None) == [written, good, garbage]
    assert filter_asr([written, garbage], 0.95) == [written, garbage]  # the threshold is inclusive


def test_load_asr_examples_computes_cer_and_drops_empty_rows_for_training(tmp_path: Path):
    path = tmp_path / "asr.tsv"
    path.write_text(
        "text\tintent\tsource_text\tvoice\tsnr_db\n"
        "mit pas\tpassport\tmit pas\tda/150/50\t20\n"
        "\tpassport\tmit pas\tda+f3/140/65\t20\n",
        encoding="utf-8",
    )
    train = load_asr_examples(path)
    assert [(e.text, e.cer, e.source_text) for e in train] == [("mit pas", 0.0, "mit pas")]
    evaluation = load_asr_examples(path, keep_empty=True)
    assert len(evaluation) == 2 and evaluation[1].cer == 1.0


def test_transcripts_share_the_fold_of_their_written_sentence():
    written = [
        Example(f"sætning {i} om {intent}", intent) for intent in ("a", "b") for i in range(10)
    ]
    transcripts = [_asr(f"hørt {i}", w.intent, w.text, 0.5) for i, w in enumerate(written)]
    folds = sentence_folds(written + transcripts, n_splits=5)
    fold_of = dict(zip([sentence_of(e) for e in written + transcripts], folds, strict=True))
    for t, k in zip(transcripts, folds[len(written) :], strict=True):
        assert k == fold_of[t.source_text]
    # The split depends on the written sentences only: adding transcripts moves nothing.
    np.testing.assert_array_equal(sentence_folds(written, n_splits=5), folds[: len(written)])
    assert sorted(np.bincount(folds[: len(written)])) == [4, 4, 4, 4, 4]


def test_variant_rows_and_weights():
    pool = [
        Example("mit pas", "passport"),
        _asr("mit pas", "passport", "mit pas", 0.1),
        _asr("pers", "passport", "mit pas", 0.8),
    ]
    assert Variant("written").rows(pool).tolist() == [True, False, False]
    assert Variant("all", use_asr=True).rows(pool).tolist() == [True, True, True]
    assert Variant("cer", use_asr=True, max_cer=0.5).rows(pool).tolist() == [True, True, False]
    assert sample_weights(pool, 0.25).tolist() == [1.0, 0.25, 0.25]


def test_best_by_cv_prefers_the_smaller_value_on_a_tie():
    assert best_by_cv({0.9: 0.40, 0.7: 0.42, 0.5: 0.42}) == 0.5
    assert best_by_cv({0.25: 0.3, 0.5: 0.31}) == 0.5


def test_macro_f1_agrees_with_intent_metrics():
    rng = np.random.default_rng(0)
    gold, pred = rng.integers(0, 5, 200), rng.integers(0, 6, 200)
    labels = [str(i) for i in range(6)]
    expected = intent_metrics([str(g) for g in gold], [str(p) for p in pred], labels=labels)[
        "macro_f1"
    ]
    assert macro_f1(gold, pred, 6) == pytest.approx(expected)


def test_bootstrap_draws_whole_clusters():
    clusters = ["a", "a", "b", "b", "c"]
    for sample in cluster_bootstrap(clusters, n=50, seed=1):
        for pair in ((0, 1), (2, 3)):  # a cluster's rows come in together, as often as each other
            assert np.sum(sample == pair[0]) == np.sum(sample == pair[1])


def _row(
    name: str,
    clean: float,
    asr: float,
    far: float,
    family: str = "x",
    p95: float = 1.0,
    wrong: float = 0.01,
    unflagged: int = 0,
) -> dict:
    return {
        "name": name,
        "family": family,
        "clean_f1": clean,
        "asr_f1": asr,
        "asr_far": far,
        "p95_ms": p95,
        "asr_wrong": wrong,
        "real_unflagged": unflagged,
    }


def test_first_rule():
    # Plain best ASR macro-F1.
    assert select_first_rule([_row("a", 0.9, 0.40, 0.5), _row("b", 0.9, 0.50, 0.5)]) == "b"
    # A tie inside the band goes to the lower false-accept rate, then to logreg.
    half = TIE_BAND / 2
    assert select_first_rule([_row("a", 0.9, 0.50, 0.5), _row("b", 0.9, 0.50 - half, 0.3)]) == "b"
    assert (
        select_first_rule([_row("a", 0.9, 0.50, 0.3), _row("b", 0.9, 0.50 - half, 0.3, "logreg")])
        == "b"
    )
    # A model that buys its ASR score with a clear loss on clean text is not eligible.
    assert select_first_rule([_row("a", 0.80, 0.60, 0.1), _row("b", 0.90, 0.50, 0.5)]) == "b"
    # Nor is one over the latency budget.
    assert (
        select_first_rule([_row("a", 0.9, 0.60, 0.1, p95=500.0), _row("b", 0.9, 0.50, 0.5)]) == "b"
    )


def test_rule_in_force_puts_caller_safety_first():
    # The best-scoring model is out if it acts wrongly too often, or acts on real non-requests.
    assert (
        select_winner([_row("a", 0.95, 0.60, 0.1, wrong=0.30), _row("b", 0.85, 0.50, 0.5)]) == "b"
    )
    assert (
        select_winner([_row("a", 0.95, 0.60, 0.1, unflagged=3), _row("b", 0.85, 0.50, 0.5)]) == "b"
    )
    # The clean slack is measured among safe candidates only.
    assert (
        select_winner(
            [
                _row("a", 0.99, 0.10, 0.1, wrong=0.30),
                _row("b", 0.85, 0.50, 0.5),
                _row("c", 0.86, 0.20, 0.5),
            ]
        )
        == "b"
    )
    # A tie in ASR macro-F1 goes to the fewest wrong acts, then to logreg.
    half = TIE_BAND / 2
    assert (
        select_winner(
            [_row("a", 0.9, 0.50, 0.1, wrong=0.04), _row("b", 0.9, 0.50 - half, 0.5, wrong=0.02)]
        )
        == "b"
    )
    assert (
        select_winner([_row("a", 0.9, 0.50, 0.1), _row("b", 0.9, 0.50 - half, 0.5, "logreg")])
        == "b"
    )
    # Nobody safe: the first rule decides.
    assert (
        select_winner([_row("a", 0.9, 0.40, 0.5, wrong=0.5), _row("b", 0.9, 0.50, 0.5, wrong=0.5)])
        == "b"
    )


def test_write_section_replaces_only_the_generated_part(tmp_path: Path):
    path = tmp_path / "RESULTS.md"
    write_section(path, f"{BEGIN}\none\n{END}\n")
    path.write_text(
        "# Title\n\n" + path.read_text(encoding="utf-8") + "\n## Discussion\nkept\n",
        encoding="utf-8",
    )
    write_section(path, f"{BEGIN}\ntwo\n{END}\n")
    text = path.read_text(encoding="utf-8")
    assert "two" in text and "one" not in text and text.startswith("# Title") and "kept" in text


def test_char_encoding_pads_with_zero_and_maps_unseen_characters_to_one():
    vocabulary = char_vocabulary(["pas"])
    ids = encode_chars(["pas", "Paxx!"], vocabulary)  # normalised: " pas ", " paxx "
    assert ids.shape == (2, 6)
    assert ids[0, -1] == 0 and ids[1, 3] == ids[1, 4] == 1  # "pas" is padded; "x" was never seen
    assert (ids[0, :5] > 1).all()


@pytest.mark.skipif(not torch_available(), reason="torch (the bench extra) is not installed")
def test_char_cnn_scores_a_sentence_the_same_alone_and_in_a_padded_batch():
    import torch

    from models.compare_intents.neural import _char_cnn

    torch.manual_seed(0)
    vocabulary = char_vocabulary(["mit pas er væk", "ja"])
    net = _char_cnn(len(vocabulary) + 2, 3).eval()
    with torch.no_grad():
        alone = net(torch.from_numpy(encode_chars(["ja"], vocabulary)))
        batch = net(torch.from_numpy(encode_chars(["mit pas er væk", "ja"], vocabulary)))
    torch.testing.assert_close(alone[0], batch[1], atol=1e-5, rtol=1e-5)


def test_exported_logreg_scores_as_scikit_learn_does(tmp_path: Path):
    """The hand-written ONNX graph keeps scikit-learn's sublinear TF (1 + log count), which
    skl2onnx's converter does not, also for repeated words and for words never seen."""
    import json

    from models.train_intents import LogReg, export_onnx
    from voicebot.understanding import IntentModel

    texts = [
        "mit pas er væk",
        "nyt pas til mit barn",
        "pas pas pas",
        "skraldet er ikke hentet",
        "skraldespanden er fuld",
        "storskrald afhentning",
        "mit kørekort",
        "kørekort fornyelse",
    ]
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    model = LogReg.fit(texts, y)
    path = tmp_path / "intent.onnx"
    export_onnx(model.pipeline, len(model.vocabulary), path)
    path.with_suffix(".json").write_text(
        json.dumps(
            {
                "classes": ["passport", "waste", "driving_licence"],
                "vocabulary": model.vocabulary,
                "temperature": 1.0,
            }
        )
    )
    served = IntentModel(path)
    probe = ["pas pas pas pas", "skrald skrald", "qqq zzz", "mit pas er i skraldet"]
    np.testing.assert_allclose(served.scores(served.counts(probe)), model.scores(probe), atol=1e-4)


def test_first_turn_outcomes():
    gold = ["passport", "waste", "out_of_scope", "moving", "building", "emergency"]
    actions = ["route", "emergency", "human", "confirm", "rephrase", "emergency"]
    intents = ["passport", "emergency", "human_agent", "moving", "building", "emergency"]
    t = first_turn(gold, actions, intents)
    # An out-of-scope call handed on as a request is a wrong act; a confirm question is not an act.
    assert t == {
        "n": 6,
        "acts_right": 2,
        "acts_wrong": 2,
        "false_112": 1,
        "confirms": 1,
        "rephrase": 1,
    }
