"""Masking of CPR numbers and phone numbers in transcripts, before anything is stored,
logged or shown.

Callers say numbers in many ways, and the recogniser writes them in more: "230590-1234",
"23 05 90 12 34", "to tre nul fem ni nul en to tre fire", "treogtyve nul fem halvfems…",
"CPR nero 1 nero 2 nero 3-1234". Every token is read as the digits it stands for (Danish and
English number words, and the recogniser's garbles of "nul"); a run of number tokens is masked
when
- it adds up to eight digits or more (ten digits: CPR, otherwise a phone or other number);
- it is two parts of a CPR number said apart ("120345 og så 1234": 6 + 4 digits, or one part
  a digit short or long when a digit was misheard as a word);
- it has two digits or more and stands close to a cue word (cpr, personnummer, fødselsdato,
  "de sidste fire", social security…), until ten digits near the cue have been masked.
One pass over the tokens (linear in the text): this runs on every partial transcript.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

CPR_MASK = "[CPR]"
NUMBER_MASK = "[NUMMER]"

_UNITS = {
    "nul": 0, "en": 1, "et": 1, "én": 1, "ét": 1, "to": 2, "tre": 3, "fire": 4, "fem": 5,
    "seks": 6, "syv": 7, "otte": 8, "ni": 9,
    # the recogniser's spellings of "nul", and English digits (callers and Whisper use both)
    "null": 0, "nero": 0, "nulle": 0, "nol": 0, "zero": 0,
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9,
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

# Words that announce a CPR number, one token (prefixes: "cpr-nummeret" is "cpr", "-", …) or
# a phrase of tokens. "fire" in "de sidste fire" is part of the cue, not a digit.
_CUE_PREFIXES = (
    "cpr",
    "personnummer",
    "personnr",
    "fødselsdato",
    "sygesikringsnummer",
    "kontrolcif",
)
_CUE_WORDS = {"ssn"}
_CUE_PHRASES = (
    ("person", "nummer"), ("person", "nummeret"), ("person", "nr"), ("fødsels", "dato"),
    ("social", "security"), ("personal", "number"), ("c", "p", "r"), ("se", "pe", "er"),
    ("sidste", "fire"), ("sidste", "4"), ("fire", "sidste"), ("4", "sidste"),
    ("last", "four"), ("last", "4"),
)  # fmt: skip
_CUE_AFTER_WORDS = 5  # words between a cue and the number that follows it ("cpr … er øh 12 03 45")
_CUE_BEFORE_WORDS = 2  # words between a number and a cue that follows it ("120345-1234 er mit cpr")
_CPR_DIGITS = 10
_SPLIT_WORDS = 3  # words between the two parts of a split CPR number ("120345 og så 1234")


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


@dataclass(frozen=True, slots=True)
class _Run:
    """Number tokens first..last (token indices) read as one number of `count` digits."""

    first: int
    last: int
    count: int
    amount: bool = False  # written with a thousands separator ("30.000"): a sum, not an id


def _cue_length(words: list[str], i: int) -> int:
    """How many tokens from i form a CPR cue (0: none)."""
    if words[i].startswith(_CUE_PREFIXES) or words[i] in _CUE_WORDS:
        return 1
    for phrase in _CUE_PHRASES:
        if tuple(words[i : i + len(phrase)]) == phrase:
            return len(phrase)
    return 0


def _cues(words: list[str]) -> list[tuple[int, int]]:
    """(first, last) token indices of every cue."""
    cues, i = [], 0
    while i < len(words):
        n = _cue_length(words, i)
        if n:
            cues.append((i, i + n - 1))
        i += max(n, 1)
    return cues


def _number_runs(words: list[str], digits: list[str | None], grouped: list[bool]) -> list[_Run]:
    runs: list[_Run] = []
    i = 0
    while i < len(words):
        if (digit := digits[i]) is None:
            i += 1
            continue
        count, last, j = len(digit), i, i + 1
        # "fem og tyve" said as three words is one number: 25, not 5 + 20.
        while j < len(words):
            if (more := digits[j]) is not None:
                count += len(more)
                last, j = j, j + 1
            elif words[j] in _JOINERS and j + 1 < len(words) and digits[j + 1] is not None:
                if words[j] == "og" and words[j + 1] in _TENS:
                    count -= 1  # "fem og tyve": the unit merges into the tens
                j += 1
            else:
                break
        runs.append(_Run(i, last, count, any(grouped[i + 1 : last + 1])))
        i = last + 1
    return runs


def _split_cpr(runs: list[_Run]) -> set[int]:
    """Runs that are the two parts of one CPR number said apart: 6 + 4 digits, or one part a
    digit short or long (a digit misheard as a word, dropped or doubled). Amounts ("30.000")
    are not parts."""
    found: set[int] = set()
    for k in range(len(runs) - 1):
        a, b = runs[k], runs[k + 1]
        shape = (a.count == 6 and 3 <= b.count <= 5) or (5 <= a.count <= 7 and b.count == 4)
        if shape and b.first - a.last - 1 <= _SPLIT_WORDS and not (a.amount or b.amount):
            found.update((k, k + 1))
    return found


def _near_cues(runs: list[_Run], cues: list[tuple[int, int]]) -> set[int]:
    """Runs of two digits or more close to a cue, in either direction, until the ten digits of
    a CPR number have been masked (so "… og jeg er 85 år" after a whole number stays)."""
    found: set[int] = set()
    for first, last in cues:
        # after the cue; a masked run moves the anchor on ("cpr 12 03 45 øh 12 34")
        anchor, left, k = last, _CPR_DIGITS, _first_run_after(runs, last)
        while k < len(runs) and left > 0 and runs[k].first - anchor - 1 <= _CUE_AFTER_WORDS:
            if runs[k].count >= 2:
                found.add(k)
                anchor, left = runs[k].last, left - runs[k].count
            k += 1
        # before the cue
        anchor, left, k = first, _CPR_DIGITS, _first_run_after(runs, first) - 1
        while k >= 0 and left > 0 and anchor - runs[k].last - 1 <= _CUE_BEFORE_WORDS:
            if runs[k].count >= 2:
                found.add(k)
                anchor, left = runs[k].first, left - runs[k].count
            k -= 1
    return found


def _first_run_after(runs: list[_Run], token: int) -> int:
    """Index of the first run that starts after token (len(runs) if none)."""
    lo, hi = 0, len(runs)
    while lo < hi:
        mid = (lo + hi) // 2
        if runs[mid].first <= token:
            lo = mid + 1
        else:
            hi = mid
    return lo


def mask_numbers(text: str) -> str:
    """Mask CPR and phone numbers, written or spoken in Danish or English, in a transcript.
    English number words go second: the Danish pass leaves tags with no number words."""
    return mask_english_numbers(_mask_danish_numbers(text))


def _mask_danish_numbers(text: str) -> str:
    tokens = list(_TOKEN.finditer(text))
    words = [t.group().lower() for t in tokens]
    cues = _cues(words)
    in_cue = {i for first, last in cues for i in range(first, last + 1)}
    digits = [None if i in in_cue else _digits_of(w) for i, w in enumerate(words)]
    # "30.000": three digits after a dot are a thousands group
    grouped = [
        i > 0
        and len(w) == 3
        and w.isdigit()
        and text[tokens[i - 1].end() : tokens[i].start()] == "."
        for i, w in enumerate(words)
    ]
    runs = _number_runs(words, digits, grouped)
    cpr = _split_cpr(runs) | _near_cues(runs, cues)
    out, pos = [], 0
    for k, run in enumerate(runs):
        if k not in cpr and run.count < 8:
            continue
        start, end = tokens[run.first].start(), tokens[run.last].end()
        out.append(text[pos:start])
        international = text[start] == "+"  # "+45 12345678" is a phone number
        long_number = run.count >= 8  # ten digits: CPR, otherwise a phone or other number
        is_cpr = run.count == _CPR_DIGITS and not international if long_number else True
        out.append(CPR_MASK if is_cpr else NUMBER_MASK)
        pos = end
    out.append(text[pos:])
    return "".join(out)


# == logs: defence in depth ===================================================================
# Transcripts reach logs only masked (and only with log_transcripts on), but anything else
# that slips through — a caller number in a platform's parameters, a token in a URL a server
# logs — is masked here, in every log record of the process. Written digit runs only: a run of
# 8 or more digits (spaces or hyphens between them, or URL-encoded: "%2B45%2012345678") that is
# not part of a longer word, id or address, so call ids, UUIDs, IP addresses and ports stay
# readable. A full stop or colon ends a number ("mit cpr er 2305901234."); only followed by a
# letter or digit ("1761245643.1", "12345678.json") does it make the number part of an id.
_LOG_NUMBER = re.compile(r"(?:%2[Bb]|(?<![\w.:/-])\+?)\d(?:(?:[ +-]|%20)?\d){7,}(?![\w/]|[.:-]\w)")
_URL_SPACE_OR_PLUS = re.compile(r"%2[0Bb]|\D")
# key=value in URLs and forms ("?token=", "auth_token=", "api_key=", "password=")
_LOG_SECRET = re.compile(
    r"(?i)(\b(?:\w*[_-])?(?:token|api[_-]?key|signature|password|passwd|secret)=)[^&\s\"']+"
)
# headers and dict/JSON reprs ("X-API-KEY: k", "'x-twilio-signature': 's'", '"password": "p"')
_LOG_SECRET_FIELD = re.compile(
    r"(?i)((?:\b(?:x-api-key|(?:x-twilio-)?signature)|[\"'](?:\w*[_-])?"
    r"(?:token|api[_-]?key|signature|password|passwd|secret)[\"'])\s*:\s*[\"']?)[^\s\"',;}]+"
)
_LOG_BEARER = re.compile(r"(?i)(\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{8,}")
# redis://:pw@host (a bounded scheme: "a.a.a.a…" must not be rescanned from every letter)
_LOG_URL_PASSWORD = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]{0,30}://[^/\s:@]*:)[^/\s@]+(?=@)")
_HIDDEN = r"\1[SKJULT]"
# Control characters (C0, DEL, C1, Unicode line separators): a "%0a" decoded into a path would
# start a forged log line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def mask_log_text(text: str) -> str:
    """A log message with written CPR/phone numbers and secrets in URLs or headers masked."""
    if not any(ch.isdigit() for ch in text) and not any(ch in text for ch in "= :"):
        return text
    for pattern in (_LOG_SECRET, _LOG_SECRET_FIELD, _LOG_BEARER, _LOG_URL_PASSWORD):
        text = pattern.sub(_HIDDEN, text)
    return _LOG_NUMBER.sub(_number_mask, text)


def _number_mask(match: re.Match[str]) -> str:
    number = match.group()
    international = number.startswith(("+", "%2B", "%2b"))
    digits = _URL_SPACE_OR_PLUS.sub("", number)
    return CPR_MASK if len(digits) == _CPR_DIGITS and not international else NUMBER_MASK


def escape_control_characters(text: str) -> str:
    """The text on one line: control characters written as escapes ("\\n", "\\x1b")."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def clean_log_text(text: str) -> str:
    """What a log line may hold: masked, and on one line. Masked before escaping (a number after
    a newline is still a number) and after (an escape may now be a secret's value: "token=\\r")."""
    escaped = escape_control_characters(mask_log_text(text))
    return escaped if escaped == text else mask_log_text(escaped)


