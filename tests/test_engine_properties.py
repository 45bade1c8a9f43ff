"""Engine invariants under random command sequences on random flows (hypothesis).

After every request, accepted or refused, the run is checked against a recomputation from the
step states and gates alone, never from the engine's own counters.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from thehat.engine import STARTED_STATES, Run
from thehat.errors import FlowError, Refusal
from thehat.model import Flow, StepDef, StepState

from tests.helpers import FakeClock

OPERATIONS = ("gimme", "start", "finish", "fail", "reverting", "reverted", "addgate",
              "delgate")
# Mostly one user, so that requests get past the owner check and reach deep states.
USERS = ("alice", "alice", "alice", "bob")


@st.composite
def flows(draw: st.DrawFn) -> Flow:
    """A random DAG of 1-8 steps whose file order differs from its dependency order.

    Every step starts owned by alice, so that random requests reach deep states.
    """
    size = draw(st.integers(1, 8))
    gates = [tuple(f"s{g}" for g in range(index) if draw(st.booleans()))
             for index in range(size)]
    order = draw(st.permutations(range(size)))
    return Flow(StepDef(f"s{i}", owner="alice", gates=gates[i]) for i in order)


requests = st.lists(st.tuples(st.sampled_from(OPERATIONS), st.integers(0, 7),
                              st.integers(0, 7), st.sampled_from(USERS)), max_size=120)


def apply(run: Run, operation: str, step: int, other: int, user: str) -> None:
    name, gate = f"s{step}", f"s{other}"
    try:
        if operation == "gimme":
            run.set_owner(name, user, user)
        elif operation == "start":
            run.start(name, user)
        elif operation == "finish":
            run.finish(name, user)
        elif operation == "fail":
            run.fail(name, user)
        elif operation == "reverting":
            run.mark_reverting(name, user)
        elif operation == "reverted":
            run.revert(name, user)
        elif operation == "addgate":
            definition = run.step(name).definition
            run.update_step(name, user, gates=definition.gates + (gate,))
        else:
            definition = run.step(name).definition
            run.update_step(name, user, gates=tuple(g for g in definition.gates if g != gate))
    except (Refusal, FlowError):
        pass


def expected_actionable(run: Run) -> set[str]:
    states = {name: step.state for name, step in run.steps.items()}
    if run.reverting:
        blocked = {gate for name, step in run.steps.items() if states[name] in STARTED_STATES
                   for gate in step.definition.gates}
        return {name for name, state in states.items()
                if state in STARTED_STATES and name not in blocked}
    return {name for name, step in run.steps.items()
            if states[name] in (StepState.PENDING, StepState.IN_PROGRESS)
            and all(states[g] is StepState.FINISHED for g in step.definition.gates)}


def check(run: Run) -> None:
    states = {name: step.state for name, step in run.steps.items()}
    for name, step in run.steps.items():
        if states[name] in STARTED_STATES and not run.reverting:
            assert all(states[g] is StepState.FINISHED for g in step.definition.gates), name
    assert run.counts() == +Counter(states.values())
    assert {s.name for s in run.actionable()} == expected_actionable(run)
    if run.reverting and run.ended:
        assert not any(state in STARTED_STATES for state in states.values())
    if run.reverting:
        assert states[run.failed_step] is StepState.FAILED


@settings(max_examples=500, deadline=None)
@given(flows(), requests)
def test_invariants_hold_for_any_requests(flow: Flow, steps: list) -> None:
    run = Run("random", flow, FakeClock())
    check(run)
    for operation, step, other, user in steps:
        apply(run, operation, step, other, user)
        check(run)


@settings(max_examples=500, deadline=None)
@given(flows(), st.data())
def test_invariants_hold_on_likely_paths(flow: Flow, data: st.DataObject) -> None:
    """Mostly act on the steps that need attention, so that failures and long reversions
    happen often; now and then send any request."""
    run = Run("random", flow, FakeClock())
    for _ in range(3 * len(flow) + 5):
        actionable = [s.name for s in run.actionable()]
        if actionable and data.draw(st.integers(0, 9)) > 0:
            name = data.draw(st.sampled_from(actionable))
            if run.reverting:
                operation = data.draw(st.sampled_from(("reverting", "reverted", "reverted")))
            else:
                operation = data.draw(st.sampled_from(("start", "finish", "finish", "fail")))
            apply(run, operation, int(name[1:]), 0, "alice")
        else:
            apply(run, *data.draw(requests.filter(bool))[0])
        check(run)


@settings(max_examples=150, deadline=None)
@given(flows(), requests)
def test_clone_and_dry_run_leave_run_unchanged(flow: Flow, steps: list) -> None:
    from thehat.simulation import simulate

    run = Run("random", flow, FakeClock())
    for operation, step, other, user in steps:
        apply(run, operation, step, other, user)
    before = [(s.name, s.state, s.owner) for s in run.steps.values()]
    simulate(run)
    assert [(s.name, s.state, s.owner) for s in run.steps.values()] == before
