"""The shared secret for local endpoints (event stream, queue API, media connections).

The embedded default generates a random secret on first start and keeps it in
data_dir/secret (mode 0600), rather than running open. It opens the event streams and the
queue API; every media endpoint whose own secret is not configured uses a credential derived
from it for that platform alone (telephony.auth.Credentials.token), and `voicebot call` reads
the same file and derives the same credentials, so it authenticates as the platform would. Rotate it by deleting the file
and restarting (then reconfigure the platforms that use it); see SECURITY.md.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from telephony.auth import Credentials
from voicebot.config import Settings


def load_or_create_secret(data_dir: Path) -> str:
    path = data_dir / "secret"
    if path.exists():
        token = path.read_text(encoding="utf-8").strip()
        if len(token) >= 16:
            return token
        raise OSError(
            f"{path} holds no usable secret (fewer than 16 characters): delete it to make a new one"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    # Written whole under a private name, then linked into place: a process starting at the
    # same moment sees either no file or the complete secret, never half of one.
    tmp = data_dir / f".secret.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
        os.link(tmp, path)
    except FileExistsError:  # another process made it first: use theirs
        return load_or_create_secret(data_dir)
    finally:
        tmp.unlink(missing_ok=True)
    return token


def load_credentials(settings: Settings, secret: str | None = None) -> Credentials:
    """Every media endpoint's credential: the configured ones (security.media_tokens,
    security.twilio_auth_token, telephony.audiohook_api_key), the others derived from the
    master secret."""
    sec = settings.security
    configured = {
        **sec.media_tokens,
        "twilio": sec.twilio_auth_token or sec.media_tokens.get("twilio"),
        "audiohook": settings.telephony.audiohook_api_key or sec.media_tokens.get("audiohook"),
    }
    client_secrets = {"audiohook": sec.audiohook_client_secret}
    return Credentials(
        secret or load_or_create_secret(settings.data_dir),
        configured={k: v for k, v in configured.items() if v},
        client_secrets={k: v for k, v in client_secrets.items() if v},
    )
