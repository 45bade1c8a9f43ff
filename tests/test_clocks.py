"""Clock owner names: kinds, lenient dates, ISO 8601 times, stopwatch durations."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from thehat.clocks import (ClockKind, clock_problem, owner_problem, parse_clock_owner,
                           program_command)

UTC = timezone.utc
PARIS = ZoneInfo("Europe/Paris")


@pytest.mark.parametrize("owner, kind", [
    ("clock-alarm:12/5/2026@2:0:0", ClockKind.ALARM),
    ("clock-handoff:12/5/2026@2:0:0", ClockKind.HANDOFF),
    ("clock-HANDOFF:12/5/2026@2:0:0", ClockKind.HANDOFF),
    ("clock-wait:12/5/2026@2:0:0", ClockKind.WAIT),
    ("clock-Event-45:12/5/2026@2:0:0", ClockKind.EVENT),
])
def test_clock_kinds(owner: str, kind: ClockKind) -> None:
    clock = parse_clock_owner(owner, UTC)

    assert clock is not None
    assert clock.kind is kind
    assert clock.scheduled == datetime(2026, 12, 5, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize("owner", [
    "alice",
    "",
    "Clock-alarm:12/5/2026@2:0:0",
    "Clock-alarm:soon",
    "program:make deploy",
])
def test_not_clocks(owner: str) -> None:
    assert parse_clock_owner(owner, UTC) is None


def test_event_minutes() -> None:
    clock = parse_clock_owner("clock-event-90:12/5/2026@2:0:0", UTC)

    assert clock is not None
    assert clock.minutes == 90
    assert clock.duration is None


@pytest.mark.parametrize("when, expected", [
    ("2/30/2026@7:5:9", datetime(2026, 3, 2, 7, 5, 9, tzinfo=UTC)),
    ("1/31/2026@23:59:59", datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC)),
    ("02/03/2026@01:02:03", datetime(2026, 2, 3, 1, 2, 3, tzinfo=UTC)),
    ("1/1/2014@0:0:0", datetime(2014, 1, 1, tzinfo=UTC)),
])
def test_lenient_dates(when: str, expected: datetime) -> None:
    clock = parse_clock_owner(f"clock-alarm:{when}", UTC)

    assert clock is not None
    assert clock.scheduled == expected


@pytest.mark.parametrize("when", ["0/0/0@0:0:0", "00/00/0000@00:00:00", "0/0/0@12:30:0"])
def test_zero_dates_mean_asap(when: str) -> None:
    clock = parse_clock_owner(f"clock-alarm:{when}", UTC)

    assert clock is not None
    assert clock.kind is ClockKind.ALARM
    assert clock.scheduled is None


def test_zone_applies() -> None:
    clock = parse_clock_owner("clock-alarm:12/5/2026@3:0:0", PARIS)

    assert clock is not None
    assert clock.scheduled is not None
    assert clock.scheduled.astimezone(UTC) == datetime(2026, 12, 5, 2, 0, tzinfo=UTC)


def test_local_zone_default() -> None:
    clock = parse_clock_owner("clock-alarm:12/5/2026@3:0:0")

    assert clock is not None
    assert clock.scheduled == datetime(2026, 12, 5, 3, 0).astimezone()


@pytest.mark.parametrize("when, expected", [
    ("2026-12-05T02:00", datetime(2026, 12, 5, 2, 0, tzinfo=UTC)),
    ("2026-12-05T02:00:30Z", datetime(2026, 12, 5, 2, 0, 30, tzinfo=UTC)),
    ("2026-12-05T04:00+02:00", datetime(2026, 12, 5, 2, 0, tzinfo=UTC)),
    ("2026-12-05 02:00", datetime(2026, 12, 5, 2, 0, tzinfo=UTC)),
])
def test_iso_times(when: str, expected: datetime) -> None:
    clock = parse_clock_owner(f"clock-alarm:{when}", UTC)

    assert clock is not None
    assert clock.scheduled == expected


def test_iso_naive_in_zone() -> None:
    clock = parse_clock_owner("clock-wait:2026-07-01T12:00", PARIS)

    assert clock is not None
    assert clock.scheduled is not None
    assert clock.scheduled.astimezone(UTC) == datetime(2026, 7, 1, 10, 0, tzinfo=UTC)


def test_stopwatch_duration() -> None:
    clock = parse_clock_owner("clock-stopwatch:0/0/0@1:2:30", UTC)

    assert clock is not None
    assert clock.kind is ClockKind.STOPWATCH
    assert clock.duration == timedelta(hours=1, minutes=2, seconds=30)
    assert clock.scheduled is None


def test_stopwatch_ignores_date() -> None:
    clock = parse_clock_owner("clock-stopwatch:12/5/2026@0:0:30", UTC)

    assert clock is not None
    assert clock.scheduled is None
    assert clock.duration == timedelta(seconds=30)


def test_stopwatch_iso_duration() -> None:
    clock = parse_clock_owner("clock-stopwatch:PT1H30S", UTC)

    assert clock is not None
    assert clock.duration == timedelta(hours=1, seconds=30)


@pytest.mark.parametrize("owner, reason", [
    ("clock-stopwatch:0/0/0@soon", "has no duration"),
    ("clock-stopwatch:PT", "has no duration"),
    ("clock-alarm:12/5/2026@2:0", "is not M/D/YYYY@H:M:S"),
    ("clock-alarm:a/b/c@d:e:f", "is not M/D/YYYY@H:M:S"),
    ("clock-alarm:@", "is not M/D/YYYY@H:M:S"),
    ("clock-alarm:soon", "is not a time"),
    ("clock-alarm:1/1/2026", "is not a time"),
    ("clock-alarm", "has no time"),
    ("clock-foo:12/5/2026@2:0:0", "unknown clock type 'foo'"),
    ("clock-owner:12/5/2026@2:0:0", "unknown clock type 'owner'"),
    ("clock-alarm-5:12/5/2026@2:0:0", "unknown clock type 'alarm-5'"),
    ("clock-event:12/5/2026@2:0:0", "needs its length in minutes"),
    ("clock-event-0:12/5/2026@2:0:0", "needs its length in minutes"),
])
def test_invalid_clocks(owner: str, reason: str) -> None:
    problem = clock_problem(owner)

    assert problem is not None
    assert reason in problem
    assert parse_clock_owner(owner, UTC) is None


@pytest.mark.parametrize("owner", ["alice", "Clock-alarm:soon", "program:ls", "clock-alarm:0/0/0@0:0:0"])
def test_valid_owners_have_no_problem(owner: str) -> None:
    assert owner_problem(owner) is None


def test_program_owner_needs_command() -> None:
    assert program_command("program:  ./check.sh  ") == "./check.sh"
    assert owner_problem("program:") is not None


@pytest.mark.parametrize("when, reason", [
    ("13/5/2027@2:30:0", "month 13 is not from 1 to 12"),
    ("1/32/2026@0:0:0", "day 32 is not from 1 to 31"),
    ("0/5/2026@0:0:0", "month 0 is not from 1 to 12"),
    ("12/5/26@2:0:0", "year 26 is not from 1970 to 9998"),
    ("1/1/1@0:0:0", "year 1 is not from 1970"),
    ("12/5/2026@24:0:0", "hour 24 is not from 0 to 23"),
    ("12/31/2016@23:59:60", "second 60 is not from 0 to 59"),
    ("1/1/2026@0:60:0", "minute 60 is not from 0 to 59"),
    ("123/456/78901@99:99:99", "is not M/D/YYYY@H:M:S"),
    ("12/٥/2026@2:0:0", "is not M/D/YYYY@H:M:S"),
])
def test_impossible_dates_rejected(when: str, reason: str) -> None:
    problem = clock_problem(f"clock-alarm:{when}")

    assert problem is not None
    assert reason in problem


@pytest.mark.parametrize("owner", ["clock-alarm:0001-01-01T00:00", "clock-alarm:٢٠٢٦-12-05T02:00",
                                   "clock-event-³:0/0/0@0:0:0", "clock-event-٣:0/0/0@0:0:0"])
def test_odd_years_and_digits_rejected(owner: str) -> None:
    assert clock_problem(owner) is not None


def test_time_in_dst_gap_moves_forward() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    clock = parse_clock_owner("clock-alarm:3/29/2026@2:30:0", berlin)

    assert clock is not None
    assert clock.scheduled is not None
    assert clock.scheduled.astimezone(UTC) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert clock.scheduled.strftime("%H:%M %Z") == "03:30 CEST"
