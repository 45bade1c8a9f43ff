"""Engine behaviour: ownership, gating, forward progress, failure and reversion."""

from __future__ import annotations

import pytest

from thehat.engine import Run, UnknownStep
from thehat.errors import FlowError, Refusal
from thehat.events import EventKind
from thehat.model import Flow, StepDef, StepState

from tests.helpers import FakeClock, toast_flow


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def run(clock: FakeClock) -> Run:
    run = Run("toast", toast_flow(), clock)
    for step in run.steps:
        run.set_owner(step, "alice", "alice")
    return run


def actionable(run: Run) -> list[str]:
    return [s.name for s in run.actionable()]


def kinds(events) -> list[EventKind]:
    return [e.kind for e in events]


def finish_all(run: Run, *names: str) -> None:
    for name in names:
        run.finish(name, "alice")


def test_initial_actionable_steps_are_ungated(run: Run) -> None:
    assert actionable(run) == ["openbread", "gettoaster"]


def test_toast_forward_walk_reaches_end(run: Run) -> None:
    finish_all(run, "openbread")
    assert actionable(run) == ["selectslice", "gettoaster"]
    finish_all(run, "gettoaster")
    assert actionable(run) == ["adjusttoasting", "selectslice", "preptoaster"]
    finish_all(run, "selectslice")
    assert actionable(run) == ["adjusttoasting", "insertslice", "preptoaster"]
    finish_all(run, "insertslice", "adjusttoasting")
    assert actionable(run) == ["preptoaster"]
    events = run.finish("preptoaster", "alice")
    assert kinds(events) == [EventKind.STEP_FINISHED, EventKind.STEP_READY]
    assert events[1].step == "toastbread"
    finish_all(run, "toastbread")
    assert actionable(run) == ["removetoast"]
    events = run.finish("removetoast", "alice")
    assert kinds(events) == [EventKind.STEP_FINISHED, EventKind.FLOW_ENDED]
    assert run.ended
    assert run.counts() == {StepState.FINISHED: 8}


def test_start_then_finish_records_times(run: Run, clock: FakeClock) -> None:
    start_time = clock.now()
    run.start("openbread", "alice")
    clock.advance(minutes=7, seconds=30)
    step = run.step("openbread")
    assert step.state is StepState.IN_PROGRESS
    assert step.duration_minutes(clock.now()) == 7
    run.finish("openbread", "alice")
    assert step.started_at == start_time
    assert step.finished_at == clock.now()


def test_finish_without_start_sets_both_times(run: Run, clock: FakeClock) -> None:
    run.finish("openbread", "alice")
    step = run.step("openbread")
    assert step.started_at == step.finished_at == clock.now()


def test_refuses_unassigned_step(clock: FakeClock) -> None:
    run = Run("toast", toast_flow(), clock)
    with pytest.raises(Refusal, match="openbread is unassigned; bob must take it first"):
        run.start("openbread", "bob")
    assert run.step("openbread").state is StepState.PENDING


def test_refuses_step_of_other_owner(run: Run) -> None:
    with pytest.raises(Refusal, match="owned by alice; only alice can"):
        run.finish("openbread", "bob")
    assert run.step("openbread").state is StepState.PENDING


def test_refuses_gated_step_naming_gates(run: Run) -> None:
    finish_all(run, "gettoaster")
    with pytest.raises(Refusal, match="toastbread is gated: it waits for insertslice, "
                                      "adjusttoasting, preptoaster to finish"):
        run.start("toastbread", "alice")


def test_refuses_start_twice(run: Run) -> None:
    run.start("openbread", "alice")
    with pytest.raises(Refusal, match="already in prog"):
        run.start("openbread", "alice")


def test_refuses_finish_of_finished_step(run: Run) -> None:
    run.finish("openbread", "alice")
    with pytest.raises(Refusal, match="already finished"):
        run.finish("openbread", "alice")


def test_unknown_step_suggests_name(run: Run) -> None:
    with pytest.raises(UnknownStep, match="did you mean 'openbread'"):
        run.start("openbraed", "alice")


def test_owner_change_event(run: Run) -> None:
    events = run.set_owner("openbread", "bob", "carol")
    assert kinds(events) == [EventKind.OWNER_CHANGED]
    assert events[0].actor == "carol"
    assert dict(events[0].detail) == {"old": "alice", "new": "bob"}


