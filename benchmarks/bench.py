"""`voicebot bench [SUITE] [--quick] [--out DIR]`: latency, throughput, memory and quality of
the bot, written to DIR as results.json, results.md and PNG plots (benchmarks/README.md).

Suites (benchmarks/suites/): asr (engines side by side on the same Whisper weights), e2e (the
gateway, project settings vs a naive pipeline), concurrency (simultaneous calls), classifier
(ONNX intent model vs scikit-learn). `all` runs them in that order. `profile` (not in `all`)
samples the server with py-spy under N calls (`--calls 8,16,32`): flame graphs and shares
by stage. `calls` (not in `all`) places whole calls by scripted citizens and reports where
they end: resolved, misrouted, handed to a person (benchmarks/suites/outcomes.py). Every run records the
machine, library versions, model files, settings and git commit next to its figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

SUITES = ("asr", "e2e", "concurrency", "classifier")
EXTRA_SUITES = ("profile", "calls")  # run only when named
MODULES = {"calls": "outcomes"}  # a suite whose module has another name (calls.py: callers)


def add_bench_command(subparsers: argparse._SubParsersAction) -> None:
    s = subparsers.add_parser(
        "bench",
        help="run the benchmarks (results.json, results.md, PNG plots)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("suite", nargs="?", default="all", choices=[*SUITES, *EXTRA_SUITES, "all"])
    s.add_argument(
        "--calls",
        type=_levels,
        default=(),
        help="profile: simultaneous calls per profiled level, e.g. 8,16,32",
    )
    s.add_argument(
        "--quick",
        action="store_true",
        help="fewer lengths, repetitions, calls and levels (< 5 min)",
    )
    s.add_argument(
        "--out", type=Path, help="output directory (default: benchmarks/results/<timestamp>)"
    )
    s.set_defaults(func=cmd_bench)


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of call counts: {text!r}") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"call counts must be ≥ 1: {text!r}")
    return levels


def _suite_module(name: str):
    import importlib

    return importlib.import_module(f"benchmarks.suites.{MODULES.get(name, name)}")


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _clean(value: Any) -> Any:
    """NaN/inf are not JSON: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, results: dict[str, Any]) -> None:
    text = json.dumps(
        _clean(json.loads(json.dumps(results, default=_json_default))), ensure_ascii=False, indent=1
    )
    path.write_text(text + "\n", encoding="utf-8")


def header_markdown(results: dict[str, Any]) -> str:
    """The run's identity: when, which commit, which machine, which model and libraries."""
    from benchmarks.suites.common import markdown_table

    run, m, git, model = results["run"], results["machine"], results["git"], results["model"]
    commit = git.get("commit") or "unknown"
    dirty = " (work tree differs from the commit)" if git.get("dirty") else ""
    sha = model.get("model_bin_sha256")
    pinned = {True: " (the pinned release)", False: " (NOT the pinned release)"}.get(
        model.get("pinned_release"), ""
    )
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v)
    rows = [
        [
            "started",
            f"{run['started']} ({'quick' if run['quick'] else 'full'} run, suites: {', '.join(run['suites'])})",
        ],
        ["git", f"{commit}{dirty}"],
        [
            "CPU",
            f"{m['cpu_model']} — {m['cores_usable']} usable cores ({', '.join(m['cpu_simd']) or 'no AVX2'})",
        ],
        ["RAM", f"{m['ram_gib']} GiB"],
        ["load average at start", ", ".join(str(x) for x in m["load_average_1_5_15"] or []) or "–"],
        ["Python", f"{m['python']} on {m['os']}"],
        ["libraries", libs],
        [
            "model",
            f"{model['dir']}, sha256 {sha[:16] + '…' if sha else 'unknown'}{pinned}, compute type {model['compute_type']}",
        ],
        ["ASR threads", str(results["settings"]["asr"]["threads"])],
    ]
    return "\n".join(
        [f"# voicebot benchmark — {run['started']}", "", markdown_table(["", ""], rows, "ll")]
    )


