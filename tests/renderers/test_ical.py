"""The calendar view, parsed back with the icalendar package."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from icalendar import Calendar

from renderers.ical import IcalRenderer, render_ical
from thehat.engine import Run
from thehat.model import Flow, StepDef

from tests.helpers import FakeClock, toast_flow
from tests.renderers.graphs import unchecked_run

UTC = timezone.utc
START = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)
AWKWARD = ("Commas, semicolons; back\\slashes \\n \\, quotes \"x\" 'y' <b>&amp; é 漢字 🎩 "
           + "long " * 40)


def events(data: bytes) -> dict[str, dict[str, object]]:
    """Parse a calendar: step name (from the UID) -> property name -> value."""
    calendar = Calendar.from_ical(data)
    parsed = {}
    for event in calendar.walk("VEVENT"):
        uid = str(event["UID"])
        parsed[uid.split("@", 1)[0]] = {
            "summary": str(event["SUMMARY"]),
            "description": str(event["DESCRIPTION"]),
            "start": event["DTSTART"].dt,
            "end": event["DTEND"].dt if "DTEND" in event else None,
            "url": str(event["URL"]) if "URL" in event else None,
            "uid": uid,
        }
    return parsed


def progress_run(clock: FakeClock) -> Run:
    """Toast with openbread finished after 5 minutes and selectslice in progress."""
    run = Run("toast", toast_flow(), clock)
    for name in ("openbread", "selectslice"):
        run.set_owner(name, "alice", "alice")
    run.start("openbread", "alice")
    clock.advance(minutes=5)
    run.finish("openbread", "alice")
    run.start("selectslice", "alice")
    clock.advance(minutes=10)
    return run


def test_started_steps_are_events() -> None:
    clock = FakeClock()
    run = progress_run(clock)

    parsed = events(render_ical(run, UTC))

    assert set(parsed) == {"openbread", "selectslice"}
    assert parsed["openbread"]["start"] == START
    assert parsed["openbread"]["end"] == START + timedelta(minutes=5)
    assert parsed["openbread"]["summary"] == "Open bread bag"
    assert parsed["openbread"]["uid"] == "openbread@toast.thehat"


def test_in_progress_ends_now() -> None:
    clock = FakeClock()
    run = progress_run(clock)

    parsed = events(render_ical(run, UTC))

    event = parsed["selectslice"]
    assert event["start"] == START + timedelta(minutes=5)
    assert event["end"] == START + timedelta(minutes=15)
    assert "Not finished at 2026-12-05 02:15:00 UTC" in str(event["description"])


def test_now_argument_used() -> None:
    clock = FakeClock()
    run = progress_run(clock)
    later = START + timedelta(hours=2)

    data = render_ical(run, UTC, now=later)

    assert events(data)["selectslice"]["end"] == later
    assert b"DTSTAMP:20261205T040000Z" in data


def test_times_written_in_utc() -> None:
    clock = FakeClock(datetime(2026, 12, 5, 3, 0, tzinfo=ZoneInfo("Europe/Paris")))
    run = progress_run(clock)

    data = render_ical(run, ZoneInfo("Europe/Paris"))

    assert b"DTSTART:20261205T020000Z" in data
    assert b"DTEND:20261205T020500Z" in data
    assert "Started at: 2026-12-05 03:00:00 CET" in str(events(data)["openbread"]["description"])


def test_failed_and_reverted_end() -> None:
    clock = FakeClock()
    flow = Flow([StepDef("a", owner="al"), StepDef("b", owner="al", gates=("a",)),
                 StepDef("c", owner="al", gates=("a",))])
    run = Run("f", flow, clock)
    run.finish("a", "al")
    run.start("c", "al")
    clock.advance(minutes=1)
    run.start("b", "al")
    clock.advance(minutes=2)
    run.fail("b", "al")
    clock.advance(minutes=3)
    run.revert("c", "al")

    parsed = events(render_ical(run, UTC))

    assert parsed["b"]["start"] == START + timedelta(minutes=1)
    assert parsed["b"]["end"] == START + timedelta(minutes=3)
    assert parsed["c"]["end"] == START + timedelta(minutes=6)
    assert "State: failed" in str(parsed["b"]["description"])
    # `a` finished at the moment it started, so it is an instant with no DTEND.
    assert parsed["a"]["end"] is None


def clock_run(*owners: str) -> Run:
    steps = [StepDef(f"s{i}", description=f"Clock {i}", owner=owner)
             for i, owner in enumerate(owners)]
    return Run("clocks", Flow(steps), FakeClock())


def test_clock_steps_at_scheduled_time() -> None:
    run = clock_run("clock-alarm:12/24/2026@18:30:0", "clock-event-45:2026-12-31T23:00Z",
                    "clock-handoff:0/0/0@0:0:0", "clock-stopwatch:0/0/0@0:0:30",
                    "clock-wait:1/1/2027@0:0:0", "alice")

    parsed = events(render_ical(run, UTC))

    assert set(parsed) == {"s0", "s1", "s4"}
    assert parsed["s0"]["start"] == datetime(2026, 12, 24, 18, 30, tzinfo=UTC)
    assert parsed["s0"]["end"] is None
    assert parsed["s1"]["start"] == datetime(2026, 12, 31, 23, 0, tzinfo=UTC)
    assert parsed["s1"]["end"] == datetime(2026, 12, 31, 23, 45, tzinfo=UTC)
    assert "Not started yet" in str(parsed["s4"]["description"])


def test_clock_time_read_in_zone() -> None:
    run = clock_run("clock-alarm:12/5/2026@3:0:0")

    data = render_ical(run, ZoneInfo("Europe/Paris"))

    assert b"DTSTART:20261205T020000Z" in data


def test_reverting_run_drops_clocks() -> None:
    steps = [StepDef("a", owner="al"), StepDef("b", owner="clock-alarm:12/24/2026@0:0:0")]
    run = Run("f", Flow(steps), FakeClock())
    run.fail("a", "al")

    assert events(render_ical(run, UTC)) == {}


def test_url_only_for_web_links() -> None:
    clock = FakeClock()
    steps = [StepDef(name, owner="al", url=url) for name, url in (
        ("web", "https://wiki.example/a b?x=1&y=2"), ("mail", "mailto:ops@example.org"),
        ("script", "javascript:alert(1)"))]
    run = Run("f", Flow(steps), clock)
    for name in run.steps:
        run.start(name, "al")

    parsed = events(render_ical(run, UTC))

    assert parsed["web"]["url"] == "https://wiki.example/a%20b?x=1&y=2"
    assert parsed["mail"]["url"] is None
    assert parsed["script"]["url"] is None
    assert "Url: javascript:alert(1)" in str(parsed["script"]["description"])


def test_awkward_text_round_trips() -> None:
    note = "First line\nSecond; line, with \\ and ü\n" + "n" * 200
    step = StepDef("awk", description=AWKWARD, owner="al", note=note,
                   start_command="echo 'a;b,c'")
    run = Run("f", Flow([step]), FakeClock())
    run.start("awk", "al")

    data = render_ical(run, UTC)
    event = events(data)["awk"]

    assert event["summary"] == AWKWARD
    description = str(event["description"]).split("\n")
    assert description[:4] == ["Name: awk", f"Description: {AWKWARD}", "Owner: al",
                               "Start cmd: echo 'a;b,c'"]
    assert f"Note: {note}" in str(event["description"])
    assert b"Commas\\, semicolons\\; back\\\\slashes" in data


def test_lines_folded() -> None:
    step = StepDef("long", description="é" * 300, owner="al")
    run = Run("f", Flow([step]), FakeClock())
    run.start("long", "al")

    data = render_ical(run, UTC)

    lines = data.split(b"\r\n")
    assert max(len(line) for line in lines) <= 75
    assert events(data)["long"]["summary"] == "é" * 300


def test_control_characters_replaced() -> None:
    run = unchecked_run([StepDef("c", description="bell\x07 nul\x00 end", owner="al")])
    run.start("c", "al")

    event = events(render_ical(run, UTC))["c"]

    assert event["summary"] == "bell\ufffd nul\ufffd end"


def test_renderer_class() -> None:
    run = progress_run(FakeClock())

    data = IcalRenderer().render(run, UTC)

    assert Calendar.from_ical(data)["PRODID"] == "-//thehat//thehat flow calendar//EN"
    assert IcalRenderer.name == "ical"
    assert IcalRenderer.suffix == ".ics"
    assert IcalRenderer.media_type == "text/calendar; charset=utf-8"
