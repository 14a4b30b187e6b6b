"""Settings: data with defaults that work, from a YAML file and VOICEBOT_* environment variables.

Precedence (highest first): command-line flags, environment, the YAML file named by
--config or VOICEBOT_CONFIG, the defaults below. Bad values fail at start with the file
and field named.
"""

from __future__ import annotations

import ipaddress
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(Exception):
    """Configuration that cannot be used; the message names the file and the field."""


class Section(BaseModel):
    """A settings section: unknown keys are errors (a misspelt setting must not be ignored)."""

    model_config = ConfigDict(extra="forbid")


class EndpointingSettings(Section):
    # Silence after speech that ends a turn. Measured (README, "Endpointing"): the VAD's
    # longest pause inside a read Danish sentence was 288 ms, so 320 ms cut none; 160 ms
    # more for hesitant, elderly and second-language callers.
    silence_ms: int = Field(480, ge=100, le=3000)
    # A confident, complete partial transcript may end the turn after this shorter silence.
    early_silence_ms: int = Field(240, ge=60, le=3000)
    # Silence is below speech_threshold - 0.15 (vad.Endpointer): at 0.15 or less no window is
    # silence and a turn would never end on silence.
    speech_threshold: float = Field(0.5, gt=0.15, lt=1.0)
    min_speech_ms: int = Field(160, ge=32, le=2000)
    # A turn longer than this is cut and decoded in parts (keeps the encoder window bounded).
    max_turn_s: float = Field(20.0, ge=3.0, le=28.0)
    # Caller silence before the bot asks again (after a prompt has finished playing).
    no_input_s: float = Field(8.0, ge=2.0, le=60.0)
    # A media stream that delivers no audio for this long (wall clock) is ended: a silent or
    # dead peer must not hold a call slot. Not applied on listen-only connections.
    media_timeout_s: float = Field(10.0, ge=1.0, le=300.0)


class AsrSettings(Section):
    model_dir: Path | None = None  # None: the provisioned Whisper base under data_dir
    compute_type: str = "int8"
    threads: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1), ge=1, le=64)
    workers: int = Field(1, ge=1, le=16)  # concurrent decodes; each uses `threads` threads
    language: str = "da"  # where every call starts, and the language decoded until detected
    # Whisper's language detection on a call's first turn picks among `languages` only when
    # the best one leads the next by at least this probability margin; else asr.language.
    # A strong Danish prior: through the phone line's noise Whisper base hears some real
    # Danish turns as English at 0.6-0.98 (benchmarks/results/language_detection.md), while
    # English requests lead by more than 0.95; most of the line's callers speak Danish.
    language_margin: float = Field(0.95, ge=0.0, le=1.0)
    beam_size: int = Field(1, ge=1, le=10)
    # Encoder window: the audio that exists plus this margin, at least window_min_s (not a padded 30 s).
    trim_window: bool = True
    window_margin_s: float = Field(1.0, ge=0.0, le=10.0)
    window_min_s: float = Field(6.0, ge=1.0, le=30.0)
    partials: bool = True
    speculative: bool = True  # start the final decode in the pause, before the endpoint
    # Partials are a luxury: above this many calls they stop, so the CPU goes to finals.
    partials_max_calls: int = Field(4, ge=0, le=1000)
    partial_interval_ms: int = Field(600, ge=200, le=5000)
    domain_prompt: bool = False  # bias decoding with the catalogue's key terms (README: measured)
    max_pending: int = Field(8, ge=1, le=256)  # queued final decodes before back-pressure
    max_batch: int = Field(4, ge=1, le=32)  # waiting finals decoded together in one pass


