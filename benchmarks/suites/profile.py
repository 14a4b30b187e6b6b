"""Where the server's CPU goes: `voicebot bench profile --calls 8,16,32`.

One gateway with the defaults; for each level, N simultaneous calls of the concurrency suite's
`callers` pattern on the realistic corpus while py-spy samples the server process (two
recorders at once: a flame graph SVG and the raw collapsed stacks). The raw stacks give a
top-functions table (self time) and shares grouped by stage (STAGES). py-spy comes with the
`bench` extra; without it the suite fails naming the install.

py-spy samples Python threads: time inside CTranslate2 and onnxruntime shows under the Python
frame that called them (a decode under `_final_decode`, VAD under `VadStream.push`) while that
thread runs; a thread waiting for CTranslate2's own native worker threads counts as idle, and
those native threads are not sampled. So the level also records CPU seconds per OS thread
(psutil): the event loop's thread (VAD, μ-law, JSON, TTS, network) against all other threads
(decodes and their native workers, the classifier), which py-spy's shares cannot show.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.suites.common import Context, fmt, markdown_table

RATE_HZ = 50  # samples a second; low enough that the recorders stay a small load
# (stage, substrings of a stack that put a sample in it), first match wins: a decode's
# feature extraction is the decode's, a resample inside TTS is the TTS's.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("partial decodes", ("_partial_decode",)),
    ("speculative decodes", ("_speculative_decode",)),
    ("final decodes", ("_final_decode",)),
    ("other decodes", ("voicebot/asr.py",)),
    ("TTS", ("voicebot/tts.py",)),
    ("VAD", ("voicebot/vad.py",)),
    ("intent classifier", ("voicebot/intent", "voicebot/classif")),
    ("resampling", ("resample", "soxr", "samplerate")),
    ("JSON/base64", ("json/", "base64", "b64encode", "b64decode", "orjson")),
    ("codecs (μ-law)", ("telephony/codecs.py",)),
    ("event fan-out", ("voicebot/events.py",)),
    ("network and event loop", ("websockets", "uvicorn", "asyncio/", "starlette", "h11")),
)


def stage_of(stack: str) -> str:
    for stage, marks in STAGES:
        if any(m in stack for m in marks):
            return stage
    return "other"


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    """py-spy's raw format: one `frame;frame;…;leaf count` line per distinct stack."""
    out = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


def shares(stacks: list[tuple[list[str], int]], top: int = 15) -> dict[str, Any]:
    """Samples per stage and the functions with the most self time (the leaf frame)."""
    total = sum(n for _, n in stacks) or 1
    by_stage: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    leaf_stage: Counter[tuple[str, str]] = Counter()
    for frames, n in stacks:
        stage = stage_of(";".join(frames))
        by_stage[stage] += n
        leaves[frames[-1]] += n
        leaf_stage[frames[-1], stage] += n
    return {
        "samples": sum(n for _, n in stacks),
        "stages": {s: round(100 * n / total, 1) for s, n in by_stage.most_common()},
        "top_functions": [
            {
                "function": f,
                "self_pct": round(100 * n / total, 1),
                "stage": _main_stage(leaf_stage, f),
            }
            for f, n in leaves.most_common(top)
        ],
    }


def _main_stage(leaf_stage: Counter[tuple[str, str]], function: str) -> str:
    """The stage where a function spent most of its samples."""
    return max((n, s) for (f, s), n in leaf_stage.items() if f == function)[1]


def py_spy() -> str:
    found = Path(sys.executable).parent / "py-spy"
    path = str(found) if found.exists() else shutil.which("py-spy")
    if not path:
        raise RuntimeError("py-spy is not installed: pip install -e '.[bench]' (it pins py-spy)")
    return path


