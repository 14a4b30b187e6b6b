"""Prometheus metrics (served at /metrics)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

CALLS = Counter("voicebot_calls_total", "Calls started", ["platform"])
ACTIVE_CALLS = Gauge("voicebot_active_calls", "Calls in progress")
REFUSED_CALLS = Counter("voicebot_calls_refused_total", "Calls refused at capacity", ["platform"])
CALL_LANGUAGES = Counter(
    "voicebot_call_languages_total",
    "Calls ended, by the language they were served in",
    ["language"],
)
ACTIONS = Counter(
    "voicebot_actions_total", "Dialogue decisions, by the call's language", ["action", "language"]
)
EMERGENCY_NOTICES = Counter(
    "voicebot_emergency_notices_total",
    '"If someone is in danger, ring 112" said: before the keypad menu, or for a possible '
    "emergency the bot was not sure of",
    ["why", "language"],
)
ROUTED = Counter(
    "voicebot_routed_total",
    "Calls put in a forvaltning's queue, by the caller's language",
    ["forvaltning", "language"],
)
QUEUE_WAITING = Gauge("voicebot_queue_waiting", "Calls waiting per queue", ["forvaltning"])
QUEUE_LONGEST_WAIT = Gauge(
    "voicebot_queue_longest_wait_seconds", "Wait of the oldest waiting call", ["forvaltning"]
)
QUEUE_WAIT = Histogram(
    "voicebot_queue_wait_seconds",
    "Wait from enqueue to claim",
    ["forvaltning"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 3600),
)
CLAIMS = Counter("voicebot_queue_claims_total", "Calls claimed by an agent", ["forvaltning"])
COMPLETIONS = Counter(
    "voicebot_queue_completions_total", "Calls completed by an agent", ["forvaltning"]
)
STALE_CLAIMS = Counter(
    "voicebot_queue_stale_claims_total", "Claims returned to the queue when their lease ran out"
)
PURGED = Counter("voicebot_queue_purged_total", "Call records deleted by the retention purge")
LOGINS = Counter("voicebot_console_logins_total", "Agent console login attempts", ["result"])
ASR_SECONDS = Histogram(
    "voicebot_asr_seconds", "ASR decode time", ["kind"], buckets=LATENCY_BUCKETS
)
DECISION_LATENCY = Histogram(
    "voicebot_speech_end_to_decision_seconds",
    "From the end of the caller's speech to the decision",
    buckets=LATENCY_BUCKETS,
)
ASR_OVERLOADED = Counter("voicebot_asr_overloaded_total", "Final decodes refused at saturation")
PROTOCOL_ERRORS = Counter(
    "voicebot_protocol_errors_total", "Calls closed for protocol errors", ["platform"]
)
AUTH_FAILURES = Counter(
    "voicebot_auth_failures_total",
    "Connections and webhooks refused: not authenticated",
    ["endpoint"],
)
CALL_ERRORS = Counter(
    "voicebot_call_errors_total", "Calls ended by an unexpected error of ours", ["platform"]
)
# -- waiting (issue 18): per queue. "Answered" is voicebot_queue_claims_total and the wait-time
# histogram voicebot_queue_wait_seconds (above), both per forvaltning.
QUEUE_OFFERED = Counter(
    "voicebot_queue_offered_total",
    "Calls whose routing targeted the queue (open or closed, waited or called back)",
    ["forvaltning"],
)
QUEUE_ABANDONED = Counter(
    "voicebot_queue_abandoned_total",
    "Callers gone while waiting to be handed on to the queue",
    ["forvaltning"],
)
OUT_OF_HOURS = Counter(
    "voicebot_queue_out_of_hours_total",
    "Calls routed to a queue while it was closed",
    ["forvaltning"],
)
CALLBACKS_REQUESTED = Counter(
    "voicebot_callbacks_requested_total", "Callbacks asked for instead of waiting", ["forvaltning"]
)
CALLBACKS_COMPLETED = Counter(
    "voicebot_callbacks_completed_total",
    "Callbacks an agent finished, by outcome (done or failed)",
    ["forvaltning", "outcome"],
)
BARGE_INS = Counter("voicebot_barge_ins_total", "Bot playback stopped by caller speech")


def set_queue_lengths(stats: dict[str, dict[str, float]], forvaltninger: Iterable[str]) -> None:
    """Every known queue gets a value, so an emptied queue reads 0 rather than its last length."""
    for forvaltning in {*forvaltninger, *stats}:
        stat = stats.get(forvaltning, {})
        QUEUE_WAITING.labels(forvaltning).set(stat.get("waiting", 0))
        QUEUE_LONGEST_WAIT.labels(forvaltning).set(stat.get("longest_wait_s", 0.0))
