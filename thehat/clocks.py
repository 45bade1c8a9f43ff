"""Clock owners: owner names that make a step start and finish by itself at a time.

An owner `clock-<type>:<M/D/YYYY>@<H:M:S>` is a clock, with `<type>` one of `alarm`, `handoff`,
`wait`, `stopwatch` or `event-<minutes>` (any case). The date and time are read in the engine's
time zone, as leniently as the original TheHat read them. Fields have one or two digits, a day
past the end of its month rolls over into the next month (`2/30/2026` is 2 March), and the year
is taken literally (`14` is the year 14). A date or time that does not parse, conventionally
`0/0/0@0:0:0`, means "as soon as the step is ungated": the clock has no scheduled time. An ISO
8601 time such as `clock-alarm:2026-12-05T02:00` is accepted as well.

A stopwatch ignores the date and runs for the duration that its time part gives
(`clock-stopwatch:0/0/0@0:0:30` is 30 seconds), starting as soon as the step is ungated.

This module only parses owner names; it does not run clocks. Pure, no I/O.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Final

# The prefix is case-sensitive (`Clock-alarm:...` is a person's name); the type is not.
_OWNER: Final = re.compile(r"clock-(?P<type>[A-Za-z]+(?:-\d+)?):(?P<when>.*)", re.DOTALL)
_DATE_TIME: Final = re.compile(
    r"(?P<month>\d{1,2})/(?P<day>\d{1,2})/(?P<year>\d{1,4})"
    r"@(?P<hour>\d{1,2}):(?P<minute>\d{1,2}):(?P<second>\d{1,2})")
_DURATION: Final = re.compile(r"(?P<hours>\d+):(?P<minutes>\d+):(?P<seconds>\d+)")


class ClockKind(enum.Enum):
    """The action a clock owner takes once its time has come."""

    ALARM = "alarm"          # starts the step and finishes it at once
    HANDOFF = "handoff"      # starts the step, then leaves it unassigned for a person
    WAIT = "wait"            # starts the step, finishes it when a clock successor is due
    EVENT = "event"          # starts the step, finishes it `minutes` after its time
    STOPWATCH = "stopwatch"  # starts when ungated, finishes after `duration`


@dataclass(frozen=True)
class ClockOwner:
    """A parsed clock owner name.

    `scheduled` is an aware datetime, or None for "as soon as ungated" (always None for a
    stopwatch). `minutes` is set for an event only, and `duration` for a stopwatch only.
    """

    kind: ClockKind
    scheduled: datetime | None = None
    minutes: int | None = None
    duration: timedelta | None = None


def parse_clock_owner(owner: str, zone: tzinfo | None = None) -> ClockOwner | None:
    """Parse an owner name; return None when it does not name a clock.

    Naive times are read in `zone` (None: the machine's local zone). An unknown type
    (`clock-foo:...`) or a time part without `@` that is not ISO 8601 (`clock-alarm:soon`)
    does not name a clock, so the caller treats the owner as a person.

    >>> from datetime import timezone
    >>> alarm = parse_clock_owner("clock-alarm:12/5/2026@2:0:0", timezone.utc)
    >>> alarm.kind, alarm.scheduled.isoformat()
    (<ClockKind.ALARM: 'alarm'>, '2026-12-05T02:00:00+00:00')
    >>> parse_clock_owner("clock-HANDOFF:0/0/0@0:0:0").scheduled is None
    True
    >>> parse_clock_owner("clock-event-30:2026-12-05T02:00Z").minutes
    30
    >>> parse_clock_owner("clock-stopwatch:0/0/0@0:1:30").duration
    datetime.timedelta(seconds=90)
    >>> parse_clock_owner("Clock-alarm:1/1/2026@0:0:0") is None, parse_clock_owner("alice")
    (True, None)
    """
    match = _OWNER.fullmatch(owner)
    if match is None:
        return None
    kind, minutes = _kind(match["type"])
    if kind is None:
        return None
    when = match["when"].strip()

    if "@" not in when:
        scheduled = _parse_iso(when, zone)
        if scheduled is None:
            return None
        return ClockOwner(kind, None if kind is ClockKind.STOPWATCH else scheduled, minutes)

    if kind is ClockKind.STOPWATCH:
        return ClockOwner(kind, duration=_parse_duration(when.partition("@")[2]))
    return ClockOwner(kind, _parse_date_time(when, zone), minutes)


def _kind(text: str) -> tuple[ClockKind | None, int | None]:
    word, _, minutes = text.lower().partition("-")
    if word == "event":
        return (ClockKind.EVENT, int(minutes)) if minutes else (None, None)
    if minutes:
        return None, None
    try:
        return ClockKind(word), None
    except ValueError:
        return None, None


def _parse_date_time(text: str, zone: tzinfo | None) -> datetime | None:
    """Read `M/D/YYYY@H:M:S`; return None for anything out of range, such as 0/0/0@0:0:0.

    >>> _parse_date_time("2/30/2026@7:5:0", None).replace(tzinfo=None)
    datetime.datetime(2026, 3, 2, 7, 5)
    >>> _parse_date_time("12/5/2026@2:0", None) is None
    True
    """
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        return None
    month, day, year, hour, minute, second = (int(match[name]) for name in
                                              ("month", "day", "year", "hour", "minute",
                                               "second"))
    if not (1 <= day <= 31):
        return None
    try:
        # Day 31 of a 30-day month rolls over into the next month, as in the original TheHat.
        start = date(year, month, 1) + timedelta(days=day - 1)
        clock_time = time(hour, minute, second)
    except (ValueError, OverflowError):
        return None
    return _localize(datetime.combine(start, clock_time), zone)


def _parse_iso(text: str, zone: tzinfo | None) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return _localize(moment, zone if moment.tzinfo is None else moment.tzinfo)


def _parse_duration(text: str) -> timedelta | None:
    match = _DURATION.fullmatch(text)
    if match is None:
        return None
    return timedelta(hours=int(match["hours"]), minutes=int(match["minutes"]),
                     seconds=int(match["seconds"]))


def _localize(moment: datetime, zone: tzinfo | None) -> datetime | None:
    """Attach `zone` to a naive time; return None if the time has no UTC equivalent."""
    try:
        # A naive datetime's astimezone() reads it as the machine's local time.
        aware = moment.replace(tzinfo=zone) if zone is not None else moment.astimezone()
        # 1/1/1@0:0:0 east of UTC is in the year 0, which datetime cannot hold.
        aware.astimezone(timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    return aware