_installed = False


def install_log_masking() -> None:
    """Mask every log record made from now on in this process (idempotent). A record factory,
    not a handler filter, so it also covers handlers configured later (uvicorn's)."""
    global _installed
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:  # LogRecord's own signature
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error report
            return record
        if clean_log_text(message) == message:
            return record
        # Clean the parts, keep the shape: formatters such as uvicorn's access log unpack
        # record.args, so it must stay a tuple of the same length.
        if isinstance(record.msg, str):
            record.msg = clean_log_text(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(clean_log_text(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                k: clean_log_text(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        message = record.getMessage()
        if clean_log_text(message) != message:  # split across parts, or in a non-text argument
            record.msg, record.args = clean_log_text(message), ()
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


# == English number words ==================================================================
# "two three oh five nine oh one two three four", "twenty-three oh five ninety", "double five":
# the same rule as the Danish masking — every token read as the digits it stands for, and a run
# of number tokens of eight digits or more masked (ten digits: CPR).

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
_EN_JOINERS = {"dash", "hyphen", "minus", "plus", "and", "-", "–", "+"}
_EN_TOKEN = re.compile(r"\+?\d+|[a-z]+|[-–+]", re.IGNORECASE)


def english_digits_of(word: str) -> str | None:
    """The digits one English number word (or a written digit run) stands for, or None."""
    w = word.lower().lstrip("+")
    if w.isdigit():
        return w
    for table in (ENGLISH_UNITS, ENGLISH_TEENS, ENGLISH_TENS):
        if w in table:
            return str(table[w])
    return None


_SINGLE_DIGITS = frozenset("0123456789")


def _is_digit_word(word: str) -> bool:
    """One digit said as a word ("five", "oh"): what "double" and "triple" repeat."""
    return word.lower() in _ZERO_INSIDE or english_digits_of(word) in _SINGLE_DIGITS


def _oh_is_zero(tokens: list[re.Match[str]], j: int, previous: str | None, repeat: int) -> bool:
    """Whether the "oh" at token j is a zero: repeated ("double oh"), or between number words,
    also across a joiner ("two oh five", "nine oh - one two"); alone it is a sigh."""
    if repeat > 1:
        return True
    if previous is None:
        return False
    words = [t.group().lower() for t in tokens[j + 1 : j + 3]]
    if words and words[0] in _EN_JOINERS:
        words = words[1:]
    return bool(words) and (english_digits_of(words[0]) is not None or words[0] in _ZERO_INSIDE)


def _run_end(tokens: list[re.Match[str]], i: int) -> tuple[int, int]:
    """(index of the run's last number token, digit count) of the run that starts at token i."""
    count, last, j = 0, i, i
    previous: str | None = None  # the last number word, to merge "twenty three" into 23
    repeat = 1
    while j < len(tokens):
        word = tokens[j].group().lower()
        digits = english_digits_of(word)
        if digits is None and word in _ZERO_INSIDE and _oh_is_zero(tokens, j, previous, repeat):
            digits = "0"
        if digits is not None:
            if previous in ENGLISH_TENS and word in ENGLISH_UNITS and word != "zero":
                count -= 1  # "twenty three" is 23: the unit takes the tens' zero
            count += len(digits) * repeat
            repeat, previous, last, j = 1, word, j, j + 1
            continue
        nxt = tokens[j + 1].group() if j + 1 < len(tokens) else ""
        if word in _REPEAT and _is_digit_word(nxt):
            repeat, j = _REPEAT[word], j + 1
            continue
        if word in _EN_JOINERS and previous is not None and english_digits_of(nxt) is not None:
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
    tokens = list(_EN_TOKEN.finditer(text))
    spans: list[tuple[int, int, int]] = []  # (start char, end char, digit count)
    i = 0
    while i < len(tokens):
        word = tokens[i].group().lower()
        starts = english_digits_of(word) is not None or (
            word in _REPEAT and i + 1 < len(tokens) and _is_digit_word(tokens[i + 1].group())
        )
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
