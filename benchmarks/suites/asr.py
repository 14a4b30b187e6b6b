"""ASR suite: the same Whisper base weights through several engines, each in its own process.

Engines (benchmarks/suites/asr_worker.py):
  project-int8       the bot's path: WhisperAsr.transcribe(audio) with the default settings —
                     log-mel of the audio, encoder window = audio + asr.window_margin_s (at
                     least asr.window_min_s), greedy, language forced to Danish, no prompt,
                     the compression-ratio retry when the output loops. This is the final
                     decode the session runs at the end of a turn when no speculative result
                     is ready (the e2e suite measures what speculation hides).
  project-float32    the same, float32 weights (int8 vs float32)
  project-int8-30s   the same, padded 30 s encoder window (asr.trim_window=false)
  fw-beam5           faster-whisper WhisperModel(...).transcribe(audio, language="da"): the
                     library's defaults (beam 5, timestamps, temperature fallback), int8
  fw-beam1           the same with beam_size=1
  hf-float32         transformers WhisperForConditionalGeneration (weights converted from the
                     same model.bin by models/convert_ct2_to_hf.py), float32, torch threads =
                     cores, generate() defaults (greedy), 30 s window

Inputs: real Danish speech cut to 1, 2, 4, 8 and 15 s at pauses (the NST clips, stereo
averaged to mono, and the readalongs clip, concatenated; each cut ends at the quietest VAD
window in the last quarter of the target length), and the Danish evaluation set
(benchmarks/data/asr_eval/manifest.tsv; recordings over 25 s are cut at pauses into the same
pieces for every engine). Latency = wall time of one call with the whole audio present, i.e.
from the end of the audio to the final text.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm import tqdm

from benchmarks.suites.common import Context, fmt, fmt_ratio, markdown_table, ratio, summarize
from benchmarks.suites.procs import run_worker
from models.evaluation import SPEECH_DIR
from telephony.base import SAMPLE_RATE
from telephony.codecs import resample
from voicebot.config import PROJECT_ROOT

MANIFEST = PROJECT_ROOT / "benchmarks" / "data" / "asr_eval" / "manifest.tsv"
LENGTHS_S = (1, 2, 4, 8, 15)
BASELINE = "fw-beam5"
ENGINES = {
    "project-int8": "(a) project path: WhisperAsr, int8, trimmed window, greedy",
    "project-float32": "(d) project path, float32",
    "project-int8-30s": "project path, int8, padded 30 s window",
    "fw-beam5": "(b) faster-whisper defaults, beam 5, int8",
    "fw-beam1": "(b) faster-whisper, beam 1, int8",
    "hf-float32": "(c) transformers, float32, greedy, 30 s window",
}


def plan_for(quick: bool) -> dict[str, Any]:
    """How much each engine decodes. Quick: 2 lengths, 1 cut each, 1 repetition, 2 utterances
    of the evaluation set, no 30 s-window variant; full: every length, 3 cuts, 2 repetitions,
    the whole set. `budget_s` bounds the decoding time of all engines together (the run must
    stay bounded even on a busy machine); each engine gets an equal share of what the engines
    before it left, and an engine past its share stops and is marked truncated."""
    if quick:
        return {
            "lengths": (2, 8),
            "cuts": 1,
            "reps": 1,
            "eval_limit": 2,
            "budget_s": 75.0,
            "load_allowance_s": 60.0,
            "engines": [e for e in ENGINES if e != "project-int8-30s"],
        }
    return {
        "lengths": LENGTHS_S,
        "cuts": 3,
        "reps": 2,
        "eval_limit": None,
        "budget_s": 720.0,
        "load_allowance_s": 120.0,
        "engines": list(ENGINES),
    }


def interleave(a: list[Any], b: list[Any]) -> list[Any]:
    """All of `a` in order with `b` spread evenly among it, each b item just before its share
    of a (b0 first): an engine stopped by its budget has still covered both kinds of input."""
    out: list[Any] = []
    j = 0
    for i, item in enumerate(a):
        while j < len(b) and j * len(a) <= i * len(b):
            out.append(b[j])
            j += 1
        out.append(item)
    return out + b[j:]


# -- inputs ------------------------------------------------------------------------------
def speech_sources(speech_dir: Path = SPEECH_DIR) -> list[np.ndarray]:
    """The real Danish recordings at 16 kHz mono: NST clips (two microphones averaged)
    and the readalongs clip."""
    sources = []
    for path in sorted((speech_dir / "nst-danspeech").glob("*.wav")):
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        sources.append(resample(audio.mean(axis=1), rate, SAMPLE_RATE))
    clip = speech_dir / "readalongs-dan" / "dan_ap_dan.wav"
    if clip.exists():
        audio, rate = sf.read(clip, dtype="float32", always_2d=True)
        sources.append(resample(audio.mean(axis=1), rate, SAMPLE_RATE))
    if not sources:
        raise FileNotFoundError(f"no Danish speech under {speech_dir}")
    return sources


def cut_at_pause(probs: np.ndarray, window: int, start: int, length_s: float) -> int:
    """End sample of a cut of about `length_s` from `start`: the quietest VAD window (the
    latest of equals) between 75 % and 100 % of the length."""
    lo = (start + int(0.75 * length_s * SAMPLE_RATE)) // window
    hi = min((start + int(length_s * SAMPLE_RATE)) // window, len(probs))
    if hi <= lo:
        return start + int(length_s * SAMPLE_RATE)
    segment = probs[lo:hi]
    best = lo + int(len(segment) - 1 - np.argmin(segment[::-1]))
    return (best + 1) * window


def length_clips(lengths: tuple[int, ...], cuts: int) -> list[dict[str, Any]]:
    """Cuts of real speech: for each length, `cuts` clips starting at the speech onsets of
    different recordings (the stream of all recordings runs on across their ends)."""
    from voicebot.vad import WINDOW, SileroVad

    sources = speech_sources()
    stream = np.concatenate(sources)
    probs = SileroVad().stream().push(stream)
    offsets = np.cumsum([0] + [len(s) for s in sources[:-1]])
    onsets = []
    for offset, source in zip(offsets, sources, strict=True):
        p = SileroVad().stream().push(source)
        speech = np.flatnonzero(p >= 0.5)
        first = int(speech[0]) * WINDOW if speech.size else 0
        onsets.append(int(offset) + max(0, first - int(0.1 * SAMPLE_RATE)))
    clips = []
    for li, length in enumerate(lengths):
        for k in range(cuts):
            start = onsets[(li * 5 + k * 4) % len(onsets)]  # spread over speakers and recordings
            end = min(len(stream), cut_at_pause(probs, WINDOW, start, length))
            clips.append(
                {
                    "key": f"len{length}_{k}",
                    "kind": "length",
                    "nominal_s": length,
                    "audio": stream[start:end],
                }
            )
    return clips


def eval_items(limit: int | None) -> list[dict[str, Any]]:
    """The evaluation set as pieces; `limit` takes evenly spread synthetic utterances only."""
    from faster_whisper.audio import decode_audio

    from models.evaluation import load_manifest
    from voicebot.asr import split_at_pauses
    from voicebot.vad import WINDOW, SileroVad

    items = load_manifest(MANIFEST)
    if limit is not None:
        synthetic = [i for i in items if i.audio.name.startswith("syn")]
        step = max(1, len(synthetic) // limit)
        items = synthetic[::step][:limit]
    out = []
    for r, item in enumerate(items):
        audio = decode_audio(str(item.audio), sampling_rate=SAMPLE_RATE)
        pieces = (
            [audio]
            if len(audio) <= 25 * SAMPLE_RATE
            else split_at_pauses(audio, SileroVad().stream().push(audio), WINDOW)
        )
        for p, piece in enumerate(pieces):
            out.append(
                {
                    "key": f"eval{r:03d}_{p}",
                    "kind": "eval",
                    "recording": r,
                    "piece": p,
                    "reference": item.reference,
                    "file": item.audio.name,
                    "audio": piece,
                }
            )
    return out


# -- running -----------------------------------------------------------------------------
def available_engines(wanted: list[str]) -> tuple[list[str], list[str]]:
    notes = []
    engines = list(wanted)
    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing and "hf-float32" in engines:
        engines.remove("hf-float32")
        notes.append(
            f"hf-float32 skipped: {', '.join(missing)} not installed (pip install -e '.[bench]')"
        )
    return engines, notes


def run(ctx: Context) -> dict[str, Any]:
    plan = plan_for(ctx.quick)
    items = eval_items(plan["eval_limit"]) + length_clips(plan["lengths"], plan["cuts"])
    inputs = ctx.work_dir / "asr_inputs.npz"
    np.savez(inputs, **{i["key"]: i["audio"].astype(np.float32) for i in items})
    evals = [i for i in items if i["kind"] == "eval"]
    lengths = [i for i in items if i["kind"] == "length"]
    # The first repetition of the lengths spread through the evaluation set, then the other
    # repetitions: what a budget cuts off is spread over both.
    steps = interleave(
        [{"key": i["key"], "rep": 0} for i in evals], [{"key": i["key"], "rep": 0} for i in lengths]
    )
    steps += [{"key": i["key"], "rep": r} for r in range(1, plan["reps"]) for i in lengths]
    engines, notes = available_engines(plan["engines"])
    raw: dict[str, Any] = {}
    left_s = plan["budget_s"]
    for k, engine in enumerate(engines):
        share = max(20.0, left_s / (len(engines) - k))
        plan_path = ctx.work_dir / f"asr_plan_{engine}.json"
        plan_path.write_text(
            json.dumps(
                {
                    "model_dir": str(ctx.model_dir),
                    "threads": ctx.threads,
                    "budget_s": share,
                    "warmup": lengths[0]["key"],
                    "steps": steps,
                }
            ),
            encoding="utf-8",
        )
        out_path = ctx.work_dir / f"asr_{engine}.json"
        with tqdm(total=len(steps), desc=f"asr {engine}", unit="decode", leave=False) as bar:
            code = run_worker(
                [
                    ctx.python,
                    "-m",
                    "benchmarks.suites.asr_worker",
                    engine,
                    str(inputs),
                    str(plan_path),
                    str(out_path),
                ],
                ctx.out_dir / "logs" / f"asr-{engine}.log",
                # The share, loading, and some of the decode in flight; then the worker is killed
                # and what it wrote after each decode is kept.
                timeout_s=share + plan["load_allowance_s"],
                on_line=lambda line, bar=bar: bar.update(1) if line == "decoded" else None,
            )
        if out_path.exists():
            raw[engine] = json.loads(out_path.read_text(encoding="utf-8"))
        else:
            raw[engine] = {
                "engine": engine,
                "decodes": [],
                "error": f"worker exited with {code} and wrote nothing",
            }
        done = len(raw[engine]["decodes"])
        if code < 0:
            raw[engine]["truncated"] = True
            notes.append(
                f"{engine}: killed at its time limit ({share + plan['load_allowance_s']:.0f} s: share + "
                f"loading allowance) after {done} of {len(steps)} decodes"
            )
        elif raw[engine].get("truncated"):
            notes.append(
                f"{engine}: stopped after {done} of {len(steps)} decodes (its decode budget of "
                f"{share:.0f} s was spent)"
            )
        if raw[engine].get("error"):
            notes.append(f"{engine}: {raw[engine]['error']} (log: logs/asr-{engine}.log)")
        raw[engine]["budget_s"] = round(share, 1)
        left_s -= sum(d["ms"] for d in raw[engine].get("decodes", [])) / 1000

    meta = {
        i["key"]: {k: v for k, v in i.items() if k != "audio"}
        | {"audio_s": len(i["audio"]) / SAMPLE_RATE}
        for i in items
    }
    engines_out = {e: aggregate(r, meta, plan) for e, r in raw.items()}
    add_ratios(engines_out)
    add_agreement(engines_out)
    return {
        "plan": {k: list(v) if isinstance(v, tuple) else v for k, v in plan.items()},
        "inputs": {
            "length_clips": [
                {
                    "key": i["key"],
                    "nominal_s": i["nominal_s"],
                    "audio_s": round(len(i["audio"]) / SAMPLE_RATE, 2),
                }
                for i in lengths
            ],
            "eval_recordings": len({i["recording"] for i in evals}),
            "eval_pieces": len(evals),
        },
        "engines": engines_out,
        "descriptions": {e: ENGINES[e] for e in engines},
        "baseline": BASELINE,
        "notes": notes,
    }


def aggregate(raw: dict[str, Any], meta: dict[str, dict], plan: dict[str, Any]) -> dict[str, Any]:
    from models.evaluation import error_rates

    decodes = raw.get("decodes", [])
    out: dict[str, Any] = {
        k: raw.get(k)
        for k in ("load_s", "rss_after_load_mb", "peak_rss_mb", "truncated", "error", "budget_s")
    }
    out["decodes"] = len(decodes)
    evals = [d for d in decodes if meta[d["key"]]["kind"] == "eval"]
    if evals:
        ms = [d["ms"] for d in evals]
        audio_s = sum(meta[d["key"]]["audio_s"] for d in evals)
        pieces: dict[int, dict[int, str]] = {}
        for d in evals:
            m = meta[d["key"]]
            pieces.setdefault(m["recording"], {})[m["piece"]] = d["text"]
        expected: dict[int, int] = {}
        for m in meta.values():
            if m["kind"] == "eval":
                expected[m["recording"]] = expected.get(m["recording"], 0) + 1
        complete = [r for r, p in pieces.items() if len(p) == expected[r]]
        refs = [
            next(m["reference"] for m in meta.values() if m.get("recording") == r) for r in complete
        ]
        hyps = [" ".join(pieces[r][p] for p in sorted(pieces[r])) for r in complete]
        rates = error_rates(refs, hyps) if complete else {"wer": None, "cer": None}
        out["eval"] = {
            "latency_ms": summarize(ms),
            "rtf": sum(ms) / 1000 / audio_s,
            "audio_s": round(audio_s, 1),
            "wer": rates["wer"],
            "cer": rates["cer"],
            "recordings": len(complete),
            "transcripts": [
                {
                    "file": next(m["file"] for m in meta.values() if m.get("recording") == r),
                    "reference": ref,
                    "text": hyp,
                }
                for r, ref, hyp in zip(complete, refs, hyps, strict=True)
            ],
        }
    by_length: dict[str, Any] = {}
    for length in plan["lengths"]:
        ds = [
            d
            for d in decodes
            if meta[d["key"]]["kind"] == "length" and meta[d["key"]]["nominal_s"] == length
        ]
        if not ds:
            continue
        audio_s = sum(meta[d["key"]]["audio_s"] for d in ds)
        by_length[str(length)] = {
            "latency_ms": summarize([d["ms"] for d in ds]),
            "rtf": sum(d["ms"] for d in ds) / 1000 / audio_s,
            "audio_s_mean": audio_s / len(ds),
            # Words returned per clip: a decode that stops early shows here (no reference exists).
            "words_mean": float(np.mean([len(d["text"].split()) for d in ds])),
        }
    out["by_length"] = by_length
    # The first repetition's text of each real-speech clip, for agreement between engines.
    out["length_texts"] = {
        d["key"]: d["text"]
        for d in decodes
        if meta[d["key"]]["kind"] == "length" and d.get("rep", 0) == 0
    }
    return out


PROJECT = "project-int8"


def add_agreement(engines: dict[str, Any]) -> None:
    """WER/CER of each engine's text against the project path's on the same real-speech clips
    (no reference exists for most of them): a peer configured like the bot reads the same
    words; a misconfigured one (looping, wrong language or task) does not."""
    from models.evaluation import error_rates

    project = (engines.get(PROJECT) or {}).get("length_texts") or {}
    for name, data in engines.items():
        texts = data.get("length_texts") or {}
        keys = [k for k in sorted(texts) if k in project and project[k].strip()]
        if name == PROJECT or not keys:
            continue
        rates = error_rates([project[k] for k in keys], [texts[k] for k in keys])
        data["agreement_with_project"] = {**rates, "clips": len(keys)}


def add_ratios(engines: dict[str, Any]) -> None:
    base = engines.get(BASELINE)
    if not base:
        return
    for data in engines.values():
        r: dict[str, Any] = {}
        if "eval" in data and "eval" in base:
            r["eval_p50"] = ratio(
                data["eval"]["latency_ms"]["p50"], base["eval"]["latency_ms"]["p50"]
            )
            r["eval_rtf"] = ratio(data["eval"]["rtf"], base["eval"]["rtf"])
        r["peak_rss"] = ratio(data.get("peak_rss_mb"), base.get("peak_rss_mb"))
        r["by_length_p50"] = {
            k: ratio(v["latency_ms"]["p50"], base["by_length"][k]["latency_ms"]["p50"])
            for k, v in data.get("by_length", {}).items()
            if k in base.get("by_length", {})
        }
        data["ratio_to_baseline"] = r


# -- reporting ---------------------------------------------------------------------------
def markdown(result: dict[str, Any]) -> str:
    engines = result["engines"]
    base = result["baseline"]
    lines = [
        "## ASR engines",
        "",
        f"Latency = end of audio → final text (one call with the whole audio). Ratios are to "
        f"`{base}` (faster-whisper's defaults). RSS is each engine's own process. "
        f"WER/CER on {result['inputs']['eval_recordings']} recordings of the Danish evaluation set.",
        "",
    ]
    total = result["inputs"]["eval_recordings"]
    rows = []
    for name, e in engines.items():
        ev = e.get("eval") or {}
        lat = ev.get("latency_ms") or {}
        r = e.get("ratio_to_baseline") or {}
        rows.append(
            [
                f"`{name}`",
                result["descriptions"].get(name, ""),
                fmt(lat.get("p50")),
                fmt(lat.get("p95")),
                fmt_ratio(r.get("eval_p50")),
                fmt(ev.get("rtf"), 3),
                fmt_ratio(r.get("eval_rtf")),
                fmt(e.get("peak_rss_mb")),
                fmt(e.get("rss_after_load_mb")),
                fmt_ratio(r.get("peak_rss")),
                wer_cell(ev.get("wer"), ev.get("recordings"), total),
                fmt(ev.get("cer"), 3),
                fmt(e.get("decodes")),
            ]
        )
    lines.append(
        markdown_table(
            [
                "engine",
                "what",
                "p50 ms",
                "p95 ms",
                "p50 ×fw",
                "RTF",
                "RTF ×fw",
                "peak RSS MB",
                "RSS loaded MB",
                "RSS ×fw",
                "WER",
                "CER",
                "decodes",
            ],
            rows,
            "ll" + "r" * 11,
        )
    )
    lengths = result["plan"]["lengths"]
    lines += ["", "### Latency by utterance length (real speech): p50 / p95 ms (p50 ×fw)", ""]
    rows = []
    for name, e in engines.items():
        row = [f"`{name}`"]
        for length in lengths:
            b = e.get("by_length", {}).get(str(length))
            r = (e.get("ratio_to_baseline") or {}).get("by_length_p50", {}).get(str(length))
            row.append(
                "–"
                if not b
                else f"{fmt(b['latency_ms']['p50'])} / {fmt(b['latency_ms']['p95'])} ({fmt_ratio(r)})"
            )
        rows.append(row)
    lines.append(markdown_table(["engine", *[f"{s} s" for s in lengths]], rows))
    lines += ["", "### Words returned per clip (mean) — an engine that stops early shows here", ""]
    rows = [
        [
            f"`{n}`",
            *[
                fmt((e.get("by_length", {}).get(str(s)) or {}).get("words_mean"), 1)
                for s in lengths
            ],
        ]
        for n, e in engines.items()
    ]
    lines.append(markdown_table(["engine", *[f"{s} s" for s in lengths]], rows))
    agree = {
        n: e["agreement_with_project"]
        for n, e in engines.items()
        if e.get("agreement_with_project")
    }
    if agree:
        lines += [
            "",
            f"### Agreement with `{PROJECT}` on the same real-speech clips (its text as the reference)",
            "",
            markdown_table(
                ["engine", "WER vs project", "CER vs project", "clips"],
                [
                    [f"`{n}`", fmt(a["wer"], 3), fmt(a["cer"], 3), a["clips"]]
                    for n, a in agree.items()
                ],
            ),
        ]
    clips = result["inputs"]["length_clips"]
    lines += [
        "",
        "Clip lengths used (s): " + ", ".join(f"{c['nominal_s']}→{c['audio_s']}" for c in clips),
    ]
    return "\n".join(lines)


def wer_cell(wer: float | None, recordings: int | None, total: int) -> str:
    """WER, with the share of recordings it covers when an engine did not finish all."""
    if wer is None:
        return "–"
    return f"{wer:.3f}" if recordings == total else f"{wer:.3f} ({recordings}/{total})"


def plot(result: dict[str, Any], out_dir: Path) -> list[str]:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    engines = result["engines"]
    lengths = result["plan"]["lengths"]
    files = []
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, e in engines.items():
        xs = [s for s in lengths if str(s) in e.get("by_length", {})]
        if not xs:
            continue
        p50 = [e["by_length"][str(s)]["latency_ms"]["p50"] for s in xs]
        p95 = [e["by_length"][str(s)]["latency_ms"]["p95"] for s in xs]
        line = ax.plot(xs, p50, marker="o", label=f"{name} p50")[0]
        ax.plot(xs, p95, marker="x", linestyle=":", color=line.get_color(), alpha=0.7)
    ax.plot([], [], color="grey", linestyle=":", marker="x", label="p95 (same colour)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(list(lengths), [str(s) for s in lengths])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("utterance length (s, real Danish speech)")
    ax.set_ylabel("end of audio → final text (ms, log)")
    ax.set_title("ASR latency by utterance length")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "asr_latency_by_length.png", dpi=110)
    plt.close(fig)
    files.append("asr_latency_by_length.png")

    named = [(n, e) for n, e in engines.items() if e.get("eval")]
    if named:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
        names = [n for n, _ in named]
        p50 = [e["eval"]["latency_ms"]["p50"] or 0 for _, e in named]
        p95 = [e["eval"]["latency_ms"]["p95"] or 0 for _, e in named]
        y = np.arange(len(names))
        ax1.barh(y, p95, color="#cfd8e3", label="p95")
        ax1.barh(y, p50, color="#3b6ea5", label="p50")
        ax1.set_yticks(y, names)
        ax1.invert_yaxis()
        ax1.set_xlabel("ms per utterance (evaluation set)")
        ax1.set_title("Latency")
        ax1.legend(fontsize=8)
        wer = [e["eval"]["wer"] if e["eval"]["wer"] is not None else 0 for _, e in named]
        ax2.barh(y, wer, color="#a5533b")
        ax2.set_yticks(y, names)
        ax2.invert_yaxis()
        ax2.set_xlabel("WER (Danish normalisation)")
        ax2.set_title(f"WER, {result['inputs']['eval_recordings']} recordings")
        total = result["inputs"]["eval_recordings"]
        for i, (w, (_, e)) in enumerate(zip(wer, named, strict=True)):
            ax2.text(
                w, i, " " + wer_cell(w, e["eval"]["recordings"], total), va="center", fontsize=8
            )
        ax2.set_xlim(0, max(wer + [0.1]) * 1.3)
        fig.tight_layout()
        fig.savefig(out_dir / "asr_eval.png", dpi=110)
        plt.close(fig)
        files.append("asr_eval.png")
    return files
