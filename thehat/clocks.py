"""Automatic owners: clocks that start and finish steps at a time, and programs.

An owner `clock-<type>:<M/D/YYYY>@<H:M:S>` is a clock, with `<type>` one of `alarm`, `handoff`,
`wait`, `stopwatch` or `event-<minutes>` (any case). The date and time are read in the engine's
time zone. Fields have one or two digits (the year up to four), and a day past the end of its
month rolls over into the next month (`2/30/2026` is 2 March), as in the original TheHat. A date
of zeros, conventionally `0/0/0@0:0:0`, means "as soon as the step is ungated": the clock has
no scheduled time. An ISO 8601 time such as `clock-alarm:2026-12-05T02:00` is accepted as well.

A stopwatch ignores the date and runs for the duration that its time part gives
(`clock-stopwatch:0/0/0@0:0:30` is 30 seconds, as is `clock-stopwatch:PT30S`), starting as soon
as the step is ungated.

Every other owner that starts with `clock-` is invalid: `clock_problem` returns why, and flows
and `set_owner` reject it. The original fired a clock at once when its time did not parse; here
a malformed or impossible time (`12/5/2026@2:00` without seconds, month 13, hour 24, a year
before 1970 such as `26`) is rejected instead. The prefix is case-sensitive, so
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
# Years before 1970 are rejected: the original read a two-digit year literally, so 12/5/26
# would have meant the year 26 and fired at once.
MIN_YEAR: Final = 1970
MAX_YEAR: Final = 9998
_DATE_TIME: Final = re.compile(
    r"(?P<month>\d{1,2})/(?P<day>\d{1,2})/(?P<year>\d{1,4})"
    r"@(?P<hour>\d{1,2}):(?P<minute>\d{1,2}):(?P<second>\d{1,2})", re.ASCII)
# A date of zeros (0/0/0, 00/00/0000) means "as soon as the step is ready", whatever the time.
_ASAP_DATE: Final = re.compile(r"0+/0+/0+@", re.ASCII)
_DURATION: Final = re.compile(r"(?P<hours>\d{1,4}):(?P<minutes>\d{1,4}):(?P<seconds>\d{1,6})",
                              re.ASCII)
_ISO_DURATION: Final = re.compile(
    r"PT(?:(?P<hours>\d{1,4})H)?(?:(?P<minutes>\d{1,4})M)?(?:(?P<seconds>\d{1,6})S)?",
    re.IGNORECASE | re.ASCII)
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
    if "\x00" in owner:
        return f"owner {owner!r} contains a NUL character"
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
        if not duration:
            return (f"stopwatch {owner!r} has no duration; write clock-stopwatch:0/0/0@H:M:S "
                    "(clock-stopwatch:0/0/0@0:10:0 runs 10 minutes) or clock-stopwatch:PT10M")
        return ClockOwner(kind, duration=duration)

    if "@" not in when:
        scheduled = _parse_iso(when, zone)
        if scheduled is None:
            return f"{when!r} in clock owner {owner!r} is not a time; {_FORMS}"
        if not MIN_YEAR <= scheduled.year <= MAX_YEAR:
            return (f"the year of {when!r} in clock owner {owner!r} is out of range; give a "
                    f"year from {MIN_YEAR} to {MAX_YEAR}")
        return ClockOwner(kind, scheduled, minutes)
    match = _DATE_TIME.fullmatch(when)
    if match is None:
        return f"{when!r} in clock owner {owner!r} is not M/D/YYYY@H:M:S; {_FORMS}"
    if _ASAP_DATE.match(when):
        return ClockOwner(kind, None, minutes)
    scheduled_or_problem = _parse_date_time(match, zone)
    if isinstance(scheduled_or_problem, str):
        return (f"{when!r} in clock owner {owner!r} is not a valid time: "
                f"{scheduled_or_problem}; write 0/0/0@0:0:0 for as soon as the step is ready")
    return ClockOwner(kind, scheduled_or_problem, minutes)


def _kind(text: str) -> tuple[ClockKind | None, int | None, str]:
    word, dash, minutes = text.lower().partition("-")
    if word == "event":
        if minutes.isascii() and minutes.isdecimal() and 0 < int(minutes) <= 525_600:
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


def _parse_date_time(match: re.Match[str], zone: tzinfo | None) -> datetime | str:
    """Read a matched `M/D/YYYY@H:M:S`; return the time, or why it names no moment.

    A day past the end of its month rolls over into the next month, as in the original TheHat.

    >>> import re
    >>> _parse_date_time(_DATE_TIME.fullmatch("2/30/2026@7:5:0"), None).replace(tzinfo=None)
    datetime.datetime(2026, 3, 2, 7, 5)
    >>> _parse_date_time(_DATE_TIME.fullmatch("13/5/2027@2:30:0"), None)
    'month 13 is not from 1 to 12'
    """
    month, day, year, hour, minute, second = (int(match[name]) for name in
                                              ("month", "day", "year", "hour", "minute",
                                               "second"))
    for value, name, low, high in ((month, "month", 1, 12), (day, "day", 1, 31),
                                   (year, "year", MIN_YEAR, MAX_YEAR), (hour, "hour", 0, 23),
                                   (minute, "minute", 0, 59), (second, "second", 0, 59)):
        if not low <= value <= high:
            return f"{name} {value} is not from {low} to {high}"
    start = date(year, month, 1) + timedelta(days=day - 1)
    return _localize(datetime.combine(start, time(hour, minute, second)), zone)


def _parse_iso(text: str, zone: tzinfo | None) -> datetime | None:
    if not text.isascii():
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        return moment
    return _localize(moment, zone if moment.tzinfo is None else moment.tzinfo)


def _parse_duration(text: str) -> timedelta | None:
    match = _DURATION.fullmatch(text)
    if match is None:
        return None
    return timedelta(hours=int(match["hours"]), minutes=int(match["minutes"]),
                     seconds=int(match["seconds"]))


def _localize(moment: datetime, zone: tzinfo | None) -> datetime:
    """Attach `zone` to a naive time, and give a time in a gap its real wall-clock time.

    A naive time that a daylight-saving jump skips (02:30 on the night clocks go from 02:00
    to 03:00) is read with the offset before the jump, so it means 03:30 after it.
    """
    if moment.tzinfo is None:
        # A naive datetime's astimezone() reads it as the machine's local time.
        aware = moment.replace(tzinfo=zone) if zone is not None else moment.astimezone()
    else:
        aware = moment
    return aware.astimezone(timezone.utc).astimezone(aware.tzinfo)
