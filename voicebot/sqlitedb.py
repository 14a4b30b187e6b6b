"""Opening the gateway's SQLite files (the queue database, the agent accounts) one way:
readable by their owner only, in WAL mode, and failing with the file's name when it is not a
database."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from voicebot.config import ConfigError

PRIVATE_FILE = 0o600


class DatabaseFileError(ConfigError):
    """A database file that cannot be used (not SQLite, unreadable, missing); names the file."""


def create_private(path: Path) -> None:
    """Create `path` (and its directory) readable by its owner only, if it does not exist.
    SQLite gives the WAL and SHM files it makes later the main file's permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, PRIVATE_FILE))


def connect(path: Path, what: str, create: bool = True) -> sqlite3.Connection:
    """A connection in WAL mode. With create=False a missing file is an error, never made."""
    if create:
        create_private(path)
    elif not path.is_file():
        raise DatabaseFileError(f"{what} {path} does not exist")
    target = path.resolve().as_uri() + ("" if create else "?mode=rw")
    db = sqlite3.connect(target, uri=True, check_same_thread=False, isolation_level=None)
    try:
        db.execute(
            "PRAGMA journal_mode=WAL"
        )  # the first read of the file: a garbage file fails here
        db.execute("PRAGMA busy_timeout=5000")
    except sqlite3.DatabaseError as exc:
        db.close()
        raise DatabaseFileError(f"{what} {path} cannot be used: {exc}") from exc
    return db
