"""The shared secret for local endpoints (event stream, trial media connections).

The embedded default generates a random secret on first start and keeps it in
data_dir/secret (mode 0600), rather than running open; `voicebot call` reads the same file.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def load_or_create_secret(data_dir: Path) -> str:
    path = data_dir / "secret"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return token
