"""The clock pass: clock owners start and finish the steps they own when their time comes.

`advance_clocks` lets every clock that owns an actionable step act, and repeats the pass until
no clock acts any more, so a chain of steps that are all due advances in one call. It only
works forward: once a run reverts, clocks neither act nor announce anything, and people revert
clock-owned steps by hand. Pure and synchronous, with the time passed in.

What each clock does once the step is ready and its time has come (see `thehat.clocks`):

- alarm: starts the step and finishes it at once;
- handoff: starts the step and clears its owner, for a person to claim and finish it;
- wait: starts the step and finishes it when the clock time of a clock-owned successor (not a
  stopwatch) has come, so it spans until the next scheduled step;
- event-N: starts the step and finishes it N minutes after its clock time (after its start for
  a clock without a time);
- stopwatch: starts as soon as the step is ready and finishes after its duration.

A clock without a time (`0/0/0@0:0:0`) takes the latest clock time of the unfinished
clock-owned steps it waits for. Once its step is ready, they have all finished, so it acts at
once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, tzinfo

from thehat.clocks import ClockKind, ClockOwner, parse_clock_owner
from thehat.engine import Run, RunStep
from thehat.errors import Refusal
from thehat.events import Event
from thehat.model import StepState

log = logging.getLogger(__name__)


def advance_clocks(run: Run, now: datetime, zone: tzinfo | None = None) -> list[Event]:
    """Let the clocks of `run` act at time `now`, pass after pass, until none acts.

    Returns the events caused, in order. Every action moves a step to a later state or clears
    a handoff's owner, so the passes end after at most three per step.
    """
    if run.reverting:
        return []
    events: list[Event] = []
    for _ in range(3 * len(run.steps) + 1):
        acted = False
        for step in run.actionable():
            clock = parse_clock_owner(step.owner, zone) if step.owner else None
            if clock is None or not run.is_actionable(step.name):
                continue
            assert step.owner is not None
            try:
                new = _act(run, step, step.owner, clock, now, zone)
            except Refusal as exc:
                # The step is actionable and owned by this clock, so the engine should accept.
                log.error("clock %s could not act on step %s of flow %s: %s", step.owner,
                          step.name, run.name, exc)
                continue
            if new:
                events.extend(new)
                acted = True
        if not acted or run.reverting:
            break
    return events


def next_clock_time(run: Run, now: datetime, zone: tzinfo | None = None
                    ) -> tuple[RunStep, datetime] | None:
    """Return the pending clock-owned step that acts next, and when; None if none is waiting.

    Only actionable steps count, so this is what the next passes will do, not a forecast of
    steps that are still gated.
    """
    if run.reverting:
        return None
    best: tuple[RunStep, datetime] | None = None
    for step in run.actionable():
        if step.state is not StepState.PENDING or not step.owner:
            continue
        clock = parse_clock_owner(step.owner, zone)
        if clock is None or clock.kind is ClockKind.STOPWATCH:
            continue
        due = clock_time(run, step.name, zone)
        if due is not None and due > now and (best is None or due < best[1]):
            best = step, due
    return best


def clock_end_time(step: RunStep, zone: tzinfo | None = None) -> datetime | None:
    """Return when a running stopwatch or event clock finishes its step; None for others."""
    if step.state is not StepState.IN_PROGRESS or step.started_at is None or not step.owner:
        return None
    clock = parse_clock_owner(step.owner, zone)
    if clock is None:
        return None
    if clock.kind is ClockKind.STOPWATCH and clock.duration is not None:
        return step.started_at + clock.duration
    if clock.kind is ClockKind.EVENT and clock.minutes is not None:
        return (clock.scheduled or step.started_at) + timedelta(minutes=clock.minutes)
    return None


def clock_time(run: Run, name: str, zone: tzinfo | None = None) -> datetime | None:
    """Return when the clock that owns step `name` is due; None means "already due".

    A clock without a time takes the latest clock time of the unfinished clock-owned steps it
    waits for, found step by step without recursion, so long chains are safe. Stopwatches
    and steps not owned by a clock have no clock time.
    """
    memo: dict[str, datetime | None] = {}
    stack = [name]
    while stack:
        current = stack[-1]
        if current in memo:
            stack.pop()
            continue
        clock = _clock_of(run.steps[current], zone)
        if clock is None or clock.kind is ClockKind.STOPWATCH:
            memo[current] = None
            stack.pop()
            continue
        if clock.scheduled is not None:
            memo[current] = clock.scheduled
            stack.pop()
            continue
        gates = list(_unfinished_clock_gates(run, current, zone))
        missing = [gate for gate in gates if gate not in memo]
        if missing:
            stack.extend(missing)
            continue
        times = [t for t in (memo[gate] for gate in gates) if t is not None]
        memo[current] = max(times) if times else None
        stack.pop()
    return memo[name]


def _unfinished_clock_gates(run: Run, name: str, zone: tzinfo | None) -> Iterator[str]:
    for gate in run.steps[name].definition.gates:
        step = run.steps[gate]
        if step.state is StepState.FINISHED:
            continue
        clock = _clock_of(step, zone)
        if clock is not None and clock.kind is not ClockKind.STOPWATCH:
            yield gate


def _clock_of(step: RunStep, zone: tzinfo | None) -> ClockOwner | None:
    return parse_clock_owner(step.owner, zone) if step.owner else None


def _act(run: Run, step: RunStep, owner: str, clock: ClockOwner, now: datetime,
         zone: tzinfo | None) -> list[Event]:
    """Apply what `clock` does to `step` now; return the events, or [] if it waits."""
    events: list[Event] = []
    if step.state is StepState.PENDING:
        due = None if clock.kind is ClockKind.STOPWATCH else clock_time(run, step.name, zone)
        if due is not None and now < due:
            return []
        events.extend(run.start(step.name, owner))
    if step.state is not StepState.IN_PROGRESS:
        return events

    if clock.kind is ClockKind.ALARM:
        done = True
    elif clock.kind is ClockKind.HANDOFF:
        return events + run.hand_off(step.name, owner)
    elif clock.kind is ClockKind.WAIT:
        done = _successor_due(run, step.name, now, zone)
    elif clock.kind is ClockKind.STOPWATCH:
        assert clock.duration is not None and step.started_at is not None
        done = now - step.started_at >= clock.duration
    else:
        assert clock.minutes is not None and step.started_at is not None
        begin = clock.scheduled or step.started_at
        done = (now - begin).total_seconds() >= clock.minutes * 60
    if done:
        events.extend(run.finish(step.name, owner))
    return events


def _successor_due(run: Run, name: str, now: datetime, zone: tzinfo | None) -> bool:
    """Tell whether a clock-owned successor of `name` (not a stopwatch) is due now."""
    for successor in run.dependants(name):
        clock = _clock_of(run.steps[successor], zone)
        if clock is None or clock.kind is ClockKind.STOPWATCH:
            continue
        due = clock_time(run, successor, zone)
        if due is None or due <= now:
            return True
    return False
