"""Concurrency suite: N simultaneous calls on loopback against one gateway with the project's
settings (max_calls and asr.max_pending at their defaults, recorded), N = 1, 2, 4, 8, 16, 32
(quick: 1, 4, 16).

Each caller hears the greeting, then says one or two utterances and waits for the bot's reply
after each; every other caller hesitates mid-sentence (a pause shorter than the end-of-turn
silence, so the bot's speculative decode starts and is thrown away). Call starts are spread
evenly over START_SPREAD_S, so all N calls are on the line together. Two patterns per level:

  burst    every caller speaks as soon as the bot is quiet. The calls start within 2 s and
           the greeting is the same, so all N first turns end within about 2 s of each other:
           the worst case, a lock-step no real line produces.
  callers  the same calls, but each caller first thinks for a while, as people do (uniform
           THINK_FIRST_S before the first turn, THINK_NEXT_S before a later one; fixed per
           caller), so turn ends fall at different moments.

Both patterns speak the realistic corpus (real Danish turns and English requests in espeak-ng
English, alternating); a third run, callers-espeak-da, speaks espeak-ng Danish with the
callers pattern: the labelled worst case (Whisper base loops on it and re-decodes).

The target (p95 ≤ 1.5 s) is read on both; the README reports both. Per level: p50/p95 speech end → decision over all turns, server
CPU and RSS (psutil, sampled every 0.5 s), the benchmark process's own CPU (the callers share
the machine), frames the callers sent late against their real-time clock, and calls refused
or routed for overload, from the callers' view and from the server's /metrics counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from tqdm import tqdm

from benchmarks.suites.asr import interleave
from benchmarks.suites.calls import Utterance, corpus, place_call, to_wire, with_pause
from benchmarks.suites.common import (
    Context,
    decode_summary,
    fmt,
    log_summary,
    markdown_table,
    summarize,
)
from benchmarks.suites.procs import ServerProcess, scan_log
from telephony.base import SAMPLE_RATE

START_SPREAD_S = 2.0
# pattern -> (how callers pause before speaking, which corpus they speak)
PATTERNS = {
    "burst": ("burst", "realistic"),
    "callers": ("callers", "realistic"),
    "callers-espeak-da": ("callers", "espeak-da"),
}
THINK_FIRST_S = (0.0, 8.0)  # before the first turn, after the greeting (below no_input_s = 8)
THINK_NEXT_S = (0.5, 3.0)  # before a later turn, after the bot's reply
TARGET_P95_MS = 1500.0
PAUSE_S = 0.35  # below endpointing.silence_ms (480): one turn, but a speculative decode runs
CALL_TIMEOUT_S = 150.0
COUNTERS = ("voicebot_calls_total", "voicebot_calls_refused_total", "voicebot_asr_overloaded_total")


def levels_for(quick: bool, pattern: str = "callers") -> tuple[int, ...]:
    if PATTERNS[pattern][1] == "espeak-da":  # the worst case: a few levels show its cost
        return (4,) if quick else (1, 4, 16)
    return (1, 4, 16) if quick else (1, 2, 4, 8, 16, 32)


def realistic_corpus() -> list[Utterance]:
    """Real Danish turns and English requests, alternating (8 of each)."""
    return interleave(corpus("real-da", 8), corpus("en", 8))


def caller_turns(i: int, corpus: list[Utterance], paused: dict[int, Utterance]) -> list[Utterance]:
    """Caller i: the first utterance (said with a hesitation by every odd caller), and a second
    one for every even caller."""
    n = len(corpus)
    first = paused[i % n] if i % 2 else corpus[i % n]
    return [first, corpus[(i + 5) % n]] if i % 2 == 0 else [first]


def think_times(i: int, turns: int, pattern: str) -> list[float]:
    """Seconds caller i stays silent before each of its turns (fixed per caller and pattern)."""
    if pattern == "burst":
        return [0.0] * turns
    rng = np.random.default_rng(1000 + i)
    return [float(rng.uniform(*(THINK_FIRST_S if k == 0 else THINK_NEXT_S))) for k in range(turns)]


def with_think(audio: np.ndarray, seconds: float) -> np.ndarray:
    """The caller's line before speaking is quiet, not digital zero: low noise at -60 dBFS."""
    quiet = (
        np.random.default_rng(len(audio))
        .normal(0, 1e-3, int(seconds * SAMPLE_RATE))
        .astype(np.float32)
    )
    return np.concatenate([quiet, audio])


