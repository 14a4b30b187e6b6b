"""Benchmarks and evaluation sets (`voicebot bench`, `voicebot eval-asr`)."""
