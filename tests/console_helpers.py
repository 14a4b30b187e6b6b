"""Shared set-up for the console tests: the real app, store, EventBus and catalogue, with
the fake speech services (no call audio flows in these tests)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from prometheus_client import REGISTRY

from tests.fakes import DeafVad, ScriptedAsr, ToneSpeaker
from voicebot import metrics
from voicebot.accounts import AgentStore, agents_path
from voicebot.app import create_app
from voicebot.asr import AsrPool
from voicebot.catalogue import Catalogue
from voicebot.config import Settings, load_settings
from voicebot.events import EventBus
from voicebot.queues import RoutedCall, SqliteQueueStore
from voicebot.services import Services

PASSWORD = "korrekt-hest-batteri"
# Tests hash with the cheapest argon2id parameters: the production profile costs ~0.5 s a hash.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
AGENTS = {"anna": ["TMF", "KONTAKTCENTER"], "bo": ["KFF"]}  # and "chef", an admin


def make_settings(data_dir: Path, **overrides) -> Settings:
    return load_settings(None, data_dir=data_dir, **overrides)


def make_services(settings: Settings, catalogue: Catalogue) -> Services:
    return Services(
        settings=settings,
        catalogue=catalogue,
        vad=DeafVad(),
        asr=AsrPool(ScriptedAsr(), settings.asr),
        classifier=None,
        speaker=ToneSpeaker(),
        store=SqliteQueueStore(settings.db_path),
        events=EventBus(),
        domain_prompt=None,
    )


def add_agents(settings: Settings) -> None:
    store = AgentStore(agents_path(settings))
    for name, forvaltninger in AGENTS.items():
        store.add(name, PASSWORD, forvaltninger)
    store.add("chef", PASSWORD, [], admin=True)
    store.close()


# The console tests' fixtures, imported by each console test module (they stand in for
# conftest's plain `settings` there): a data dir with the test agents, the fake services, the app.
@pytest.fixture(name="settings")
def settings_with_agents(tmp_path: Path) -> Settings:
    settings = make_settings(tmp_path)
    add_agents(settings)
    return settings


@pytest.fixture(name="services")
def console_services(settings: Settings, catalogue: Catalogue) -> Services:
    return make_services(settings, catalogue)


@pytest.fixture(name="app")
def console_app(settings: Settings, services: Services) -> Any:
    return create_app(settings, services)


def sample(name: str, **labels: str) -> float:
    """A metric's current value (0 before its first increment)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def routed_call(
    call_id: str,
    forvaltning: str = "TMF",
    transcript: str = "min skraldespand er ikke tømt",
    intent: str = "waste",
    explanation: tuple[str, ...] = ("skraldespand", "tømt"),
    confidence: float = 0.91,
    **kw,
) -> RoutedCall:
    return RoutedCall(
        call_id=call_id,
        forvaltning=forvaltning,
        intent=intent,
        confidence=confidence,
        transcript=transcript,
        explanation=list(explanation),
        reason="model",
        caller="+45 ••••••78",
        platform="twilio",
        **kw,
    )


async def route(services: Services, record: RoutedCall) -> None:
    """Put a routed call in its queue exactly as voicebot.session.CallSession.enqueue does."""
    await asyncio.to_thread(services.store.enqueue, record)
    metrics.ROUTED.labels(record.forvaltning, record.language).inc()
    services.events.publish(
        record.call_id,
        "routed",
        forvaltning=record.forvaltning,
        queue=services.catalogue.queue_name(record.forvaltning),
        language=record.language,
    )


def login_csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def post_login(client, name: str, password: str = PASSWORD, **headers):
    """The login form as a browser posts it: the CSRF token from the page, then the form."""
    csrf = login_csrf(client.get("/console/login").text)
    return client.post(
        "/console/login",
        data={"name": name, "password": password, "csrf": csrf},
        headers=headers,
        follow_redirects=False,
    )
