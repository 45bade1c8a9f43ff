"""Engine invariants under random command sequences on random flows (hypothesis).

After every request, accepted or refused, the run is checked against a recomputation from the
step states and gates alone, never from the engine's own counters.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

from hypothesis import event, given, settings
from hypothesis import strategies as st

from thehat.config import Config, EngineConfig
from thehat.daemon import Daemon, open_daemon
from thehat.engine import Run
from thehat.errors import FlowError, Refusal
from thehat.flowfile import save_flow
from thehat.model import Flow, StepDef, StepState
from thehat.store import DATABASE_NAME, SqliteStore

from tests import invariants
from tests.helpers import FakeClock

# THEHAT_FUZZ_SCALE multiplies the number of examples of every test here, for longer runs.
SCALE = float(os.environ.get("THEHAT_FUZZ_SCALE", "1"))


def examples(count: int) -> int:
    return max(1, int(count * SCALE))


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


single_requests = st.tuples(st.sampled_from(OPERATIONS), st.integers(0, 7), st.integers(0, 7),
                            st.sampled_from(USERS))
requests = st.lists(single_requests, max_size=120)


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


def check(run: Run) -> None:
    """Check every invariant of `run`; see tests/invariants.py for their exact statement."""
    invariants.check_run(run)


def apply_checked(run: Run, operation: str, step: int, other: int, user: str) -> None:
    """Apply one request, then check the run and the transition the request made."""
    before = invariants.snapshot(run)
    apply(run, operation, step, other, user)
    invariants.check_transition(before, run)
    check(run)


@settings(max_examples=examples(500), deadline=None)
@given(flows(), requests)
def test_invariants_hold_for_any_requests(flow: Flow, steps: list) -> None:
    run = Run("random", flow, FakeClock())
    check(run)
    for operation, step, other, user in steps:
        apply_checked(run, operation, step, other, user)


@settings(max_examples=examples(500), deadline=None)
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
            apply_checked(run, operation, int(name[1:]), 0, "alice")
        else:
            apply_checked(run, *data.draw(single_requests))


@settings(max_examples=examples(150), deadline=None)
@given(flows(), requests)
def test_clone_and_dry_run_leave_run_unchanged(flow: Flow, steps: list) -> None:
    from thehat.simulation import simulate

    run = Run("random", flow, FakeClock())
    for operation, step, other, user in steps:
        apply(run, operation, step, other, user)
    before = [(s.name, s.state, s.owner) for s in run.steps.values()]
    simulate(run)
    assert [(s.name, s.state, s.owner) for s in run.steps.values()] == before


# -- through the command language, with several users and conversations ---------------------

# Command lines with placeholders: {a} and {b} are step names, {u} a user, {f} the flow.
COMMAND_TEMPLATES = (
    "gimme {a}", "gimme {a},{b}", "giveto {u} {a}", "gimmeall", "gimmegroup g{n}",
    "givegroupto g{n} {u}", "start {a}", "start {a} {b}", "finish {a}", "finish {a}, {b}",
    "fail {a}", "reverting {a}", "reverted {a}", "revert {a},{b}", "status", "",
    "set {a} addgate {b}", "set {a} delgate {b}", "set {a} gates {b}", "set {a} group g{n}",
    "set {a} description step {n}", "addstep x{n}", "addsequence y{n},z{n} {a}",
    "delstep {a}", "delstep {a} force", "set {a} name r{n}", "dryrun", "dryrun {a}",
    "reload", "unload", "load {f}", "restore {f}", "save", "idleprompt {n}", "run", "stop",
)
CONVERSATIONS = ("tty:alice", "irc:#ops", "xmpp:ops@conference.example.org")
COMMAND_USERS = ("alice", "alice", "bob", "carol")

command_lines = st.lists(
    st.tuples(st.sampled_from(COMMAND_TEMPLATES), st.integers(0, 9), st.integers(0, 9),
              st.sampled_from(COMMAND_USERS), st.sampled_from(CONVERSATIONS),
              st.integers(0, 3)),
    min_size=1, max_size=60)


def command_text(template: str, a: int, b: int, user: str, n: int) -> str:
    return template.format(a=f"s{a}", b=f"s{b}", u=user, n=n, f="random")


def grouped(flow: Flow) -> Flow:
    """Put each step of `flow` into group g0..g3 by its number, for the group commands."""
    return Flow(dataclasses.replace(s, groups=(f"g{int(s.name[1:]) % 4}",)) for s in flow)


def open_datadir(directory: str, flow: Flow) -> Config:
    datadir = Path(directory) / "data"
    datadir.mkdir()
    save_flow(grouped(flow), datadir / "random.flow")
    return Config(engine=EngineConfig(datadir=datadir, timezone="UTC"))


def execute_checked(daemon: Daemon, conversation: str, user: str, text: str) -> None:
    """Run one command line and check the reply and the invariants of the run it acted on."""
    run = daemon.run_for(conversation)
    before = invariants.snapshot(run) if run is not None else None
    outcome = daemon.execute(conversation, user, text)
    assert not any(line.startswith("Internal error") for line in outcome.lines), outcome.lines
    assert any(line.strip() for line in outcome.lines), f"no reply to {text!r}"
    after = daemon.run_for(conversation)
    if after is not None and after is run and before is not None:
        invariants.check_transition(before, after)
    for every in daemon.runs.values():
        invariants.check_run(every)


def next_command(daemon: Daemon, data: st.DataObject) -> tuple[str, str, str]:
    """Draw the next (conversation, user, line): mostly a request that moves the run on, as
    its owner, and now and then any command from `COMMAND_TEMPLATES`."""
    conversation = data.draw(st.sampled_from(CONVERSATIONS))
    run = daemon.run_for(conversation)
    actionable = [s for s in run.actionable()] if run is not None else []
    if actionable and data.draw(st.integers(0, 9)) > 2:
        step = data.draw(st.sampled_from(actionable))
        if run is not None and run.reverting:
            word = data.draw(st.sampled_from(("reverting", "reverted", "reverted")))
        else:
            word = data.draw(st.sampled_from(("start", "finish", "finish", "fail")))
        if step.owner is None or step.owner.startswith(("clock", "program")):
            return conversation, "bob", f"gimme {step.name}"
        return conversation, step.owner, f"{word} {step.name}"
    template, a, b, user, _, n = data.draw(command_lines)[0]
    return conversation, user, command_text(template, a, b, user, n)


@settings(max_examples=examples(80), deadline=None)
@given(flows(), st.data())
def test_invariants_hold_through_commands(flow: Flow, data: st.DataObject) -> None:
    """Random command lines from several users in three conversations, without a store."""
    with tempfile.TemporaryDirectory() as directory:
        clock = FakeClock()
        daemon = Daemon(open_datadir(directory, flow), clock)
        for conversation in CONVERSATIONS:
            daemon.execute(conversation, "alice", "load random")
        for _ in range(4 * len(flow) + 10):
            clock.advance(seconds=61)
            execute_checked(daemon, *next_command(daemon, data))
        note_depth(daemon)


def note_depth(daemon: Daemon) -> None:
    """Tell hypothesis's statistics how far the runs got, to show that deep states occur."""
    for run in daemon.runs.values():
        if run.reverting:
            event("reached: reverting, ended" if run.ended else "reached: reverting")
        elif any(step.state is StepState.FINISHED for step in run.steps.values()):
            event("reached: finished steps, ended" if run.ended else "reached: finished steps")


