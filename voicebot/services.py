"""Process-wide services, loaded once and shared by every call."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from voicebot.asr import AsrPool, WhisperAsr
from voicebot.catalogue import Catalogue, load_catalogue
from voicebot.config import Settings
from voicebot.events import EventBus
from voicebot.queues import QueueStore, open_store
from voicebot.tts import Speaker, TextToSpeech, Voice
from voicebot.understanding import IntentClassifier, IntentModel
from voicebot.vad import SileroVad, VoiceDetector
from voicebot.waiting_prompts import load_waiting

log = logging.getLogger("voicebot")


@dataclass
class Services:
    settings: Settings
    catalogue: Catalogue
    vad: VoiceDetector
    asr: AsrPool
    classifier: IntentClassifier
    speaker: TextToSpeech
    store: QueueStore
    events: EventBus
    domain_prompt: str | None
    active_calls: int = 0  # admitted calls, from the connection to its end

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


def load_classifier(settings: Settings, catalogue: Catalogue) -> IntentClassifier:
    return IntentClassifier(IntentModel(settings.intent_model), catalogue)


def load_services(settings: Settings) -> Services:
    catalogue = load_catalogue(settings.catalogue)
    load_waiting(settings, catalogue)  # opening hours and waiting prompts: fail at start
    stale = catalogue.stale_answers()
    if stale:
        log.warning(
            "catalogue answers due for review (checked over %d days ago): %s",
            catalogue.review_after_days,
            ", ".join(stale),
        )
    asr = WhisperAsr(settings.whisper_dir, settings.asr)
    speaker = Speaker(Voice(settings.tts.voice, settings.tts.rate_wpm, settings.tts.pitch))
    services = Services(
        settings=settings,
        catalogue=catalogue,
        vad=SileroVad(),
        asr=AsrPool(asr, settings.asr),
        classifier=load_classifier(settings, catalogue),
        speaker=speaker,
        store=open_store(settings.queue_backend, settings.db_path, settings.redis_url),
        events=EventBus(),
        domain_prompt=domain_prompt(catalogue) if settings.asr.domain_prompt else None,
    )
    # Render the fixed prompts once now, so the first caller does not wait for them.
    for text in (
        catalogue.prompts["greeting"],
        catalogue.prompts["rephrase"],
        catalogue.prompts["human"],
    ):
        speaker.speak(text)
    return services
