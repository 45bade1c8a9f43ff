"""The audit history and the change record of a run, as text, CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import Final

from thehat.engine import STARTED_STATES, Run
from thehat.model import StepState
from thehat.status import format_table, format_time
from thehat.store import JournalEntry, RunRecord

HISTORY_COLUMNS: Final = ("time", "flow", "actor", "conversation", "command", "outcome",
                          "result")
REPORT_COLUMNS: Final = ("order", "step", "description", "owner", "state", "started",
                         "finished", "minutes", "failed", "reverted")


def _first_line(text: str) -> str:
    return text.split("\n", 1)[0]


def history_lines(entries: Sequence[JournalEntry], zone: tzinfo | None) -> list[str]:
    """Format journal entries for chat: one line each, oldest first."""
    if not entries:
        return ["No history recorded yet."]
    rows = [("TIME", "WHO", "COMMAND", "OUTCOME", "RESULT")]
    for entry in entries:
        rows.append((format_time(entry.time, zone), entry.actor or "", entry.command,
                     entry.outcome, _first_line(entry.result)))
    return format_table(rows)


def history_export(entries: Sequence[JournalEntry], form: str, zone: tzinfo | None) -> str:
    """Return every entry as `text`, `csv` or `json` (JSON includes the events)."""
    if form == "json":
        return json.dumps([{
            "id": e.entry_id, "run": e.run_id, "flow": e.flow, "time": e.time.isoformat(),
            "actor": e.actor, "conversation": e.conversation, "command": e.command,
            "outcome": e.outcome, "result": e.result, "events": e.events,
        } for e in entries], ensure_ascii=False, indent=2) + "\n"
    if form == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(HISTORY_COLUMNS)
        for e in entries:
            writer.writerow((e.time.isoformat(), e.flow or "", e.actor or "",
                             e.conversation or "", e.command, e.outcome, e.result))
        return buffer.getvalue()
    lines = []
    for e in entries:
        lines.append(f"{format_time(e.time, zone)}  {e.actor or '-'} in {e.conversation or '-'}: "
                     f"{e.command}  [{e.outcome}]")
        lines.extend("    " + line for line in e.result.splitlines())
    return "\n".join(lines) + "\n"


def _report_rows(record: RunRecord, now: datetime, zone: tzinfo | None
                 ) -> list[tuple[str, ...]]:
    def moment(value: datetime | None) -> str:
        return "" if value is None else format_time(value, zone)

    rows: list[tuple[str, ...]] = []
    for order, step in enumerate(record.steps, start=1):
        minutes = str(step.duration_minutes(now)) if step.started_at else ""
        rows.append((str(order), step.name, step.definition.description or "",
                     step.owner or "", step.state.display(record.failed_step is not None),
                     moment(step.started_at), moment(step.finished_at), minutes,
                     moment(step.failed_at), moment(step.reverted_at)))
    return rows


def report_text(record: RunRecord, now: datetime, zone: tzinfo | None) -> str:
    """Return the change record of a run: one row per step in planned order."""
    run = Run.restored(record.name, record.steps, record.failed_step)
    if not record.active:
        ended = f"unloaded {format_time(record.ended_at, zone)}" if record.ended_at else "unloaded"
    else:
        ended = "the flow has ended" if run.ended else "still in progress"
    lines = [f"Change record of flow {record.name}, run {record.run_id}: started "
             f"{format_time(record.started_at, zone)}, {ended}."]
    if record.failed_step:
        counts = run.counts()
        reverted = counts[StepState.REVERTED]
        started = reverted + sum(counts[s] for s in STARTED_STATES)
        lines.append(f"Step {record.failed_step} failed; {reverted} of {started} started "
                     "steps are reverted.")
    header = tuple(column.upper() for column in REPORT_COLUMNS)
    lines.extend(format_table([header, *_report_rows(record, now, zone)]))
    return "\n".join(lines) + "\n"


def report_csv(record: RunRecord, now: datetime, zone: tzinfo | None) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(REPORT_COLUMNS)
    writer.writerows(_report_rows(record, now, zone))
    return buffer.getvalue()
