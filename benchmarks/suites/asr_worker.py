"""One ASR engine in its own process, so its peak RSS is its own (benchmarks/suites/asr.py).

    python -m benchmarks.suites.asr_worker ENGINE INPUTS.npz PLAN.json OUT.json

Loads the engine, decodes one warm-up clip (not counted), then every item of the plan in
order, timing each decode from "the whole audio is here" to "final text returned" (feature
extraction included). Prints one line per decode on stdout (the parent's progress bar) and
writes the results to OUT.json. Stops early, marked `truncated`, when the plan's decode
budget is spent.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

Transcriber = Callable[[np.ndarray], str]


def _rss_mb() -> float:
    """Current resident set size in MB (from /proc; psutil-free so the worker stays lean)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def load_engine(engine: str, model_dir: str, threads: int) -> Transcriber:
    if engine.startswith("project"):
        from voicebot.asr import WhisperAsr
        from voicebot.config import AsrSettings

        compute = "float32" if "float32" in engine else "int8"
        asr = WhisperAsr(model_dir, AsrSettings(compute_type=compute, threads=threads))
        trim = not engine.endswith("30s")
        return lambda audio: asr.transcribe(audio, trim=trim).text

    if engine.startswith("fw-"):
        from faster_whisper import WhisperModel

        beam = int(engine.rsplit("beam", 1)[1])
        model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=threads)

        def fw(audio: np.ndarray) -> str:
            # The library's defaults apart from the language (and beam_size for beam1):
            # timestamps, temperature fallback, previous-text conditioning. The generator
            # does the work, so it is consumed inside the timed call.
            segments, _ = model.transcribe(audio, language="da", beam_size=beam)
            return " ".join(s.text.strip() for s in segments).strip()

        return fw

    if engine == "hf-float32":
        import torch

        from models.convert_ct2_to_hf import hf_transcriber

        torch.set_num_threads(threads)
        return hf_transcriber(model_dir)

    raise ValueError(f"unknown engine {engine!r}")


def _write(out: dict, path: str) -> None:
    """Results so far, after every decode: a worker killed at the parent's time limit still
    leaves what it measured."""
    out["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(out, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str]) -> int:
    engine, inputs_path, plan_path, out_path = argv
    plan = json.loads(Path(plan_path).read_text(encoding="utf-8"))
    out: dict = {"engine": engine, "decodes": [], "truncated": False, "error": None}
    try:
        with np.load(inputs_path) as data:
            audio = {key: data[key] for key in data.files}
        rss_before = _rss_mb()
        start = time.perf_counter()
        transcribe = load_engine(engine, plan["model_dir"], plan["threads"])
        transcribe(audio[plan["warmup"]])  # first-call allocations are not a decode's cost
        out.update(
            load_s=round(time.perf_counter() - start, 2),
            rss_before_load_mb=round(rss_before, 1),
            rss_after_load_mb=round(_rss_mb(), 1),
        )
        spent = 0.0
        for step in plan["steps"]:
            if spent > plan["budget_s"]:
                out["truncated"] = True
                break
            t0 = time.perf_counter()
            text = transcribe(audio[step["key"]])
            ms = (time.perf_counter() - t0) * 1000
            spent += ms / 1000
            out["decodes"].append(
                {"key": step["key"], "rep": step["rep"], "ms": round(ms, 2), "text": text}
            )
            _write(out, out_path)
            print("decoded", flush=True)
    except Exception as exc:  # reported in the results instead of losing the other engines
        out["error"] = f"{type(exc).__name__}: {exc}"
    _write(out, out_path)
    return 1 if out["error"] else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
