"""Process-wide services, loaded once and shared by every call.

The catalogue and what is derived from it (the intent classifier's trigger rules, the domain
prompt) can be replaced while the gateway runs (`reload_catalogue`: SIGHUP or `voicebot
reload`): the new file is validated fully first, and each call keeps the catalogue it started
with (`Services.for_call`), so a reload never changes what a caller in progress hears.
The recorded prompts (tts.prompts_dir) are loaded
with the catalogue, matched to its texts: a reload re-reads them and a call keeps its set.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from voicebot.asr import AsrPool, WhisperAsr
from voicebot.catalogue import Catalogue, CatalogueError, load_catalogue
from voicebot.config import ConfigError, Settings
from voicebot.events import EventBus
from voicebot.prompts import (
    Recordings,
    load_recordings,
    prompt_script,
    speaker_with,
    synthesis_of,
    synthesized_level,
)
from voicebot.queues import QueueStore, open_store
from voicebot.tts import Speaker, TextToSpeech, Voice
from voicebot.understanding import IntentClassifier, IntentModel
from voicebot.vad import SileroVad, VoiceDetector
from voicebot.waiting_prompts import load_waiting

log = logging.getLogger("voicebot")


@dataclass
class CallSlots:
    """Admitted calls, from the connection to its end: one count for the services and every
    call's view of them (Services.for_call)."""

    active: int = 0


@dataclass(frozen=True)
class CatalogueInUse:
    """A validated catalogue with everything derived from it, swapped in as one."""

    catalogue: Catalogue
    classifier: IntentClassifier  # the first language's (asr.language)
    classifiers: dict[str, IntentClassifier]  # every configured language's
    domain_prompt: str | None
    path: Path
    sha256: str
    loaded_at: float
    recordings: Recordings = field(default_factory=Recordings)  # tts.prompts_dir's, for it


@dataclass
class ReloadStatus:
    """What the last reload did: shown by GET /api/catalogue and `voicebot reload`."""

    ok: bool = True
    error: str | None = None
    at: float | None = None


@dataclass
class Services:
    settings: Settings
    catalogue: Catalogue
    vad: VoiceDetector
    asr: AsrPool
    classifier: IntentClassifier  # the first language's (asr.language)
    speaker: TextToSpeech
    store: QueueStore
    events: EventBus
    domain_prompt: str | None
    slots: CallSlots = field(default_factory=CallSlots)
    catalogue_sha256: str = ""  # of the file the catalogue was loaded from ("" if not from one)
    catalogue_loaded_at: float = field(default_factory=time.time)
    last_reload: ReloadStatus = field(default_factory=ReloadStatus)
    reloading: asyncio.Lock = field(default_factory=asyncio.Lock)  # one reload at a time
    # Per language: its classifier (its own model when one is shipped, its own rules) and
    # its voice. A language missing here gets `classifier`'s model with its own rules, and
    # the speaker's own voice.
    classifiers: dict[str, IntentClassifier] = field(default_factory=dict)
    voices: dict[str, Voice] = field(default_factory=dict)

    @property
    def active_calls(self) -> int:
        return self.slots.active

    def for_call(self) -> Services:
        """The services as one call sees them: the catalogue, classifiers and domain prompt in
        use now, kept for the whole call; everything else (models, queue, slots) shared."""
        return dataclasses.replace(self, classifiers=dict(self.classifiers))

    def use_catalogue(self, loaded: CatalogueInUse) -> None:
        """Swap in a validated catalogue. Synchronous (no await between the fields), so a call
        starting on the event loop sees either the old set or the new set, never a mix."""
        self.catalogue = loaded.catalogue
        self.classifier = loaded.classifier
        self.classifiers = dict(loaded.classifiers)
        self.domain_prompt = loaded.domain_prompt
        self.catalogue_sha256 = loaded.sha256
        self.catalogue_loaded_at = loaded.loaded_at
        self.speaker = speaker_with(self.speaker, loaded.recordings)

    def classifier_for(self, language: str) -> IntentClassifier:
        found = self.classifiers.get(language)
        if found is None:
            found = (
                self.classifier
                if getattr(self.classifier, "language", language) == language
                else IntentClassifier(self.classifier.model, self.catalogue, language)
            )
            self.classifiers[language] = found
        return found

    def voice_for(self, language: str) -> Voice | None:
        """The voice a language's prompts are spoken in (None: the speaker's own)."""
        return self.voices.get(language)

    def admit(self) -> bool:
        """Reserve a call slot (max_calls), or say there is none. Synchronous, so calls that
        arrive together cannot all pass the check before any of them counts itself."""
        if self.slots.active >= self.settings.max_calls:
            return False
        self.slots.active += 1
        return True

    def release(self) -> None:
        """Give back a slot reserved by admit()."""
        self.slots.active -= 1

    def close(self) -> None:
        self.asr.shutdown()
        self.store.close()


