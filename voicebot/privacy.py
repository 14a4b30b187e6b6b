"""Masking of CPR numbers and phone numbers in transcripts, before anything is stored,
logged or shown.

Callers say numbers in many ways, and the recogniser writes them in more: "230590-1234",
"23 05 90 12 34", "to tre nul fem ni nul en to tre fire", "treogtyve nul fem halvfems…".
Every token is read as the digits it stands for; a run of number tokens that adds up to
eight digits or more is masked (ten digits: CPR, otherwise a phone or other number).
"""

from __future__ import annotations

import logging
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


# == logs: defence in depth ===================================================================
# Transcripts reach logs only masked (and only with log_transcripts on), but anything else
# that slips through — a caller number in a platform's parameters, a token in a URL a server
# logs — is masked here, in every log record of the process. Written digit runs only: a run of
# 8 or more digits (spaces or hyphens between them) that is not part of a longer word, id or
# address, so call ids, UUIDs, IP addresses and ports stay readable.
_LOG_NUMBER = re.compile(r"(?<![\w.:/-])\+?\d(?:[ -]?\d){7,}(?![\w.:/]|-\w)")
_LOG_SECRET = re.compile(r"(?i)(\b(?:token|api[_-]?key|signature|password)=)[^&\s\"']+")
_LOG_BEARER = re.compile(r"(?i)(\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{8,}")


def mask_log_text(text: str) -> str:
    """A log message with written CPR/phone numbers and secrets in URLs or headers masked."""
    if not any(ch.isdigit() for ch in text) and "=" not in text and " " not in text:
        return text
    text = _LOG_SECRET.sub(r"\1[SKJULT]", text)
    text = _LOG_BEARER.sub(r"\1[SKJULT]", text)
    return _LOG_NUMBER.sub(lambda m: CPR_MASK if len(re.sub(r"\D", "", m.group())) == 10
                           and not m.group().startswith("+") else NUMBER_MASK, text)


_installed = False


def install_log_masking() -> None:
    """Mask every log record made from now on in this process (idempotent). A record factory,
    not a handler filter, so it also covers handlers configured later (uvicorn's)."""
    global _installed
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error report
            return record
        if mask_log_text(message) == message:
            return record
        # Mask the parts, keep the shape: formatters such as uvicorn's access log unpack
        # record.args, so it must stay a tuple of the same length.
        if isinstance(record.msg, str):
            record.msg = mask_log_text(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(mask_log_text(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: mask_log_text(v) if isinstance(v, str) else v for k, v in record.args.items()}
        if mask_log_text(record.getMessage()) != record.getMessage():  # split across parts
            record.msg, record.args = mask_log_text(record.getMessage()), ()
        return record

    logging.setLogRecordFactory(factory)


def mask_caller(number: str | None) -> str | None:
    """The caller's number as queue records and agents see it: the country code and the last
    two digits only, '+45 ••••••78'."""
    if not number:
        return None
    digits = "".join(ch for ch in number if ch.isdigit())
    if len(digits) < 4:
        return "••"
    prefix = "+" + digits[:2] + " " if number.strip().startswith("+") else ""
    rest = digits[2:] if prefix else digits
    return prefix + "•" * (len(rest) - 2) + rest[-2:]
