"""`voicebot bench calls`: whole calls as citizens live them — where each call ends.

A real `voicebot serve` (the defaults, the real Whisper weights) is called over loopback by
scripted callers (outcomes_callers.py) on the Twilio protocol, 8 kHz μ-law: each has one
errand from the held-back utterances, in Danish (espeak-ng Danish, the worst case) or English
(espeak-ng English voices), and reacts to the bot's prompts as a citizen would. The bot
detects the language on the first turn, as with any caller.

Per language and intent: resolved without a person (by speech, by the keypad), handed to a
person, misrouted (wrong queue or wrong answer), a needless "ring 112", a missed 112, abandoned;
turns per call; seconds from the call's start to the decision as the caller lives them.

Quick: one caller per intent and language, two calls at a time (a smoke run); full: three per
intent and language, one call at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks.suites.calls import ENGLISH_VOICES, to_wire
from benchmarks.suites.common import Context, fmt, log_summary, markdown_table, summarize
from benchmarks.suites.outcomes_callers import (
    OUTCOMES,
    PERSON_INTENTS,
    BotPrompts,
    Caller,
    Scenario,
    ScriptedCall,
    outcome,
    scenarios,
)
from benchmarks.suites.procs import ServerProcess, scan_log

FAST = 6.0  # the bot's prompts are heard this much faster once it has decided (outcomes_callers)
CALL_TIMEOUT_S = 180.0
LANGUAGES = ("da", "en")
SEED = 15
# The intents whose right end is not "resolved": a person, or "ring 112".
SPECIAL = PERSON_INTENTS | {"emergency"}
# What each call's record keeps of the bot's decision events.
DECISION_FIELDS = ("action", "intent", "confidence", "forvaltning", "reason", "emergency_notice")
SHORT = {
    "resolved_speech": "speech",
    "resolved_keypad": "keypad",
    "person": "person",
    "misrouted": "misrouted",
    "notice_112": "112 notice",
    "needless_112": "needless 112",
    "missed_112": "missed 112",
    "abandoned": "abandoned",
}


def voices() -> dict[str, Any]:
    from benchmarks.asr_eval_set import VOICES
    from voicebot.tts import Voice

    return {
        "da": {v.name: v for v in VOICES},
        "en": {name: Voice(name, 160) for name in ENGLISH_VOICES},
    }


def build_scenarios(per_intent: int) -> list[Scenario]:
    from models.intent_data import load_heldout

    heldout: dict[str, dict[str, list[str]]] = {}
    for language in LANGUAGES:
        by_intent: dict[str, list[str]] = {}
        for example in load_heldout(language):
            by_intent.setdefault(example.intent, []).append(example.text)
        heldout[language] = by_intent
    names = {lang: tuple(v) for lang, v in voices().items()}
    return scenarios(heldout, names, per_intent, SEED)


def render(plan: list[Scenario]) -> dict[tuple[str, str], np.ndarray]:
    """Everything every caller may say, in its voice, at the wire rate (before the calls, so
    no call waits for espeak-ng)."""
    from voicebot.tts import Speaker

    speaker = Speaker(cache_size=2)
    by_name = voices()
    return {
        (s.voice, text): to_wire(speaker.speak(text, by_name[s.language][s.voice]))
        for s in plan
        for text in s.texts()
    }


def run(ctx: Context) -> dict[str, Any]:
    from voicebot.catalogue import load_catalogue
    from voicebot.config import load_settings

    per_intent, parallel = (1, 2) if ctx.quick else (3, 1)
    catalogue = load_catalogue(load_settings(None).catalogue)
    plan = build_scenarios(per_intent)
    server = ServerProcess("calls", ctx.model_dir, ctx.out_dir / "logs")
    try:
        server.start()
        audio = render(plan)  # while the server loads its model
        ready_s = round(server.wait_ready(), 1)
        calls = asyncio.run(_calls(server, plan, catalogue, audio, parallel))
    finally:
        server.stop()
    return {
        "server": {"overrides": server.env, "ready_s": ready_s, "log": scan_log(server.log_path)},
        "plan": {"per_intent": per_intent, "parallel": parallel, "seed": SEED, "fast": FAST},
        "calls": calls,
        "summary": summary(calls),
        "notes": [
            f"{len(plan)} calls, {parallel} at a time; the bot's prompts heard {FAST:g}× faster "
            "once it had decided (the caller's speech and the wait for a decision in real time)"
        ],
    }


async def _calls(
    server: ServerProcess,
    plan: list[Scenario],
    catalogue: Any,
    audio: dict[tuple[str, str], np.ndarray],
    parallel: int,
) -> list[dict[str, Any]]:
    prompts = BotPrompts(catalogue)
    gate = asyncio.Semaphore(parallel)
    bar = tqdm(total=len(plan), desc="calls", unit="call", leave=False)

    async def one(scenario: Scenario) -> dict[str, Any]:
        async with gate:
            out = await _place(server, scenario, catalogue, prompts, audio)
        bar.update()
        return out

    try:
        return list(await asyncio.gather(*(one(s) for s in plan)))
    finally:
        bar.close()


async def _place(
    server: ServerProcess,
    scenario: Scenario,
    catalogue: Any,
    prompts: BotPrompts,
    audio: dict[tuple[str, str], np.ndarray],
) -> dict[str, Any]:
    """One call; never raises (a failed call is an abandoned one, with its error)."""
    caller = Caller(scenario, catalogue, prompts)
    call = ScriptedCall(
        f"{server.url()}/twilio",
        None,
        caller,
        lambda text: audio[(scenario.voice, text)],
        fast=FAST,
        timeout_s=CALL_TIMEOUT_S,
    )
    call.events_url = server.events_url(call.call_id)
    error = None
    try:
        await asyncio.wait_for(call.run([]), CALL_TIMEOUT_S + 30)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    timed = [(t, e) for t, e in call.events if e.get("type") == "decision"]
    ended, final = outcome(scenario, catalogue, [e for _, e in timed])
    decided_at = next((t for t, e in timed if e is final), None)
    inputs = [i for i in call.inputs_log if i.get("what") != "mhm"]
    return {
        "scenario": scenario.__dict__,
        "outcome": ended,
        "final": final,
        "language_served": next((e.get("language") for _, e in timed), None),
        "turns": sum(decided_at is None or i["at"] <= decided_at for i in inputs),
        "decision_s": None if decided_at is None else round(call.lived_s(decided_at), 2),
        "call_s": round(call.lived_s(time.monotonic()), 2),
        "acts": caller.acts,
        "heard": [e.get("text") for _, e in call.events if e.get("type") == "transcript"],
        "decisions": [{k: e.get(k) for k in DECISION_FIELDS} for _, e in timed],
        "inputs": [
            {
                "lived_s": round(call.lived_s(i["at"]), 2),
                **{k: v for k, v in i.items() if k != "at"},
            }
            for i in call.inputs_log
        ],
        "mhm_said": any(i.get("what") == "mhm" for i in call.inputs_log),
        "backchannels": sum(e.get("type") == "backchannel" for _, e in call.events),
        "error": error,
    }


# == figures ===================================================================================
def _rates(calls: list[dict[str, Any]]) -> dict[str, Any]:
    counts = Counter(c["outcome"] for c in calls)
    n = len(calls)
    return {
        "n": n,
        "counts": {k: counts.get(k, 0) for k in OUTCOMES},
        "share": {k: (counts.get(k, 0) / n if n else None) for k in OUTCOMES},
        "resolved": (counts["resolved_speech"] + counts["resolved_keypad"]) / n if n else None,
        "turns": summarize((c["turns"] for c in calls), (50, 95)),
        "decision_s": summarize((c["decision_s"] for c in calls), (50, 95)),
    }


def summary(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """Per language: the errands (rates over the intents that have a queue or an answer), the
    emergencies (heard 112 first) and the callers who needed a person; per language and intent."""
    out: dict[str, Any] = {}
    for language in LANGUAGES:
        mine = [c for c in calls if c["scenario"]["language"] == language]
        errands = [c for c in mine if c["scenario"]["intent"] not in SPECIAL]
        emergencies = [c for c in mine if c["scenario"]["intent"] == "emergency"]
        seekers = [c for c in mine if c["scenario"]["intent"] in PERSON_INTENTS]
        intents = sorted({c["scenario"]["intent"] for c in mine})
        out[language] = {
            "errands": _rates(errands),
            "all": _rates(mine),
            "emergency_112_first": [
                sum(c["outcome"] in ("resolved_speech", "notice_112") for c in emergencies),
                len(emergencies),
            ],
            # of those: told by an emergency decision / by the notice ("if someone is in danger")
            "emergency_by": {
                "decision": sum(c["outcome"] == "resolved_speech" for c in emergencies),
                "notice": sum(c["outcome"] == "notice_112" for c in emergencies),
            },
            # errand callers who heard the notice of a possible emergency (not the keypad menu's)
            "errands_heard_possible_emergency_notice": sum(
                any(
                    d.get("emergency_notice") and d["action"] != "keypad_menu"
                    for d in c["decisions"]
                )
                for c in errands
            ),
            "person_seekers_reached_person": [
                sum(c["outcome"] == "person" for c in seekers),
                len(seekers),
            ],
            "served_in_other_language": sum(c["language_served"] != language for c in mine),
            "by_intent": {
                i: _rates([c for c in mine if c["scenario"]["intent"] == i]) for i in intents
            },
        }
    return out


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def markdown(result: dict[str, Any]) -> str:
    plan, summ = result["plan"], result["summary"]
    lines = [
        "## Whole calls: where citizens' calls end",
        "",
        f"Scripted callers (held-back utterances; {plan['per_intent']} per intent and language, "
        f"seed {plan['seed']}) through the real gateway, Twilio 8 kHz μ-law. **Errands** are the "
        "intents with a queue or an answer (not emergencies, not callers who want a person). "
        'An emergency hears 112 first by an emergency decision, or by the notice "if someone '
        'is in danger, ring 112" (said for a possible emergency and before the keypad menu) '
        "before any queue; errands: 112 notice counts errand callers who heard the notice of a "
        "possible emergency (the keypad menu's not counted). "
        "Decision seconds: from the call's start to the bot's final decision, as the caller "
        "lives it (greeting included).",
        "",
    ]
    rows = []
    for language, s in summ.items():
        e = s["errands"]
        sh = e["share"]
        rows.append(
            [
                language,
                e["n"],
                _pct(e["resolved"]),
                _pct(sh["resolved_speech"]),
                _pct(sh["resolved_keypad"]),
                _pct(sh["person"]),
                _pct(sh["misrouted"]),
                e["counts"]["needless_112"],
                e["counts"]["abandoned"],
                "{}/{} ({} decision, {} notice)".format(
                    *s["emergency_112_first"], *s["emergency_by"].values()
                ),
                s["errands_heard_possible_emergency_notice"],
                "{}/{}".format(*s["person_seekers_reached_person"]),
                f"{fmt(e['turns']['p50'])} / {fmt(e['turns']['p95'])}",
                f"{fmt(e['decision_s']['p50'], 1)} / {fmt(e['decision_s']['p95'], 1)}",
            ]
        )
    lines.append(
        markdown_table(
            [
                "language",
                "errand calls",
                "resolved without a person",
                "by speech",
                "by keypad",
                "person",
                "misrouted",
                "needless 112",
                "abandoned",
                "emergency: 112 first",
                "errands: 112 notice",
                "wanted a person: got one",
                "turns p50 / p95",
                "decision s p50 / p95",
            ],
            rows,
        )
    )
    lines += ["", "### Per intent (calls ending: " + ", ".join(SHORT.values()) + ")", ""]
    intents = sorted({i for s in summ.values() for i in s["by_intent"]})
    rows = []
    for intent in intents:
        cells: list[str] = [intent]
        for language in summ:
            r = summ[language]["by_intent"].get(intent)
            cells.append(
                "–"
                if r is None
                else ", ".join(f"{SHORT[k]} {v}" for k, v in r["counts"].items() if v)
            )
            cells.append("–" if r is None else fmt(r["decision_s"]["p50"], 1))
        rows.append(cells)
    headers = ["intent"]
    for language in summ:
        headers += [f"{language}: outcomes", f"{language}: decision s p50"]
    lines.append(markdown_table(headers, rows, "l" + "lr" * len(summ)))
    errors = [c for c in result["calls"] if c["error"]]
    other = {k: s["served_in_other_language"] for k, s in summ.items()}
    lines += [
        "",
        f"Calls served in the other language (misdetected): {other}. Calls that failed: "
        f"{len(errors)}{' (' + errors[0]['error'] + ')' if errors else ''}.",
        "",
        f"- {log_summary('calls', result['server']['log'])}",
    ]
    return "\n".join(lines)


COLORS = {
    "resolved_speech": "#3b8f4a",
    "resolved_keypad": "#8cc084",
    "person": "#3b6ea5",
    "misrouted": "#c0392b",
    "notice_112": "#d4ac0d",
    "needless_112": "#e67e22",
    "missed_112": "#7d3c98",
    "abandoned": "#999999",
}


def plot(result: dict[str, Any], out_dir: Path) -> list[str]:
    import matplotlib.pyplot as plt

    summ = result["summary"]
    languages = list(summ)
    fig, (ax_share, ax_time) = plt.subplots(1, 2, figsize=(12, 4.8))
    for row, language in enumerate(languages):
        left = 0.0
        for key in OUTCOMES:
            share = summ[language]["all"]["share"][key] or 0.0
            if share:
                ax_share.barh(row, share, left=left, color=COLORS[key])
                left += share
    from matplotlib.patches import Patch

    ax_share.legend(
        [Patch(color=COLORS[k]) for k in OUTCOMES],
        [SHORT[k] for k in OUTCOMES],
        fontsize=8,
        ncol=4,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.18),
    )
    ax_share.set_yticks(range(len(languages)), languages)
    ax_share.set_xlim(0, 1)
    ax_share.set_xlabel("share of calls (all intents)")
    ax_share.set_title("Where calls end")
    times = [
        [c["decision_s"] for c in result["calls"] if c["scenario"]["language"] == lang]
        for lang in languages
    ]
    ax_time.boxplot([[t for t in ts if t is not None] or [0.0] for ts in times])
    ax_time.set_xticks(range(1, len(languages) + 1), languages)
    ax_time.set_ylabel("seconds from call start to the decision")
    ax_time.set_title("Time to the decision (caller's clock)")
    ax_time.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "calls_outcomes.png", dpi=110)
    plt.close(fig)
    return ["calls_outcomes.png"]