def domain_prompt(catalogue: Catalogue) -> str:
    """A previous-text prompt that makes Whisper expect the catalogue's words."""
    return (
        f"{catalogue.municipality}, telefonopkald om " + ", ".join(catalogue.domain_terms()) + "."
    )


def intent_model_path(settings: Settings, language: str) -> Path:
    """A language's own model (intents/model/intent_<lang>.onnx) when one is shipped, else
    the shared one (settings.intent_model)."""
    shared = settings.intent_model
    own = shared.with_name(f"{shared.stem}_{language}{shared.suffix}")
    return own if own.exists() else shared


def load_classifiers(
    settings: Settings, catalogue: Catalogue, models: dict[Path, IntentModel] | None = None
) -> dict[str, IntentClassifier]:
    """One classifier per configured language; languages sharing a model file share it, and
    models already loaded (`models`, by file) are reused."""
    models = dict(models or {})
    classifiers: dict[str, IntentClassifier] = {}
    for language in settings.languages:
        path = intent_model_path(settings, language)
        if path not in models:
            models[path] = IntentModel(path)
        classifiers[language] = IntentClassifier(models[path], catalogue, language)
    return classifiers


def load_classifier(
    settings: Settings, catalogue: Catalogue, language: str | None = None
) -> IntentClassifier:
    """One language's classifier (asr.language's unless named)."""
    language = language or settings.asr.language
    return IntentClassifier(IntentModel(intent_model_path(settings, language)), catalogue, language)


def load_voices(settings: Settings) -> dict[str, Voice]:
    tts = settings.tts
    return {
        language: Voice(
            tts.voice if language == settings.asr.language else tts.voices.get(language, language),
            tts.rate_wpm,
            tts.pitch,
        )
        for language in settings.languages
    }


def _check_derived(path: Path, catalogue: Catalogue) -> None:
    """What the dialogue builds from the catalogue at run time, built once now: a reload
    must not accept a file that would fail in the middle of a call."""
    for language in catalogue.languages:
        for forvaltning in catalogue.forvaltninger:
            try:
                catalogue.prompt("route", language).format(
                    queue=catalogue.queue_name(forvaltning, language)
                )
            except (KeyError, IndexError, ValueError) as exc:
                raise CatalogueError(
                    f"{path}: prompts.route.{language} with forvaltning {forvaltning}: {exc}"
                ) from exc
        try:
            catalogue.keypad_menu_text(language)
        except (KeyError, IndexError, ValueError) as exc:
            raise CatalogueError(f"{path}: prompts.keypad_menu.{language}: {exc}") from exc


