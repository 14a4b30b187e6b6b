"""`voicebot bench`: the pure logic only (percentiles, machine facts, parsing, markdown). No
benchmark runs here and no timing is asserted."""

from __future__ import annotations

import asyncio
import json
import math
import re

import numpy as np
import pytest

from benchmarks import bench
from benchmarks.suites import asr, concurrency, e2e
from benchmarks.suites.common import fmt, fmt_ratio, markdown_table, percentile, ratio, summarize
from benchmarks.suites.machine import git_info, machine_facts, parse_cpuinfo, parse_meminfo, redact
from benchmarks.suites.procs import parse_prometheus, scan_log
from voicebot.config import PROJECT_ROOT


def test_percentile_is_nearest_rank_and_always_a_measured_value():
    values = [10.0, 1.0, 9.0, 2.0, 8.0, 3.0, 7.0, 4.0, 6.0, 5.0]
    assert percentile(values, 50) == 5.0
    assert percentile(values, 95) == 10.0
    assert percentile(values, 99) == 10.0
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 10.0
    assert percentile([3.5], 95) == 3.5
    for q in (1, 33, 50, 90, 95, 99):
        assert percentile(values, q) in values


def test_percentile_ignores_missing_values_and_rejects_bad_q():
    assert percentile([], 50) is None
    assert percentile([None, float("nan")], 50) is None
    assert percentile([1.0, None, 3.0, float("nan")], 100) == 3.0
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_counts_missing_values():
    s = summarize([100.0, None, 300.0, 200.0])
    assert s["n"] == 3 and s["missing"] == 1
    assert (s["p50"], s["p95"], s["p99"], s["max"]) == (200.0, 300.0, 300.0, 300.0)
    assert s["mean"] == pytest.approx(200.0)
    empty = summarize([])
    assert empty["n"] == 0 and empty["p50"] is None and empty["mean"] is None


def test_ratio_and_cell_formatting():
    assert ratio(3.0, 1.5) == 2.0
    assert ratio(None, 1.0) is None and ratio(1.0, 0) is None and ratio(1.0, None) is None
    assert fmt(1234.567) == "1,235" and fmt(0.12345, 3) == "0.123" and fmt(None) == "–"
    assert fmt(float("nan")) == "–" and fmt(12, 0, " ms") == "12 ms"
    assert fmt_ratio(2.0) == "2.00×" and fmt_ratio(None) == "–"


def test_markdown_table_aligns_and_escapes():
    table = markdown_table(["engine", "p50 ms"], [["a|b", "12"], ["c", "3"]])
    assert table.splitlines() == [
        "| engine | p50 ms |",
        "|:---|---:|",
        "| a\\|b | 12 |",
        "| c | 3 |",
    ]
    assert markdown_table(["x", "y", "z"], [], "lcr").splitlines()[1] == "|:---|:---:|---:|"
    with pytest.raises(ValueError):
        markdown_table(["x", "y"], [["only one"]])
    with pytest.raises(ValueError):
        markdown_table(["x", "y"], [], "l")


CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma

processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma
"""


def test_cpuinfo_and_meminfo_parsing():
    cpu = parse_cpuinfo(CPUINFO)
    assert cpu == {"model": "AMD EPYC 7B13", "logical_processors": 2, "simd": ["avx2", "fma"]}
    assert parse_cpuinfo("") == {"model": None, "logical_processors": None, "simd": []}
    assert parse_meminfo("MemTotal:       24684520 kB\nMemFree: 1 kB\n") == pytest.approx(
        23.54, abs=0.01
    )
    assert parse_meminfo("") is None


def test_machine_facts_name_python_and_libraries():
    facts = machine_facts()
    assert re.fullmatch(r"3\.\d+\.\d+", facts["python"])
    assert facts["cores_usable"] >= 1
    assert {
        "ctranslate2",
        "faster-whisper",
        "onnxruntime",
        "numpy",
        "torch",
        "transformers",
    } <= set(facts["libraries"])
    assert facts["libraries"]["numpy"] == np.__version__


def test_git_info_reads_the_commit_and_handles_no_repository(tmp_path):
    info = git_info(PROJECT_ROOT)
    if info["commit"] is not None:  # a source tarball has no .git
        assert re.fullmatch(r"[0-9a-f]{40}", info["commit"]) and isinstance(info["dirty"], bool)
    assert git_info(tmp_path) == {"commit": None, "dirty": None}


def test_redact_hides_keys_and_url_passwords():
    settings = {
        "telephony": {"audiohook_api_key": "s3cret", "asterisk_answer": True},
        "redis_url": "redis://user:pw@host:6379/0",
        "port": 8080,
        "public_url": None,
    }
    out = redact(settings)
    assert out["telephony"] == {"audiohook_api_key": "<redacted>", "asterisk_answer": True}
    assert out["redis_url"] == "redis://<redacted>@host:6379/0" and out["port"] == 8080
    assert "s3cret" not in json.dumps(out) and "pw" not in out["redis_url"]


def test_prometheus_counters_are_summed_over_labels():
    text = """# HELP voicebot_calls_total Calls started
