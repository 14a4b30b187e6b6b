"""Which candidate wins: the rule written down before any held-back figure was seen, and the
rule in force since the first run was read (why it changed is said where it is defined)."""

from __future__ import annotations

from typing import Any

# The first rule, fixed before any held-back figure was looked at. Clean-text slack: espeak →
# phone line → Whisper base is far noisier than real callers, so a model may not buy its ASR
# score with a real loss on clean text. The tie band is well inside the bootstrap spread of
# macro-F1 on ~400 sentences, so near-ties go to the simpler choice.
CLEAN_SLACK = 0.03
TIE_BAND = 0.01
LATENCY_BUDGET_MS = 50.0
FIRST_RULE = (
    f"Among candidates whose served p95 latency is at most {LATENCY_BUDGET_MS:.0f} ms and whose "
    f"macro-F1 on clean held-back text is within {CLEAN_SLACK} of the best clean macro-F1: "
    "the highest macro-F1 on the held-back ASR transcripts. Candidates within "
    f"{TIE_BAND} of that best count as tied; the tie goes to the lowest out-of-scope "
    "false-accept rate on the ASR transcripts, then to the shipped family (logreg), then to "
    "the higher ASR macro-F1."
)
# The rule in force, revised after the first run had been read. The first rule picked the
# written-only model by 0.0005 of clean macro-F1 over the clean-slack line, yet that model acted
# at once on the wrong intent for 31 % of held-back ASR transcripts (18 % told to ring 112)
# and acted on 6 of 15 real non-request clips (3 as emergencies). Macro-F1 does not see what a
# caller lives through; the policy's first action does. So a safety gate comes first, the
# tie-break is the caller-facing error instead of the argmax false-accept rate, and the clean
# slack is measured among the safe candidates.
MAX_ASR_WRONG_ACTS = 0.05
MAX_REAL_UNFLAGGED = 1
WINNER_RULE = (
    f"Safety first: only candidates whose first turn acts on a wrong intent for at most "
    f"{MAX_ASR_WRONG_ACTS:.0%} of the held-back ASR transcripts (a wrong department costs the "
    "caller a transfer; a needless 112 frightens them) and that leave at most "
    f"{MAX_REAL_UNFLAGGED} of the real non-request clips unflagged, with served p95 latency at "
    f"most {LATENCY_BUDGET_MS:.0f} ms. Among those whose clean held-back macro-F1 is within "
    f"{CLEAN_SLACK} of the best such: the highest macro-F1 on the held-back ASR transcripts; "
    f"candidates within {TIE_BAND} of it are tied and the tie goes to the fewest wrong first-turn "
    "acts on the ASR transcripts, then to the shipped family (logreg). If no candidate passes "
    "the gate, the first rule decides."
)


def select_first_rule(rows: list[dict[str, Any]]) -> str:
    """Apply FIRST_RULE to rows with name, family, clean_f1, asr_f1, asr_far, p95_ms."""
    eligible = [r for r in rows if r["p95_ms"] <= LATENCY_BUDGET_MS]
    best_clean = max(r["clean_f1"] for r in eligible)
    eligible = [r for r in eligible if r["clean_f1"] >= best_clean - CLEAN_SLACK]
    best_asr = max(r["asr_f1"] for r in eligible)
    tied = [r for r in eligible if r["asr_f1"] >= best_asr - TIE_BAND]
    return min(
        tied,
        key=lambda r: (
            r["asr_far"] if r["asr_far"] is not None else 1.0,
            r["family"] != "logreg",
            -r["asr_f1"],
        ),
    )["name"]


def select_winner(rows: list[dict[str, Any]]) -> str:
    """Apply WINNER_RULE to rows that also carry asr_wrong (share of ASR transcripts acted
    on with a wrong intent) and real_unflagged (real non-request clips not flagged)."""
    safe = [
        r
        for r in rows
        if r["p95_ms"] <= LATENCY_BUDGET_MS
        and r["asr_wrong"] <= MAX_ASR_WRONG_ACTS
        and r["real_unflagged"] <= MAX_REAL_UNFLAGGED
    ]
    if not safe:
        return select_first_rule(rows)
    best_clean = max(r["clean_f1"] for r in safe)
    eligible = [r for r in safe if r["clean_f1"] >= best_clean - CLEAN_SLACK]
    best_asr = max(r["asr_f1"] for r in eligible)
    tied = [r for r in eligible if r["asr_f1"] >= best_asr - TIE_BAND]
    return min(tied, key=lambda r: (r["asr_wrong"], r["family"] != "logreg", -r["asr_f1"]))["name"]


def winner_rows(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the rules read from each candidate of a run."""
    return [
        {
            "name": c["name"],
            "family": c["family"],
            "clean_f1": c["clean"]["macro_f1"],
            "asr_f1": c["asr"]["macro_f1"],
            "asr_far": c["asr"]["oos_false_accept_rate"],
            "asr_wrong": c["asr"]["first_turn"]["acts_wrong"] / max(c["asr"]["first_turn"]["n"], 1),
            "real_unflagged": len(c["real_clips"]) - c["real_flagged"],
            "p95_ms": c["served_ms"]["p95"],
        }
        for c in candidates
    ]


def apply_rules(result: dict[str, Any]) -> dict[str, Any]:
    rows = winner_rows(result["candidates"])
    result.update(
        first_rule=FIRST_RULE,
        first_rule_winner=select_first_rule(rows),
        winner_rule=WINNER_RULE,
        winner=select_winner(rows),
    )
    return result
