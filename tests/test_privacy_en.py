"""CPR and phone numbers said in English words are masked (issue 14, voicebot/privacy.py)."""

import pytest

from voicebot.privacy import CPR_MASK, NUMBER_MASK, english_digits_of, mask_english_numbers


@pytest.mark.parametrize("said", [
    "my CPR number is two three oh five nine oh one two three four",
    "CPR twenty-three oh five ninety, twelve thirty-four",
    "it is two three zero five nine zero dash one two three four",
    "my cpr is 230590 1234",
    "twenty three zero five nineteen ninety... no sorry, twenty three zero five nine zero one two three four",
])  # fmt: skip
def test_cpr_said_in_english_is_masked_as_cpr(said: str):
    masked = mask_english_numbers(said)
    assert CPR_MASK in masked
    assert not any(w in masked.lower().split() for w in ("four", "1234", "thirty"))


@pytest.mark.parametrize("said", [
    "call me back on double five six seven eight nine one two",
    "my phone is plus four five two two three three four four five five",
    "the number is twelve thirty-four fifty-six seventy-eight",
])  # fmt: skip
def test_phone_numbers_said_in_english_are_masked(said: str):
    masked = mask_english_numbers(said)
    assert NUMBER_MASK in masked and CPR_MASK not in masked, masked


@pytest.mark.parametrize("said", [
    "I have two kids and one dog",
    "oh, my passport expires in two weeks",
    "the passport costs eight hundred and ninety kroner",
    "I need help for my mother, she is eighty five",
    "we are three people on twenty two square metres since 2019",
])  # fmt: skip
def test_short_numbers_and_ordinary_words_stay(said: str):
    assert mask_english_numbers(said) == said


def test_digit_words():
    assert english_digits_of("seventeen") == "17"
    assert english_digits_of("Ninety") == "90"
    assert english_digits_of("+45") == "45"
    assert english_digits_of("oh") is None  # a zero only between number words
