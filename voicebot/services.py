"""Process-wide services, loaded once and shared by every call.

The catalogue and what is derived from it (the intent classifier's trigger rules, the domain
prompt) can be replaced while the gateway runs (`reload_catalogue`: SIGHUP or `voicebot
reload`): the new file is validated fully first, and each call keeps the catalogue it started
with (`Services.for_call`), so a reload never changes what a caller in progress hears.
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
from voicebot.config import Settings
from voicebot.events import EventBus
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
    classifier: IntentClassifier
    domain_prompt: str | None
    path: Path
    sha256: str
    loaded_at: float


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
    classifier: IntentClassifier
    speaker: TextToSpeech
    store: QueueStore
    events: EventBus
    domain_prompt: str | None
    slots: CallSlots = field(default_factory=CallSlots)
    catalogue_sha256: str = ""  # of the file the catalogue was loaded from ("" if not from one)
    catalogue_loaded_at: float = field(default_factory=time.time)
    last_reload: ReloadStatus = field(default_factory=ReloadStatus)
    reloading: asyncio.Lock = field(default_factory=asyncio.Lock)  # one reload at a time

    @property
    def active_calls(self) -> int:
        return self.slots.active

    def for_call(self) -> Services:
        """The services as one call sees them: the catalogue, classifier and domain prompt in
        use now, kept for the whole call; everything else (models, queue, slots) shared."""
        return dataclasses.replace(self)

    def use_catalogue(self, loaded: CatalogueInUse) -> None:
        """Swap in a validated catalogue. Synchronous (no await between the fields), so a call
        starting on the event loop sees either the old set or the new set, never a mix."""
        self.catalogue = loaded.catalogue
        self.classifier = loaded.classifier
        self.domain_prompt = loaded.domain_prompt
        self.catalogue_sha256 = loaded.sha256
        self.catalogue_loaded_at = loaded.loaded_at

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


def load_classifier(settings: Settings, catalogue: Catalogue) -> IntentClassifier:
    return IntentClassifier(IntentModel(settings.intent_model), catalogue)


def _check_derived(path: Path, catalogue: Catalogue) -> None:
    """What the dialogue builds from the catalogue at run time, built once now: a reload
    must not accept a file that would fail in the middle of a call."""
    for forvaltning in catalogue.forvaltninger:
        try:
            catalogue.prompts["route"].format(queue=catalogue.queue_name(forvaltning))
        except (KeyError, IndexError, ValueError) as exc:
            raise CatalogueError(
                f"{path}: prompts.route with forvaltning {forvaltning}: {exc}"
            ) from exc
    try:
        catalogue.keypad_menu_text()
    except (KeyError, IndexError, ValueError) as exc:
        raise CatalogueError(f"{path}: prompts.keypad_menu: {exc}") from exc


def prepare_catalogue(
    settings: Settings,
    model: IntentModel | None = None,
    speaker: TextToSpeech | None = None,
) -> CatalogueInUse:
    """Load and validate settings.catalogue with everything derived from it; CatalogueError
    names the file and the entry. The fixed prompts are rendered once (a speaker caches them),
    so the first caller does not wait for them."""
    path = Path(settings.catalogue)
    catalogue = load_catalogue(path)
    _check_derived(path, catalogue)
    load_waiting(settings, catalogue)  # opening hours and waiting prompts: fail at start
    stale = catalogue.stale_answers()
    if stale:
        log.warning(
            "catalogue answers due for review (checked over %d days ago): %s",
            catalogue.review_after_days,
            ", ".join(stale),
        )
    classifier = IntentClassifier(model or IntentModel(settings.intent_model), catalogue)
    if speaker is not None:
        for text in (
            catalogue.prompts["greeting"],
            catalogue.prompts["rephrase"],
            catalogue.prompts["human"],
        ):
            speaker.speak(text)
    return CatalogueInUse(
        catalogue=catalogue,
        classifier=classifier,
        domain_prompt=domain_prompt(catalogue) if settings.asr.domain_prompt else None,
        path=path,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        loaded_at=time.time(),
    )


async def reload_catalogue(services: Services) -> ReloadStatus:
    """Replace the running catalogue with the file settings.catalogue names, if it is valid.
    A bad file changes nothing: the old catalogue stays and the reason (file and entry) is
    logged and returned. Calls in progress keep the catalogue they started with."""
    async with services.reloading:
        model = services.classifier.model if services.classifier is not None else None
        try:
            loaded = await asyncio.to_thread(
                prepare_catalogue, services.settings, model, services.speaker
            )
        except (CatalogueError, OSError) as exc:
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
    speaker = Speaker(Voice(settings.tts.voice, settings.tts.rate_wpm, settings.tts.pitch))
    loaded = prepare_catalogue(settings, speaker=speaker)
    asr = WhisperAsr(settings.whisper_dir, settings.asr)
    return Services(
        settings=settings,
        catalogue=loaded.catalogue,
        vad=SileroVad(),
        asr=AsrPool(asr, settings.asr),
        classifier=loaded.classifier,
        speaker=speaker,
        store=open_store(settings.queue_backend, settings.db_path, settings.redis_url),
        events=EventBus(),
        domain_prompt=loaded.domain_prompt,
        catalogue_sha256=loaded.sha256,
        catalogue_loaded_at=loaded.loaded_at,
    )