def reopened(config: Config, clock: FakeClock) -> Daemon:
    """Build a second daemon that reads the same store, as a restart would."""
    store = SqliteStore(config.engine.datadir / DATABASE_NAME)
    daemon = Daemon(config, clock, store)
    daemon.reload_from_store()
    return daemon


def check_restored(daemon: Daemon, config: Config, clock: FakeClock) -> None:
    restored = reopened(config, clock)
    try:
        invariants.same_state(daemon.runs, restored.runs)
        assert restored.attachments == daemon.attachments
        for run in restored.runs.values():
            invariants.check_run(run)
    finally:
        assert restored.store is not None
        restored.store.close()


@settings(max_examples=examples(40), deadline=None)
@given(flows(), st.data())
def test_restore_gives_same_state(flow: Flow, data: st.DataObject) -> None:
    """After random commands, a daemon restored from the SQLite store has the same runs,
    states, owners, times, definitions, modes and attachments as the one in memory."""
    with tempfile.TemporaryDirectory() as directory:
        clock = FakeClock()
        config = open_datadir(directory, flow)
        daemon = open_daemon(config, clock)
        try:
            for conversation in CONVERSATIONS:
                daemon.execute(conversation, "alice", "load random")
            for index in range(4 * len(flow) + 10):
                clock.advance(seconds=61)
                execute_checked(daemon, *next_command(daemon, data))
                if index % 10 == 9:
                    check_restored(daemon, config, clock)
            note_depth(daemon)
            check_restored(daemon, config, clock)
        finally:
            assert daemon.store is not None and daemon.lock is not None
            daemon.store.close()
            daemon.lock.release()
