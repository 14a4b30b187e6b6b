"""What the masking hides and what it keeps, at the edges of its rules: English number words
("oh", "double", joiners, "twenty three"), the distances around a CPR cue, and the log record
factory (idempotent, shape-keeping, whole-message fallback)."""

from __future__ import annotations

import logging

import pytest

from voicebot import privacy
from voicebot.privacy import (
    CPR_MASK,
    NUMBER_MASK,
    clean_log_text,
    install_log_masking,
    mask_caller,
    mask_english_numbers,
    mask_log_text,
    mask_numbers,
)


# == English number words ======================================================================
@pytest.mark.parametrize(("said", "masked"), [
    ("two three oh five nine oh one two three four", CPR_MASK),
    ("two oh oh five nine oh one two three four", CPR_MASK),
    ("double two three oh five nine oh one two three", CPR_MASK),  # 22 3 0 5 9 0 1 2 3
    ("twelve thirty four fifty six seventy eight ninety", CPR_MASK),  # 12 34 56 78 90
    ("one two three four five six seven zero", NUMBER_MASK),
    ("triple nine one two three four five", NUMBER_MASK),  # 999 12345
    ("plus four five one two three four five six seven eight", NUMBER_MASK),  # ten, abroad
    ("my number is 12345678", f"my number is {NUMBER_MASK}"),
    ("one two three four five six seven eight and", f"{NUMBER_MASK} and"),
    ("double twenty one two three four five six seven", f"double {NUMBER_MASK}"),
])  # fmt: skip
def test_english_numbers_of_eight_digits_or_more_are_masked(said, masked):
    assert mask_english_numbers(said) == masked


@pytest.mark.parametrize("said", [
    "oh five five five one two three four",  # a leading "oh" is a sigh: seven digits
    "one two three four five six seven oh",  # a trailing "oh" too
    "one two three four five six seven oh and",
    "call me on one two three four five six seven",
    "twenty three",
    "oh dear, double trouble",
    "double",
])  # fmt: skip
def test_english_numbers_of_fewer_than_eight_digits_stay(said):
    assert mask_english_numbers(said) == said


def test_twenty_three_said_as_two_words_is_two_digits():
    # 23 05 90 12 34: ten digits, a CPR number, not eleven
    assert mask_english_numbers("twenty three oh five nine oh one two three four") == CPR_MASK
    # "twenty zero" is not merged: 2 0 0 and seven more is ten digits, a CPR number
    assert mask_english_numbers("twenty zero one two three four five six seven") == CPR_MASK


# Regressions: an "oh" before a joiner or after "double" ended the run, and the CPR number was
# left in the transcript as two short runs.
@pytest.mark.parametrize("said", [
    "two three oh five nine oh dash one two three four",
    "two three oh five nine oh - one two three four",
    "one two double oh four five one two three four",  # 1200451234
])  # fmt: skip
def test_a_cpr_number_with_oh_before_a_dash_or_after_double_is_masked(said):
    assert mask_numbers(said) == CPR_MASK


def test_double_oh_starts_a_number():
    said = "double oh four five one two three four five six seven eight"  # 0045 12345678
    assert mask_english_numbers(said) == NUMBER_MASK


def test_a_ten_digit_number_after_plus_is_a_phone_number_not_a_cpr_number():
    said = "ring plus four five one two three four five six seven eight nu"
    assert mask_english_numbers(said) == f"ring {NUMBER_MASK} nu"
    assert mask_english_numbers("four five one two three four five six seven eight") == CPR_MASK


# == CPR cues: how near is near ================================================================
@pytest.mark.parametrize(("said", "masked"), [
    ("mit cpr er 12 03 45 øh 12 34", f"mit cpr er {CPR_MASK} øh {CPR_MASK}"),
    ("mit cpr er 120345 1234 og jeg er 85 år", f"mit cpr er {CPR_MASK} og jeg er 85 år"),
    ("cpr a b c d e 12 03", f"cpr a b c d e {CPR_MASK}"),  # five words after: near
    ("cpr a b c d e f 12 03", "cpr a b c d e f 12 03"),  # six: not near
    ("120345-1234 er mit cpr", f"{CPR_MASK} er mit cpr"),
    ("12 03 a b cpr", f"{CPR_MASK} a b cpr"),  # two words before: near
    ("12 03 a b c cpr", "12 03 a b c cpr"),  # three: not near
    ("cpr er 12 a b c d e 34", f"cpr er {CPR_MASK} a b c d e {CPR_MASK}"),  # the anchor moves
    ("de sidste fire er 12 34", f"de sidste fire er {CPR_MASK}"),
    ("cpr nummer 5 tak", "cpr nummer 5 tak"),  # one digit is not part of a CPR number
])  # fmt: skip
def test_numbers_near_a_cpr_cue_are_masked_and_far_ones_stay(said, masked):
    assert mask_numbers(said) == masked


