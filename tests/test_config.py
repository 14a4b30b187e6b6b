"""Settings precedence: overrides (command-line flags) > VOICEBOT_* environment > YAML file >
defaults, merged field by field, so one environment variable never discards a file's section."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from voicebot.config import ConfigError, load_settings

TOKEN = "env-twilio-auth-token-0123456789"
RAW_TOKEN = "yaml-raw-media-token-0123456789"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.startswith("VOICEBOT_"):
            monkeypatch.delenv(name)


def write_config(tmp_path: Path, values: dict) -> Path:
    path = tmp_path / "voicebot.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def test_an_environment_variable_keeps_the_rest_of_the_files_section(tmp_path, monkeypatch):
    """The form SECURITY.md recommends: the YAML's other security values must still apply."""
    path = write_config(
        tmp_path, {"security": {"softphone_embed_token": False, "media_tokens": {"raw": RAW_TOKEN}}}
    )
    monkeypatch.setenv("VOICEBOT_SECURITY__TWILIO_AUTH_TOKEN", TOKEN)
    security = load_settings(path).security
    assert security.twilio_auth_token == TOKEN
    assert security.softphone_embed_token is False
    assert security.media_tokens == {"raw": RAW_TOKEN}


# One setting the file gives and the environment overrides, one the file gives alone, per section.
SECTIONS = [
    ("endpointing", {"silence_ms": 600, "no_input_s": 12.0}, "SILENCE_MS", "700", "no_input_s", 12.0),
    ("asr", {"beam_size": 3, "workers": 2}, "WORKERS", "4", "beam_size", 3),
    ("dialogue", {"accept": 0.7, "confirm": 0.2}, "ACCEPT", "0.8", "confirm", 0.2),
    ("tts", {"rate_wpm": 140, "pitch": 40}, "RATE_WPM", "180", "pitch", 40),
    ("telephony", {"audiosocket_port": 9100, "asterisk_answer": False}, "AUDIOSOCKET_PORT", "9200",
     "asterisk_answer", False),
    ("security", {"send_timeout_s": 5.0, "softphone_embed_token": False}, "SEND_TIMEOUT_S", "7.5",
     "softphone_embed_token", False),
    ("privacy", {"record_audio": True, "recording_purpose": "kvalitet"}, "RECORDING_PURPOSE", "oplæring",
     "record_audio", True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("section", "file_values", "env_field", "env_value", "kept", "kept_value"),
    SECTIONS,
    ids=[s[0] for s in SECTIONS],
)
def test_every_section_merges_the_environment_field_by_field(
    tmp_path, monkeypatch, section, file_values, env_field, env_value, kept, kept_value
):
    path = write_config(tmp_path, {section: file_values})
    monkeypatch.setenv(f"VOICEBOT_{section.upper()}__{env_field}", env_value)
    values = getattr(load_settings(path), section)
    assert str(getattr(values, env_field.lower())) == env_value  # the environment wins its field
    assert getattr(values, kept) == kept_value  # the file keeps the others


def test_an_environment_entry_merges_into_a_files_mapping(tmp_path, monkeypatch):
    path = write_config(tmp_path, {"security": {"media_tokens": {"raw": RAW_TOKEN}}})
    monkeypatch.setenv("VOICEBOT_SECURITY__MEDIA_TOKENS__VONAGE", "env-vonage-token-0123456789")
    assert load_settings(path).security.media_tokens == {
        "raw": RAW_TOKEN,
        "vonage": "env-vonage-token-0123456789",
    }


def test_precedence_is_overrides_then_environment_then_file_then_defaults(tmp_path, monkeypatch):
    path = write_config(
        tmp_path, {"port": 9002, "max_calls": 10, "security": {"send_timeout_s": 5.0}}
    )
    assert load_settings(None).port == 8080
    assert load_settings(path).port == 9002
    monkeypatch.setenv("VOICEBOT_PORT", "9001")
    assert load_settings(path).port == 9001
    settings = load_settings(path, port=9000, security={"max_message_bytes": 8192})
    assert settings.port == 9000
    assert settings.max_calls == 10  # untouched by the override
    assert settings.security.max_message_bytes == 8192 and settings.security.send_timeout_s == 5.0
    assert load_settings(path, port=None).port == 9001  # a flag not given overrides nothing


def test_an_unknown_key_in_a_section_fails_naming_file_and_field_even_with_the_environment_set(
    tmp_path, monkeypatch
):
    path = write_config(tmp_path, {"security": {"softphone_embed_tokn": False}})
    monkeypatch.setenv("VOICEBOT_SECURITY__TWILIO_AUTH_TOKEN", TOKEN)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert str(path) in str(err.value) and "security.softphone_embed_tokn" in str(err.value)


def test_a_bad_file_value_overridden_by_the_environment_is_not_used(tmp_path, monkeypatch):
    path = write_config(tmp_path, {"security": {"twilio_auth_token": "short"}})
    with pytest.raises(ConfigError, match="16 characters"):
        load_settings(path)
    monkeypatch.setenv("VOICEBOT_SECURITY__TWILIO_AUTH_TOKEN", TOKEN)
    assert load_settings(path).security.twilio_auth_token == TOKEN


BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\xc3\x28"


def test_a_binary_settings_file_stops_the_start_naming_the_file(tmp_path):
    path = tmp_path / "voicebot.yaml"
    path.write_bytes(BINARY)
    with pytest.raises(ConfigError, match="not UTF-8") as err:
        load_settings(path)
    assert str(path) in str(err.value)


def test_a_binary_catalogue_stops_the_start_naming_the_file(tmp_path):
    from voicebot.catalogue import CatalogueError, load_catalogue

    path = tmp_path / "catalogue.yaml"
    path.write_bytes(BINARY)
    with pytest.raises(CatalogueError, match="not UTF-8") as err:
        load_catalogue(path)
    assert str(path) in str(err.value)
