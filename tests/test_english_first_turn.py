"""The English first turn (issue 14): a language's own dialogue thresholds, English-only trigger
phrases, and eval-intents scoring each row with its language's model as the gateway does."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.conftest import copy_catalogue
from voicebot.catalogue import CatalogueError, load_catalogue
from voicebot.config import ConfigError, DialogueSettings, Thresholds, load_settings
from voicebot.dialogue import DialoguePolicy
from voicebot.understanding import Understanding


class _NeverAsked:
    def classify(self, text: str, explain: bool = True) -> Understanding:
        raise AssertionError("the turn comes with its understanding")


def _first_action(catalogue, settings: DialogueSettings, language: str, confidence: float) -> str:
    policy = DialoguePolicy(catalogue, _NeverAsked(), settings, language)  # type: ignore[arg-type]
    understood = Understanding("passport", confidence, [], [])
    return policy.on_utterance("I need a new passport", understood).action


def test_a_language_with_its_own_thresholds_is_held_to_them(catalogue):
    settings = DialogueSettings(
        accept=0.6, confirm=0.35, per_language={"en": Thresholds(accept=0.85, confirm=0.6)}
    )
    # 0.7: acted on at once in Danish, asked about in English; 0.5: asked in Danish, rephrase in English.
    assert _first_action(catalogue, settings, "da", 0.7) == "answer"
    assert _first_action(catalogue, settings, "en", 0.7) == "confirm"
    assert _first_action(catalogue, settings, "da", 0.5) == "confirm"
    assert _first_action(catalogue, settings, "en", 0.5) == "rephrase"


def test_a_language_that_switches_mid_call_takes_its_thresholds_along(catalogue):
    settings = DialogueSettings(per_language={"en": Thresholds(accept=0.85, confirm=0.6)})
    policy = DialoguePolicy(catalogue, _NeverAsked(), settings, "da")  # type: ignore[arg-type]
    policy.set_language("en", _NeverAsked())  # type: ignore[arg-type]
    assert policy.on_utterance("passport", Understanding("passport", 0.7, [], [])).action == (
        "confirm"
    )


def test_shipped_settings_give_english_its_own_thresholds_and_keep_danish():
    dialogue = load_settings(None).dialogue
    assert (dialogue.thresholds("da").accept, dialogue.thresholds("da").confirm) == (0.6, 0.35)
    english = dialogue.thresholds("en")
    assert english.accept > 0.6 and english.confirm < english.accept


@pytest.mark.parametrize(
    ("per_language", "field"),
    [
        ({"en": {"accept": 0.4, "confirm": 0.5}}, "dialogue.per_language.en"),
        ({"xx": {"accept": 0.8, "confirm": 0.5}}, "dialogue.per_language"),
    ],
)
def test_bad_per_language_thresholds_fail_the_start_naming_the_field(
    tmp_path: Path, per_language: dict, field: str
):
    config = tmp_path / "voicebot.yaml"
    config.write_text(yaml.safe_dump({"dialogue": {"per_language": per_language}}))
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_settings(config)


def test_english_only_rules_decide_in_english_and_never_in_danish(tmp_path, catalogue):
    from voicebot.services import load_classifiers

    classifiers = load_classifiers(load_settings(None, data_dir=tmp_path), catalogue)
    u = classifiers["en"].classify("uh the garbage truck skipped us")
    assert u.intent == "waste" and u.rule
    assert classifiers["da"].classify("garbage").rule is None
    # "emergency passport" is a passport errand: no rule sends that caller to 112.
    assert classifiers["en"].classify("I need an emergency passport").intent != "emergency"


def test_an_empty_rule_list_must_still_be_written_per_language(tmp_path):
    path = copy_catalogue(tmp_path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert data["intents"]["waste"]["trigger_phrases"]["da"] == []  # said on purpose: loads
    load_catalogue(path, ["da", "en"])
    data["intents"]["waste"]["trigger_phrases"].pop("da")
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(CatalogueError, match="intents.waste.trigger_phrases"):
        load_catalogue(path, ["da", "en"])


def test_eval_intents_scores_english_rows_with_the_english_model(tmp_path: Path, capsys):
    from voicebot.cli import main

    tsv = tmp_path / "en.tsv"
    tsv.write_text(
        "text\tintent\n"
        "I lost my passport on the train\tpassport\n"
        "I cannot log in because my MitID is locked\tmitid\n"
        "the home carer did not visit my father\telder_care\n"
        "my husband collapsed and is not breathing\temergency\n",
        encoding="utf-8",
    )
    assert main(["eval-intents", str(tsv), "--language", "en", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["languages"]["en"]["accuracy"] == 1.0


def _wav(path: Path, seconds: float = 1.5) -> Path:
    import wave

    import numpy as np

    samples = (np.random.default_rng(0).normal(0, 0.1, int(16000 * seconds)) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(samples.tobytes())
    return path


def _eval_audio(tmp_path: Path, monkeypatch, capsys, asr, *extra: str) -> dict:
    from voicebot.cli import main

    monkeypatch.setattr("voicebot.asr.WhisperAsr", lambda *args, **kwargs: asr)
    monkeypatch.setattr("models.commands.provision_for", lambda settings: None)
    _wav(tmp_path / "turn.wav")
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("turn.wav\tpassport\n", encoding="utf-8")
    assert main(["eval-intents", str(manifest), "--audio", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_intents_audio_detects_the_language_as_the_gateway_does(
    tmp_path: Path, monkeypatch, capsys
):
    from tests.test_language import BilingualAsr

    asr = BilingualAsr(["I lost my passport on the train"], "en")
    report = _eval_audio(tmp_path, monkeypatch, capsys, asr)
    # Asked as on a call's first turn: the starting language first, then the others.
    assert asr.asked == [("da", "en")]
    assert set(report["languages"]) == {"en"}  # understood and reported in the language heard
    assert report["languages"]["en"]["accuracy"] == 1.0


def test_eval_intents_audio_with_a_language_forces_it(tmp_path: Path, monkeypatch, capsys):
    from tests.test_language import BilingualAsr

    asr = BilingualAsr(["I lost my passport on the train"], "en")
    report = _eval_audio(tmp_path, monkeypatch, capsys, asr, "--language", "en")
    assert asr.asked == [("en",)] and set(report["languages"]) == {"en"}


def test_language_detection_benchmark_applies_the_margin_as_the_gateway_does():
    import numpy as np

    from benchmarks.language_detection import Clip, Detected, rate

    clip = Clip("real-da", "da", np.zeros(16000, dtype=np.float32))
    leaning_english = Detected(clip, {"da": 0.3, "en": 0.7})  # leads by 0.4
    assert rate([leaning_english], ["da", "en"], 0.2) == 0.0  # heard as English
    assert rate([leaning_english], ["da", "en"], 0.5) == 1.0  # the Danish prior keeps Danish


def test_a_possible_emergency_in_a_stricter_language_hears_112_first_and_goes_on(catalogue):
    """A language's stricter confirm threshold must not delay "ring 112": from the base
    threshold (dialogue.confirm) the caller hears it at once in every language. Below the
    language's accept threshold it is a notice and the call goes on (the band where garbled
    errands were sent to 112, bench calls stop 21); from it, the emergency is acted on."""
    settings = DialogueSettings(
        accept=0.6, confirm=0.35, per_language={"en": Thresholds(accept=0.85, confirm=0.6)}
    )
    policy = DialoguePolicy(catalogue, _NeverAsked(), settings, "en")  # type: ignore[arg-type]
    decision = policy.on_utterance("my father fell", Understanding("emergency", 0.45, [], []))
    assert decision.say.startswith("If someone is in danger, hang up and call one one two now.")
    assert decision.emergency_notice and not decision.hand_off
    sure = policy.on_utterance("my father fell", Understanding("emergency", 0.85, [], []))
    assert (sure.action, sure.hand_off) == ("emergency", True)


def test_eval_intents_counts_the_112_notices_of_possible_emergencies(catalogue):
    """A possible emergency (the model alone, below English's own confirm threshold) is a
    112 notice, not a needless 112: eval-intents reports whom the notice reached."""
    from models.commands import _intent_metrics_of

    heard = {
        "my dad fell down": Understanding("emergency", 0.45, [], []),
        "my pass port is lost": Understanding("emergency", 0.45, [], []),
        "my father is not breathing": Understanding("emergency", 0.95, [], []),
    }
    classifier = SimpleNamespace(classify=lambda text, explain=True: heard[text])
    rows = [
        ("my dad fell down", "emergency", "en"),
        ("my pass port is lost", "passport", "en"),
        ("my father is not breathing", "emergency", "en"),
    ]
    settings = load_settings(None)
    first = _intent_metrics_of(rows, {"en": classifier}, catalogue, settings)["first_turn"]
    assert (first["notice_112_emergency"], first["notice_112_other"]) == (1, 1)
    assert (first["false_112"], first["acts_right"]) == (0, 1)
