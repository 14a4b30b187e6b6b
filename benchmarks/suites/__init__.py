"""The suites of `voicebot bench` (benchmarks/bench.py): asr, e2e, concurrency, classifier."""
