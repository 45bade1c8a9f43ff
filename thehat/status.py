"""Text shown in chat: the status block and one line per event.

Formats follow the original TheHat (">>> alice changed state of step x to done", the OWNER,
STATE, DUR, NAME, DESCRIPTION table), with typos fixed and columns sized to their content.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import quote
from datetime import datetime, tzinfo
from typing import Final

from thehat.clocks import PROGRAM_PREFIX, parse_clock_owner
from thehat.clockwork import clock_end_time, next_clock_time
from thehat.engine import Run, RunStep
from thehat.events import Event, EventKind
from thehat.model import StepState

UNASSIGNED: Final = "UNASSIGNED"
STATUS_COLUMNS: Final = ("OWNER", "STATE", "DUR", "NAME", "DESCRIPTION")

# StepDef attribute -> the property word users type with `set` and see in flow files.
PROPERTY_WORDS: Final = {
    "description": "description",
    "start_command": "startCommand",
    "finish_command": "finishCommand",
    "notify_at_start": "notifyAtStart",
    "notify_at_finish": "notifyAtFinish",
    "url": "url",
    "note": "note",
    "groups": "group",
    "gates": "gates",
    "name": "name",
    "revert_command": "revertCommand",
    "timeout": "timeout",
}


def format_time(moment: datetime, zone: tzinfo | None = None) -> str:
    """Format a time for people, in `zone` (default: the machine's local zone), with the zone.

    >>> from datetime import timezone
    >>> format_time(datetime(2026, 12, 5, 2, 0, 7, tzinfo=timezone.utc), timezone.utc)
    '2026-12-05 02:00:07 UTC'
    """
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def format_table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Align rows into columns two spaces apart; the last column is not padded.

    >>> format_table([("OWNER", "NAME"), ("alice", "x")])
    ['OWNER  NAME', 'alice  x']
    """
    if not rows:
        return []
    columns = list(zip(*rows))
    widths = [max(map(len, column)) for column in columns[:-1]]
    template = "".join(f"{{:<{width}}}  " for width in widths) + "{}"
    return [template.format(*row).rstrip() for row in rows]


def progress_line(run: Run) -> str:
    """Summarise the run in one line: direction and counts of steps per state."""
    counts = run.counts()
    total = len(run.steps)
    if run.reverting:
        started = sum(counts[s] for s in (StepState.IN_PROGRESS, StepState.FINISHED,
                                           StepState.REVERTING, StepState.REVERTED))
        verb = "was REVERTED" if run.ended else "is REVERTING"
        return (f"Flow {run.name} {verb} after {run.failed_step} failed: "
                f"{counts[StepState.REVERTED]} of {started} started steps reverted.")
    parts = [f"{counts[StepState.FINISHED]} of {total} steps finished"]
    if counts[StepState.IN_PROGRESS]:
        parts.append(f"{counts[StepState.IN_PROGRESS]} in progress")
    return f"Flow {run.name}: " + ", ".join(parts) + "."


def run_url(baseurl: str | None, name: str) -> str | None:
    """Return the address of a run's live status page, or None without a base address.

    >>> run_url("http://ops:8808/", "db upgrade")
    'http://ops:8808/flows/db%20upgrade/'
    """
    if not baseurl:
        return None
    return f"{baseurl.rstrip('/')}/flows/{quote(name, safe='')}/"


def status_block(run: Run | None, header: str, now: datetime, zone: tzinfo | None = None,
                 baseurl: str | None = None, limit: int | None = None,
                 programs_allowed: bool = True) -> list[str]:
    """Build the status block: header, progress, then the table of actionable steps.

    With `limit`, the table shows at most that many steps and says how many more there are.
    """
    if run is None:
        return ["No flow loaded or defined here; load one with load <flow> (ls lists them)."]
    lines = [f"TheHat {format_time(now, zone)}: {header}"]
    if baseurl:
        lines.append(f"Live status: {run_url(baseurl, run.name)}")
    if not run.steps:
        lines.append(f"Flow {run.name} has no steps yet; add some with addstep.")
        return lines
    lines.append(progress_line(run))
    actionable = run.actionable()
    if not actionable:
        if run.reverting:
            lines.append("All started steps are reverted; the flow has ended.")
        else:
            lines.append("All steps completed!")
        return lines
    everything = actionable
    hidden = 0
    if limit and len(actionable) > limit:
        hidden = len(actionable) - limit
        actionable = actionable[:limit]
    rows = [STATUS_COLUMNS]
    for step in actionable:
        rows.append((
            step.owner or UNASSIGNED,
            step.state.display(run.reverting),
            str(step.duration_minutes(now)),
            step.name,
            step.definition.description or "",
        ))
    lines.extend(format_table(rows))
    if hidden:
        lines.append(f"... and {hidden} more steps need attention; say status to list them "
                     "all.")
    lines.extend(_automation_lines(run, everything, now, zone, programs_allowed))
    return lines


def _automation_lines(run: Run, actionable: list[RunStep], now: datetime, zone: tzinfo | None,
                      programs_allowed: bool) -> list[str]:
    """Say when clocks act next, or why clock and program owners wait.

    `actionable` is `run.actionable()`, which the caller has already computed.
    """
    if run.reverting:
        return []
    lines = []
    pending = [s for s in actionable if s.state is StepState.PENDING and s.owner
               and (parse_clock_owner(s.owner, zone) is not None
                    or s.owner.startswith(PROGRAM_PREFIX))]
    if pending and not run.modes.clocks:
        lines.append(f"Clock processing is off, so {pending[0].owner} waits; say "
                     "clockProcessing on (or run) to let clocks and programs act.")
    if not programs_allowed and any(s.owner and s.owner.startswith(PROGRAM_PREFIX)
                                    for s in pending):
        lines.append("Programs may not run here (wfengine.allowExec is false), so a person "
                     "must take the steps that programs own.")
    if run.modes.clocks:
        upcoming = next_clock_time(run, now, zone)
        if upcoming is not None:
            step, due = upcoming
            lines.append(f"Next clock: step {step.name} at {format_time(due, zone)}.")
    for step in actionable:
        end = clock_end_time(step, zone)
        if end is not None:
            lines.append(f"Step {step.name} ends at {format_time(end, zone)} ({step.owner}).")
    return lines


def _value_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return ", ".join(value)
    return str(value)


def event_lines(events: Iterable[Event]) -> list[str]:
    """Turn events into the chat lines that announce them, in order."""
    lines: list[str] = []
    for event in events:
        lines.extend(_event_text(event))
    return lines


def _event_text(event: Event) -> list[str]:
    kind, step, actor, detail = event.kind, event.step, event.actor, event.detail
    if kind in (EventKind.STEP_STARTED, EventKind.STEP_FINISHED, EventKind.STEP_FAILED,
                EventKind.STEP_REVERTING, EventKind.STEP_REVERTED):
        target = {
            EventKind.STEP_STARTED: StepState.IN_PROGRESS,
            EventKind.STEP_FINISHED: StepState.FINISHED,
            EventKind.STEP_FAILED: StepState.FAILED,
            EventKind.STEP_REVERTING: StepState.REVERTING,
            EventKind.STEP_REVERTED: StepState.REVERTED,
        }[kind]
        return [f">>> {actor} changed state of step {step} to {target.value}"]
    if kind is EventKind.OWNER_CHANGED:
        if detail.get("handoff"):
            return [f"Handoff step '{step}' owner cleared by {actor}; claim it with gimme "
                    f"{step}, do it and finish it."]
        new = detail.get("new")
        text = f"Owner of step {step} is now {new}" if new else f"Step {step} is now unassigned"
        if actor and actor != new:
            text += f" (set by {actor})"
        return [text]
    if kind is EventKind.STEP_READY:
        return [_ready_text(event)]
    if kind is EventKind.REVERSION_STARTED:
        lines = ["!!!!! FLOW FAILURE !!!!!",
                 f"!!! STEP {step} FAILED - BEGINNING REVERSION PROCESS !!!"]
        for name, owner in detail.get("in_progress", []):
            lines.append(f"{owner or 'Whoever is on it'}: stop what you're doing with step "
                         f"{name} - we're reverting!!")
        return lines
    if kind is EventKind.FLOW_ENDED:
        return ["** Flow ended **"]
    if kind is EventKind.STEP_ADDED:
        return [f"Added new step '{step}' to workflow."]
    if kind is EventKind.STEP_REMOVED:
        dependants = detail.get("dependants") or []
        text = f"Deleted step '{step}'"
        if dependants:
            text += f"; dropped its gate from {', '.join(dependants)}"
        return [text + "."]
    if kind is EventKind.STEP_EDITED:
        word = PROPERTY_WORDS.get(detail.get("field", ""), detail.get("field"))
        if word == "name":
            return [f"Renamed step '{detail.get('old')}' to '{step}'."]
        value = _value_text(detail.get("new"))
        if not value:
            return [f"Cleared '{word}' of step '{step}'."]
        return [f"'{word}' set to '{value}' for step '{step}'."]
    if kind is EventKind.FLOW_LOADED:
        return [f"{actor} loaded flow {detail.get('flow')}."]
    return [f"{kind.value}: {step or ''}"]


def _ready_text(event: Event) -> str:
    step, detail = event.step, event.detail
    owner = detail.get("owner")
    groups = detail.get("groups") or []
    in_groups = f" (group {', '.join(groups)})" if groups else ""
    automatic = owner is not None and (owner.startswith(PROGRAM_PREFIX)
                                       or parse_clock_owner(owner) is not None)
    if detail.get("reverting"):
        if automatic and detail.get("revert_command"):
            return (f"Step {step} can be reverted now; its revertCommand runs when clock "
                    f"processing is on (or take it: gimme {step}).")
        if automatic:
            return (f"Step {step} can be reverted now; its owner {owner} does not revert "
                    f"steps, so take it (gimme {step}), undo it and say 'reverted {step}'.")
        if owner:
            return (f"Step {step} can be reverted now - {owner}, undo it and say "
                    f"'reverted {step}'.")
        return (f"Step {step} can be reverted now and is unassigned{in_groups}; "
                f"claim it with gimme {step}.")
    if automatic:
        return f"Step {step} is ready; {owner} acts on it while clock processing is on."
    if owner:
        return f"Step {step} is ready - {owner}, it's yours."
    return f"Step {step} is ready and unassigned{in_groups}; claim it with gimme {step}."
