"""Process-wide services, loaded once and shared by every call."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from voicebot.asr import AsrPool, WhisperAsr
from voicebot.catalogue import Catalogue, load_catalogue
from voicebot.config import Settings
from voicebot.events import EventBus
from voicebot.queues import QueueStore, open_store
from voicebot.tts import Speaker, Voice
from voicebot.understanding import IntentClassifier, IntentModel
from voicebot.vad import SileroVad

log = logging.getLogger("voicebot")


@dataclass
class Services:
    settings: Settings
    catalogue: Catalogue
    vad: SileroVad
    asr: AsrPool
    classifier: IntentClassifier  # the first language's (asr.language)
    speaker: Speaker
    store: QueueStore
    events: EventBus
    domain_prompt: str | None
    active_calls: int = 0  # admitted calls, from the connection to its end
    # Per language: its classifier (its own model when one is shipped, its own rules) and
    # its voice. A language missing here gets `classifier`'s model with its own rules, and
    # the speaker's own voice.
    classifiers: dict[str, IntentClassifier] = field(default_factory=dict)
    voices: dict[str, Voice] = field(default_factory=dict)

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
        if self.active_calls >= self.settings.max_calls:
            return False
        self.active_calls += 1
        return True

    def release(self) -> None:
        """Give back a slot reserved by admit()."""
        self.active_calls -= 1

    def close(self) -> None:
        self.asr.shutdown()
        self.store.close()


def domain_prompt(catalogue: Catalogue) -> str:
    """A previous-text prompt that makes Whisper expect the catalogue's words."""
    return (
        f"{catalogue.municipality}, telefonopkald om " + ", ".join(catalogue.domain_terms()) + "."
    )


def intent_model_path(settings: Settings, language: str) -> Path:
    """A language's own model (intents/model/intent.<lang>.onnx) when one is shipped, else
    the shared one (settings.intent_model)."""
    shared = settings.intent_model
    own = shared.with_name(f"{shared.stem}.{language}{shared.suffix}")
    return own if own.exists() else shared


def load_classifiers(settings: Settings, catalogue: Catalogue) -> dict[str, IntentClassifier]:
    """One classifier per configured language; languages sharing a model file share it."""
    models: dict[Path, IntentModel] = {}
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


def load_services(settings: Settings) -> Services:
    catalogue = load_catalogue(settings.catalogue, settings.languages)
    stale = catalogue.stale_answers()
    if stale:
        log.warning(
            "catalogue answers due for review (checked over %d days ago): %s",
            catalogue.review_after_days,
            ", ".join(stale),
        )
    asr = WhisperAsr(settings.whisper_dir, settings.asr)
    voices = load_voices(settings)
    speaker = Speaker(voices[settings.asr.language])
    classifiers = load_classifiers(settings, catalogue)
    services = Services(
        settings=settings,
        catalogue=catalogue,
        vad=SileroVad(),
        asr=AsrPool(asr, settings.asr),
        classifier=classifiers[settings.asr.language],
        speaker=speaker,
        store=open_store(settings.queue_backend, settings.db_path, settings.redis_url),
        events=EventBus(),
        domain_prompt=domain_prompt(catalogue) if settings.asr.domain_prompt else None,
        classifiers=classifiers,
        voices=voices,
    )
    # Render the fixed prompts once now, so the first caller does not wait for them (a
    # missing espeak-ng voice fails here, at the start).
    for language, voice in voices.items():
        for name in ("greeting", "rephrase", "human"):
            speaker.speak(catalogue.prompt(name, language), voice)
        offer = catalogue.languages[language].offer
        if offer:
            speaker.speak(offer, voice)
    return services
