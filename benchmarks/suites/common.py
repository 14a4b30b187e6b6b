"""Pure helpers shared by the suites: percentiles, ratios, number formatting, markdown
tables, and the context a suite runs in. No timing happens here (tests/test_bench.py)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PERCENTILES = (50, 95, 99)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile: always one of the measured values (never interpolated), so
    a reported p95 is a latency that really happened. None for no values."""
    clean = sorted(v for v in values if v is not None and not math.isnan(v))
    if not clean:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    rank = max(1, math.ceil(q / 100 * len(clean)))
    return float(clean[rank - 1])


def summarize(values: Iterable[float | None], qs: Sequence[int] = PERCENTILES) -> dict[str, Any]:
    """n, the percentiles `qs` (keys p50, p95, ...), mean and max of the non-missing values;
    `missing` counts None/NaN entries (e.g. turns the bot never answered)."""
    raw = list(values)
    clean = [float(v) for v in raw if v is not None and not math.isnan(v)]
    out: dict[str, Any] = {"n": len(clean), "missing": len(raw) - len(clean)}
    for q in qs:
        out[f"p{q}"] = percentile(clean, q)
    out["mean"] = sum(clean) / len(clean) if clean else None
    out["max"] = max(clean) if clean else None
    return out


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def fmt(value: float | int | None, digits: int = 0, suffix: str = "") -> str:
    """A table cell: '–' for a missing value, thousands separated, fixed decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}{suffix}"


def fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def markdown_table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], align: str | None = None
) -> str:
    """A GitHub markdown table. `align` has one letter per column: l, r or c (default:
    first column left, the rest right). Pipes inside cells are escaped."""
    headers = [str(h) for h in headers]
    align = align or "l" + "r" * (len(headers) - 1)
    if len(align) != len(headers):
        raise ValueError(f"align {align!r} does not match {len(headers)} columns")
    marks = {"l": ":---", "r": "---:", "c": ":---:"}

    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(cell(h) for h in headers) + " |",
        "|" + "|".join(marks[a] for a in align) + "|",
    ]
    for row in rows:
        row = list(row)
        if len(row) != len(headers):
            raise ValueError(f"row {row!r} has {len(row)} cells, expected {len(headers)}")
        lines.append("| " + " | ".join(cell(c) for c in row) + " |")
    return "\n".join(lines)


def log_summary(name: str, scan: dict[str, Any], top: int = 3) -> str:
    """One line about a server log scan (procs.scan_log): counts and the commonest messages."""
    text = (
        f"{name} server log: {scan.get('warnings', 0)} warnings, {scan.get('errors', 0)} errors, "
        f"{scan.get('tracebacks', 0)} tracebacks"
    )
    messages = scan.get("messages", [])[:top]
    if messages:
        text += "; most frequent: " + "; ".join(f"`{m['message']}` ×{m['count']}" for m in messages)
    return text + "."


@dataclass
class Context:
    """What every suite gets: the mode, where to write, and the model it measures."""

    quick: bool
    out_dir: Path
    model_dir: Path
    compute_type: str
    threads: int
    python: str  # the interpreter to start workers with (the venv's)
    notes: list[str] = field(default_factory=list)
    profile_calls: tuple[int, ...] = ()  # profile suite: the levels (default by mode)

    @property
    def work_dir(self) -> Path:
        """Scratch space for inputs of worker processes (deleted by bench.py at the end)."""
        path = self.out_dir / ".work"
        path.mkdir(parents=True, exist_ok=True)
        return path


def decode_summary(calls: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """What the bot's decodes cost over some calls (their `decodes`, from the transcript
    events): decode ms, tokens and re-decodes, and the slowest turn with its own figures, so
    a tail is explained (a loop to the token cap, a re-decode) rather than guessed."""
    decodes = [d for c in calls for d in c.get("decodes", []) if d.get("asr_ms") is not None]
    slowest = max(decodes, key=lambda d: d["asr_ms"], default=None)
    return {
        "turns": len(decodes),
        "asr_ms": summarize(d["asr_ms"] for d in decodes),
        "tokens": summarize(d.get("tokens") for d in decodes),
        "redecoded_turns": sum(bool(d.get("redecodes")) for d in decodes),
        "redecodes": sum(d.get("redecodes") or 0 for d in decodes),
        "slowest": slowest,
    }


def decode_cells(summary: dict[str, Any]) -> list[str]:
    """Table cells: decode ms p50/p95, tokens p50/max, turns re-decoded, the slowest turn."""
    s = summary.get("slowest") or {}
    return [
        fmt(summary["asr_ms"]["p50"]),
        fmt(summary["asr_ms"]["p95"]),
        fmt(summary["tokens"]["p50"]),
        fmt(summary["tokens"]["max"]),
        f"{summary['redecoded_turns']}/{summary['turns']}",
        f"{fmt(s.get('asr_ms'))} ms, {s.get('tokens', '–')} tokens, {s.get('redecodes', '–')} re-decodes"
        if s
        else "–",
    ]


DECODE_HEADERS = (
    "decode p50 ms",
    "decode p95 ms",
    "tokens p50",
    "tokens max",
    "re-decoded turns",
    "slowest decode",
)
