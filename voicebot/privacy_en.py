"""Masking of CPR and phone numbers said in English words, before anything is stored, logged or
shown (issue 14): "two three oh five nine oh one two three four", "twenty-three oh five
ninety, twelve thirty-four", "double five six seven…".

The same rule as voicebot/privacy.py's Danish masking: every token is read as the digits it
stands for, and a run of number tokens that adds up to eight digits or more is masked (ten
digits: CPR, otherwise a phone or other number). Kept apart from privacy.py so English can be
hooked into its `mask_numbers` with one call (see `mask_english_numbers`).
"""

from __future__ import annotations

import re

from voicebot.privacy import CPR_MASK, NUMBER_MASK

ENGLISH_UNITS = {
    "zero": 0, "nought": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9,
}  # fmt: skip
ENGLISH_TEENS = {
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
ENGLISH_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90,
}  # fmt: skip
# "oh" is a zero only between number words ("two oh five"), never alone ("oh, my passport").
_ZERO_INSIDE = {"oh", "o"}
# "double five" = 55, "triple nine" = 999.
_REPEAT = {"double": 2, "triple": 3}
# Words that may stand between the parts of one number.
_JOINERS = {"dash", "hyphen", "minus", "plus", "and", "-", "–", "+"}
_TOKEN = re.compile(r"\+?\d+|[a-z]+|[-–+]", re.IGNORECASE)


def english_digits_of(word: str) -> str | None:
    """The digits one English number word (or a written digit run) stands for, or None."""
    w = word.lower().lstrip("+")
    if w.isdigit():
        return w
    for table in (ENGLISH_UNITS, ENGLISH_TEENS, ENGLISH_TENS):
        if w in table:
            return str(table[w])
    return None


def _run_end(tokens: list[re.Match], i: int) -> tuple[int, int]:
    """(index of the run's last number token, digit count) of the run that starts at token i."""
    count, last, j = 0, i, i
    previous: str | None = None  # the last number word, to merge "twenty three" into 23
    repeat = 1
    while j < len(tokens):
        word = tokens[j].group().lower()
        digits = english_digits_of(word)
        if digits is None and word in _ZERO_INSIDE and previous is not None:
            nxt = tokens[j + 1].group() if j + 1 < len(tokens) else ""
            if english_digits_of(nxt) is not None or nxt.lower() in _ZERO_INSIDE:
                digits = "0"
        if digits is not None:
            if previous in ENGLISH_TENS and word in ENGLISH_UNITS and word != "zero":
                count -= 1  # "twenty three" is 23: the unit takes the tens' zero
            count += len(digits) * repeat
            repeat, previous, last, j = 1, word, j, j + 1
            continue
        nxt = tokens[j + 1].group() if j + 1 < len(tokens) else ""
        if word in _REPEAT and english_digits_of(nxt) in {str(d) for d in range(10)}:
            repeat, j = _REPEAT[word], j + 1
            continue
        if word in _JOINERS and previous is not None and english_digits_of(nxt) is not None:
            j += 1
            continue
        break
    return last, count


def mask_english_numbers(text: str) -> str:
    """Mask CPR and phone numbers said in English number words (or digits) in a transcript.

    Hook for voicebot/privacy.py: `mask_numbers(text)` should return
    `mask_english_numbers(<its Danish-masked result>)`, so a transcript in either language
    (or both) is masked; masked spans ("[CPR]") hold no number words, so the order is safe.
    """
    tokens = list(_TOKEN.finditer(text))
    spans: list[tuple[int, int, int]] = []  # (start char, end char, digit count)
    i = 0
    while i < len(tokens):
        word = tokens[i].group().lower()
        starts = english_digits_of(word) is not None or (
            word in _REPEAT and i + 1 < len(tokens) and english_digits_of(tokens[i + 1].group()) is not None)
        if not starts:
            i += 1
            continue
        last, count = _run_end(tokens, i)
        if count >= 8:
            said_plus = i > 0 and tokens[i - 1].group().lower() == "plus"  # "plus four five …"
            start = tokens[i - 1].start() if said_plus else tokens[i].start()
            spans.append((start, tokens[last].end(), count))
        i = last + 1
    out, pos = [], 0
    for start, end, count in spans:
        out.append(text[pos:start])
        international = text[start] in "+pP"  # "+45 …" or "plus 45 …" is a phone number
        out.append(CPR_MASK if count == 10 and not international else NUMBER_MASK)
        pos = end
    out.append(text[pos:])
    return "".join(out)