def toast_before_failure(run: Run) -> None:
    """Reach the forward state the reference's worked reversion example starts from."""
    finish_all(run, "openbread", "gettoaster", "selectslice", "preptoaster", "adjusttoasting")
    run.start("insertslice", "alice")


def test_toast_reversion_row_by_row(run: Run) -> None:
    toast_before_failure(run)
    events = run.fail("insertslice", "alice")

    assert events[0].kind is EventKind.REVERSION_STARTED
    assert events[0].detail["in_progress"] == [["insertslice", "alice"]]
    assert events[1].kind is EventKind.STEP_FAILED
    assert [e.step for e in events[2:]] == ["adjusttoasting", "selectslice", "preptoaster"]
    assert all(e.kind is EventKind.STEP_READY and e.detail["reverting"] for e in events[2:])
    assert run.step("insertslice").state is StepState.FAILED
    assert actionable(run) == ["adjusttoasting", "selectslice", "preptoaster"]
    assert {s.state.display(run.reverting) for s in run.actionable()} == {"pending reversion"}

    run.mark_reverting("preptoaster", "alice")
    assert actionable(run) == ["adjusttoasting", "selectslice", "preptoaster"]
    assert run.step("preptoaster").state is StepState.REVERTING

    run.revert("preptoaster", "alice")
    assert actionable(run) == ["adjusttoasting", "selectslice"]
    with pytest.raises(Refusal, match="gettoaster is gated: revert adjusttoasting first"):
        run.mark_reverting("gettoaster", "alice")

    run.revert("adjusttoasting", "alice")
    assert actionable(run) == ["selectslice", "gettoaster"]

    run.revert("selectslice", "alice")
    assert actionable(run) == ["openbread", "gettoaster"]

    run.revert("openbread", "alice")
    assert actionable(run) == ["gettoaster"]

    events = run.revert("gettoaster", "alice")
    assert kinds(events) == [EventKind.STEP_REVERTED, EventKind.FLOW_ENDED]
    assert events[1].detail["reverting"] is True
    assert actionable(run) == []
    assert run.ended

    assert run.counts() == {StepState.REVERTED: 5, StepState.FAILED: 1, StepState.PENDING: 2}
    states = {name: step.state for name, step in run.steps.items()}
    assert states == {
        "adjusttoasting": StepState.REVERTED, "insertslice": StepState.FAILED,
        "selectslice": StepState.REVERTED, "removetoast": StepState.PENDING,
        "preptoaster": StepState.REVERTED, "openbread": StepState.REVERTED,
        "gettoaster": StepState.REVERTED, "toastbread": StepState.PENDING,
    }


def test_refusals_during_reversion(run: Run) -> None:
    toast_before_failure(run)
    run.fail("insertslice", "alice")
    with pytest.raises(Refusal, match="Don't start adjusttoasting: insertslice failed"):
        run.start("adjusttoasting", "alice")
    with pytest.raises(Refusal, match="Don't finish adjusttoasting: insertslice failed"):
        run.finish("adjusttoasting", "alice")
    with pytest.raises(Refusal, match="toastbread never started"):
        run.revert("toastbread", "alice")
    with pytest.raises(Refusal, match="already reverting after insertslice failed"):
        run.fail("adjusttoasting", "alice")
    with pytest.raises(Refusal, match="owned by alice"):
        run.revert("adjusttoasting", "bob")
    run.revert("adjusttoasting", "alice")
    with pytest.raises(Refusal, match="Step adjusttoasting is already reverted."):
        run.revert("adjusttoasting", "alice")
    with pytest.raises(Refusal, match="insertslice is failed"):
        run.revert("insertslice", "alice")


def test_revert_refused_when_not_reverting(run: Run) -> None:
    run.finish("openbread", "alice")
    with pytest.raises(Refusal, match="not reverting"):
        run.mark_reverting("openbread", "alice")
    with pytest.raises(Refusal, match="not reverting"):
        run.revert("openbread", "alice")
    assert run.step("openbread").state is StepState.FINISHED