def prepare_catalogue(
    settings: Settings,
    models: dict[Path, IntentModel] | None = None,
    speaker: TextToSpeech | None = None,
    voices: dict[str, Voice] | None = None,
) -> CatalogueInUse:
    """Load and validate settings.catalogue with everything derived from it; CatalogueError
    names the file and the entry. Intent models already loaded (`models`, by file) are reused.
    The fixed prompts are rendered once in each language's voice (a speaker caches them), so
    the first caller does not wait for them, and a missing espeak-ng voice fails here."""
    path = Path(settings.catalogue)
    catalogue = load_catalogue(path, settings.languages)
    _check_derived(path, catalogue)
    waiting = load_waiting(settings, catalogue)  # opening hours and waiting prompts: fail at start
    stale = catalogue.stale_answers()
    if stale:
        log.warning(
            "catalogue answers due for review (checked over %d days ago): %s",
            catalogue.review_after_days,
            ", ".join(stale),
        )
    classifiers = load_classifiers(settings, catalogue, models)
    recordings = Recordings()
    if speaker is not None and settings.tts.prompts_dir is not None:
        # Matched to the level of the synthesized greeting in the first language's voice.
        first = settings.asr.language
        level = synthesized_level(
            synthesis_of(speaker), catalogue.prompt("greeting", first), (voices or {}).get(first)
        )
        script = prompt_script(catalogue, waiting.prompts, settings.languages)
        recordings, report = load_recordings(settings.tts.prompts_dir, script, level)
        log.info(
            "recorded prompts from %s: %d played, %d synthesized (not recorded or changed)",
            settings.tts.prompts_dir,
            len(recordings),
            len(report.missing) + len(report.changed),
        )
    if speaker is not None:
        for language, voice in (voices or {}).items():
            for name in ("greeting", "rephrase", "human"):
                speaker.speak(catalogue.prompt(name, language), voice)
            offer = catalogue.languages[language].offer
            if offer:
                speaker.speak(offer, voice)
    return CatalogueInUse(
        catalogue=catalogue,
        classifier=classifiers[settings.asr.language],
        classifiers=classifiers,
        domain_prompt=domain_prompt(catalogue) if settings.asr.domain_prompt else None,
        path=path,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        loaded_at=time.time(),
        recordings=recordings,
    )


async def reload_catalogue(services: Services) -> ReloadStatus:
    """Replace the running catalogue with the file settings.catalogue names, if it is valid.
    A bad file changes nothing: the old catalogue stays and the reason (file and entry) is
    logged and returned. Calls in progress keep the catalogue they started with."""
    async with services.reloading:
        models = {c.model.path: c.model for c in services.classifiers.values()}
        try:
            loaded = await asyncio.to_thread(
                prepare_catalogue,
                services.settings,
                models,
                synthesis_of(services.speaker),
                services.voices,
            )
        except (CatalogueError, ConfigError, OSError) as exc:
            log.error("catalogue reload refused, the running catalogue stays: %s", exc)
            services.last_reload = ReloadStatus(False, str(exc), time.time())
            return services.last_reload
        services.use_catalogue(loaded)
        services.last_reload = ReloadStatus(True, None, time.time())
        log.info(
            "catalogue reloaded from %s (sha256 %s, %d intents, %d forvaltninger); calls in "
            "progress finish on the one they started with",
            loaded.path,
            loaded.sha256[:12],
            len(loaded.catalogue.intents),
            len(loaded.catalogue.forvaltninger),
        )
        return services.last_reload


def load_services(settings: Settings) -> Services:
    voices = load_voices(settings)
    speaker = Speaker(voices[settings.asr.language])
    loaded = prepare_catalogue(settings, speaker=speaker, voices=voices)
    asr = WhisperAsr(settings.whisper_dir, settings.asr)
    return Services(
        settings=settings,
        catalogue=loaded.catalogue,
        vad=SileroVad(),
        asr=AsrPool(asr, settings.asr),
        classifier=loaded.classifier,
        speaker=speaker_with(speaker, loaded.recordings),
        store=open_store(settings.queue_backend, settings.db_path, settings.redis_url),
        events=EventBus(),
        domain_prompt=loaded.domain_prompt,
        catalogue_sha256=loaded.sha256,
        catalogue_loaded_at=loaded.loaded_at,
        classifiers=dict(loaded.classifiers),
        voices=voices,
    )
