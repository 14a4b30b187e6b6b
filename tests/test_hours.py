"""Opening hours per queue (voicebot/hours.py): weekly schedule, date exceptions, Danish public
holidays, Copenhagen time, and how the bot says when a queue opens."""

import datetime as dt
from pathlib import Path

import pytest
import yaml

from voicebot.config import PROJECT_ROOT
from voicebot.hours import TIMEZONE, HoursError, load_hours, parse_hours, spoken_when

QUEUES = {"KFF", "TMF", "SUF", "SOF", "BUF", "BIF", "OKF", "KONTAKTCENTER"}
HOURS = yaml.safe_load(
    """
opening_hours:
  SUF:
    weekly:
      mon: ["09:00-15:00"]
      tue: ["09:00-15:00"]
      wed: ["09:00-15:00"]
      thu: ["09:00-17:00"]
      fri: ["08:30-13:00"]
    exceptions:
      "2026-12-24": closed
      2026-12-31: ["09:00-12:00"]
  KONTAKTCENTER:
    weekly: {mandag: ["08:00-12:00", "12:30-16:00"]}
    closed_on_public_holidays: false
"""
)


def at(text: str) -> dt.datetime:
    """A frozen clock: a Copenhagen wall-clock time."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=TIMEZONE)


@pytest.fixture
def hours():
    return parse_hours(HOURS, QUEUES, "hours.yaml")


def test_weekday_inside_and_outside_the_hours(hours):
    assert hours.is_open("SUF", at("2026-11-10 10:00"))  # a Tuesday
    assert not hours.is_open("SUF", at("2026-11-10 08:59"))
    assert not hours.is_open("SUF", at("2026-11-10 15:00"))  # the end is not open
    assert hours.is_open("KONTAKTCENTER", at("2026-11-09 11:59"))
    assert hours.is_open("KONTAKTCENTER", at("2026-11-09 12:30"))
    assert not hours.is_open("KONTAKTCENTER", at("2026-11-09 12:15"))  # the lunch gap


def test_evening_and_weekend_are_closed(hours):
    assert not hours.is_open("SUF", at("2026-11-10 21:30"))
    assert not hours.is_open("SUF", at("2026-11-14 10:00"))  # a Saturday


def test_a_queue_without_hours_is_always_open(hours):
    assert hours.is_open("TMF", at("2026-12-25 03:00"))
    assert hours.next_open("TMF", at("2026-12-25 03:00")) == at("2026-12-25 03:00")
    shipped = load_hours(PROJECT_ROOT / "intents" / "hours.yaml", QUEUES)
    assert shipped.queues == {}  # the shipped file invents no hours


def test_danish_public_holidays_close_the_queue(hours):
    assert not hours.is_open("SUF", at("2026-12-25 10:00"))  # juledag, a Friday
    assert not hours.is_open("SUF", at("2027-03-25 10:00"))  # skærtorsdag
    assert hours.is_open("SUF", at("2027-03-18 10:00"))  # the Thursday before
    assert not hours.is_open("SUF", at("2026-05-14 10:00"))  # Kristi Himmelfartsdag
    # Store Bededag was abolished from 2024: the fourth Friday after Easter is a workday.
    assert hours.is_open("SUF", at("2026-05-01 10:00"))


def test_a_queue_may_stay_open_on_public_holidays(hours):
    assert hours.is_open("KONTAKTCENTER", at("2027-03-29 09:00"))  # 2. påskedag, a Monday


def test_date_exceptions_win(hours):
    assert not hours.is_open("SUF", at("2026-12-24 10:00"))  # a Thursday, closed that day
    assert hours.is_open("SUF", at("2026-12-31 11:00"))
    assert not hours.is_open("SUF", at("2026-12-31 13:00"))  # a Thursday, short hours


def test_next_open_across_a_weekend(hours):
    assert hours.next_open("SUF", at("2026-11-13 14:00")) == at("2026-11-16 09:00")
    assert hours.next_open("SUF", at("2026-11-10 07:00")) == at("2026-11-10 09:00")


def test_next_open_across_holidays(hours):
    # Wednesday 23 Dec after hours: 24th closed (exception), 25th juledag, weekend 26-27.
    assert hours.next_open("SUF", at("2026-12-23 16:00")) == at("2026-12-28 09:00")
    # Wednesday before Easter 2027: skærtorsdag, langfredag, weekend, 2. påskedag.
    assert hours.next_open("SUF", at("2027-03-24 15:30")) == at("2027-03-30 09:00")


def test_copenhagen_time_across_summer_time(hours):
    # 07:30 UTC on a summer Monday is 09:30 in Copenhagen (UTC+2): open.
    summer = dt.datetime(2026, 6, 15, 7, 30, tzinfo=dt.UTC)
    assert hours.is_open("SUF", summer)
    winter = dt.datetime(2026, 11, 16, 7, 30, tzinfo=dt.UTC)  # 08:30 (UTC+1): closed
    assert not hours.is_open("SUF", winter)


def test_spoken_when_in_danish_and_english():
    now = at("2026-11-13 16:00")  # a Friday
    assert spoken_when(at("2026-11-16 09:00"), now) == "mandag klokken 9"
    assert spoken_when(at("2026-11-14 08:30"), now) == "i morgen klokken 8.30"
    assert spoken_when(at("2026-11-13 17:00"), now) == "i dag klokken 17"
    assert spoken_when(at("2026-11-24 09:00"), now) == "tirsdag den 24. november klokken 9"
    assert spoken_when(at("2026-11-16 09:00"), now, "en") == "on Monday at 9"
    assert spoken_when(at("2026-11-14 08:30"), now, "en") == "tomorrow at 8.30"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"SUF": {"weekly": {"funday": ["09:00-15:00"]}}},
            "opening_hours.SUF: unknown day 'funday'",
        ),
        ({"SUF": {"weekly": {"mon": ["9-15"]}}}, "weekly.mon: '9-15' is not a time range"),
        ({"SUF": {"weekly": {"mon": ["09:00-25:00"]}}}, "weekly.mon: '09:00-25:00'"),
        ({"SUF": {"weekly": {"mon": ["15:00-09:00"]}}}, "ends before it starts"),
        (
            {"SUF": {"weekly": {"mon": ["09:00-12:00", "11:30-15:00"]}}},
            "weekly.mon: ranges overlap: 09:00-12:00 and 11:30-15:00",
        ),
        ({"XYZ": {"weekly": {"mon": ["09:00-15:00"]}}}, "opening_hours.XYZ: unknown queue"),
        ({"SUF": {"exceptions": {"2026-13-01": "closed"}}}, "exceptions.2026-13-01"),
        ({"SUF": {"weekly": {}, "open": True}}, "unknown field open"),
    ],
)
def test_bad_hours_fail_at_start_naming_file_and_entry(tmp_path: Path, entry, message):
    path = tmp_path / "hours.yaml"
    path.write_text(yaml.safe_dump({"opening_hours": entry}), encoding="utf-8")
    with pytest.raises(HoursError) as err:
        load_hours(path, QUEUES)
    assert str(path) in str(err.value) and message in str(err.value)