class Sampler:
    """CPU (% of one core) and RSS of the server and of this process, every `interval_s`."""

    def __init__(self, pid: int, interval_s: float = 0.5) -> None:
        self.server = psutil.Process(pid)
        self.me = psutil.Process()
        self.interval_s = interval_s
        self.samples: list[
            tuple[float, float, float]
        ] = []  # server cpu %, server rss MB, own cpu %
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.server.cpu_percent(None)
        self.me.cpu_percent(None)
        while not self._stop.wait(self.interval_s):
            with contextlib.suppress(psutil.Error):
                self.samples.append(
                    (
                        self.server.cpu_percent(None),
                        self.server.memory_info().rss / 2**20,
                        self.me.cpu_percent(None),
                    )
                )

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {}
        cpu, rss, own = zip(*self.samples, strict=True)
        return {
            "server_cpu_pct_mean": sum(cpu) / len(cpu),
            "server_cpu_pct_max": max(cpu),
            "server_rss_mb_max": max(rss),
            "bench_cpu_pct_mean": sum(own) / len(own),
            "samples": len(cpu),
        }


def _active_calls(server: ServerProcess) -> int:
    import json

    with urllib.request.urlopen(f"{server.url('http')}/healthz", timeout=5) as r:
        return int(json.loads(r.read())["active_calls"])


