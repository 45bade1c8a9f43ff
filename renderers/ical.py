"""The calendar view: an iCalendar (RFC 5545) file with one event per step that has a time.

A step that has started is an event from its start to its finish, failure or reversion. While
it is still running, the event ends at the time of rendering and its description states this. A
step that has not started is an event only if a clock owns it with a fixed time (see
`thehat.clocks`): it starts then, and an `event-<minutes>` clock lasts that many minutes. Clock
steps with no fixed time ("as soon as ungated") and stopwatches have no event until they start,
and neither have clock steps that a reverting run excludes.

All times are written in UTC. Escaping and line folding are done by the icalendar package.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone, tzinfo
from typing import Final

from icalendar import Calendar, Event

from renderers.base import Renderer
from renderers.details import clean_text, safe_link, step_fields
from thehat.clocks import parse_clock_owner
from thehat.engine import Run, RunStep
from thehat.model import StepState
from thehat.status import format_time

PRODUCT_ID: Final = "-//thehat//thehat flow calendar//EN"
WEB_SCHEMES: Final = frozenset({"http", "https"})


def render_ical(run: Run, zone: tzinfo | None = None, now: datetime | None = None) -> bytes:
    """Build the calendar of `run`; `now` (default: the run's clock) ends unfinished events.

    Times in descriptions are shown in `zone` (None: the local zone), which is also the zone
    that clock owners' dates are read in.
    """
    now = now if now is not None else run.clock.now()
    calendar = Calendar()
    calendar.add("prodid", PRODUCT_ID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("x-wr-calname", clean_text(f"thehat: {run.name}"))
    for step in run.steps.values():
        event = _step_event(run, step, zone, now)
        if event is not None:
            calendar.add_component(event)
    return calendar.to_ical()


def _step_event(run: Run, step: RunStep, zone: tzinfo | None, now: datetime) -> Event | None:
    start, end, remark = _step_times(run, step, zone, now)
    if start is None:
        return None

    definition = step.definition
    lines = [f"{label}: {value}" for label, value in step_fields(step, zone)]
    if definition.url:
        lines.append(f"Url: {clean_text(definition.url)}")
    if definition.note:
        lines.append(f"Note: {clean_text(definition.note)}")
    lines.append(f"State: {step.state.display(run.reverting)}")
    if remark:
        lines.append(remark)

    event = Event()
    event.add("uid", clean_text(f"{step.name}@{run.name}.thehat"))
    event.add("dtstamp", _utc(now))
    event.add("dtstart", _utc(start))
    if end is not None and end > start:
        event.add("dtend", _utc(end))
    event.add("summary", clean_text(definition.description or step.name))
    event.add("description", "\n".join(lines))
    url = safe_link(definition.url, WEB_SCHEMES)
    if url is not None:
        event.add("url", url)
    return event


def _step_times(run: Run, step: RunStep, zone: tzinfo | None,
                now: datetime) -> tuple[datetime | None, datetime | None, str | None]:
    """Return the start, the end (None: an instant) and a remark on the times, if any."""
    if step.started_at is not None:
        end = step.finished_at or step.failed_at or step.reverted_at
        if end is None:
            return (step.started_at, now, f"Not finished at {format_time(now, zone)}, when "
                    "this calendar was made; the event ends then.")
        return step.started_at, end, None

    # Steps that never started are excluded once the run reverts, so their clocks never fire.
    if step.state is not StepState.PENDING or run.reverting or not step.owner:
        return None, None, None
    clock = parse_clock_owner(step.owner, zone)
    if clock is None or clock.scheduled is None:
        return None, None, None
    end = None
    if clock.minutes:
        end = clock.scheduled + timedelta(minutes=clock.minutes)
    return clock.scheduled, end, "Not started yet; the time is when its clock owner starts it."


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc)


class IcalRenderer(Renderer):
    """The calendar view as an iCalendar file."""

    name = "ical"
    suffix = ".ics"
    media_type = "text/calendar; charset=utf-8"

    def render(self, run: Run, zone: tzinfo | None = None) -> bytes:
        return render_ical(run, zone)
