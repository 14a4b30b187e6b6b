"""Child processes of the benchmark: ASR workers and `voicebot serve` gateways. Every child
is ended in a `finally` (terminate, then kill), whatever happens in the parent."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from voicebot.config import PROJECT_ROOT

STOP_GRACE_S = 15.0  # uvicorn's graceful shutdown is 5 s; then SIGKILL


def stop(proc: subprocess.Popen) -> None:
    """Terminate, wait, kill: the child never outlives the benchmark."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def run_worker(
    cmd: list[str], log_path: Path, timeout_s: float, on_line: Callable[[str], None] | None = None
) -> int:
    """Run a worker to completion (or kill it at `timeout_s`); stdout lines go to
    `on_line` (progress), stderr to `log_path`. Returns the exit code (-9 when killed)."""
    with log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=PROJECT_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        timer = threading.Timer(timeout_s, proc.kill)  # bounded even if the worker hangs silently
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if on_line:
                    on_line(line.rstrip("\n"))
            return proc.wait()
        finally:
            timer.cancel()
            stop(proc)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _voicebot_command() -> list[str]:
    # `-m` from PROJECT_ROOT runs this tree's code; a venv's `voicebot` script may import
    # another checkout's (an editable install elsewhere).
    return [sys.executable, "-m", "voicebot"]


class ServerProcess:
    """`voicebot serve` on a free loopback port with its own temporary data directory.

    Inherited VOICEBOT_* variables are dropped so a run measures the defaults plus the
    given overrides (recorded in the results), not whatever the shell had set."""

    def __init__(
        self,
        name: str,
        model_dir: Path,
        log_dir: Path,
        overrides: dict[str, str] | None = None,
        ready_timeout_s: float = 180.0,
    ) -> None:
        self.name = name
        self.model_dir = model_dir
        self.overrides = dict(overrides or {})
        self.log_path = log_dir / f"server-{name}.log"
        self.ready_timeout_s = ready_timeout_s
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.data_dir: Path | None = None
        self._log: IO[str] | None = None
        self._started = 0.0

    @property
    def env(self) -> dict[str, str]:
        return {
            "VOICEBOT_ASR__MODEL_DIR": str(self.model_dir),
            # Two gateways run side by side: no fixed AudioSocket TCP port to fight over.
            "VOICEBOT_TELEPHONY__AUDIOSOCKET_ENABLED": "false",
            **self.overrides,
        }

    def start(self) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"voicebot-bench-{self.name}-"))
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBOT_")}
        env.update(
            self.env,
            VOICEBOT_DATA_DIR=str(self.data_dir),
            VOICEBOT_PORT=str(self.port),
            PYTHONUNBUFFERED="1",
        )
        self._log = self.log_path.open("w", encoding="utf-8")
        self._started = time.monotonic()
        self.proc = subprocess.Popen(
            [*_voicebot_command(), "serve", "--port", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=PROJECT_ROOT,
        )

    def wait_ready(self) -> float:
        """Seconds from start() until /healthz answered; raises with the log's tail if the
        server died."""
        assert self.proc is not None
        start = self._started
        while time.monotonic() - start < self.ready_timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server {self.name} exited ({self.proc.returncode}):\n{self.log_tail()}"
                )
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url('http')}/healthz", timeout=2) as r,
            ):
                if r.status == 200:
                    return time.monotonic() - start
            time.sleep(0.3)
        raise TimeoutError(
            f"server {self.name} not ready after {self.ready_timeout_s:.0f} s:\n{self.log_tail()}"
        )

    def url(self, scheme: str = "ws") -> str:
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        assert self.data_dir is not None
        return (self.data_dir / "secret").read_text(encoding="utf-8").strip()

    def events_url(self, call_id: str) -> str:
        return f"{self.url()}/calls/{call_id}/events?token={self.token}"

    def metrics(self) -> dict[str, float]:
        """Prometheus counters summed over their labels (e.g. voicebot_calls_refused_total)."""
        with urllib.request.urlopen(f"{self.url('http')}/metrics", timeout=10) as r:
            return parse_prometheus(r.read().decode("utf-8"))

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(
                self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
            )
        except OSError:
            return ""

    def stop(self) -> None:
        try:
            if self.proc is not None:
                stop(self.proc)
        finally:
            if self._log is not None:
                self._log.close()
                redact_tokens(self.log_path)
            if self.data_dir is not None:
                shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> ServerProcess:
        try:
            self.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_TOKEN = re.compile(r"token=[^&\s\"']+")


def redact_tokens(path: Path) -> None:
    """uvicorn's access log prints query strings, and the event stream's token is one."""
    with contextlib.suppress(OSError):
        text = path.read_text(encoding="utf-8", errors="replace")
        path.write_text(_TOKEN.sub("token=<redacted>", text), encoding="utf-8")


_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)")


def parse_prometheus(text: str) -> dict[str, float]:
    """Metric name → value summed over label sets (comment lines skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            out[match.group(1)] = out.get(match.group(1), 0.0) + float(match.group(3))
    return out


# "2026-… WARNING voicebot.app: message" (the bot's logging) or "ERROR:    message" (uvicorn's)
_LOG_LEVEL = re.compile(r"^(?:\S+ \S+ )?(WARNING|ERROR|CRITICAL)(?::\s+()|\s+(\S+):\s*)(.*)$")
_IDS = re.compile(r"\b(CA|MZ|v3:)?[0-9a-f]{16,}\b|\b\d+(\.\d+)?\b")


_EXCEPTION = re.compile(r"^[\w.]*(Error|Exception|Exit|Interrupt|Cancelled\w*)\b")


def scan_log(path: Path, examples: int = 8) -> dict[str, Any]:
    """Warnings, errors and tracebacks in a server log, grouped by message shape (ids and
    numbers masked) so a thousand identical lines show as one with a count. A traceback is
    named by its exception line."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return {"warnings": 0, "errors": 0, "tracebacks": 0, "messages": []}
    shapes: Counter[str] = Counter()
    counts = {"warnings": 0, "errors": 0, "tracebacks": 0}
    for n, line in enumerate(lines):
        if line.startswith("Traceback"):
            counts["tracebacks"] += 1
            exc = next(
                (x for x in lines[n + 1 : n + 80] if _EXCEPTION.match(x)), "(no exception line)"
            )
            shapes[f"Traceback: {_IDS.sub('#', exc)[:160]}"] += 1
            continue
        match = _LOG_LEVEL.search(line)
        if not match:
            continue
        level, logger, message = match.group(1), match.group(3) or "uvicorn", match.group(4)
        counts["warnings" if level == "WARNING" else "errors"] += 1
        shapes[f"{level} {logger}: {_IDS.sub('#', message)[:160]}"] += 1
    return {
        **counts,
        "messages": [{"message": m, "count": c} for m, c in shapes.most_common(examples)],
    }