def test_fail_refused_for_gated_or_finished_step(run: Run) -> None:
    with pytest.raises(Refusal, match="toastbread is gated"):
        run.fail("toastbread", "alice")
    run.finish("openbread", "alice")
    with pytest.raises(Refusal, match="openbread is finished; only a ready or in-progress"):
        run.fail("openbread", "alice")
    with pytest.raises(Refusal, match="owned by alice"):
        run.fail("gettoaster", "bob")
    assert not run.reverting


def test_fail_of_first_step_ends_at_once(run: Run) -> None:
    events = run.fail("openbread", "alice")
    assert kinds(events) == [EventKind.REVERSION_STARTED, EventKind.STEP_FAILED,
                             EventKind.FLOW_ENDED]
    assert run.ended


def test_in_progress_step_blocks_reversion(run: Run) -> None:
    run.finish("gettoaster", "alice")
    run.start("preptoaster", "alice")
    events = run.fail("adjusttoasting", "alice")
    assert events[0].detail["in_progress"] == [["preptoaster", "alice"]]
    assert actionable(run) == ["preptoaster"]
    run.revert("preptoaster", "alice")
    assert actionable(run) == ["gettoaster"]


def test_clone_leaves_original_untouched(run: Run) -> None:
    copy = run.clone()
    copy.finish("openbread", "alice")
    assert copy.counts() == {StepState.FINISHED: 1, StepState.PENDING: 7}
    assert run.counts() == {StepState.PENDING: 8}
    assert copy.step("openbread").definition is run.step("openbread").definition
    assert run.step("openbread").state is StepState.PENDING
    assert copy.step("openbread").state is StepState.FINISHED
    assert actionable(run) == ["openbread", "gettoaster"]


def test_add_step_rejects_existing_name(run: Run) -> None:
    with pytest.raises(Refusal, match="openbread already exists"):
        run.add_step(StepDef("openbread"), "alice")


def test_add_step_is_ready_and_appended(run: Run) -> None:
    events = run.add_step(StepDef("butter", gates=("toastbread",)), "alice")
    assert kinds(events) == [EventKind.STEP_ADDED]
    assert list(run.steps)[-1] == "butter"
    events = run.add_step(StepDef("plate"), "alice")
    assert kinds(events) == [EventKind.STEP_ADDED, EventKind.STEP_READY]
    assert "plate" in actionable(run)


def test_add_step_stops_at_max_steps(clock: FakeClock) -> None:
    run = Run("toast", toast_flow(), clock, max_steps=9)
    run.add_step(StepDef("butter"), "alice")

    with pytest.raises(Refusal) as info:
        run.add_step(StepDef("jam"), "alice")

    message = str(info.value)
    assert "Flow toast has 9 steps, the limit (limits.maxFlowSteps is 9)" in message
    assert "jam was not added" in message
    assert "raise limits.maxFlowSteps in the configuration" in message
    assert list(run.steps)[-1] == "butter"
    assert "jam" not in run.steps


def test_add_step_after_delete_under_limit(clock: FakeClock) -> None:
    run = Run("toast", toast_flow(), clock, max_steps=8)
    with pytest.raises(Refusal, match="limits.maxFlowSteps"):
        run.add_step(StepDef("butter"), "alice")

    run.remove_step("removetoast", "alice")
    run.add_step(StepDef("butter"), "alice")

    assert len(run.steps) == 8


def test_step_limit_kept_by_clone_and_restore(clock: FakeClock) -> None:
    run = Run("toast", toast_flow(), clock, max_steps=8)
    restored = Run.restored("toast", list(run.steps.values()), None, clock, max_steps=8)

    for copy in (run.clone(), restored):
        with pytest.raises(Refusal, match="limits.maxFlowSteps"):
            copy.add_step(StepDef("butter"), "alice")


def test_step_limit_off_by_default(clock: FakeClock) -> None:
    run = Run("toast", toast_flow(), clock)
    for number in range(20):
        run.add_step(StepDef(f"extra{number}"), "alice")

    assert len(run.steps) == 28


def test_edit_rejects_cycle_with_path(run: Run) -> None:
    with pytest.raises(FlowError, match="cycle: .*openbread"):
        run.update_step("openbread", "alice", gates=("removetoast",))
    assert run.step("openbread").definition.gates == ()