def test_masking_near_a_cue_stops_after_ten_digits():
    assert mask_numbers("cpr 12 03 45 øh 12 34 øh 85") == f"cpr {CPR_MASK} øh {CPR_MASK} øh 85"
    assert mask_numbers("cpr 12 03 45 12 34 jeg er 85") == f"cpr {CPR_MASK} jeg er 85"
    # before the cue too: ten digits masked, the number further back stays
    assert mask_numbers("85 øh 12 03 45 øh 12 34 cpr") == f"85 øh {CPR_MASK} øh {CPR_MASK} cpr"


def test_each_cue_masks_its_own_number():
    said = "cpr 12 03 45 12 34 a b c d e f g h og hans cpr 23 05 90 12 34"
    assert mask_numbers(said) == f"cpr {CPR_MASK} a b c d e f g h og hans cpr {CPR_MASK}"


# == logs ======================================================================================
# Regression: a number followed by a full stop or a colon (the end of a sentence) stayed in
# the log, because the rule that keeps "1761245643.1" and "12345678.json" readable refused any
# following dot.
@pytest.mark.parametrize(("line", "masked"), [
    ("caller said 2305901234.", f"caller said {CPR_MASK}."),
    ("ring 12345678. tak", f"ring {NUMBER_MASK}. tak"),
    ("ring +45 12 34 56 78.", f"ring {NUMBER_MASK}."),
    ("cpr 230590-1234: ok", f"cpr {CPR_MASK}: ok"),
])  # fmt: skip
def test_a_number_at_the_end_of_a_sentence_is_masked_in_logs(line, masked):
    assert mask_log_text(line) == masked


@pytest.mark.parametrize("line", [
    "ast-1761245643.1", "file 12345678.json", "sip 12345678:5060", "id 12345678-abc",
    "/calls/12345678/events", "v3:1234567890123",
])  # fmt: skip
def test_numbers_inside_ids_and_paths_stay_readable_in_logs(line):
    assert mask_log_text(line) == line


@pytest.fixture
def fresh_process(monkeypatch):
    """Logging as a fresh process has it: masking installs once per process, and the test
    session's process installed it long ago."""
    installed = logging.getLogRecordFactory()
    logging.setLogRecordFactory(logging.LogRecord)
    monkeypatch.setattr(privacy, "_installed", False)
    try:
        yield
    finally:
        logging.setLogRecordFactory(installed)


def _record(msg: object, args: object) -> logging.LogRecord:
    install_log_masking()
    return logging.getLogger("voicebot.test").makeRecord(
        "voicebot.test", logging.INFO, __file__, 1, msg, args, None
    )


def test_installing_log_masking_twice_installs_one_factory(fresh_process):
    install_log_masking()
    factory = logging.getLogRecordFactory()
    install_log_masking()
    assert logging.getLogRecordFactory() is factory
    record = _record("cpr %s", ("2305901234",))
    assert record.getMessage() == f"cpr {CPR_MASK}"


def test_a_clean_record_is_left_as_it_was(fresh_process):
    args = ("CA1", 42)
    record = _record("call %s turn %d", args)
    assert record.msg == "call %s turn %d" and record.args is args


def test_a_record_keeps_its_shape_when_its_parts_are_masked(fresh_process):
    record = _record("cpr 2305901234 from %s after %d turns", ("2305901234", 3))
    assert record.msg == f"cpr {CPR_MASK} from %s after %d turns"
    assert record.args == (CPR_MASK, 3)
    record = _record(
        "call %(call)s from %(caller)s, %(turns)d turns",
        {"call": "CA1", "caller": "+4512345678", "turns": 3},
    )
    assert record.msg == "call %(call)s from %(caller)s, %(turns)d turns"
    assert record.args == {"call": "CA1", "caller": NUMBER_MASK, "turns": 3}
    assert record.getMessage() == f"call CA1 from {NUMBER_MASK}, 3 turns"


def test_a_number_split_across_arguments_or_not_text_is_masked_in_the_whole_message(fresh_process):
    record = _record("cpr %s%s", ("230590", "1234"))
    assert record.getMessage() == f"cpr {CPR_MASK}" and record.args == ()
    record = _record("refused: %s", (ValueError("token=abcdefghijk123"),))
    assert record.getMessage() == "refused: token=[SKJULT]" and record.args == ()


