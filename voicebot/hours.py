"""Opening hours per forvaltning queue: dated operator data (intents/hours.yaml, setting `hours`).

A queue's hours are a weekly schedule, exceptions by date (closed, or other hours that day) and
Danish public holidays from the `holidays` package's Denmark calendar (closed on them unless the
queue says otherwise). Times are Copenhagen wall-clock times (Europe/Copenhagen, summer time
included). Nothing is invented: a queue without hours in the file is always open.

    opening_hours:
      SUF:
        weekly: {mon: ["08:00-15:00"], tue: ["08:00-15:00"], fri: ["08:00-12:00"]}
        closed_on_public_holidays: true      # the default
        exceptions:
          "2026-12-24": closed
          "2026-12-31": ["09:00-12:00"]

Validated once at start: a bad day name, time, overlapping range or unknown queue raises
HoursError naming the file and the entry.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import holidays
import yaml

from voicebot.config import ConfigError

TIMEZONE = ZoneInfo("Europe/Copenhagen")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Danish day names are accepted too: an operator in Copenhagen may well write them.
DANISH_DAYS = ("mandag", "tirsdag", "onsdag", "torsdag", "fredag", "lørdag", "søndag")
SEARCH_DAYS = 400  # next_open looks this far ahead (a year and the holidays around it)
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
MIDNIGHT_END = dt.time(23, 59, 59, 999999)  # "24:00" as an end


class HoursError(ConfigError):
    """The opening hours cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Span:
    """One opening range within a day, [start, end)."""

    start: dt.time
    end: dt.time

    def holds(self, t: dt.time) -> bool:
        return self.start <= t < self.end or (self.end == MIDNIGHT_END and t >= self.start)


@dataclass(frozen=True)
class QueueHours:
    weekly: dict[int, tuple[Span, ...]]  # weekday (0 = Monday) -> ranges; a missing day: closed
    exceptions: dict[dt.date, tuple[Span, ...]] = field(default_factory=dict)  # () = closed
    closed_on_public_holidays: bool = True


def _parse_time(text: str, hour: str, minute: str, end: bool) -> dt.time:
    h, m = int(hour), int(minute)
    if end and (h, m) == (24, 0):
        return MIDNIGHT_END
    if not (0 <= h <= 23 and 0 <= m <= 59):
        raise ValueError(f"{text!r} is not a time range HH:MM-HH:MM on a 24-hour clock")
    return dt.time(h, m)


def parse_spans(value: Any) -> tuple[Span, ...]:
    """`closed`, or a list of "HH:MM-HH:MM" ranges that do not overlap."""
    if value == "closed" or value == []:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ValueError('expected "closed" or a list of ranges like ["08:00-15:00"]')
    spans = []
    for text in value:
        match = _RANGE.match(str(text))
        if not match:
            raise ValueError(f"{text!r} is not a time range HH:MM-HH:MM")
        start = _parse_time(str(text), match[1], match[2], end=False)
        end = _parse_time(str(text), match[3], match[4], end=True)
        if end <= start:
            raise ValueError(f"{text!r} ends before it starts")
        spans.append(Span(start, end))
    spans.sort(key=lambda s: s.start)
    for a, b in zip(spans, spans[1:], strict=False):
        if b.start < a.end:
            raise ValueError(
                f"ranges overlap: {a.start:%H:%M}-{a.end:%H:%M} and {b.start:%H:%M}-{b.end:%H:%M}"
            )
    return tuple(spans)


def _weekday(name: Any) -> int:
    key = str(name).strip().lower()
    for names in (DAYS, DANISH_DAYS):
        if key in names:
            return names.index(key)
    raise ValueError(f"unknown day {name!r} (use {', '.join(DAYS)} or the Danish day names)")


def _parse_queue(entry: Any) -> QueueHours:
    if not isinstance(entry, dict):
        raise ValueError("expected a mapping with weekly, exceptions, closed_on_public_holidays")
    unknown = sorted(set(entry) - {"weekly", "exceptions", "closed_on_public_holidays"})
    if unknown:
        raise ValueError(f"unknown field {', '.join(map(str, unknown))}")
    weekly: dict[int, tuple[Span, ...]] = {}
    for day, ranges in (entry.get("weekly") or {}).items():
        index = _weekday(day)
        if index in weekly:
            raise ValueError(f"weekly: {day} is given twice")
        try:
            weekly[index] = parse_spans(ranges)
        except ValueError as exc:
            raise ValueError(f"weekly.{day}: {exc}") from None
    exceptions: dict[dt.date, tuple[Span, ...]] = {}
    for day, ranges in (entry.get("exceptions") or {}).items():
        try:
            date = day if isinstance(day, dt.date) else dt.date.fromisoformat(str(day))
            exceptions[date] = parse_spans(ranges)
        except ValueError as exc:
            raise ValueError(f"exceptions.{day}: {exc} (dates are YYYY-MM-DD)") from None
    holidays_closed = entry.get("closed_on_public_holidays", True)
    if not isinstance(holidays_closed, bool):
        raise ValueError("closed_on_public_holidays must be true or false")
    return QueueHours(weekly, exceptions, holidays_closed)


