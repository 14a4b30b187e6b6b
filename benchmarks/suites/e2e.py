"""End-to-end suite: the real gateway (`voicebot serve` in a subprocess) called over loopback
by the caller simulator, the project's settings against a NAIVE pipeline in the same run.

  project   the defaults: endpointing.silence_ms=480 (240 after a confident speculative
            result), trimmed encoder window, partial transcripts, speculative final decode
            in the pause
  naive     endpointing.silence_ms=800, asr.trim_window=false (padded 30 s window),
            asr.partials=false, asr.speculative=false (so the early end after a confident
            speculation cannot happen either: it needs a speculative result)

Both servers run at once and every corpus call goes to both, alternating which goes first,
one call at a time: background load on the machine then hits both alike. One warm-up call per
server is not counted. Latency is the simulator's, on the caller's side (calls.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmarks.suites.calls import call_corpus, place_call, to_wire
from benchmarks.suites.common import (
    PERCENTILES,
    Context,
    fmt,
    fmt_ratio,
    log_summary,
    markdown_table,
    ratio,
    summarize,
)
from benchmarks.suites.procs import ServerProcess, scan_log

METRICS = ("speech_end_to_transcript", "speech_end_to_decision", "speech_end_to_first_audio")
NAIVE = {
    "VOICEBOT_ENDPOINTING__SILENCE_MS": "800",
    "VOICEBOT_ASR__TRIM_WINDOW": "false",
    "VOICEBOT_ASR__PARTIALS": "false",
    "VOICEBOT_ASR__SPECULATIVE": "false",
}
FAST_FORWARD = 8.0  # the greeting only (calls.py)
CALL_TIMEOUT_S = 90.0


def run(ctx: Context) -> dict[str, Any]:
    n_calls = 4 if ctx.quick else 20
    corpus = call_corpus(n_calls)
    logs = ctx.out_dir / "logs"
    servers = {
        "project": ServerProcess("e2e-project", ctx.model_dir, logs),
        "naive": ServerProcess("e2e-naive", ctx.model_dir, logs, NAIVE),
    }
    calls: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    try:
        for server in servers.values():  # load both models at once, then wait for both
            server.start()
        ready_s = {name: round(server.wait_ready(), 1) for name, server in servers.items()}
        asyncio.run(_calls(servers, corpus, calls))
    finally:
        for server in servers.values():
            server.stop()
    result: dict[str, Any] = {
        "corpus": [
            {"text": u.text, "intent": u.intent, "voice": u.voice, "seconds": round(u.seconds, 2)}
            for u in corpus
        ],
        "servers": {
            name: {"overrides": s.env, "ready_s": ready_s[name], "log": scan_log(s.log_path)}
            for name, s in servers.items()
        },
        "fast_forward_greeting": FAST_FORWARD,
        "calls": calls,
        "latency_ms": {
            name: {
                m: summarize(
                    [t["latency_ms"].get(m) for c in cs for t in c["turns"]]
                    + [None]
                    * sum(
                        max(0, c["turns_sent"] - c["cut_off_turns"] - len(c["turns"])) for c in cs
                    )
                )
                for m in METRICS
            }
            for name, cs in calls.items()
        },
    }
    result["ratio_naive_to_project"] = {
        m: {
            f"p{q}": ratio(
                result["latency_ms"]["naive"][m][f"p{q}"],
                result["latency_ms"]["project"][m][f"p{q}"],
            )
            for q in PERCENTILES
        }
        for m in METRICS
    }
    result["intent_correct"] = {
        name: sum(
            bool(c["turns"]) and c["turns"][0]["intent"] == u.intent
            for c, u in zip(cs, corpus, strict=True)
        )
        for name, cs in calls.items()
    }
    result["errors"] = {name: [c["error"] for c in cs if c["error"]] for name, cs in calls.items()}
    return result


async def _calls(servers: dict[str, ServerProcess], corpus, calls: dict[str, list]) -> None:
    def place(server: ServerProcess, audio):
        return place_call(
            f"{server.url()}/twilio",
            server.events_url,
            [to_wire(audio)],
            fast_forward=FAST_FORWARD,
            timeout_s=CALL_TIMEOUT_S,
        )

    # Warm-up (not counted): first-call costs such as rendering the reply prompts.
    await asyncio.gather(*(place(s, corpus[0].audio) for s in servers.values()))
    names = list(servers)
    for i, utterance in enumerate(tqdm(corpus, desc="e2e calls", unit="call", leave=False)):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            calls[name].append(await place(servers[name], utterance.audio))


def markdown(result: dict[str, Any]) -> str:
    lat = result["latency_ms"]
    n = len(result["corpus"])
    lines = [
        "## End to end through the gateway (caller's side)",
        "",
        f"{n} calls of one Danish utterance each (3–6 s, held-back sentences, espeak-ng, 8 kHz μ-law), "
        "one at a time, to the project's settings and to the naive pipeline; milliseconds from the end "
        "of the caller's speech.",
        "",
    ]
    rows = []
    for m in METRICS:
        for q in PERCENTILES:
            p, nv = lat["project"][m][f"p{q}"], lat["naive"][m][f"p{q}"]
            rows.append(
                [
                    m.removeprefix("speech_end_to_"),
                    f"p{q}",
                    fmt(p),
                    fmt(nv),
                    fmt_ratio(result["ratio_naive_to_project"][m][f"p{q}"]),
                ]
            )
    lines.append(
        markdown_table(
            ["speech end →", "percentile", "project ms", "naive ms", "naive / project"],
            rows,
            "llrrr",
        )
    )
    missing = {k: lat[k]["speech_end_to_decision"]["missing"] for k in lat}
    lines += [
        "",
        f"Turns without a decision: project {missing['project']}, naive {missing['naive']}. "
        f"First intent as labelled: project {result['intent_correct']['project']}/{n}, "
        f"naive {result['intent_correct']['naive']}/{n}.",
    ]
    lines += ["", *(f"- {log_summary(k, v['log'])}" for k, v in result["servers"].items())]
    return "\n".join(lines)


def plot(result: dict[str, Any], out_dir: Path) -> list[str]:
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(METRICS), figsize=(12, 4.2), sharey=True)
    x = np.arange(len(PERCENTILES))
    for ax, m in zip(axes, METRICS, strict=True):
        for k, (name, color) in enumerate((("project", "#3b6ea5"), ("naive", "#c98a3a"))):
            values = [result["latency_ms"][name][m][f"p{q}"] or 0 for q in PERCENTILES]
            bars = ax.bar(x + (k - 0.5) * 0.38, values, 0.38, label=name, color=color)
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set_xticks(x, [f"p{q}" for q in PERCENTILES])
        title = "speech end → " + m.removeprefix("speech_end_to_").replace("_", " ")
        if m.endswith("first_audio"):
            title += "\n(after 1.5 s: the «et øjeblik» prompt)"
        ax.set_title(title, fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("ms (caller's side)")
    axes[0].legend()
    fig.suptitle(f"End to end, {len(result['corpus'])} calls: project settings vs naive pipeline")
    fig.tight_layout()
    fig.savefig(out_dir / "e2e_latency.png", dpi=110)
    plt.close(fig)
    return ["e2e_latency.png"]