def _settle(server: ServerProcess, timeout_s: float = 30.0) -> None:
    """Wait until the previous level's calls have ended on the server's side."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            if _active_calls(server) == 0:
                return
        time.sleep(0.5)


async def _level(
    server: ServerProcess,
    n: int,
    corpus: list[Utterance],
    paused: dict[int, Utterance],
    fast_forward: float,
    think: str,
) -> list[dict[str, Any]]:
    async def one(i: int) -> dict[str, Any]:
        await asyncio.sleep(i * START_SPREAD_S / n)
        turns = caller_turns(i, corpus, paused)
        audio = [
            with_think(u.audio, t) if t else u.audio
            for u, t in zip(turns, think_times(i, len(turns), think), strict=True)
        ]
        out = await place_call(
            f"{server.url()}/twilio",
            server.events_url,
            [to_wire(a) for a in audio],
            fast_forward=fast_forward,
            timeout_s=CALL_TIMEOUT_S,
        )
        out["planned_turns"] = len(turns)
        return out

    return await asyncio.gather(*(one(i) for i in range(n)))


def run(ctx: Context) -> dict[str, Any]:
    from voicebot.config import AsrSettings, Settings

    fast_forward = 8.0 if ctx.quick else 1.0  # quick: the greeting is fast-forwarded (calls.py)
    corpora = {"realistic": realistic_corpus(), "espeak-da": corpus("espeak-da", 12)}
    paused = {
        name: {k: with_pause(u, PAUSE_S) for k, u in enumerate(utts)}
        for name, utts in corpora.items()
    }
    result: dict[str, Any] = {
        "patterns": {
            p: {"think": think, "corpus": c, "levels": {}} for p, (think, c) in PATTERNS.items()
        },
        "corpora": {
            name: [
                {"corpus": u.corpus, "voice": u.voice, "seconds": round(u.seconds, 2)} for u in utts
            ]
            for name, utts in corpora.items()
        },
        "fast_forward_greeting": fast_forward,
        "start_spread_s": START_SPREAD_S,
        "think_first_s": THINK_FIRST_S,
        "think_next_s": THINK_NEXT_S,
        "target_p95_ms": TARGET_P95_MS,
        # The server runs with the defaults (procs.ServerProcess drops inherited VOICEBOT_*).
        "server_limits": {
            "max_calls": Settings.model_fields["max_calls"].default,
            "asr.max_pending": AsrSettings.model_fields["max_pending"].default,
            "asr.workers": AsrSettings.model_fields["workers"].default,
            "asr.threads": ctx.threads,
        },
    }
    server = ServerProcess("concurrency", ctx.model_dir, ctx.out_dir / "logs")
    try:
        server.start()
        result["ready_s"] = round(server.wait_ready(), 1)
        assert server.proc is not None
        result["server_rss_mb_idle"] = psutil.Process(server.proc.pid).memory_info().rss / 2**20
        asyncio.run(
            place_call(
                f"{server.url()}/twilio",
                server.events_url,
                [to_wire(corpora["realistic"][0].audio)],
                fast_forward=8.0,
                timeout_s=CALL_TIMEOUT_S,
            )
        )  # warm-up, not counted
        _settle(server)
        steps = [(p, n) for p in PATTERNS for n in levels_for(ctx.quick, p)]
        for pattern, n in tqdm(steps, desc="concurrency levels", unit="level", leave=False):
            think, name = PATTERNS[pattern]
            before = server.metrics()
            with Sampler(server.proc.pid) as sampler:
                started = time.monotonic()
                calls = asyncio.run(
                    _level(server, n, corpora[name], paused[name], fast_forward, think)
                )
                wall_s = time.monotonic() - started
            after = server.metrics()
            result["patterns"][pattern]["levels"][str(n)] = summarize_level(
                calls,
                wall_s,
                sampler.summary(),
                {c: after.get(c, 0) - before.get(c, 0) for c in COUNTERS},
            )
            _settle(server)
    finally:
        server.stop()
    result["log"] = scan_log(server.log_path)
    for pattern in result["patterns"].values():
        pattern["max_calls_within_target"] = max_within_target(pattern["levels"], TARGET_P95_MS)
    first = next(iter(PATTERNS))  # its levels rise from one call: RSS has not peaked before
    result["memory_per_extra_call"] = memory_per_extra_call(result["patterns"][first]["levels"])
    return result


def memory_per_extra_call(
    levels: dict[str, dict[str, Any]], low: int = 8, high: int = 32
) -> dict[str, Any] | None:
    """Server RSS growth per extra simultaneous call between two levels (the peak RSS sampled
    during each). Only meaningful on levels run in rising order in one server process: the
    allocator keeps what a larger level took, so a later, smaller level would read too high."""
    if str(low) not in levels or str(high) not in levels:
        return None
    rss_low = levels[str(low)].get("server_rss_mb_max")
    rss_high = levels[str(high)].get("server_rss_mb_max")
    if rss_low is None or rss_high is None:
        return None
    return {
        "from_calls": low,
        "to_calls": high,
        "mb_per_call": round((rss_high - rss_low) / (high - low), 2),
    }


def summarize_level(
    calls: list[dict[str, Any]], wall_s: float, sampled: dict[str, Any], counters: dict[str, float]
) -> dict[str, Any]:
    turns = [t for c in calls for t in c["turns"]]
    # An utterance the bot interrupted by ending the call (a hand-off) is not a turn it left
    # unanswered; it is counted apart.
    unanswered = sum(max(0, c["turns_sent"] - c["cut_off_turns"] - len(c["turns"])) for c in calls)
    decision = [t["latency_ms"].get("speech_end_to_decision") for t in turns]
    return {
        "calls": len(calls),
        "wall_s": round(wall_s, 1),
        "turns_sent": sum(c["turns_sent"] for c in calls),
        "turns_planned": sum(c["planned_turns"] for c in calls),
        "decided": len(turns),
        "unanswered_turns": unanswered,
        "cut_off_turns": sum(c["cut_off_turns"] for c in calls),
        "decision_ms": summarize(decision + [None] * unanswered),
        "transcript_ms": summarize(
            [t["latency_ms"].get("speech_end_to_transcript") for t in turns]
        ),
        "refused_calls": sum(c["refused"] for c in calls),
        "overloaded_decisions": sum(c["overloaded"] for c in calls),
        "errors": [c["error"] for c in calls if c["error"]],
        "frames_sent": sum(c["frames_sent"] for c in calls),
        "late_frames": sum(c["late_frames"] for c in calls),
        "max_late_ms": max((c["max_late_ms"] for c in calls), default=0.0),
        "drift_ms_max": max((c["drift_ms"] for c in calls), default=0.0),
        "unsent_speech_frames": sum(c["unsent_frames"] for c in calls),
        "server_counters": counters,
        "decodes": decode_summary(calls),
        **sampled,
    }


def max_within_target(levels: dict[str, dict[str, Any]], target_ms: float) -> int | None:
    """The largest level whose p95 speech end → decision is under the target with every turn
    decided and no call refused or routed for overload (all lower levels must pass too)."""
    best = None
    for key in sorted(levels, key=int):
        lv = levels[key]
        p95 = lv["decision_ms"]["p95"]
        ok = (
            p95 is not None
            and p95 < target_ms
            and lv["unanswered_turns"] == 0
            and lv["refused_calls"] == 0
            and lv["overloaded_decisions"] == 0
            and not lv["errors"]
        )
        if not ok:
            break
        best = int(key)
    return best


PATTERN_TITLES = {
    "burst": "burst — every caller speaks as soon as the bot is quiet (lock-step worst case); "
    "real Danish turns and English requests",
    "callers": "callers — each caller thinks first (0–8 s before the first turn, 0.5–3 s before "
    "a later one), as people do; real Danish turns and English requests",
    "callers-espeak-da": "callers-espeak-da — the callers pattern speaking espeak-ng Danish: "
    "the worst case (Whisper base loops on it), not what callers produce",
}


def markdown(result: dict[str, Any]) -> str:
    limits = result["server_limits"]
    lines = [
        "## Concurrency",
        "",
        f"Simultaneous calls on loopback, starts spread over {result['start_spread_s']:.0f} s; "
        f"server limits: max_calls={limits['max_calls']}, asr.max_pending={limits['asr.max_pending']}, "
        f"asr.workers={limits['asr.workers']}, asr.threads={limits['asr.threads']}. "
        + (
            "Greeting fast-forwarded ×{:.0f} (quick mode). ".format(result["fast_forward_greeting"])
            if result["fast_forward_greeting"] > 1
            else "All audio in real time. "
        )
        + "CPU is % of one core.",
        "",
    ]
    for name, pattern in result["patterns"].items():
        lines += [f"### {PATTERN_TITLES.get(name, name)}", "", _level_table(pattern["levels"]), ""]
        best = pattern["max_calls_within_target"]
        lines += [
            f"Largest measured level with p95 speech end → decision under {result['target_p95_ms']:.0f} ms "
            f"and every turn decided ({name}): **{best if best is not None else 'none'}**.",
            "",
        ]
    growth = result.get("memory_per_extra_call")
    if growth:
        lines += [
            f"Server memory per extra call between {growth['from_calls']} and "
            f"{growth['to_calls']} calls: **{growth['mb_per_call']:.2f} MB** (peak RSS of each "
            f"level of the {next(iter(PATTERNS))} pattern, whose levels rise from one call).",
            "",
        ]
    lines += [
        f"Idle server RSS {fmt(result.get('server_rss_mb_idle'))} MB. Late frames: the callers' own 20 ms "
        "frames that left more than 20 ms after they were due (the callers run in the benchmark process, "
        "on the same cores); the server does not report late or dropped frames, so none are claimed for it.",
        "",
        log_summary("The", result.get("log", {})),
    ]
    return "\n".join(lines)


def _level_table(levels: dict[str, Any]) -> str:
    rows = []
    for n, lv in levels.items():
        d = lv["decision_ms"]
        rows.append(
            [
                n,
                f"{lv['decided']}/{lv['turns_sent']} ({lv.get('cut_off_turns', 0)})",
                fmt(d["p50"]),
                fmt(d["p95"]),
                fmt(lv["transcript_ms"]["p95"]),
                fmt(lv.get("decodes", {}).get("asr_ms", {}).get("p95")),
                fmt(lv.get("decodes", {}).get("tokens", {}).get("max")),
                f"{lv.get('decodes', {}).get('redecoded_turns', 0)}/{lv.get('decodes', {}).get('turns', 0)}",
                fmt(lv.get("server_cpu_pct_mean")),
                fmt(lv.get("server_cpu_pct_max")),
                fmt(lv.get("server_rss_mb_max")),
                fmt(lv.get("bench_cpu_pct_mean")),
                f"{lv['late_frames']}/{lv['frames_sent']}",
                fmt(lv["max_late_ms"]),
                lv["unsent_speech_frames"],
                f"{lv['refused_calls']} ({lv['server_counters'].get('voicebot_calls_refused_total', 0):.0f})",
                f"{lv['overloaded_decisions']} ({lv['server_counters'].get('voicebot_asr_overloaded_total', 0):.0f})",
                len(lv["errors"]),
            ]
        )
    return markdown_table(
        [
            "calls",
            "decided/turns (cut off)",
            "decision p50 ms",
            "decision p95 ms",
            "transcript p95 ms",
            "decode p95 ms",
            "tokens max",
            "re-decoded turns",
            "server CPU % mean",
            "CPU % max",
            "server RSS MB",
            "bench CPU %",
            "late frames",
            "max late ms",
            "unsent frames",
            "refused (server)",
            "overload (server)",
            "errors",
        ],
        rows,
    )


def plot(result: dict[str, Any], out_dir: Path) -> list[str]:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    patterns = {name: p["levels"] for name, p in result["patterns"].items() if p["levels"]}
    if not patterns:
        return []
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = {"burst": "#a5533b", "callers": "#3b6ea5", "callers-espeak-da": "#888888"}
    for name, levels in patterns.items():
        ns = [int(n) for n in levels]
        for key, style in (("p50", "o:"), ("p95", "s-")):
            ys = [levels[str(n)]["decision_ms"][key] for n in ns]
            ax.plot(
                ns,
                [y if y is not None else float("nan") for y in ys],
                style,
                color=colours.get(name),
                label=f"{name}: decision {key}",
            )
        for n in ns:  # what the latency hides: callers routed away instead of answered
            lv = levels[str(n)]
            flags = [
                f"{lv[k]} {label}"
                for k, label in (
                    ("overloaded_decisions", "overload"),
                    ("refused_calls", "refused"),
                    ("unanswered_turns", "unanswered"),
                )
                if lv.get(k)
            ]
            p95 = lv["decision_ms"]["p95"]
            if flags and p95 is not None:
                ax.annotate(
                    ", ".join(flags),
                    (n, p95),
                    textcoords="offset points",
                    xytext=(-8, -4),
                    ha="right",
                    va="top",
                    fontsize=8,
                    color=colours.get(name),
                )
    ax.axhline(
        result["target_p95_ms"],
        color="#555555",
        linestyle="--",
        label=f"{result['target_p95_ms']:.0f} ms target",
    )
    ax.set_xscale("log", base=2)
    every = sorted({int(n) for lv in patterns.values() for n in lv})
    ax.set_xticks(every, [str(n) for n in every])
    ax.set_xlabel("simultaneous calls")
    ax.set_ylabel("speech end → decision (ms)")
    ax.set_title("Latency against concurrent calls")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.yaxis.set_minor_formatter(
        FuncFormatter(lambda v, _: f"{v:,.0f}" if str(v)[0] in "25" else "")
    )
    name = "callers" if "callers" in patterns else next(iter(patterns))
    levels = patterns[name]  # server load of the realistic pattern
    ns = [int(n) for n in levels]
    cpu = [levels[str(n)].get("server_cpu_pct_mean", float("nan")) for n in ns]
    rss = [levels[str(n)].get("server_rss_mb_max", float("nan")) for n in ns]
    ax2.plot(ns, cpu, "o-", color="#3b6ea5", label=f"server CPU % (mean, {name})")
    ax2.set_xscale("log", base=2)
    ax2.set_xticks(ns, [str(n) for n in ns])
    ax2.set_xlabel("simultaneous calls")
    ax2.set_ylabel("CPU % of one core", color="#3b6ea5")
    ax3 = ax2.twinx()
    ax3.plot(ns, rss, "s--", color="#c98a3a", label=f"server RSS MB (max, {name})")
    ax3.set_ylabel("RSS MB", color="#c98a3a")
    ax2.set_title("Server load")
    ax2.grid(True, alpha=0.3)
    handles = ax2.get_legend_handles_labels()[0] + ax3.get_legend_handles_labels()[0]
    ax2.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(out_dir / "concurrency.png", dpi=110)
    plt.close(fig)
    return ["concurrency.png"]
