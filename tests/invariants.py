"""Engine invariants, recomputed from the step states and gates alone.

The property tests and the fuzz tests call these after every request. None of them reads the
engine's own counters (`_unmet`, `_blocking`, `_counts`) except to compare them with the
recomputation.

- Gates: a step that has started (in progress, finished or reverting) has every gate finished.
  This is true in both directions. Going forward, `start` and `finish` need every gate finished.
  After a failure, a gate can become reverting or reverted only once none of its successors
  is started, and the failed step never had a started successor, because `fail` needs a ready
  or in-progress step.
- Reversion: once a step has failed, the run has not ended while any step is started. A step
  becomes reverting or reverted only while none of its successors is started.
- Counts: `Run.counts()` and the numbers in `progress_line` agree with the step states.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping

from thehat.engine import FORWARD_STATES, STARTED_STATES, Run
from thehat.model import StepState
from thehat.status import progress_line

# A snapshot of a run between two requests: step name -> state, and the failed step.
Snapshot = tuple[dict[str, StepState], str | None]


def snapshot(run: Run) -> Snapshot:
    return {name: step.state for name, step in run.steps.items()}, run.failed_step


def check_gates(run: Run) -> None:
    """Assert that no step is started or finished while one of its gates is not finished."""
    for name, step in run.steps.items():
        if step.state not in STARTED_STATES:
            continue
        for gate in step.definition.gates:
            assert run.steps[gate].state is StepState.FINISHED, (
                f"step {name} is {step.state.value} but its gate {gate} is "
                f"{run.steps[gate].state.value}")


def check_reversion(run: Run) -> None:
    """Assert that after a failure the run ends only when no step is started any more."""
    states = [step.state for step in run.steps.values()]
    if not run.reverting:
        assert StepState.FAILED not in states, "a step failed but the run goes forward"
        assert StepState.REVERTING not in states, "a step reverts but the run goes forward"
        assert StepState.REVERTED not in states, "a step reverted but the run goes forward"
        if run.ended:
            assert all(state is StepState.FINISHED for state in states), (
                "the run ended going forward with unfinished steps")
        return
    assert run.steps[run.failed_step].state is StepState.FAILED, "the failed step moved on"
    assert states.count(StepState.FAILED) == 1, "more than one step failed"
    started = [n for n, s in run.steps.items() if s.state in STARTED_STATES]
    if run.ended:
        assert not started, f"the run ended while {started} are not reverted"
    if started:
        assert not run.ended, f"the run counts as ended while {started} are not reverted"


def check_counts(run: Run) -> None:
    """Assert that the state counts and the progress line agree with the step states."""
    states = Counter(step.state for step in run.steps.values())
    assert run.counts() == +states, f"counts {run.counts()} but states {states}"
    if not run.steps:
        return
    line = progress_line(run)
    if run.reverting:
        started = sum(states[s] for s in (StepState.IN_PROGRESS, StepState.FINISHED,
                                           StepState.REVERTING, StepState.REVERTED))
        assert f": {states[StepState.REVERTED]} of {started} started steps reverted." in line, line
    else:
        assert f": {states[StepState.FINISHED]} of {len(run.steps)} steps finished" in line, line
        match = re.search(r", (\d+) in progress\.$", line)
        assert (int(match.group(1)) if match else 0) == states[StepState.IN_PROGRESS], line


def expected_actionable(run: Run) -> set[str]:
    states = {name: step.state for name, step in run.steps.items()}
    if run.reverting:
        blocked = {gate for name, step in run.steps.items() if states[name] in STARTED_STATES
                   for gate in step.definition.gates}
        return {name for name, state in states.items()
                if state in STARTED_STATES and name not in blocked}
    return {name for name, step in run.steps.items()
            if states[name] in FORWARD_STATES
            and all(states[g] is StepState.FINISHED for g in step.definition.gates)}


def check_actionable(run: Run) -> None:
    """The steps that need attention are exactly those the rules make actionable."""
    assert {s.name for s in run.actionable()} == expected_actionable(run)


def check_run(run: Run) -> None:
    """Check every invariant of one run in its current state."""
    for gate_names in (s.definition.gates for s in run.steps.values()):
        assert all(gate in run.steps for gate in gate_names), "a gate names a missing step"
    check_gates(run)
    check_reversion(run)
    check_counts(run)
    check_actionable(run)


def check_transition(before: Snapshot, run: Run) -> None:
    """Check one request's changes: states only move down in rank, never back to forward,
    and a step reverts only while none of its successors is started."""
    states, failed_step = before
    if failed_step is not None:
        assert run.reverting, "the run went back to forward after a failure"
    successors: dict[str, list[str]] = {name: [] for name in run.steps}
    for name, step in run.steps.items():
        for gate in step.definition.gates:
            successors[gate].append(name)
    for name, step in run.steps.items():
        old = states.get(name)
        if old is None or old is step.state:
            continue
        assert step.state.rank < old.rank, f"step {name} went from {old.value} to " \
                                           f"{step.state.value}"
        if step.state in (StepState.REVERTING, StepState.REVERTED):
            started = [s for s in successors[name] if run.steps[s].state in STARTED_STATES]
            assert not started, f"step {name} became {step.state.value} before {started}"


def same_state(first: Mapping[str, Run], second: Mapping[str, Run]) -> None:
    """Assert that two sets of runs agree on everything a restart must keep."""
    assert sorted(first) == sorted(second)
    for name, run in first.items():
        other = second[name]
        assert describe_run(other) == describe_run(run), f"run {name} differs"


def describe_run(run: Run) -> dict[str, object]:
    """Everything about a run that the store must keep, as plain data."""
    return {
        "name": run.name,
        "failed_step": run.failed_step,
        "source": run.source,
        "modes": run.modes,
        "steps": [(s.name, s.state, s.owner, s.started_at, s.finished_at, s.failed_at,
                   s.reverted_at, s.definition) for s in run.steps.values()],
        "actionable": [s.name for s in run.actionable()],
        "counts": run.counts(),
        "ended": run.ended,
    }
