"""Masking of CPR numbers and phone numbers in transcripts, before anything is stored,
logged or shown.

Callers say numbers in many ways, and the recogniser writes them in more: "230590-1234",
"23 05 90 12 34", "to tre nul fem ni nul en to tre fire", "treogtyve nul fem halvfems…".
Every token is read as the digits it stands for; a run of number tokens that adds up to
eight digits or more is masked (ten digits: CPR, otherwise a phone or other number).
"""

from __future__ import annotations

import re

CPR_MASK = "[CPR]"
NUMBER_MASK = "[NUMMER]"

_UNITS = {
    "nul": 0, "en": 1, "et": 1, "én": 1, "ét": 1, "to": 2, "tre": 3, "fire": 4, "fem": 5,
    "seks": 6, "syv": 7, "otte": 8, "ni": 9,
}  # fmt: skip
_TEENS = {
    "ti": 10, "elleve": 11, "tolv": 12, "tretten": 13, "fjorten": 14, "femten": 15,
    "seksten": 16, "sytten": 17, "atten": 18, "nitten": 19,
}  # fmt: skip
_TENS = {
    "tyve": 20, "tredive": 30, "tredve": 30, "fyrre": 40, "fyrretyve": 40, "halvtreds": 50,
    "tres": 60, "halvfjerds": 70, "firs": 80, "halvfems": 90,
}  # fmt: skip
# Words that may stand between the parts of one number ("bindestreg", "streg", "og").
_JOINERS = {"bindestreg", "streg", "minus", "og", "-", "–", "plus", "+"}
_TOKEN = re.compile(r"\+?\d+|[a-zæøåé]+|[-–+]", re.IGNORECASE)


def _digits_of(word: str) -> str | None:
    """The digits one token stands for, or None if it is not a number."""
    w = word.lower().lstrip("+")
    if w.isdigit():
        return w
    if w in _UNITS:
        return str(_UNITS[w])
    if w in _TEENS:
        return str(_TEENS[w])
    if w in _TENS:
        return str(_TENS[w])
    if "og" in w:  # "femogtyve" = 25
        unit, _, tens = w.partition("og")
        if unit in _UNITS and tens in _TENS and _UNITS[unit] > 0:
            return str(_TENS[tens] + _UNITS[unit])
    return None


def mask_numbers(text: str) -> str:
    """Mask CPR and phone numbers, written or spoken, in a transcript."""
    tokens = list(_TOKEN.finditer(text))
    spans: list[tuple[int, int, int]] = []  # (start char, end char, digit count)
    i = 0
    while i < len(tokens):
        digits = _digits_of(tokens[i].group())
        if digits is None:
            i += 1
            continue
        start, count, last, j = tokens[i].start(), len(digits), i, i + 1
        # "fem og tyve" said as three words is one number: 25, not 5 + 20.
        while j < len(tokens):
            word = tokens[j].group().lower()
            d = _digits_of(word)
            if d is not None:
                count += len(d)
                last, j = j, j + 1
            elif word in _JOINERS and j + 1 < len(tokens) and _digits_of(tokens[j + 1].group()):
                if word == "og" and tokens[j + 1].group().lower() in _TENS:
                    count -= 1  # "fem og tyve": the unit merges into the tens
                j += 1
            else:
                break
        if count >= 8:
            spans.append((start, tokens[last].end(), count))
        i = last + 1
    out, pos = [], 0
    for start, end, count in spans:
        out.append(text[pos:start])
        international = text[start] == "+"  # "+45 12345678" is a phone number
        out.append(CPR_MASK if count == 10 and not international else NUMBER_MASK)
        pos = end
    out.append(text[pos:])
    return "".join(out)