def test_a_malformed_record_is_left_to_logging(fresh_process):
    record = _record("%s and %s", ("only one",))
    assert record.msg == "%s and %s" and record.args == ("only one",)


# == runs of number tokens: joiners, groups, and the order of the masks ========================
@pytest.mark.parametrize(("said", "masked"), [
    ("ring 12 34 56 78 og", f"ring {NUMBER_MASK} og"),  # a joiner at the very end
    ("12 34 56 og 78", NUMBER_MASK),  # a joiner before the last token joins it
    ("12 03 45 12 - tyve", CPR_MASK),  # a dash before a tens word keeps both its digits
    ("de sidste fire 12 34", f"de sidste fire {CPR_MASK}"),  # the cue's "fire" is no digit
    ("c p r 12 34", f"c p r {CPR_MASK}"),
    ("30.000 kr og 1234", "30.000 kr og 1234"),  # an amount is not half a CPR number
    ("nr.120 345 og så 1234", f"nr.{CPR_MASK} og så {CPR_MASK}"),  # the first group is no amount
    ("jeg er 85 år og mit cpr er 120345-1234", f"jeg er 85 år og mit cpr er {CPR_MASK}"),
])  # fmt: skip
def test_runs_of_number_tokens(said, masked):
    assert mask_numbers(said) == masked


@pytest.mark.parametrize(("said", "masked"), [
    # after the cue: 3 + 3 + 3 digits leave one, so the next run is still part of it
    ("cpr 120 øh 345 øh 123 øh 45", f"cpr {CPR_MASK} øh {CPR_MASK} øh {CPR_MASK} øh {CPR_MASK}"),
    ("45 øh 120 øh 345 øh 123 cpr", f"{CPR_MASK} øh {CPR_MASK} øh {CPR_MASK} øh {CPR_MASK} cpr"),
    # before the cue: 3 + 3 + 2 + 2 digits are all ten, the run further back stays
    ("12 øh 34 øh 56 øh 123 øh 456 cpr", "12 øh [CPR] øh [CPR] øh [CPR] øh [CPR] cpr"),
    ("12 øh 34 øh 56 cpr", f"{CPR_MASK} øh {CPR_MASK} øh {CPR_MASK} cpr"),  # every run, in turn
    ("1 a 2 b 3 c 4 d 5 e 6 f 7 g 8 h cpr 12", f"1 a 2 b 3 c 4 d 5 e 6 f 7 g 8 h cpr {CPR_MASK}"),
])  # fmt: skip
def test_the_runs_near_a_cue_are_counted_to_ten_digits(said, masked):
    assert mask_numbers(said) == masked


@pytest.mark.parametrize(("said", "masked"), [
    ("ring four five one two three four five six seven eight", f"ring {CPR_MASK}"),
    ("one two three four five six seven eight plus", f"{NUMBER_MASK} plus"),
    ("Plus four five one two three four five six seven eight", NUMBER_MASK),
    ("double five dash one two three four five six", NUMBER_MASK),  # 55-123456
    ("one two three four five six oh seven", NUMBER_MASK),  # "oh" before the last word
    ("one two three four five six seven dash eight", NUMBER_MASK),  # a dash before it
    ("one two three four five six double seven", NUMBER_MASK),  # "double" before it
])  # fmt: skip
def test_where_an_english_number_starts_and_whether_it_is_abroad(said, masked):
    assert mask_english_numbers(said) == masked


@pytest.mark.parametrize(("number", "shown"), [
    ("+45 12 34 56 78", "+45 ••••••78"),
    ("12345678", "••••••78"),
    ("1234", "••34"),  # four digits: the last two shown
    ("123", "••"),  # fewer: nothing shown
    ("", None),
    (None, None),
])  # fmt: skip
def test_the_caller_number_as_agents_see_it(number, shown):
    assert mask_caller(number) == shown


@pytest.mark.parametrize(("line", "masked"), [
    ("password=hunter-hunter", "password=[SKJULT]"),  # no digit in the line at all
    ("login: password=hunter-hunter", "login: password=[SKJULT]"),
    ("Authorization: Bearer abcdefghijkl", "Authorization: Bearer [SKJULT]"),
])  # fmt: skip
def test_a_secret_without_digits_is_hidden_in_logs(line, masked):
    assert mask_log_text(line) == masked


def test_an_escaped_control_character_is_not_left_as_a_secrets_value():
    # "\r" escaped is "\\r": now a value after "token=", masked in the second pass
    assert clean_log_text("refused token=\r") == "refused token=[SKJULT]"