def render_markdown(results: dict[str, Any], plots: list[str]) -> str:
    parts = [header_markdown(results)]
    notes: list[str] = []
    for name, data in results["suites"].items():
        if "error" in data and len(data) <= 2:
            parts.append(
                f"## {name}\n\nFailed: `{data['error'].splitlines()[-1]}` (traceback in results.json)"
            )
            continue
        try:
            parts.append(_suite_module(name).markdown(data))
        except Exception as exc:  # a report bug must not hide the figures in results.json
            parts.append(f"## {name}\n\nCould not render: {type(exc).__name__}: {exc}")
        notes += [f"{name}: {n}" for n in data.get("notes", [])]
        parts[-1] += f"\n\n({name} took {data.get('duration_s', 0):.0f} s)"
    if notes:
        parts.append("## Notes\n\n" + "\n".join(f"- {n}" for n in notes))
    if plots:
        parts.append("## Plots\n\n" + "\n".join(f"![{p}]({p})" for p in plots))
    return "\n\n".join(parts) + "\n"


def _model_dir(settings) -> Path:
    model_dir = settings.whisper_dir
    if settings.asr.model_dir is None and not (model_dir / "model.bin").exists():
        from voicebot.provision import provision_whisper_base

        provision_whisper_base(model_dir)
    return model_dir.resolve()


def cmd_bench(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from tqdm import tqdm

    from benchmarks.suites.common import Context
    from benchmarks.suites.machine import git_info, machine_facts, model_facts, redact
    from voicebot.config import PROJECT_ROOT, load_settings

    settings = load_settings(getattr(args, "config", None))
    started = dt.datetime.now().astimezone()
    out_dir = args.out or PROJECT_ROOT / "benchmarks" / "results" / started.strftime(
        "%Y%m%d-%H%M%S"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "logs").mkdir(exist_ok=True)
    suites = list(SUITES) if args.suite == "all" else [args.suite]
    model_dir = _model_dir(settings)
    ctx = Context(
        quick=args.quick,
        out_dir=out_dir,
        model_dir=model_dir,
        compute_type=settings.asr.compute_type,
        threads=settings.asr.threads,
        python=sys.executable,
        profile_calls=getattr(args, "calls", ()),
    )
    results: dict[str, Any] = {
        "run": {
            "started": started.isoformat(timespec="seconds"),
            "quick": args.quick,
            "suites": suites,
            "command": " ".join(sys.argv),
        },
        "machine": machine_facts(),
        "git": git_info(PROJECT_ROOT),
        "model": model_facts(model_dir, settings.asr.compute_type),
        "settings": redact(settings.model_dump(mode="json")),
        "suites": {},
    }
    json_path = out_dir / "results.json"
    failed = []
    try:
        for name in tqdm(suites, desc="bench", unit="suite"):
            start = time.monotonic()
            try:
                data = _suite_module(name).run(ctx)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                failed.append(name)
                data = {"error": "".join(traceback.format_exception(exc))}
                print(
                    f"voicebot bench: suite {name} failed: {type(exc).__name__}: {exc}",
                    file=sys.stderr,
                )
            data["duration_s"] = round(time.monotonic() - start, 1)
            results["suites"][name] = data
            write_json(json_path, results)  # after every suite: a later failure keeps these
        results["run"]["duration_s"] = round(
            (dt.datetime.now().astimezone() - started).total_seconds(), 1
        )
        write_json(json_path, results)
        plots = []
        for name, data in results["suites"].items():
            if name in failed:
                continue
            try:
                plots += _suite_module(name).plot(data, out_dir)
            except Exception as exc:
                print(
                    f"voicebot bench: plot for {name} failed: {type(exc).__name__}: {exc}",
                    file=sys.stderr,
                )
        report = render_markdown(results, plots)
        (out_dir / "results.md").write_text(report, encoding="utf-8")
        print(report)
        print(
            f"results: {out_dir}/results.json, results.md, {len(plots)} plots; logs in {out_dir}/logs",
            file=sys.stderr,
        )
    finally:
        shutil.rmtree(ctx.out_dir / ".work", ignore_errors=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench")
    add_bench_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
