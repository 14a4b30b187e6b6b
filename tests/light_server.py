"""The real gateway app in a process of its own, without Whisper: for the soak and fault tests.

    python -m tests.light_server DATA_DIR [--port 0] [--vad silero|silent] [--prompt-s 0.5]
                                          [--asr-delay-ms 50 150] [--max-calls 32]

Everything is the product (app, telephony adapters, session, dialogue, queue store, console
tasks) except the recogniser, which sleeps 50–150 ms and returns a routing sentence (so the
tests measure the gateway, the session, the queues and memory, not Whisper) and the speaker,
whose prompts are tones of `--prompt-s` per sentence (short calls, many of them). It writes
its HTTP and AudioSocket ports to DATA_DIR/ports.json once it serves, and adds /_test/state:
active calls, EventBus subscribers, session and channel tasks still alive, RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import threading
import time
from pathlib import Path

import numpy as np

SENTENCE = "min skraldespand er ikke blevet tømt"  # waste → TMF


class ScriptedAsr:
    def __init__(self, delay_ms: tuple[float, float]) -> None:
        self.delay_ms = delay_ms

    def transcribe(self, audio, previous_text=None, prefix=None, languages=None):
        from voicebot.asr import AsrResult

        time.sleep(random.uniform(*self.delay_ms) / 1000)
        text = SENTENCE if len(audio) > 8000 else ""
        return AsrResult(text, -0.2, 0.01, len(audio) / 16000, 6.0, 5.0)

    def transcribe_batch(self, audios, previous_text=None, languages=None):
        return [self.transcribe(a, previous_text) for a in audios]


class ToneSpeaker:
    def __init__(self, seconds: float) -> None:
        t = np.arange(int(seconds * 16000)) / 16000
        self.audio = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)

    def speak(self, text: str, voice=None) -> np.ndarray:
        return self.audio


SESSION_CODE = (
    "CallSession.",
    "Listener.",
    "PromptPlayer.",
    "Channel.",
    "PacedPlayout.",
    "AsrPool.",
    "ReaderChannel.",
)


def session_tasks() -> list[str]:
    """Tasks of calls (sessions, adapters, decodes) still alive."""
    out = []
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        name = getattr(coro, "__qualname__", "")
        if any(part in name for part in SESSION_CODE) or task.get_name().startswith(
            ("inputs-", "asterisk-sender")
        ):
            out.append(f"{task.get_name()}:{name}")
    return out


class LightServer:
    """This module's server as a child process of a test: started, waited for, stopped (or
    killed -9) and always cleaned up."""

    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.args = args
        self.env = env or {}
        self.proc = None
        self.ports: dict = {}
        self.log_path = data_dir / "server.log"

    def start(self, timeout_s: float = 60.0) -> LightServer:
        import subprocess
        import sys

        from voicebot.config import PROJECT_ROOT

        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "ports.json").unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBOT_")}
        env.update(self.env)
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.light_server", str(self.data_dir), *self.args],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        ports = self.data_dir / "ports.json"
        while not ports.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    "light server did not start:\n" + self.log_path.read_text()[-3000:]
                )
            time.sleep(0.05)
        self.ports = json.loads(ports.read_text())
        return self

    @property
    def secret(self) -> str:
        return (self.data_dir / "secret").read_text().strip()

    def url(self, path: str, scheme: str = "ws") -> str:
        return f"{scheme}://127.0.0.1:{self.ports['http']}{path}"

    def state(self) -> dict:
        import urllib.request

        with urllib.request.urlopen(self.url("/_test/state", "http"), timeout=10) as r:
            return json.loads(r.read())

    def kill(self) -> None:
        import signal

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        import subprocess

        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> LightServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("data_dir", type=Path)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--vad", choices=["silero", "silent"], default="silero")
    p.add_argument("--prompt-s", type=float, default=0.5)
    p.add_argument("--asr-delay-ms", type=float, nargs=2, default=(50.0, 150.0))
    p.add_argument("--max-calls", type=int, default=32)
    args = p.parse_args()

    import psutil
    import uvicorn
    from fastapi import FastAPI

    from voicebot.app import create_app
    from voicebot.asr import AsrPool
    from voicebot.catalogue import load_catalogue
    from voicebot.config import load_settings
    from voicebot.events import EventBus
    from voicebot.queues import open_store
    from voicebot.server import build_config
    from voicebot.services import Services, load_classifier
    from voicebot.vad import SileroVad

    from .telephony_fakes import SilentVad

    settings = load_settings(
        None,
        data_dir=args.data_dir,
        max_calls=args.max_calls,
        asr={"workers": 4, "max_pending": 64},
        telephony={"audiosocket_port": 0, "audiohook_playback": True},
    )  # Audio Connector
    catalogue = load_catalogue(settings.catalogue)
    services = Services(
        settings=settings,
        catalogue=catalogue,
        vad=SileroVad() if args.vad == "silero" else SilentVad(),
        asr=AsrPool(ScriptedAsr(tuple(args.asr_delay_ms)), settings.asr),
        classifier=load_classifier(settings, catalogue),
        speaker=ToneSpeaker(args.prompt_s),
        store=open_store(settings.queue_backend, settings.db_path, settings.redis_url),
        events=EventBus(),
        domain_prompt=None,
    )
    app: FastAPI = create_app(settings, services=services)
    process = psutil.Process()

    @app.get("/_test/state")
    async def state() -> dict:
        subscribers = sum(len(s) for s in services.events._subscribers.values())
        return {
            "active_calls": services.active_calls,
            "subscribers": subscribers,
            "session_tasks": session_tasks(),
            "rss": process.memory_info().rss,
            "python_objects": len(gc.get_objects()),
            "threads": threading.active_count(),
            "tasks": len(asyncio.all_tasks()),
        }

    config = build_config(
        app,
        settings,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                await task
                return
            await asyncio.sleep(0.05)
        ports = {
            "http": server.servers[0].sockets[0].getsockname()[1],
            "audiosocket": app.state.audiosocket[1] if app.state.audiosocket else None,
            "pid": os.getpid(),
        }
        tmp = args.data_dir / "ports.json.tmp"
        tmp.write_text(json.dumps(ports))
        tmp.replace(args.data_dir / "ports.json")
        await task

    asyncio.run(serve())


if __name__ == "__main__":
    main()