class Thresholds(Section):
    """When the dialogue acts on an intent: at or above `accept` at once; between `confirm` and
    `accept` after one yes/no question; below `confirm` it asks the caller to rephrase."""

    accept: float = Field(0.60, gt=0.0, le=1.0)
    confirm: float = Field(0.35, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.confirm >= self.accept:
            raise ValueError("confirm must be below accept")
        return self


class DialogueSettings(Thresholds):
    max_retries: int = Field(2, ge=0, le=2)  # never loop a caller more than twice
    # A language's own thresholds (Whisper code → accept/confirm): each language has its own
    # model and its own recognition errors. A language not listed uses accept/confirm above.
    # English: chosen by models/choose_thresholds.py on cross-validated training transcripts
    # (intents/RESULTS.md, "English first turn"; rechosen on the enlarged data, stop 21).
    per_language: dict[str, Thresholds] = {"en": Thresholds(accept=0.85, confirm=0.70)}

    def thresholds(self, language: str) -> Thresholds:
        return self.per_language.get(language, self)


class TtsSettings(Section):
    voice: str = "da"  # the voice of asr.language
    # espeak-ng voices of the other languages in `languages`.
    voices: dict[str, str] = {"en": "en"}
    rate_wpm: int = Field(165, ge=80, le=400)
    pitch: int = Field(50, ge=0, le=99)
    # Recorded prompts (voicebot/prompts.py): <prompts_dir>/<language>/<id>.wav|flac|ogg with a
    # manifest.tsv; played instead of the synthesized text when present. None: synthesis only.
    prompts_dir: Path | None = None


class TelephonySettings(Section):
    """The platforms' options (voicebot.gateway.platform_options fills each platform's options
    dataclass from the fields named `<platform>_<option>`)."""

    # Asterisk AudioSocket: a plain TCP server next to the HTTP one. Port 0 = any free port.
    audiosocket_enabled: bool = True
    audiosocket_host: str = "127.0.0.1"
    audiosocket_port: int = Field(9092, ge=0, le=65535)
    # Genesys AudioHook: the X-API-KEY Genesys must send. None: derived from data_dir/secret.
    audiohook_api_key: str | None = None
    # Bot audio back to Genesys: true only for an Audio Connector integration (bidirectional).
    # AudioHook Monitor is listen-only and refuses audio it did not ask for; never guessed.
    audiohook_playback: bool = False
    # chan_websocket: send ANSWER after MEDIA_START (needed when Dial uses the n option; harmless otherwise).
    asterisk_answer: bool = True
    # Telnyx: inbound media frames held back to restore sequence order (20 ms each).
    telnyx_reorder_frames: int = Field(5, ge=1, le=50)


class SecuritySettings(Section):
    """Who may connect and what one connection may cost (SECURITY.md). Every platform secret
    left unset here is derived from the generated master secret in data_dir/secret for that
    platform alone, so nothing runs open and no platform's credential opens another endpoint."""

    # Twilio: the account's auth token, which signs X-Twilio-Signature on the media WebSocket
    # upgrade and the webhooks. None: derived from data_dir/secret (local trials; `voicebot
    # call` signs with it).
    twilio_auth_token: str | None = None
    # Credential per platform by name (telephony.registry): the bearer token of vonage, telnyx,
    # asterisk, raw (`Authorization: Bearer T` or `?token=T`); for twilio and audiohook the
    # settings twilio_auth_token and telephony.audiohook_api_key win when set. A platform not
    # listed uses one derived from data_dir/secret for it alone.
    media_tokens: dict[str, str] = {}
    # Genesys AudioHook: the client secret (base64, as Genesys shows it) that signs the upgrade
    # request (HTTP message signatures). None: only X-API-KEY is checked.
    audiohook_client_secret: str | None = None
    # AudioSocket (TCP) connections are accepted only from these addresses or networks.
    audiosocket_sources: list[str] = ["127.0.0.1", "::1"]
    # One WebSocket or AudioSocket message may not be larger than this (close 1009 otherwise).
    max_message_bytes: int = Field(64 * 1024, ge=4096, le=1 << 20)
    # A send that cannot be delivered within this time (the peer stopped reading) ends the call.
    send_timeout_s: float = Field(10.0, ge=0.5, le=120.0)
    # HTTP (voicebot/server.py): a connection must deliver a whole request (line, headers, body)
    # within request_timeout_s of opening or of its previous response, or it is closed; an idle
    # keep-alive connection is closed after keepalive_timeout_s.
    request_timeout_s: float = Field(10.0, ge=0.5, le=300.0)
    keepalive_timeout_s: float = Field(5.0, ge=0.5, le=300.0)
    # One header field (name and value), and the request line and all headers together, may not
    # be larger than this: 431 (414 for the request line) before anything parses them.
    max_header_bytes: int = Field(8 * 1024, ge=1024, le=64 * 1024)
    max_header_total_bytes: int = Field(32 * 1024, ge=4096, le=256 * 1024)
    # A request body (webhook and console forms are a few KB) may not be larger than this: 413.
    max_body_bytes: int = Field(1 << 20, ge=4096, le=64 << 20)
    # Open connections (HTTP and WebSocket). At the limit a new connection closes the one idle
    # longest (no request in progress); when every one is busy, the new one is answered 503.
    max_connections: int = Field(512, ge=16, le=60000)
    # WebSocket keepalive: a ping every interval; no pong within the timeout ends the connection.
    ws_ping_interval_s: float = Field(20.0, ge=0.1, le=300.0)
    ws_ping_timeout_s: float = Field(20.0, ge=0.1, le=300.0)
    # The softphone page gets a softphone-only token embedded when it is asked for from this
    # machine (loopback address and Host, no proxy headers, no public_url); otherwise it asks.
    softphone_embed_token: bool = True

    @model_validator(mode="after")
    def _known_platforms(self) -> SecuritySettings:
        from telephony.registry import PLATFORMS  # the one list of platform names

        known = sorted(name for name, p in PLATFORMS.items() if p.check is not None)
        unknown = sorted(set(self.media_tokens) - set(known))
        if unknown:
            raise ValueError(
                f"security.media_tokens: no platform named {', '.join(unknown)} "
                f"(known: {', '.join(known)})"
            )
        short = sorted(k for k, v in self.media_tokens.items() if len(v) < 16)
        if short or (self.twilio_auth_token is not None and len(self.twilio_auth_token) < 16):
            raise ValueError(
                "media tokens and the Twilio auth token must be at least 16 characters"
            )
        if self.max_header_bytes > self.max_header_total_bytes:
            raise ValueError(
                "security.max_header_bytes must not be above security.max_header_total_bytes"
            )
        for source in self.audiosocket_sources:
            try:
                ipaddress.ip_network(source, strict=False)
            except ValueError as exc:
                raise ValueError(f"security.audiosocket_sources: {exc}") from None
        return self


class PrivacySettings(Section):
    """What is kept about a call. No audio is stored by default (Datatilsynet: recordings for
    training or quality need consent); transcripts are masked before they are stored."""

    record_audio: bool = False
    recording_purpose: str | None = None  # required when record_audio is on; stated in the DPIA

    @model_validator(mode="after")
    def _purpose(self) -> PrivacySettings:
        if self.record_audio and not (self.recording_purpose and self.recording_purpose.strip()):
            raise ValueError(
                "privacy.record_audio needs privacy.recording_purpose (why audio is kept)"
            )
        return self


class WaitingSettings(Section):
    """Opening hours, the expected wait and callbacks (README: "Waiting: opening hours, wait,
    callback"). The hours themselves are in the file named by the top-level `hours` setting."""

    # Say the expected wait before routing, and offer a callback, when it is above this.
    announce_wait_above_min: float = Field(5.0, ge=0.0, le=240.0)
    # Offer a callback (closed queue, long wait); off: only say when it opens / the wait.
    offer_callback: bool = True
    # The estimate's memory: claims are weighted by exp(-age / tau); none in 3 tau: "unknown".
    claim_rate_tau_min: float = Field(10.0, ge=1.0, le=240.0)
    # Fewer recent claims than this: the wait is unknown (not said).
    min_recent_claims: int = Field(3, ge=1, le=100)
    # A keyed-in callback number must have this many digits (Danish numbers have 8).
    min_number_digits: int = Field(8, ge=3, le=15)
    max_number_digits: int = Field(15, ge=3, le=15)
    prompts: Path = PROJECT_ROOT / "intents" / "waiting_prompts.yaml"

    @model_validator(mode="after")
    def _digits(self) -> WaitingSettings:
        if self.min_number_digits > self.max_number_digits:
            raise ValueError("waiting.min_number_digits must not be above max_number_digits")
        return self


# The YAML file's values while load_settings builds Settings (a settings source has no other
# way in: pydantic-settings constructs the sources itself).
_file_values: ContextVar[dict[str, Any] | None] = ContextVar("voicebot_file_values", default=None)


class _YamlFileSource(PydanticBaseSettingsSource):
    """The YAML file as a settings source below the environment. pydantic-settings deep-merges
    its sources, so VOICEBOT_SECURITY__TWILIO_AUTH_TOKEN replaces that one field and keeps the
    rest of the file's `security:` section."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ returns the whole file at once

    def __call__(self) -> dict[str, Any]:
        return _file_values.get() or {}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VOICEBOT_", env_nested_delimiter="__", extra="forbid"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest first: overrides (command-line flags), environment, YAML file, defaults.
        return init_settings, env_settings, _YamlFileSource(settings_cls)

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    data_dir: Path = PROJECT_ROOT / "var"
    db: Path | None = None  # None: data_dir/voicebot.db
    queue_backend: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"
    catalogue: Path = PROJECT_ROOT / "intents" / "catalogue.yaml"
    intent_model: Path = PROJECT_ROOT / "intents" / "model" / "intent.onnx"
    hours: Path = PROJECT_ROOT / "intents" / "hours.yaml"  # opening hours (voicebot/hours.py)
    public_url: str | None = None  # e.g. https://bot.example.dk, for TwiML actions
    log_transcripts: bool = False  # privacy: logs hold no transcript text by default
    retention_days: int = Field(30, ge=1, le=3650)
    max_calls: int = Field(32, ge=1, le=1000)
    # Languages callers are served in (Whisper codes); asr.language must be one of them.
    languages: list[str] = Field(["da", "en"], min_length=1, max_length=8)
    endpointing: EndpointingSettings = EndpointingSettings()
    asr: AsrSettings = AsrSettings()
    dialogue: DialogueSettings = DialogueSettings()
    tts: TtsSettings = TtsSettings()
    telephony: TelephonySettings = TelephonySettings()
    security: SecuritySettings = SecuritySettings()
    privacy: PrivacySettings = PrivacySettings()
    waiting: WaitingSettings = WaitingSettings()

    @model_validator(mode="after")
    def _languages(self) -> Settings:
        from faster_whisper.tokenizer import _LANGUAGE_CODES  # the codes Whisper knows

        unknown = [code for code in self.languages if code not in _LANGUAGE_CODES]
        if unknown:
            raise ValueError(f"languages: '{unknown[0]}' is not a Whisper language code")
        unknown = [code for code in self.dialogue.per_language if code not in _LANGUAGE_CODES]
        if unknown:
            raise ValueError(
                f"dialogue.per_language: '{unknown[0]}' is not a Whisper language code"
            )
        if self.asr.language not in self.languages:
            raise ValueError(
                f"asr.language: '{self.asr.language}' must be one of languages "
                f"({', '.join(self.languages)})"
            )
        return self

    @model_validator(mode="after")
    def _connections_for_calls(self) -> Settings:
        if (
            self.security.max_connections < 2 * self.max_calls + 16
        ):  # a call's stream and its follower
            raise ValueError(
                f"security.max_connections must be at least 2 * max_calls + 16 "
                f"({2 * self.max_calls + 16})"
            )
        return self

    @property
    def db_path(self) -> Path:
        return self.db or self.data_dir / "voicebot.db"

    @property
    def whisper_dir(self) -> Path:
        return self.asr.model_dir or self.data_dir / "models" / "whisper-base-ct2"


def _format_errors(source: str, err: ValidationError) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"])
        lines.append(f"  {field}: {e['msg']}")
    return "\n".join(lines)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings from defaults, an optional YAML file, the environment and overrides."""
    config_file = config_file or os.environ.get("VOICEBOT_CONFIG")
    file_values: dict[str, Any] = {}
    source = "environment (VOICEBOT_*)"
    if config_file:
        path = Path(config_file)
        source = f"{path} or environment (VOICEBOT_*)"
        try:
            file_values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read configuration file {path}: {exc}") from exc
        except UnicodeDecodeError as exc:  # a binary or non-UTF-8 file
            raise ConfigError(
                f"{path}: the configuration file is not UTF-8 text ({exc.reason} at "
                f"byte {exc.start})"
            ) from exc
        if not isinstance(file_values, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of settings")
        odd = [k for k in file_values if not isinstance(k, str)]
        if odd:  # "? " or "1: x" in YAML: a key that names no setting
            raise ConfigError(f"{path}: setting names must be text, not {odd[0]!r}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    token = _file_values.set(file_values)
    try:
        return Settings(**overrides)
    except ValidationError as err:
        raise ConfigError(_format_errors(source, err)) from err
    finally:
        _file_values.reset(token)
