"""What a benchmark ran on: CPU, cores, RAM, load, Python and library versions, the model
files, the settings, and the git commit. Recorded with every run so figures from different
machines or commits are never compared blindly."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = (
    "ctranslate2",
    "faster-whisper",
    "onnxruntime",
    "numpy",
    "torch",
    "transformers",
    "scikit-learn",
    "tokenizers",
    "soxr",
    "uvicorn",
    "websockets",
    "psutil",
)
_SECRET_KEYS = re.compile(r"key|secret|password|token", re.IGNORECASE)


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """CPU model and logical processor count from /proc/cpuinfo text."""
    models = re.findall(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    processors = re.findall(r"^processor\s*:", text, re.MULTILINE)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "fma")
    return {
        "model": models[0].strip() if models else None,
        "logical_processors": len(processors) or None,
        "simd": [f for f in wanted if flags and f in flags.group(1).split()],
    }


def parse_meminfo(text: str) -> float | None:
    """Total RAM in GiB from /proc/meminfo text."""
    match = re.search(r"^MemTotal:\s*(\d+)\s*kB", text, re.MULTILINE)
    return round(int(match.group(1)) / 1024**2, 2) if match else None


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None  # not installed (torch/transformers are the optional `bench` extra)
    return out


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_facts(model_dir: Path, compute_type: str) -> dict[str, Any]:
    """The model directory, model.bin's size and sha256 (≈145 MB: hashing takes well under a
    second) and whether it is the release pinned in voicebot/provision.py."""
    from voicebot.provision import MODEL_BIN_SHA256

    model_bin = model_dir / "model.bin"
    facts: dict[str, Any] = {"dir": str(model_dir), "compute_type": compute_type}
    if model_bin.exists():
        digest = sha256_file(model_bin)
        facts.update(
            model_bin_bytes=model_bin.stat().st_size,
            model_bin_sha256=digest,
            pinned_release=digest == MODEL_BIN_SHA256,
        )
    else:
        facts["model_bin_sha256"] = None
    return facts


def git_info(root: Path) -> dict[str, Any]:
    """HEAD commit and whether the work tree differs from it (read-only git commands)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": commit.strip() if commit else None,
        "dirty": None if status is None else bool(status.strip()),
    }


def redact(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings without secret values (API keys, passwords in URLs)."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out[key] = redact(value)
        elif _SECRET_KEYS.search(key) and value is not None:
            out[key] = "<redacted>"
        elif isinstance(value, str) and re.match(r"^\w+://[^/@]*:[^/@]*@", value):
            out[key] = re.sub(r"://[^/@]*@", "://<redacted>@", value)
        else:
            out[key] = value
    return out


def machine_facts() -> dict[str, Any]:
    cpu = parse_cpuinfo(_read("/proc/cpuinfo"))
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu_model": cpu["model"] or platform.processor() or None,
        "cpu_simd": cpu["simd"],
        "cores_logical": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "ram_gib": parse_meminfo(_read("/proc/meminfo")),
        # Other jobs on the machine distort every timing: the load at the start says so.
        "load_average_1_5_15": load,
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "libraries": library_versions(),
    }