# TYPE voicebot_calls_total counter
voicebot_calls_total{platform="twilio"} 3.0
voicebot_calls_total{platform="telnyx"} 2.0
voicebot_asr_overloaded_total 7.0
"""
    assert parse_prometheus(text) == {
        "voicebot_calls_total": 5.0,
        "voicebot_asr_overloaded_total": 7.0,
    }


def test_scan_log_groups_messages_by_shape(tmp_path):
    log = tmp_path / "server.log"
    log.write_text(
        "2026-01-01 10:00:00,000 WARNING voicebot.app: refusing a twilio call: 32 calls in progress\n"
        "2026-01-01 10:00:01,000 WARNING voicebot.app: refusing a twilio call: 33 calls in progress\n"
        "INFO:     connection open\n"
        "ERROR:    Exception in ASGI application\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 3, in f\n'
        "TypeError: cannot unpack non-iterable NoneType object\n",
        encoding="utf-8",
    )
    scan = scan_log(log)
    assert (scan["warnings"], scan["errors"], scan["tracebacks"]) == (2, 1, 1)
    assert scan["messages"][0] == {
        "message": "WARNING voicebot.app: refusing a twilio call: # calls in progress",
        "count": 2,
    }
    assert {
        "message": "Traceback: TypeError: cannot unpack non-iterable NoneType object",
        "count": 1,
    } in scan["messages"]
    assert scan_log(tmp_path / "missing.log")["warnings"] == 0


def test_cut_at_pause_ends_at_the_quietest_window_in_the_last_quarter():
    window = 512
    probs = np.full(200, 0.9, dtype=np.float32)
    probs[100] = 0.05  # 100 windows = 3.2 s from the start: inside 0.75–1.0 of a 4 s cut
    probs[20] = 0.0  # too early to count
    assert asr.cut_at_pause(probs, window, 0, 4.0) == 101 * window
    flat = np.full(200, 0.5, dtype=np.float32)
    assert (
        asr.cut_at_pause(flat, window, 0, 4.0) == (4 * 16000 // window) * window
    )  # latest of equals


def test_interleave_spreads_the_second_list_through_the_first():
    assert asr.interleave([1, 2, 3, 4], ["a", "b"]) == ["a", 1, 2, "b", 3, 4]
    assert asr.interleave([1, 2, 3], ["a", "b"]) == ["a", 1, 2, "b", 3]
    assert asr.interleave(["e"], [1, 2, 3]) == [1, "e", 2, 3]
    assert asr.interleave([1, 2], []) == [1, 2] and asr.interleave([], [1]) == [1]
    out = asr.interleave(list(range(34)), [f"l{i}" for i in range(15)])
    assert [x for x in out if isinstance(x, int)] == list(range(34)) and len(out) == 49
    assert out[0] == "l0" and out.index("l1") < 5  # lengths are reached early


def test_wer_cell_shows_partial_coverage():
    assert asr.wer_cell(0.5, 33, 33) == "0.500"
    assert asr.wer_cell(0.5, 10, 33) == "0.500 (10/33)"
    assert asr.wer_cell(None, 0, 33) == "–"


def _level(p95: float | None, **extra) -> dict:
    return {
        "decision_ms": {"p95": p95},
        "unanswered_turns": 0,
        "refused_calls": 0,
        "overloaded_decisions": 0,
        "errors": [],
        **extra,
    }


def test_max_calls_within_target_stops_at_the_first_failing_level():
    levels = {
        "1": _level(600.0),
        "2": _level(900.0),
        "4": _level(1400.0),
        "8": _level(1600.0),
        "16": _level(1200.0),
    }
    assert concurrency.max_within_target(levels, 1500.0) == 4
    levels["2"] = _level(900.0, overloaded_decisions=1)
    assert concurrency.max_within_target(levels, 1500.0) == 1
    assert concurrency.max_within_target({"1": _level(None)}, 1500.0) is None


def test_memory_per_extra_call_is_the_rss_growth_between_two_levels_per_call():
    levels = {
        "1": _level(500.0, server_rss_mb_max=400.0),
        "8": _level(600.0, server_rss_mb_max=420.0),
        "32": _level(900.0, server_rss_mb_max=492.0),
    }
    growth = concurrency.memory_per_extra_call(levels)
    assert growth == {"from_calls": 8, "to_calls": 32, "mb_per_call": 3.0}
    assert concurrency.memory_per_extra_call({"8": levels["8"]}) is None  # 32 not run (quick)


def test_caller_turns_alternate_hesitation_and_second_utterance():
    corpus = [f"u{i}" for i in range(6)]
    paused = {i: f"p{i}" for i in range(6)}
    assert concurrency.caller_turns(0, corpus, paused) == ["u0", "u5"]
    assert concurrency.caller_turns(1, corpus, paused) == ["p1"]
    assert concurrency.caller_turns(7, corpus, paused) == ["p1"]


def test_callers_think_before_speaking_in_the_realistic_pattern_only():
    assert concurrency.think_times(3, 2, "burst") == [0.0, 0.0]
    first, second = concurrency.think_times(3, 2, "callers")
    assert concurrency.THINK_FIRST_S[0] <= first <= concurrency.THINK_FIRST_S[1]
    assert concurrency.THINK_NEXT_S[0] <= second <= concurrency.THINK_NEXT_S[1]
    assert concurrency.think_times(3, 2, "callers") == [first, second]  # fixed per caller
    spread = {round(concurrency.think_times(i, 1, "callers")[0], 3) for i in range(16)}
    assert len(spread) == 16  # callers do not speak in lock-step
    speech = np.ones(1600, np.float32)
    padded = concurrency.with_think(speech, 0.5)
    assert (
        len(padded) == 8000 + 1600
        and np.all(padded[-1600:] == 1)
        and np.abs(padded[:8000]).max() < 0.01
    )


def test_concurrency_markdown_reports_each_pattern():
    lv = {
        "calls": 1,
        "decided": 2,
        "turns_sent": 2,
        "cut_off_turns": 0,
        "decision_ms": {"p50": 500.0, "p95": 700.0},
        "transcript_ms": {"p95": 690.0},
        "late_frames": 0,
        "frames_sent": 10,
        "max_late_ms": 1.0,
        "unsent_speech_frames": 0,
        "refused_calls": 0,
        "overloaded_decisions": 0,
        "errors": [],
        "server_counters": {},
    }
    result = {
        "server_limits": {
            "max_calls": 32,
            "asr.max_pending": 8,
            "asr.workers": 1,
            "asr.threads": 2,
        },
        "start_spread_s": 2.0,
        "fast_forward_greeting": 1.0,
        "target_p95_ms": 1500.0,
        "log": {},
        "patterns": {
            "burst": {"levels": {"1": lv}, "max_calls_within_target": None},
            "callers": {"levels": {"1": lv}, "max_calls_within_target": 1},
        },
    }
    text = concurrency.markdown(result)
    assert (
        "every turn decided (burst): **none**" in text
        and "every turn decided (callers): **1**" in text
    )
    assert text.count("| 1 | 2/2 (0) | 500 | 700 |") == 2


def test_e2e_markdown_reports_ratios_per_percentile():
    def lat(base: float) -> dict:
        return {
            m: {"p50": base, "p95": 2 * base, "p99": 3 * base, "missing": 0} for m in e2e.METRICS
        }

    decodes = {
        "turns": 4,
        "asr_ms": {"p50": 300.0, "p95": 1200.0},
        "tokens": {"p50": 20.0, "max": 62.0},
        "redecoded_turns": 1,
        "redecodes": 1,
        "slowest": {"asr_ms": 1200.0, "tokens": 62, "redecodes": 1},
    }
    corpus = {
        "corpus": [{"seconds": 3.0}] * 4,
        "latency_ms": {"project": lat(500.0), "naive": lat(1500.0)},
        "ratio_naive_to_project": {m: {"p50": 3.0, "p95": 3.0, "p99": 3.0} for m in e2e.METRICS},
        "intent_correct": {"project": 2, "naive": 1},
        "labelled": 4,
        "decodes": {"project": decodes, "naive": decodes},
    }
    result = {
        "corpora": {"en": corpus},
        "servers": {
            "project": {"log": {"warnings": 0, "errors": 1}},
            "naive": {"log": {"warnings": 2, "errors": 0}},
        },
    }
    text = e2e.markdown(result)
    assert "| decision | p95 | 1,000 | 3,000 | 3.00× |" in text
    assert "project 2/4, naive 1/4" in text
    assert "- naive server log: 2 warnings, 0 errors, 0 tracebacks." in text
    # The slow tail is explained by the decode's own figures.
    assert (
        "| en | project | 300 | 1,200 | 20 | 62 | 1/4 | 1,200 ms, 62 tokens, 1 re-decodes |" in text
    )


def test_decode_summary_names_the_slowest_turn():
    from benchmarks.suites.common import decode_summary

    calls = [
        {"decodes": [{"asr_ms": 300.0, "tokens": 20, "redecodes": 0}]},
        {"decodes": [{"asr_ms": 1500.0, "tokens": 60, "redecodes": 1}]},
        {"decodes": []},
    ]
    summary = decode_summary(calls)
    assert summary["turns"] == 2 and summary["redecoded_turns"] == 1
    assert summary["slowest"]["tokens"] == 60 and summary["tokens"]["max"] == 60


def test_header_and_json_output(tmp_path):
    results = {
        "run": {"started": "2026-01-01T10:00:00+01:00", "quick": True, "suites": ["classifier"]},
        "machine": {
            "cpu_model": "Test CPU",
            "cpu_simd": ["avx2"],
            "cores_usable": 2,
            "ram_gib": 8.0,
            "load_average_1_5_15": [0.5, 0.4, 0.3],
            "python": "3.11.7",
            "os": "Linux",
            "libraries": {"numpy": "2.0", "torch": None},
        },
        "git": {"commit": "a" * 40, "dirty": True},
        "model": {
            "dir": "/m",
            "compute_type": "int8",
            "model_bin_sha256": "b" * 64,
            "pinned_release": True,
        },
        "settings": {"asr": {"threads": 2}},
        "suites": {
            "classifier": {"value": np.float32(1.5), "nan": float("nan"), "ints": np.arange(2)}
        },
    }
    header = bench.header_markdown(results)
    assert "a" * 40 + " (work tree differs from the commit)" in header
    assert "numpy 2.0" in header and "torch" not in header and "(the pinned release)" in header
    bench.write_json(tmp_path / "r.json", results)
    loaded = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert loaded["suites"]["classifier"] == {"value": 1.5, "nan": None, "ints": [0, 1]}
    assert not any(
        isinstance(v, float) and math.isnan(v) for v in loaded["suites"]["classifier"].values()
    )


def test_bench_is_a_voicebot_subcommand():
    from voicebot.cli import build_parser

    args = build_parser().parse_args(["bench", "asr", "--quick", "--out", "/tmp/x"])
    assert (
        args.func is bench.cmd_bench
        and args.suite == "asr"
        and args.quick
        and str(args.out) == "/tmp/x"
    )
    assert build_parser().parse_args(["bench"]).suite == "all"


def test_bench_call_counts_late_and_unsent_frames_over_the_simulators_send_loop():
    from benchmarks.suites.calls import LATE_MS, BenchCall
    from tests.fakes import StallingLine

    call = BenchCall("ws://127.0.0.1:9/twilio", None)
    call._ms = 0  # the stream position run() starts
    line = StallingLine(stall_at=3, hang_up_at=6)
    speech = np.ones(160 * 10, dtype=np.int16)  # ten 20 ms frames at 8 kHz
    sent = asyncio.run(call._send(line, speech))
    assert len(sent) == call.frames_sent == 5 and line.frames == 6
    assert (
        call.late_frames >= 1 and call.max_late_ms > LATE_MS and call.drift_ms >= call.max_late_ms
    )
    assert call.unsent_frames == 5 and call.cut_off_turns == 1 and call._speech_sends == 1


def test_profile_groups_samples_by_stage_and_ranks_self_time():
    from benchmarks.suites import profile

    raw = "\n".join(
        [
            "_bootstrap (threading.py:995);_partial_decode (voicebot/asr.py:330);"
            "transcribe (voicebot/asr.py:240);generate (<native>) 30",
            "_bootstrap (threading.py:995);_final_decode (voicebot/asr.py:334);"
            "transcribe (voicebot/asr.py:240);generate (<native>) 50",
            "run (asyncio/base_events.py:1);push (voicebot/vad.py:80);run (voicebot/vad.py:51) 15",
            "run (asyncio/base_events.py:1);speak (voicebot/tts.py:120);resample (telephony/codecs.py:9) 5",
        ]
    )
    result = profile.shares(profile.parse_collapsed(raw))
    assert result["samples"] == 100
    assert result["stages"] == {
        "final decodes": 50.0,
        "partial decodes": 30.0,
        "VAD": 15.0,
        "TTS": 5.0,  # a resample inside TTS is the TTS's
    }
    assert result["top_functions"][0] == {
        "function": "generate (<native>)",
        "self_pct": 80.0,
        "stage": "final decodes",  # where most of its samples were
    }


def test_profile_levels_parse_from_the_command_line():
    import argparse

    from benchmarks import bench

    parser = argparse.ArgumentParser()
    bench.add_bench_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "profile", "--calls", "8,16,32"])
    assert (args.suite, args.calls) == ("profile", (8, 16, 32))
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "profile", "--calls", "0"])


def test_asr_agreement_is_measured_against_the_project_path_on_the_same_clips():
    engines = {
        "project-int8": {"length_texts": {"len2_0": "jeg skal have et pas", "len8_0": "tak"}},
        "hf-float32": {"length_texts": {"len2_0": "jeg skal have et pas", "len8_0": "tak"}},
        "fw-beam5": {"length_texts": {"len2_0": "jeg skal have en bil"}},  # one clip only
    }
    asr.add_agreement(engines)
    assert engines["hf-float32"]["agreement_with_project"]["wer"] == 0.0
    fw = engines["fw-beam5"]["agreement_with_project"]
    assert fw["clips"] == 1 and fw["wer"] == pytest.approx(2 / 5)
    assert "agreement_with_project" not in engines["project-int8"]


def test_profile_splits_cpu_between_the_event_loop_thread_and_the_rest():
    from benchmarks.suites import profile

    split = profile.cpu_split(100, {100: 1.0, 101: 2.0}, {100: 3.5, 101: 2.5, 102: 4.0})
    assert split == {"cpu_s": 7.0, "event_loop_thread_cpu_s": 2.5, "other_threads_cpu_s": 4.5}
