"""The dry run: play the rest of a run on a copy and report what would happen."""

from __future__ import annotations

from collections import Counter

from thehat.engine import Run
from thehat.errors import Refusal
from thehat.model import StepState

DRY_RUN_USER = "dryrun"


def simulate(run: Run, fail_step: str | None = None) -> list[str]:
    """Drive a copy of `run` to its end and return the report lines; `run` is not changed.

    Each iteration takes every step that needs attention: it fails `fail_step` when that step
    comes up going forward, reverts steps once the copy is reverting, and finishes the rest.
    Every state change lowers a step's rank, so the loop ends after at most three per step.
    """
    if fail_step is not None:
        step = run.step(fail_step)
        if run.reverting:
            raise Refusal(f"The flow is already reverting after {run.failed_step} failed, so "
                          f"{fail_step} cannot fail; say dryrun alone to see how the reversion "
                          "ends.")
        if step.state not in (StepState.PENDING, StepState.IN_PROGRESS):
            raise Refusal(f"Step {fail_step} is {step.state.display()}; only a step that has "
                          "not finished can fail in a dry run.")
    simulated = run.clone()
    lines = ["DRY RUN RESULTS (on a copy; the live run is not changed)"]
    if fail_step is not None:
        lines.append(f"(planned failure at step {fail_step})")

    iteration = 0
    while simulated.actionable():
        iteration += 1
        done: dict[str, list[str]] = {"finished": [], "failed": [], "reverted": []}
        for step in simulated.actionable():
            if not simulated.is_actionable(step.name):
                continue
            simulated.set_owner(step.name, DRY_RUN_USER, DRY_RUN_USER)
            if simulated.reverting:
                simulated.revert(step.name, DRY_RUN_USER)
                done["reverted"].append(step.name)
            elif step.name == fail_step:
                simulated.fail(step.name, DRY_RUN_USER)
                done["failed"].append(step.name)
            else:
                simulated.finish(step.name, DRY_RUN_USER)
                done["finished"].append(step.name)
        summary = "; ".join(f"{verb} {', '.join(names)}" for verb, names in done.items() if names)
        lines.append(f"Iteration {iteration}: {summary}")

    counts = Counter(step.state for step in simulated.steps.values())
    totals = ", ".join(f"{n} {state.display()}" for state, n in counts.items())
    plural = "" if iteration == 1 else "s"
    lines.append(f"Dry run ended after {iteration} iteration{plural}: {totals}.")
    if fail_step is not None and simulated.step(fail_step).state is not StepState.FAILED:
        lines.append(f"Step {fail_step} never came up while going forward, so it did not fail.")
    return lines
