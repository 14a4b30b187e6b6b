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

Three corpora, each its own rows (calls.CORPORA): real Danish turns, English requests in
espeak-ng English, and espeak-ng Danish, the labelled worst case. Per corpus the report also
gives what the project server's decodes cost (decode ms, tokens, re-decodes, slowest turn).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmarks.suites.calls import CORPORA, Utterance, corpus, place_call, to_wire
from benchmarks.suites.common import (
    DECODE_HEADERS,
    PERCENTILES,
    Context,
    decode_cells,
    decode_summary,
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
    n_calls = 2 if ctx.quick else 12
    corpora = {name: corpus(name, n_calls) for name in CORPORA}
    logs = ctx.out_dir / "logs"
    servers = {
        "project": ServerProcess("e2e-project", ctx.model_dir, logs),
        "naive": ServerProcess("e2e-naive", ctx.model_dir, logs, NAIVE),
    }
    calls: dict[str, dict[str, list[dict[str, Any]]]] = {
        c: {name: [] for name in servers} for c in corpora
    }
    try:
        for server in servers.values():  # load both models at once, then wait for both
            server.start()
        ready_s = {name: round(server.wait_ready(), 1) for name, server in servers.items()}
        asyncio.run(_calls(servers, corpora, calls))
    finally:
        for server in servers.values():
            server.stop()
    return {
        "servers": {
            name: {"overrides": s.env, "ready_s": ready_s[name], "log": scan_log(s.log_path)}
            for name, s in servers.items()
        },
        "fast_forward_greeting": FAST_FORWARD,
        "corpora": {c: corpus_result(utts, calls[c]) for c, utts in corpora.items()},
    }


def corpus_result(utts: list[Utterance], calls: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "corpus": [
            {"text": u.text, "intent": u.intent, "voice": u.voice, "seconds": round(u.seconds, 2)}
            for u in utts
        ],
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
        "decodes": {name: decode_summary(cs) for name, cs in calls.items()},
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
    labelled = [u for u in utts if u.intent]
    result["intent_correct"] = {
        name: sum(
            bool(c["turns"]) and c["turns"][0]["intent"] == u.intent
            for c, u in zip(cs, utts, strict=True)
            if u.intent
        )
        for name, cs in calls.items()
    }
    result["labelled"] = len(labelled)
    result["errors"] = {name: [c["error"] for c in cs if c["error"]] for name, cs in calls.items()}
    return result


async def _calls(
    servers: dict[str, ServerProcess],
    corpora: dict[str, list[Utterance]],
    calls: dict[str, dict[str, list]],
) -> None:
    def place(server: ServerProcess, audio):
        return place_call(
            f"{server.url()}/twilio",
            server.events_url,
            [to_wire(audio)],
            fast_forward=FAST_FORWARD,
            timeout_s=CALL_TIMEOUT_S,
        )

    # Warm-up (not counted): first-call costs such as rendering the reply prompts.
    first = next(u for utts in corpora.values() for u in utts)
    await asyncio.gather(*(place(s, first.audio) for s in servers.values()))
    names = list(servers)
    todo = [(c, u) for c, utts in corpora.items() for u in utts]
    for i, (c, utterance) in enumerate(tqdm(todo, desc="e2e calls", unit="call", leave=False)):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            calls[c][name].append(await place(servers[name], utterance.audio))


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "## End to end through the gateway (caller's side)",
        "",
        "One utterance per call (8 kHz μ-law), one call at a time, to the project's settings and "
        "to the naive pipeline; milliseconds from the end of the caller's speech. One table per "
        "corpus; espeak-ng Danish is the worst case, not what callers produce.",
    ]
    for name, res in result["corpora"].items():
        lines += ["", f"### {name}: {CORPORA.get(name, name)}", "", _latency_table(res)]
        lat, n = res["latency_ms"], len(res["corpus"])
        missing = {k: lat[k]["speech_end_to_decision"]["missing"] for k in lat}
        seconds = [u["seconds"] for u in res["corpus"]]
        lines += [
            "",
            f"{n} calls, turns {min(seconds, default=0):.1f}–{max(seconds, default=0):.1f} s. "
            f"Turns without a decision: project {missing['project']}, naive {missing['naive']}."
            + (
                f" First intent as labelled: project {res['intent_correct']['project']}/{res['labelled']}, "
                f"naive {res['intent_correct']['naive']}/{res['labelled']}."
                if res["labelled"]
                else " (Unlabelled real speech: no intent check.)"
            ),
        ]
    lines += ["", "### What the decodes cost (the transcript events)", ""]
    rows = [
        [name, server, *decode_cells(res["decodes"][server])]
        for name, res in result["corpora"].items()
        for server in res["decodes"]
    ]
    lines.append(markdown_table(["corpus", "server", *DECODE_HEADERS], rows, "llrrrrrl"))
    lines += ["", *(f"- {log_summary(k, v['log'])}" for k, v in result["servers"].items())]
    return "\n".join(lines)


def _latency_table(res: dict[str, Any]) -> str:
    lat = res["latency_ms"]
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
                    fmt_ratio(res["ratio_naive_to_project"][m][f"p{q}"]),
                ]
            )
    return markdown_table(
        ["speech end →", "percentile", "project ms", "naive ms", "naive / project"], rows, "llrrr"
    )


def plot(result: dict[str, Any], out_dir: Path) -> list[str]:
    import matplotlib.pyplot as plt

    corpora = result["corpora"]
    fig, grid = plt.subplots(
        len(corpora), len(METRICS), figsize=(12, 3.6 * len(corpora)), sharey=True, squeeze=False
    )
    for row, (name, res) in zip(grid, corpora.items(), strict=True):
        for ax, m in zip(row, METRICS, strict=True):
            _bars(ax, res, m)
            title = f"{name}: speech end → " + m.removeprefix("speech_end_to_").replace("_", " ")
            if m.endswith("first_audio"):
                title += "\n(after 1.5 s: the «et øjeblik» prompt)"
            ax.set_title(title, fontsize=9)
        row[0].set_ylabel("ms (caller's side)")
    grid[0][0].legend()
    fig.suptitle("End to end: project settings vs naive pipeline, per corpus")
    fig.tight_layout()
    fig.savefig(out_dir / "e2e_latency.png", dpi=110)
    plt.close(fig)
    return ["e2e_latency.png"]


def _bars(ax, res: dict[str, Any], metric: str) -> None:
    import numpy as np

    x = np.arange(len(PERCENTILES))
    for k, (name, color) in enumerate((("project", "#3b6ea5"), ("naive", "#c98a3a"))):
        values = [res["latency_ms"][name][metric][f"p{q}"] or 0 for q in PERCENTILES]
        bars = ax.bar(x + (k - 0.5) * 0.38, values, 0.38, label=name, color=color)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(x, [f"p{q}" for q in PERCENTILES])
    ax.grid(True, axis="y", alpha=0.3)
