import pytest
import yaml

from voicebot.catalogue import INTENT_IDS, CatalogueError, load_catalogue

from .conftest import CATALOGUE, copy_catalogue


def test_shipped_catalogue_is_complete(catalogue):
    assert set(catalogue.intents) == set(INTENT_IDS)
    assert catalogue.intent("passport").forvaltning == "KFF"
    assert catalogue.intent("parking_fine").forvaltning == "TMF"
    assert catalogue.intent("elder_care").forvaltning == "SUF"
    assert catalogue.keypad["0"].intent == "human_agent"
    assert "automatiske" in catalogue.prompt("greeting", "da")  # AI Act Art. 50: a machine
    assert "medarbejder" in catalogue.prompt("greeting", "da")  # and how to reach a person
    assert catalogue.intent("emergency").answer["da"].lower().startswith("ring et et to")


def _broken(tmp_path, edit) -> str:
    path = copy_catalogue(tmp_path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(CatalogueError) as err:
        load_catalogue(path)
    message = str(err.value)
    assert str(path) in message  # the file is named
    return message


def test_unknown_forvaltning_names_the_entry(tmp_path):
    msg = _broken(tmp_path, lambda d: d["intents"]["waste"].update(forvaltning="XYZ"))
    assert "intents.waste.forvaltning" in msg and "XYZ" in msg


def test_missing_intent_is_named(tmp_path):
    msg = _broken(tmp_path, lambda d: d["intents"].pop("mitid"))
    assert "mitid" in msg


def test_answer_action_without_answer_text(tmp_path):
    msg = _broken(tmp_path, lambda d: d["intents"]["passport"].pop("answer"))
    assert "intents.passport" in msg and "answer" in msg


def test_keypad_zero_must_reach_a_person(tmp_path):
    msg = _broken(tmp_path, lambda d: d["keypad"]["0"].update(intent="waste"))
    assert "keypad.0" in msg


def test_unknown_field_is_named(tmp_path):
    msg = _broken(tmp_path, lambda d: d["intents"]["waste"].update(queue_colour="red"))
    assert "intents.waste.queue_colour" in msg


def test_not_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("intents: [unclosed", encoding="utf-8")
    with pytest.raises(CatalogueError, match="not valid YAML"):
        load_catalogue(path)


def test_routing_is_data_a_moved_task_needs_no_code_change(tmp_path):
    path = copy_catalogue(tmp_path)
    data = yaml.safe_load(CATALOGUE.read_text(encoding="utf-8"))
    data["intents"]["elder_care"]["forvaltning"] = "SOF"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    assert load_catalogue(path).intent("elder_care").forvaltning == "SOF"


def test_bad_settings_name_the_file_and_every_field(tmp_path):
    from voicebot.config import ConfigError, load_settings

    path = tmp_path / "voicebot.yaml"
    path.write_text("endpointing:\n  silence_ms: 20\nasr:\n  beam: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    message = str(err.value)
    assert str(path) in message
    assert "endpointing.silence_ms" in message and "asr.beam" in message


@pytest.mark.parametrize("text", ["?\n", "1: x\n", "true: 3\n"])
def test_settings_file_with_keys_that_are_not_names_fails_with_the_file(tmp_path, text):
    # Found by tests/test_fuzz.py: YAML "?" is {None: None}, which used to raise TypeError.
    from voicebot.config import ConfigError, load_settings

    path = tmp_path / "voicebot.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="setting names must be text"):
        load_settings(path)


def test_an_unknown_prompt_placeholder_fails_the_start_naming_the_entry(tmp_path):
    """Issue 13 #9: `{evil}` in the route prompt used to pass and silence every routed caller."""
    msg = _broken(
        tmp_path, lambda d: d["prompts"]["route"].update(da="Jeg stiller dig videre til {evil}.")
    )
    assert "prompts.route" in msg and "{evil}" in msg and "{queue}" in msg


def test_a_placeholder_in_a_prompt_spoken_as_written_fails_the_start(tmp_path):
    msg = _broken(tmp_path, lambda d: d["prompts"]["goodbye"].update(da="Farvel {name"))
    assert "prompts.goodbye" in msg
    msg = _broken(tmp_path, lambda d: d["prompts"]["keypad_menu"].update(da="Tryk {queue}."))
    assert "prompts.keypad_menu" in msg and "{queue}" in msg and "{menu}" in msg