def test_edit_rejects_missing_and_self_gate(run: Run) -> None:
    with pytest.raises(FlowError, match="'toastbraed' names a missing step.*'toastbread'"):
        run.update_step("removetoast", "alice", gates=("toastbraed",))
    with pytest.raises(FlowError, match="cannot gate on itself"):
        run.update_step("removetoast", "alice", gates=("removetoast",))


def test_delgate_makes_step_ready(run: Run) -> None:
    events = run.update_step("selectslice", "alice", gates=())
    assert kinds(events) == [EventKind.STEP_EDITED, EventKind.STEP_READY]
    assert events[1].step == "selectslice"


def test_remove_gating_step_needs_force(run: Run) -> None:
    with pytest.raises(Refusal, match="openbread gates selectslice"):
        run.remove_step("openbread", "alice")
    assert "openbread" in run.steps
    events = run.remove_step("openbread", "alice", force=True)
    assert events[0].detail["dependants"] == ["selectslice"]
    assert run.step("selectslice").definition.gates == ()
    assert "selectslice" in actionable(run)


def test_rename_updates_gates(run: Run) -> None:
    run.rename_step("openbread", "unwrap", "alice")
    assert run.step("selectslice").definition.gates == ("unwrap",)
    assert list(run.steps)[5] == "unwrap"
    run.finish("unwrap", "alice")
    assert "selectslice" in actionable(run)


def test_saved_flow_keeps_current_owner(run: Run) -> None:
    flow = run.flow()
    assert flow.steps["openbread"].owner == "alice"
    assert len(flow) == 8


def test_transition_cost_independent_of_size(clock: FakeClock) -> None:
    # A wide fan-out: finishing one leaf must not visit the other steps' gates.
    steps = [StepDef("root")] + [StepDef(f"leaf{i}", gates=("root",)) for i in range(2000)]
    run = Run("wide", Flow(steps), clock)
    run.set_owner("leaf7", "alice", "alice")
    run.set_owner("root", "alice", "alice")
    run.finish("root", "alice")
    visited = []
    original = run._successors.__getitem__

    class Spy(dict):
        def __getitem__(self, key):
            visited.append(key)
            return original(key)

    run._successors = Spy(run._successors)
    run.finish("leaf7", "alice")
    assert visited == ["leaf7"]


def test_started_step_cannot_gain_open_gate(run: Run) -> None:
    run.finish("gettoaster", "alice")
    with pytest.raises(Refusal, match="gettoaster is finished, so it cannot wait for "
                                      "openbread, which has not finished"):
        run.update_step("gettoaster", "alice", gates=("openbread",))
    assert run.step("gettoaster").definition.gates == ()


def test_owner_must_be_one_line(run: Run) -> None:
    with pytest.raises(Refusal, match="single line"):
        run.set_owner("openbread", "a\rb", "alice")
    assert run.step("openbread").owner == "alice"


def test_rename_failed_step_follows(run: Run) -> None:
    run.finish("gettoaster", "alice")
    run.fail("adjusttoasting", "alice")
    events = run.rename_step("gettoaster", "fetchtoaster", "alice")
    assert [e.kind for e in events] == [EventKind.STEP_EDITED]
    run.rename_step("adjusttoasting", "adjust", "alice")
    assert run.failed_step == "adjust"


def test_started_step_not_deleted_while_reverting(run: Run) -> None:
    run.finish("openbread", "alice")
    run.fail("gettoaster", "alice")
    with pytest.raises(Refusal, match="openbread was started and is not reverted yet"):
        run.remove_step("openbread", "alice", force=True)
    assert "openbread" in run.steps


def test_failed_step_not_deleted(run: Run) -> None:
    run.finish("gettoaster", "alice")
    run.fail("adjusttoasting", "alice")
    with pytest.raises(Refusal, match="adjusttoasting failed, and the flow reverts because "
                                      "of it, so it cannot be deleted"):
        run.remove_step("adjusttoasting", "alice", force=True)
    assert run.step("adjusttoasting").state is StepState.FAILED
    assert not run.ended


def test_owner_with_lone_surrogate_refused(run: Run) -> None:
    with pytest.raises(Refusal, match="lone surrogate"):
        run.set_owner("openbread", "al\udc80ice", "alice")
    assert run.step("openbread").owner == "alice"
