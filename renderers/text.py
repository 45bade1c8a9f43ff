"""The text dump: every step with its fields, state and times, as the `dump` command shows it."""

from __future__ import annotations

from datetime import tzinfo

from renderers.base import Renderer
from thehat.engine import Run, RunStep
from thehat.status import format_time


def _step_block(step: RunStep, reverting: bool, zone: tzinfo | None) -> list[str]:
    definition = step.definition
    lines = [f"Name: {step.name}"]
    if definition.description:
        lines.append(f"Description: {definition.description}")
    lines.append(f"Owner: {step.owner or ''}")
    if definition.start_command:
        lines.append(f"Start cmd: {definition.start_command}")
    if definition.finish_command:
        lines.append(f"Finish cmd: {definition.finish_command}")
    if definition.revert_command:
        lines.append(f"Revert cmd: {definition.revert_command}")
    if definition.timeout is not None:
        lines.append(f"Timeout: {definition.timeout:g} s")
    if definition.notify_at_start:
        lines.append(f"Notif(start): {', '.join(definition.notify_at_start)}")
    if definition.notify_at_finish:
        lines.append(f"Notif(fin): {', '.join(definition.notify_at_finish)}")
    for label, moment in (("Started at", step.started_at), ("Finished at", step.finished_at),
                          ("Failed at", step.failed_at), ("Reverted at", step.reverted_at)):
        if moment is not None:
            lines.append(f"{label}: {format_time(moment, zone)}")
    if definition.groups:
        lines.append(f"Group(s): {', '.join(definition.groups)}")
    if definition.url:
        lines.append(f"Url: {definition.url}")
    if definition.note:
        lines.append(f"Tooltip: {definition.note}")
    if definition.gates:
        lines.append(f"Gates: {', '.join(definition.gates)}")
    lines.append(f"State: {step.state.display(reverting)}")
    return lines


def render_text(run: Run, zone: tzinfo | None = None) -> str:
    """Return the dump of `run`: a heading, then one block per step in flow order.

    Gates lists every gate of the step as defined, satisfied or not; the state shows progress.
    """
    lines = [f"Steps in {run.name}:", ""]
    if run.reverting:
        lines[1:1] = [f"Reverting after step {run.failed_step} failed."]
    for step in run.steps.values():
        lines.extend(_step_block(step, run.reverting, zone))
        lines.append("")
    return "\n".join(lines)


class TextRenderer(Renderer):
    """The text dump as a UTF-8 file."""

    name = "text"
    suffix = "-dump.txt"
    media_type = "text/plain; charset=utf-8"

    def render(self, run: Run, zone: tzinfo | None = None) -> bytes:
        return render_text(run, zone).encode("utf-8")