def _record(pid: int, fmt_: str, out: Path) -> subprocess.Popen:
    cmd = [py_spy(), "record", "--pid", str(pid), "--rate", str(RATE_HZ), "--nonblocking"]
    return subprocess.Popen(
        [*cmd, "--format", fmt_, "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds so far per OS thread of a process."""
    import psutil

    return {t.id: t.user_time + t.system_time for t in psutil.Process(pid).threads()}


def cpu_split(pid: int, before: dict[int, float], after: dict[int, float]) -> dict[str, float]:
    """CPU seconds between two thread_cpu readings: the main (event-loop) thread vs the rest."""
    spent = {tid: s - before.get(tid, 0.0) for tid, s in after.items()}
    main = spent.get(pid, 0.0)
    return {
        "cpu_s": round(sum(spent.values()), 2),
        "event_loop_thread_cpu_s": round(main, 2),
        "other_threads_cpu_s": round(sum(spent.values()) - main, 2),
    }


def _finish(recorder: subprocess.Popen) -> str:
    """Ctrl-C makes py-spy write what it sampled; returns its stderr (errors, if any)."""
    recorder.send_signal(signal.SIGINT)
    try:
        _, err = recorder.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        recorder.kill()
        _, err = recorder.communicate()
    return err or ""


def run(ctx: Context) -> dict[str, Any]:
    from benchmarks.suites import concurrency
    from benchmarks.suites.calls import with_pause
    from benchmarks.suites.procs import ServerProcess, scan_log

    levels = ctx.profile_calls or ((4,) if ctx.quick else (8, 16, 32))
    utts = concurrency.realistic_corpus()
    paused = {k: with_pause(u, concurrency.PAUSE_S) for k, u in enumerate(utts)}
    fast_forward = 8.0 if ctx.quick else 1.0
    result: dict[str, Any] = {"rate_hz": RATE_HZ, "levels": {}, "pattern": "callers"}
    server = ServerProcess("profile", ctx.model_dir, ctx.out_dir / "logs")
    try:
        server.start()
        result["ready_s"] = round(server.wait_ready(), 1)
        assert server.proc is not None
        for n in levels:
            svg, raw = ctx.out_dir / f"profile-{n}calls.svg", ctx.work_dir / f"profile-{n}.txt"
            cpu_before = thread_cpu(server.proc.pid)
            recorders = [
                _record(server.proc.pid, "flamegraph", svg),
                _record(server.proc.pid, "raw", raw),
            ]
            try:
                calls = asyncio.run(
                    concurrency._level(server, n, utts, paused, fast_forward, "callers")
                )
            finally:
                errors = [_finish(r) for r in recorders]
            cpu = cpu_split(server.proc.pid, cpu_before, thread_cpu(server.proc.pid))
            level = shares(parse_collapsed(raw.read_text(encoding="utf-8")) if raw.exists() else [])
            level.update(
                **cpu,
                flame_graph=svg.name if svg.exists() else None,
                calls=len(calls),
                decided=sum(len(c["turns"]) for c in calls),
                py_spy_errors=[e.strip()[-300:] for e in errors if "Error" in e],
            )
            result["levels"][str(n)] = level
            concurrency._settle(server)
    finally:
        server.stop()
    result["log"] = scan_log(server.log_path)
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "## Where the server's CPU goes (py-spy)",
        "",
        f"The `callers` pattern on the realistic corpus; py-spy at {result['rate_hz']} Hz on the "
        "server process; % of sampled Python-thread time (native threads of CTranslate2 and "
        "onnxruntime count under the Python frame that called them).",
        "",
    ]
    levels = result["levels"]
    stages = sorted({s for lv in levels.values() for s in lv["stages"]})
    rows = [[s, *(fmt(levels[n]["stages"].get(s), 1) for n in levels)] for s in stages]
    rows.append(["samples", *(str(levels[n]["samples"]) for n in levels)])
    for key, label in (
        ("cpu_s", "server CPU s (all threads)"),
        ("event_loop_thread_cpu_s", "… event-loop thread"),
        ("other_threads_cpu_s", "… other threads (decodes, native workers)"),
    ):
        rows.append([label, *(fmt(levels[n].get(key), 1) for n in levels)])
    lines.append(markdown_table(["stage", *(f"{n} calls %" for n in levels)], rows))
    for n, lv in levels.items():
        lines += [
            "",
            f"Top functions by self time, {n} calls ({lv['flame_graph'] or 'no flame graph'}):",
            "",
        ]
        lines.append(
            markdown_table(
                ["function", "self %", "stage"],
                [[t["function"], fmt(t["self_pct"], 1), t["stage"]] for t in lv["top_functions"]],
                "lrl",
            )
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], out_dir: Path) -> list[str]:
    return [lv["flame_graph"] for lv in result["levels"].values() if lv.get("flame_graph")]
