from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_server import RedisServer, free_port
from voicebot.catalogue import load_catalogue
from voicebot.config import PROJECT_ROOT, Settings, load_settings
from voicebot.queues import QueueStore, RedisQueueStore, SqliteQueueStore

CATALOGUE = PROJECT_ROOT / "intents" / "catalogue.yaml"
SHARED = PROJECT_ROOT.parent / "shared"


def pytest_addoption(parser) -> None:
    parser.addoption(
        "--soak-minutes",
        type=float,
        default=0.0,
        help="run tests/test_soak.py for this many minutes (default: a short run; "
        "or set VOICEBOT_SOAK_MINUTES)",
    )


# Knobs for the test runner itself, not settings of the product: kept.
RUNNER_VARIABLES = {"VOICEBOT_SOAK_MINUTES"}


@pytest.fixture(scope="session", autouse=True)
def isolated_environment() -> Iterator[None]:
    """No test reads the caller's VOICEBOT_* settings (a developer's shell, CI's environment):
    every Settings() and every subprocess sees the defaults plus what the test itself sets.
    Session-scoped and autouse, so it runs before the session fixtures that build settings."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("VOICEBOT_") and name not in RUNNER_VARIABLES:
                patch.delenv(name)
        yield


@pytest.fixture
def fast_hashing(monkeypatch):
    """Agent passwords hashed with the cheapest argon2id parameters (tests/console_helpers.py)."""
    from .console_helpers import FAST_HASHER

    monkeypatch.setattr("voicebot.accounts.default_hasher", lambda: FAST_HASHER)


@pytest.fixture(scope="session")
def catalogue():
    return load_catalogue(CATALOGUE)


@pytest.fixture(scope="session")
def classifier(catalogue):
    from voicebot.services import load_classifier

    return load_classifier(Settings(), catalogue)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(None, data_dir=tmp_path)


@pytest.fixture(scope="session")
def whisper_dir() -> Path:
    from voicebot.provision import provision_whisper_base

    return provision_whisper_base(Settings().whisper_dir)


@pytest.fixture(scope="session")
def speaker():
    from voicebot.tts import Speaker

    return Speaker()


def copy_catalogue(tmp_path: Path) -> Path:
    target = tmp_path / "catalogue.yaml"
    shutil.copyfile(CATALOGUE, target)
    return target


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server (appendonly, appendfsync always) on a free port, for a module."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), free_port()).start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QueueStore]:
    """Each queue back-end in turn: SQLite in a fresh file, Redis in its own namespace."""
    s: QueueStore
    if request.param == "sqlite":
        s = SqliteQueueStore(tmp_path / "q.db")
    else:
        server = request.getfixturevalue("redis_server")
        s = RedisQueueStore(server.url, prefix=f"test-{uuid.uuid4().hex[:8]}")
    yield s
    s.close()
