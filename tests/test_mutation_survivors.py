"""Behaviours that mutation testing (scripts/mutation.sh) found unguarded: each test kills
mutants that survived the rest of the suite (named in the comments)."""

from __future__ import annotations

import pytest

from voicebot.privacy import _digits_of, _Run, _split_cpr


# == voicebot/privacy.py: _digits_of =========================================================
@pytest.mark.parametrize(
    ("word", "digits"),
    [
        ("+4512345678", "4512345678"),  # a leading + is not part of the number, a trailing one is
        ("12345678+", None),
        ("femogtyve", "25"),  # unit "og" tens: 5 + 20, not 20 - 5
        ("enogtyve", "21"),  # the smallest unit counts too
        ("nulogtyve", None),  # "zero and twenty" is no number
        ("fem", "5"),
        ("ogtyve", None),  # "og" then tens, no unit
        ("femog", None),  # a unit then "og", no tens
    ],
)
def test_danish_number_words_read_as_their_digits(word, digits):
    assert _digits_of(word) == digits


# == voicebot/privacy.py: _split_cpr =========================================================
def runs(a: int, b: int, gap: int = 0, amount: bool = False) -> list[_Run]:
    """Two runs of `a` and `b` digits with `gap` words between them."""
    return [_Run(0, 0, a), _Run(1 + gap, 1 + gap, b, amount)]


@pytest.mark.parametrize(
    ("a", "b", "parts"),
    [
        (6, 4, True), (6, 3, True), (6, 5, True), (6, 2, False), (6, 6, False),
        (5, 4, True), (7, 4, True), (4, 4, False), (8, 4, False), (7, 3, False),
    ],
)  # fmt: skip
def test_a_cpr_number_said_in_two_parts_is_six_and_four_digits_give_or_take_one(a, b, parts):
    assert _split_cpr(runs(a, b)) == ({0, 1} if parts else set())


def test_the_two_parts_of_a_split_cpr_may_be_three_words_apart_not_four():
    assert _split_cpr(runs(6, 4, gap=3)) == {0, 1}
    assert _split_cpr(runs(6, 4, gap=4)) == set()


def test_an_amount_is_never_one_part_of_a_split_cpr():
    assert _split_cpr(runs(6, 4, amount=True)) == set()
    assert _split_cpr([_Run(0, 0, 6, amount=True), _Run(1, 1, 4)]) == set()


def test_only_neighbouring_runs_are_paired():
    # 6 digits, 4 digits, then 2: the pair is the first two; the third is on its own
    found = _split_cpr([_Run(0, 0, 6), _Run(1, 1, 4), _Run(9, 9, 2)])
    assert found == {0, 1}


# == telephony/auth.py: url_variants (the URLs a Twilio signature is checked against) =========
@pytest.mark.parametrize(
    ("url", "variants"),
    [
        ("https://bot.example.dk/twilio/voice", ["https://bot.example.dk:443/twilio/voice"]),
        ("wss://bot.example.dk:443/twilio", ["wss://bot.example.dk/twilio"]),
        ("http://10.0.0.5/twilio/voice?x=1", ["http://10.0.0.5:80/twilio/voice?x=1"]),
        ("ws://10.0.0.5:80/twilio", ["ws://10.0.0.5/twilio"]),
        ("http://[::1]:80/twilio/voice", ["http://[::1]/twilio/voice"]),
        ("https://user:pw@bot.example.dk/voice", ["https://user:pw@bot.example.dk:443/voice"]),
        ("https://bot.example.dk:8443/voice", []),  # another port is never dropped or swapped
        ("ftp://bot.example.dk/voice", []),  # no known default port
    ],
)
def test_a_signed_url_is_checked_with_and_without_its_default_port(url, variants):
    from telephony.auth import url_variants

    assert url_variants(url) == [url, *variants]