class OpeningHours:
    """Every queue's hours. A queue not listed is always open."""

    def __init__(self, queues: dict[str, QueueHours] | None = None) -> None:
        self.queues = queues or {}

    @cached_property
    def _holidays(self) -> holidays.HolidayBase:
        # Years are filled in as dates are asked for. `holidays` builds its country classes
        # at import time, so the type checker cannot see them.
        denmark: holidays.HolidayBase = holidays.country_holidays("DK")
        return denmark

    def is_public_holiday(self, date: dt.date) -> bool:
        return date in self._holidays

    def has_hours(self, queue: str) -> bool:
        return queue in self.queues

    def spans_on(self, queue: str, date: dt.date) -> tuple[Span, ...] | None:
        """The queue's opening ranges on a date; None: the queue has no hours (always open)."""
        hours = self.queues.get(queue)
        if hours is None:
            return None
        if date in hours.exceptions:
            return hours.exceptions[date]
        if hours.closed_on_public_holidays and self.is_public_holiday(date):
            return ()
        return hours.weekly.get(date.weekday(), ())

    def is_open(self, queue: str, at: dt.datetime) -> bool:
        local = local_time(at)
        spans = self.spans_on(queue, local.date())
        return spans is None or any(s.holds(local.time()) for s in spans)

    def next_open(self, queue: str, at: dt.datetime) -> dt.datetime | None:
        """When the queue is next open (`at` itself when open now), in Copenhagen time; None
        when it opens on no day in the coming year."""
        if self.is_open(queue, at):
            return at
        local = local_time(at)
        for offset in range(SEARCH_DAYS):
            date = local.date() + dt.timedelta(days=offset)
            for span in self.spans_on(queue, date) or ():
                opens = dt.datetime.combine(date, span.start, TIMEZONE)
                if opens > local:
                    return opens
        return None


def local_time(at: dt.datetime) -> dt.datetime:
    """`at` in Copenhagen time; a naive datetime is taken to be Copenhagen time already."""
    return at.replace(tzinfo=TIMEZONE) if at.tzinfo is None else at.astimezone(TIMEZONE)


def parse_hours(data: Any, known_queues: set[str] | None, source: str) -> OpeningHours:
    """The `opening_hours:` block of a hours file (validated; errors name `source` and the entry)."""
    if data is None:
        return OpeningHours()
    if not isinstance(data, dict) or set(data) - {"opening_hours"}:
        raise HoursError(f"{source}: the top level must hold only `opening_hours:`")
    block = data.get("opening_hours") or {}
    if not isinstance(block, dict):
        raise HoursError(f"{source}: opening_hours must map queue ids to their hours")
    queues: dict[str, QueueHours] = {}
    for queue, entry in block.items():
        if known_queues is not None and queue not in known_queues:
            raise HoursError(
                f"{source}: opening_hours.{queue}: unknown queue "
                f"(the catalogue's forvaltninger are {', '.join(sorted(known_queues))})"
            )
        try:
            queues[str(queue)] = _parse_queue(entry)
        except ValueError as exc:
            raise HoursError(f"{source}: opening_hours.{queue}: {exc}") from None
    return OpeningHours(queues)


def load_hours(path: Path, known_queues: set[str] | None = None) -> OpeningHours:
    """Read and validate a hours file. A missing file is an error: the setting names it."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise HoursError(f"cannot read opening hours file {path}: {exc}") from exc
    return parse_hours(data, known_queues, str(path))


# == saying when =============================================================================
_DA_WEEKDAYS = DANISH_DAYS
_EN_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_DA_MONTHS = (
    "januar", "februar", "marts", "april", "maj", "juni", "juli", "august", "september",
    "oktober", "november", "december",
)  # fmt: skip
_EN_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip


def _clock(t: dt.datetime) -> str:
    """9 for 09:00, 8.30 for 08:30 (how a Dane says and writes a time of day)."""
    return str(t.hour) if t.minute == 0 else f"{t.hour}.{t.minute:02d}"


def spoken_when(opens: dt.datetime, now: dt.datetime, language: str = "da") -> str:
    """When a queue opens, as said on the phone: "i dag klokken 13", "i morgen klokken 8.30",
    "mandag klokken 9" within a week, "torsdag den 2. januar klokken 9" beyond."""
    opens, now = local_time(opens), local_time(now)
    days = (opens.date() - now.date()).days
    clock = _clock(opens)
    if language == "da":
        if days == 0:
            return f"i dag klokken {clock}"
        if days == 1:
            return f"i morgen klokken {clock}"
        day = _DA_WEEKDAYS[opens.weekday()]
        if days < 7:
            return f"{day} klokken {clock}"
        return f"{day} den {opens.day}. {_DA_MONTHS[opens.month - 1]} klokken {clock}"
    if days == 0:
        return f"today at {clock}"
    if days == 1:
        return f"tomorrow at {clock}"
    day = _EN_WEEKDAYS[opens.weekday()]
    if days < 7:
        return f"on {day} at {clock}"
    return f"on {day} {opens.day} {_EN_MONTHS[opens.month - 1]} at {clock}"
