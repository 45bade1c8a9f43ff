"""The clock pass: every clock type, the 0/0/0 rule, chains and reversion, on an injected clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from tests.helpers import FakeClock
from thehat.clockwork import advance_clocks, clock_time, next_clock_time
from thehat.engine import Run
from thehat.events import EventKind
from thehat.model import Flow, StepDef, StepState

UTC = timezone.utc
START = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)
ASAP = "0/0/0@0:0:0"


def make_run(*steps: StepDef) -> tuple[Run, FakeClock]:
    clock = FakeClock(START)
    return Run("clocks", Flow(steps), clock), clock


def tick(run: Run, clock: FakeClock) -> list[tuple[EventKind, str | None]]:
    return [(e.kind, e.step) for e in advance_clocks(run, clock.now(), UTC)]


def state(run: Run, name: str) -> StepState:
    return run.steps[name].state


def test_alarm_waits_for_its_time() -> None:
    run, clock = make_run(StepDef("announce", owner="clock-alarm:12/5/2026@2:30:0"))

    assert tick(run, clock) == []
    clock.advance(minutes=29, seconds=59)
    assert tick(run, clock) == []
    clock.advance(seconds=1)
    events = tick(run, clock)

    assert (EventKind.STEP_STARTED, "announce") in events
    assert (EventKind.STEP_FINISHED, "announce") in events
    assert state(run, "announce") is StepState.FINISHED


def test_alarm_actor_is_clock() -> None:
    owner = f"clock-alarm:{ASAP}"
    run, clock = make_run(StepDef("now", owner=owner))

    events = advance_clocks(run, clock.now(), UTC)

    assert {e.actor for e in events if e.step == "now"} == {owner}


def test_asap_clock_waits_for_gates() -> None:
    run, clock = make_run(StepDef("manual", owner="alice"),
                          StepDef("after", owner=f"clock-alarm:{ASAP}", gates=("manual",)))

    assert tick(run, clock) == []
    run.finish("manual", "alice")
    tick(run, clock)

    assert state(run, "after") is StepState.FINISHED


def test_iso_alarm_in_zone() -> None:
    run, clock = make_run(StepDef("a", owner="clock-alarm:2026-12-05T03:10+01:00"))

    clock.advance(minutes=9)
    assert tick(run, clock) == []
    clock.advance(minutes=1)
    tick(run, clock)

    assert state(run, "a") is StepState.FINISHED


def test_chain_advances_in_one_tick() -> None:
    steps = [StepDef("s0", owner=f"clock-alarm:{ASAP}")]
    steps += [StepDef(f"s{i}", owner=f"clock-alarm:{ASAP}", gates=(f"s{i - 1}",))
              for i in range(1, 20)]
    run, clock = make_run(*steps)

    tick(run, clock)

    assert all(step.state is StepState.FINISHED for step in run.steps.values())
    assert run.ended


def test_handoff_clears_owner() -> None:
    owner = f"clock-handoff:{ASAP}"
    run, clock = make_run(StepDef("verify", owner=owner))

    events = advance_clocks(run, clock.now(), UTC)

    assert state(run, "verify") is StepState.IN_PROGRESS
    assert run.steps["verify"].owner is None
    assert events[-1].kind is EventKind.OWNER_CHANGED
    assert events[-1].detail["handoff"] is True
    assert tick(run, clock) == []
    run.set_owner("verify", "bob", "bob")
    run.finish("verify", "bob")
    assert state(run, "verify") is StepState.FINISHED


def test_handoff_at_time() -> None:
    run, clock = make_run(StepDef("verify", owner="clock-handoff:12/5/2026@2:14:0"))

    assert tick(run, clock) == []
    clock.advance(minutes=14)
    tick(run, clock)

    assert state(run, "verify") is StepState.IN_PROGRESS
    assert run.steps["verify"].owner is None


def test_wait_spans_until_next_clock() -> None:
    run, clock = make_run(
        StepDef("wait", owner=f"clock-wait:{ASAP}"),
        StepDef("cutover", owner="clock-alarm:12/5/2026@3:0:0", gates=("wait",)))

    tick(run, clock)
    assert state(run, "wait") is StepState.IN_PROGRESS

    clock.advance(minutes=59)
    assert tick(run, clock) == []
    clock.advance(minutes=1)
    tick(run, clock)

    assert state(run, "wait") is StepState.FINISHED
    assert state(run, "cutover") is StepState.FINISHED


def test_wait_ignores_person_and_stopwatch_successors() -> None:
    run, clock = make_run(
        StepDef("wait", owner=f"clock-wait:{ASAP}"),
        StepDef("manual", owner="alice", gates=("wait",)),
        StepDef("timer", owner="clock-stopwatch:0/0/0@0:0:5", gates=("wait",)))

    tick(run, clock)
    clock.advance(days=30)
    tick(run, clock)

    assert state(run, "wait") is StepState.IN_PROGRESS


def test_wait_with_past_successor_finishes() -> None:
    # The original's own trial: wt2 (wait 2000) -> past (alarm 2001) both finish in one go.
    run, clock = make_run(
        StepDef("wt2", owner="clock-wait:1/1/2000@0:0:0"),
        StepDef("past", owner="clock-alarm:1/1/2001@0:0:0", gates=("wt2",)))

    tick(run, clock)

    assert state(run, "wt2") is StepState.FINISHED
    assert state(run, "past") is StepState.FINISHED


def test_stopwatch_runs_its_duration() -> None:
    run, clock = make_run(StepDef("soak", owner="clock-stopwatch:12/31/2099@0:10:0"))

    tick(run, clock)
    assert state(run, "soak") is StepState.IN_PROGRESS
    clock.advance(minutes=9, seconds=59)
    assert tick(run, clock) == []
    clock.advance(seconds=1)
    tick(run, clock)

    assert state(run, "soak") is StepState.FINISHED


def test_stopwatch_starts_when_ungated() -> None:
    run, clock = make_run(StepDef("first", owner="alice"),
                          StepDef("soak", owner="clock-stopwatch:PT30S", gates=("first",)))

    tick(run, clock)
    assert state(run, "soak") is StepState.PENDING
    clock.advance(minutes=5)
    run.finish("first", "alice")
    tick(run, clock)
    assert run.steps["soak"].started_at == clock.now()
    clock.advance(seconds=30)
    tick(run, clock)

    assert state(run, "soak") is StepState.FINISHED


def test_event_lasts_its_minutes() -> None:
    run, clock = make_run(StepDef("window", owner="clock-event-30:12/5/2026@2:10:0"))

    clock.advance(minutes=10)
    tick(run, clock)
    assert state(run, "window") is StepState.IN_PROGRESS
    clock.advance(minutes=29)
    assert tick(run, clock) == []
    clock.advance(minutes=1)
    tick(run, clock)

    assert state(run, "window") is StepState.FINISHED


def test_event_counts_from_its_time() -> None:
    # Started late (it was gated), the event still ends 30 minutes after its clock time.
    run, clock = make_run(StepDef("gate", owner="alice"),
                          StepDef("window", owner="clock-event-30:12/5/2026@2:00:0",
                                  gates=("gate",)))

    clock.advance(minutes=20)
    run.finish("gate", "alice")
    tick(run, clock)
    assert state(run, "window") is StepState.IN_PROGRESS
    clock.advance(minutes=10)
    tick(run, clock)

    assert state(run, "window") is StepState.FINISHED


def test_asap_event_counts_from_start() -> None:
    run, clock = make_run(StepDef("window", owner=f"clock-event-5:{ASAP}"))

    tick(run, clock)
    clock.advance(minutes=4)
    tick(run, clock)
    assert state(run, "window") is StepState.IN_PROGRESS
    clock.advance(minutes=1)
    tick(run, clock)

    assert state(run, "window") is StepState.FINISHED


def test_original_trial_sequence() -> None:
    # sw (stopwatch 2 s) -> ho (handoff 0/0/0) and wt (wait 0/0/0) -> future (alarm 2099).
    run, clock = make_run(
        StepDef("sw", owner="clock-stopwatch:0/0/0@0:0:2"),
        StepDef("ho", owner=f"clock-handoff:{ASAP}", gates=("sw",)),
        StepDef("wt", owner=f"clock-wait:{ASAP}", gates=("sw",)),
        StepDef("future", owner="clock-alarm:1/1/2099@0:0:0", gates=("wt",)))

    tick(run, clock)
    assert state(run, "sw") is StepState.IN_PROGRESS
    clock.advance(seconds=2)
    tick(run, clock)

    assert state(run, "sw") is StepState.FINISHED
    assert state(run, "ho") is StepState.IN_PROGRESS
    assert run.steps["ho"].owner is None
    assert state(run, "wt") is StepState.IN_PROGRESS
    assert state(run, "future") is StepState.PENDING


def test_clocks_idle_during_reversion() -> None:
    run, clock = make_run(
        StepDef("timer", owner="clock-stopwatch:0/0/0@0:1:0"),
        StepDef("risky", owner="alice"),
        StepDef("later", owner=f"clock-alarm:{ASAP}", gates=("risky",)))
    tick(run, clock)
    run.fail("risky", "alice")

    clock.advance(hours=1)

    assert tick(run, clock) == []
    assert tick(run, clock) == []
    assert state(run, "timer") is StepState.IN_PROGRESS
    assert state(run, "later") is StepState.PENDING


def test_person_and_program_owners_ignored() -> None:
    run, clock = make_run(StepDef("a", owner="alice"), StepDef("b", owner="program:true"),
                          StepDef("c"))

    assert tick(run, clock) == []


def test_clock_time_takes_latest_clock_gate() -> None:
    run, clock = make_run(
        StepDef("early", owner="clock-alarm:12/5/2026@3:0:0"),
        StepDef("late", owner="clock-alarm:12/5/2026@4:0:0"),
        StepDef("timer", owner="clock-stopwatch:PT1H"),
        StepDef("follow", owner=f"clock-alarm:{ASAP}", gates=("early", "late", "timer")))

    assert clock_time(run, "follow", UTC) == START + timedelta(hours=2)
    clock.advance(hours=2)
    tick(run, clock)
    assert clock_time(run, "follow", UTC) is None


def test_clock_time_long_chain() -> None:
    steps = [StepDef("s0", owner="clock-alarm:12/5/2026@9:0:0")]
    steps += [StepDef(f"s{i}", owner=f"clock-alarm:{ASAP}", gates=(f"s{i - 1}",))
              for i in range(1, 5000)]
    run, _ = make_run(*steps)

    assert clock_time(run, "s4999", UTC) == START + timedelta(hours=7)


def test_next_clock_time() -> None:
    run, clock = make_run(StepDef("b", owner="clock-alarm:12/5/2026@4:0:0"),
                          StepDef("a", owner="clock-alarm:12/5/2026@3:0:0"),
                          StepDef("c", owner="alice"))

    upcoming = next_clock_time(run, clock.now(), UTC)

    assert upcoming is not None
    assert upcoming[0].name == "a"
    assert upcoming[1] == START + timedelta(hours=1)
