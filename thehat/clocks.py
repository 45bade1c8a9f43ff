"""Automatic owners: clocks that start and finish steps at a time, and programs.

An owner `clock-<type>:<M/D/YYYY>@<H:M:S>` is a clock, with `<type>` one of `alarm`, `handoff`,
`wait`, `stopwatch` or `event-<minutes>` (any case). The date and time are read in the engine's
time zone, as leniently as the original TheHat read them. Fields have one or two digits, a day
past the end of its month rolls over into the next month (`2/30/2026` is 2 March), and the year
is taken literally (`14` is the year 14). A date and time of that shape that name no real
moment, conventionally `0/0/0@0:0:0`, mean "as soon as the step is ungated": the clock has no
scheduled time. An ISO 8601 time such as `clock-alarm:2026-12-05T02:00` is accepted as well.

A stopwatch ignores the date and runs for the duration that its time part gives
(`clock-stopwatch:0/0/0@0:0:30` is 30 seconds, as is `clock-stopwatch:PT30S`), starting as soon
as the step is ungated.

Every other owner that starts with `clock-` is invalid: `clock_problem` returns why, and
flows and `set_owner` reject it. Unlike the original, a malformed time such as `12/5/2026@2:00` (no
seconds) is rejected instead of firing at once. The prefix is case-sensitive, so
`Clock-alarm:...` is a person's name.

An owner `program:<command line>` is a program; `program_command` returns its command line.

This module only parses owner names; it does not run clocks. Pure, no I/O.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Final

CLOCK_PREFIX: Final = "clock-"
PROGRAM_PREFIX: Final = "program:"
CLOCK_TYPES: Final = ("alarm", "handoff", "wait", "stopwatch", "event-<minutes>")
_OWNER: Final = re.compile(r"clock-(?P<type>[^:]*):(?P<when>.*)", re.DOTALL)
_SHAPE: Final = re.compile(r"\d+/\d+/\d+@\d+:\d+:\d+")
_DATE_TIME: Final = re.compile(
    r"(?P<month>\d{1,2})/(?P<day>\d{1,2})/(?P<year>\d{1,4})"
    r"@(?P<hour>\d{1,2}):(?P<minute>\d{1,2}):(?P<second>\d{1,2})")
_DURATION: Final = re.compile(r"(?P<hours>\d{1,4}):(?P<minutes>\d{1,4}):(?P<seconds>\d{1,6})")
_ISO_DURATION: Final = re.compile(
    r"PT(?:(?P<hours>\d{1,4})H)?(?:(?P<minutes>\d{1,4})M)?(?:(?P<seconds>\d{1,6})S)?",
    re.IGNORECASE)
_FORMS: Final = ("write clock-<type>:M/D/YYYY@H:M:S (0/0/0@0:0:0 for as soon as the step is "
                 "ready) or an ISO 8601 time such as 2026-12-05T02:00")


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
    """Parse an owner name; return None when it does not name a valid clock.

    Naive times are read in `zone` (None: the machine's local zone).

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
    parsed = _parse(owner, zone)
    return parsed if isinstance(parsed, ClockOwner) else None


def clock_problem(owner: str) -> str | None:
    """Return why an owner that starts with `clock-` is not a valid clock, or None.

    >>> clock_problem("clock-alarm:0/0/0@0:0:0") is None, clock_problem("alice") is None
    (True, True)
    >>> clock_problem("clock-tea:0/0/0@0:0:0")
    "unknown clock type 'tea'; use alarm, handoff, wait, stopwatch or event-<minutes>"
    """
    parsed = _parse(owner, timezone.utc)
    return parsed if isinstance(parsed, str) else None


def program_command(owner: str | None) -> str | None:
    """Return the command line of a `program:<command line>` owner, or None for other owners.

    >>> program_command("program: ./precheck.sh --quick"), program_command("alice")
    ('./precheck.sh --quick', None)
    """
    if owner is None or not owner.startswith(PROGRAM_PREFIX):
        return None
    return owner[len(PROGRAM_PREFIX):].strip()


def owner_problem(owner: str | None) -> str | None:
    """Return why `owner` cannot own a step (an invalid clock, a program without a command).

    >>> owner_problem("program:  ")
    "program owner 'program:  ' has no command line; write program:<command line>"
    """
    if owner is None:
        return None
    problem = clock_problem(owner)
    if problem is not None:
        return problem
    if owner.startswith(PROGRAM_PREFIX) and not program_command(owner):
        return f"program owner {owner!r} has no command line; write program:<command line>"
    return None


@functools.lru_cache(maxsize=4096)
def _parse(owner: str, zone: tzinfo | None) -> ClockOwner | str | None:
    """Parse `owner`: a ClockOwner, a problem text for an invalid clock, or None for others."""
    if not owner.startswith(CLOCK_PREFIX):
        return None
    match = _OWNER.fullmatch(owner)
    if match is None:
        return f"clock owner {owner!r} has no time; {_FORMS}"
    kind, minutes, problem = _kind(match["type"])
    if kind is None:
        return problem
    when = match["when"].strip()

    if kind is ClockKind.STOPWATCH:
        duration = _stopwatch_duration(when)
        if duration is None:
            return (f"stopwatch {owner!r} has no duration; write clock-stopwatch:0/0/0@H:M:S "
                    "(clock-stopwatch:0/0/0@0:10:0 runs 10 minutes) or clock-stopwatch:PT10M")
        return ClockOwner(kind, duration=duration)

    if "@" not in when:
        scheduled = _parse_iso(when, zone)
        if scheduled is None:
            return f"{when!r} in clock owner {owner!r} is not a time; {_FORMS}"
        return ClockOwner(kind, scheduled, minutes)
    if _SHAPE.fullmatch(when) is None:
        return f"{when!r} in clock owner {owner!r} is not M/D/YYYY@H:M:S; {_FORMS}"
    return ClockOwner(kind, _parse_date_time(when, zone), minutes)


def _kind(text: str) -> tuple[ClockKind | None, int | None, str]:
    word, dash, minutes = text.lower().partition("-")
    if word == "event":
        if minutes.isdigit() and 0 < int(minutes) <= 525_600:
            return ClockKind.EVENT, int(minutes), ""
        return None, None, (f"clock type {text!r} needs its length in minutes, from 1 to "
                            "525600: write event-<minutes>, such as event-30")
    if not dash:
        try:
            return ClockKind(word), None, ""
        except ValueError:
            pass
    choices = f"{', '.join(CLOCK_TYPES[:-1])} or {CLOCK_TYPES[-1]}"
    return None, None, f"unknown clock type {text!r}; use {choices}"


def _stopwatch_duration(when: str) -> timedelta | None:
    if "@" in when:
        return _parse_duration(when.partition("@")[2].strip())
    match = _ISO_DURATION.fullmatch(when)
    if match is None or not any(match.groupdict().values()):
        return None
    return timedelta(hours=int(match["hours"] or 0), minutes=int(match["minutes"] or 0),
                     seconds=int(match["seconds"] or 0))


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
