"""The engine: one run of a flow, its states, ownership, gating and reversion.

Pure and synchronous: no I/O, no threads, time from an injected clock. Every public mutator
validates the request, applies it and returns the events it caused, or raises `Refusal` (or
`FlowError` for an invalid edit) and changes nothing.

Gating is kept incrementally so that a state change costs in proportion to the step's neighbours:

- forward, `_unmet[x]` counts the gates of x that have not finished; a pending or in-progress
  step with no unmet gate is actionable;
- after a failure the run reverts. `_blocking[p]` counts the successors of p that were started
  and are not yet reverted; a started step (in progress, finished or reverting) with no blocking
  successor is actionable, so finished work is undone in reverse dependency order. Steps that
  never started are excluded and never need reverting. The failed step itself stays failed.

`actionable` is the set of steps that need someone's attention now, the rows of the status table.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from thehat.clocks import owner_problem
from thehat.errors import FlowError, Problem, Refusal
from thehat.events import Event, EventKind
from thehat.model import (Flow, StepDef, StepState, find_cycle, step_problems,
                          text_problem)
from thehat.names import did_you_mean

log = logging.getLogger(__name__)

STARTED_STATES = frozenset({StepState.IN_PROGRESS, StepState.FINISHED, StepState.REVERTING})
FORWARD_STATES = frozenset({StepState.PENDING, StepState.IN_PROGRESS})


class Clock(Protocol):
    """A source of the current time as an aware datetime."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class UnknownStep(Refusal):
    """A command named a step that the run does not have.

    The close-match suggestion in the message compares the name with every step name, so it
    is computed only when the message is read; `plain_message` leaves it out.
    """

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(name)

    def plain_message(self) -> str:
        return f"No step named {self.name!r}; state unchanged."

    def __str__(self) -> str:
        return (f"No step named {self.name!r}{did_you_mean(self.name, self.known)}; "
                "state unchanged.")


class NotOwner(Refusal):
    """A speaker tried to change the state of a step someone else owns.

    Whether the speaker may take the step over depends on their role, which the engine does
    not know, so `message` words the hint for either case.
    """

    def __init__(self, step: str, owner: str) -> None:
        self.step = step
        self.owner = owner
        super().__init__(self.message(can_take_over=True))

    def message(self, can_take_over: bool) -> str:
        hint = (f"to take it over: gimme {self.step}" if can_take_over
                else f"ask {self.owner} or an admin to give it to you")
        return (f"Step {self.step} is owned by {self.owner}; only {self.owner} can change "
                f"its state ({hint}).")


@dataclass(slots=True)
class Modes:
    """The switches of a run's automation, which `run`, `stop` and friends change.

    `clocks` lets clock and program owners act; `notifications` sends step mail;
    `idle_minutes` re-posts the status after that many quiet minutes (0: never).
    """

    clocks: bool = False
    notifications: bool = False
    idle_minutes: int = 5


@dataclass(slots=True)
class RunStep:
    """The mutable part of one step in a run."""

    definition: StepDef
    state: StepState = StepState.PENDING
    owner: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    failed_at: datetime | None = None
    reverted_at: datetime | None = None

    @property
    def name(self) -> str:
        return self.definition.name

    def duration_minutes(self, now: datetime) -> int:
        """Whole minutes from start to finish, or to now while unfinished; 0 if never started."""
        if self.started_at is None:
            return 0
        end = self.finished_at or self.failed_at or now
        return max(0, int((end - self.started_at).total_seconds() // 60))


class Run:
    """One run of a flow: the definition plus every step's state, owner and times.

    `failed_step` is None while the run goes forward, and names the failed step once the run
    reverts. A run never goes back to forward; load the flow again to start over.
    `max_steps` (None: no limit) caps how far `add_step` lets the flow grow; a flow loaded
    with more steps keeps them.
    """

    def __init__(self, name: str, flow: Flow, clock: Clock | None = None,
                 source: str | None = None, modes: Modes | None = None,
                 max_steps: int | None = None) -> None:
        self.name = name
        self.source = source
        self.clock: Clock = clock or SystemClock()
        self.modes = modes or Modes()
        self.max_steps = max_steps
        self.failed_step: str | None = None
        self.steps: dict[str, RunStep] = {
            step.name: RunStep(step, owner=step.owner) for step in flow
        }
        self._actionable: set[str] = set()
        self._rebuild()

    @classmethod
    def restored(cls, name: str, steps: list[RunStep], failed_step: str | None,
                 clock: Clock | None = None, source: str | None = None,
                 modes: Modes | None = None, max_steps: int | None = None) -> Run:
        """Rebuild a run from stored steps (definitions, states, owners and times).

        Raises FlowError if the stored names or gates do not form a valid flow. Values that
        this version would reject in a flow file (an owner, an address) are kept as stored,
        and so are steps beyond `max_steps`.
        """
        flow = Flow((step.definition for step in steps), check_values=False)
        run = cls(name, flow, clock, source, modes, max_steps)
        run.steps = {step.name: step for step in steps}
        run.failed_step = failed_step
        run._rebuild()
        return run

    # -- queries ----------------------------------------------------------------------------

    @property
    def reverting(self) -> bool:
        return self.failed_step is not None

    @property
    def ended(self) -> bool:
        """True when steps exist and none needs attention: all finished, or all reverted."""
        return bool(self.steps) and not self._actionable

    def step(self, name: str) -> RunStep:
        """Return the step called `name`; raise `UnknownStep` with close matches otherwise."""
        try:
            return self.steps[name]
        except KeyError:
            raise UnknownStep(name, self.steps) from None

    def actionable(self) -> list[RunStep]:
        """Return the steps that need attention now, in flow order."""
        return [self.steps[n] for n in sorted(self._actionable, key=self._position.__getitem__)]

    def is_actionable(self, name: str) -> bool:
        return name in self._actionable

    def waiting_for(self, name: str) -> list[str]:
        """Name the steps that hold `name` back in the current direction, in flow order."""
        step = self.step(name)
        if self.reverting:
            return [s for s in self._successors[name] if self.steps[s].state in STARTED_STATES]
        return [g for g in step.definition.gates if self.steps[g].state is not StepState.FINISHED]

    def dependants(self, name: str) -> list[str]:
        """Name the steps that gate on `name`, in flow order."""
        return list(self._successors[name])

    def counts(self) -> Counter[StepState]:
        """Return the number of steps in each state (kept up to date, so this is cheap)."""
        return +self._counts

    def groups(self) -> list[str]:
        """Return every group name used by a step, in order of first use."""
        return list(dict.fromkeys(g for s in self.steps.values() for g in s.definition.groups))

    def steps_in_groups(self, groups: Iterable[str]) -> list[RunStep]:
        """Return the steps tagged with any of `groups`, each once, in flow order."""
        wanted = set(groups)
        return [s for s in self.steps.values() if wanted.intersection(s.definition.groups)]

    def flow(self) -> Flow:
        """Return the current definition, with current owners, as a flow that can be saved."""
        return Flow(dataclasses.replace(s.definition, owner=s.owner) for s in self.steps.values())

    def clone(self) -> Run:
        """Return an independent copy, for simulations that must leave this run untouched.

        Step definitions are immutable, so the copy shares them.
        """
        twin = copy.copy(self)
        twin.modes = dataclasses.replace(self.modes)
        twin.steps = {name: dataclasses.replace(step) for name, step in self.steps.items()}
        twin._unmet = dict(self._unmet)
        twin._blocking = dict(self._blocking)
        twin._actionable = set(self._actionable)
        twin._counts = Counter(self._counts)
        return twin

    # -- ownership --------------------------------------------------------------------------

    def set_owner(self, name: str, owner: str | None, actor: str) -> list[Event]:
        """Make `owner` (None: unassigned) the owner of step `name`.

        Anyone may assign any step, in any state, to anyone, as in the original.
        """
        step = self.step(name)
        if owner is not None and ("\n" in owner or "\r" in owner):
            raise Refusal(f"An owner must be a single line; {owner!r} is not.")
        # The same check as an owner in a flow file, so that the store can write every owner.
        problem = text_problem(owner) if owner is not None else None
        if problem is not None:
            raise Refusal(f"The owner {owner!r} {problem}; the owner of {name} is unchanged.")
        problem = owner_problem(owner or None)
        if problem is not None:
            raise Refusal(f"{problem[0].upper()}{problem[1:]}; the owner of {name} is unchanged.")
        old, step.owner = step.owner, owner or None
        return [self._event(EventKind.OWNER_CHANGED, actor, name, old=old, new=step.owner)]

    def hand_off(self, name: str, actor: str) -> list[Event]:
        """Clear the owner of a step that a handoff clock has started, for a person to claim."""
        step = self.step(name)
        old, step.owner = step.owner, None
        return [self._event(EventKind.OWNER_CHANGED, actor, name, old=old, new=None,
                            handoff=True)]

    # -- forward progress -------------------------------------------------------------------

    def start(self, name: str, actor: str) -> list[Event]:
        """Move a ready, pending step to in progress."""
        step = self.step(name)
        if self.reverting:
            raise Refusal(f"Don't start {name}: {self.failed_step} failed and the flow is "
                          "reverting; revert the steps the status lists instead.")
        self._check_owner(step, actor)
        if step.state is not StepState.PENDING:
            raise Refusal(f"Step {name} is already {step.state.display()}; it cannot start again.")
        self._check_forward_gates(step)

        self._move(step, StepState.IN_PROGRESS)
        step.started_at = self.clock.now()
        return [self._event(EventKind.STEP_STARTED, actor, name)]

    def finish(self, name: str, actor: str) -> list[Event]:
        """Finish a ready step, started or not, and release the steps that wait for it."""
        step = self.step(name)
        if self.reverting:
            raise Refusal(f"Don't finish {name}: {self.failed_step} failed and the flow is "
                          "reverting; revert this step if it was started.")
        self._check_owner(step, actor)
        if step.state not in FORWARD_STATES:
            raise Refusal(f"Step {name} is already {step.state.display()}.")
        self._check_forward_gates(step)

        now = self.clock.now()
        self._move(step, StepState.FINISHED)
        step.finished_at = now
        if step.started_at is None:
            step.started_at = now
        self._actionable.discard(name)
        events = [self._event(EventKind.STEP_FINISHED, actor, name)]
        for successor in self._successors[name]:
            self._unmet[successor] -= 1
            if self._unmet[successor] == 0 and self.steps[successor].state in FORWARD_STATES:
                self._actionable.add(successor)
                events.append(self._ready_event(successor, actor))
        return events + self._end_events(actor)

    def fail(self, name: str, actor: str) -> list[Event]:
        """Mark a ready or in-progress step failed and turn the run into reversion.

        Steps that never started are excluded. Every started step must then be reverted, each
        once every started successor of it has been reverted.
        """
        step = self.step(name)
        if self.reverting:
            raise Refusal(f"The flow is already reverting after {self.failed_step} failed; "
                          f"{name} cannot fail as well.")
        self._check_owner(step, actor)
        if step.state not in FORWARD_STATES:
            raise Refusal(f"Step {name} is {step.state.display()}; only a ready or in-progress "
                          "step can fail.")
        self._check_forward_gates(step)

        in_progress = [[s.name, s.owner] for s in self.steps.values()
                       if s.state is StepState.IN_PROGRESS]
        events = [self._event(EventKind.REVERSION_STARTED, actor, name, in_progress=in_progress)]
        self._move(step, StepState.FAILED)
        step.failed_at = self.clock.now()
        self.failed_step = name
        self._rebuild()
        events.append(self._event(EventKind.STEP_FAILED, actor, name))
        events.extend(self._ready_event(s.name, actor) for s in self.actionable())
        return events + self._end_events(actor)

    # -- reversion --------------------------------------------------------------------------

    def mark_reverting(self, name: str, actor: str) -> list[Event]:
        """Record that someone has begun to undo a started step (optional before `revert`)."""
        step = self._check_revertable(name, actor, StepState.REVERTING)
        self._move(step, StepState.REVERTING)
        return [self._event(EventKind.STEP_REVERTING, actor, name)]

    def revert(self, name: str, actor: str) -> list[Event]:
        """Mark a started step reverted and release the steps it held back."""
        step = self._check_revertable(name, actor, StepState.REVERTED)
        self._move(step, StepState.REVERTED)
        step.reverted_at = self.clock.now()
        self._actionable.discard(name)
        events = [self._event(EventKind.STEP_REVERTED, actor, name)]
        for gate in step.definition.gates:
            self._blocking[gate] -= 1
            if self._blocking[gate] == 0 and self.steps[gate].state in STARTED_STATES:
                self._actionable.add(gate)
                events.append(self._ready_event(gate, actor))
        return events + self._end_events(actor)

    # -- editing ----------------------------------------------------------------------------

    def add_step(self, definition: StepDef, actor: str) -> list[Event]:
        """Add a new pending step at the end of the flow, unless it has `max_steps` already."""
        if definition.name in self.steps:
            raise Refusal(f"Step {definition.name} already exists; pick another name or edit it "
                          "with set.")
        if self.max_steps is not None and len(self.steps) >= self.max_steps:
            raise Refusal(f"Flow {self.name} has {len(self.steps):,} steps, the limit "
                          f"(limits.maxFlowSteps is {self.max_steps:,}), so {definition.name} "
                          "was not added; delete steps, or raise limits.maxFlowSteps in the "
                          "configuration.")
        self._check_definition(definition, definition)
        self.steps[definition.name] = RunStep(definition, owner=definition.owner)
        return self._edited([self._event(EventKind.STEP_ADDED, actor, definition.name)], actor)

    def remove_step(self, name: str, actor: str, force: bool = False) -> list[Event]:
        """Delete a step. If others gate on it, refuse unless `force`, which drops those gates.

        The failed step of a reverting run cannot be deleted: the run reverts because of it.
        """
        step = self.step(name)
        if name == self.failed_step:
            raise Refusal(f"Step {name} failed, and the flow reverts because of it, so it "
                          "cannot be deleted; say reload to start the flow over.")
        if self.reverting and step.state in STARTED_STATES:
            raise Refusal(f"Step {name} was started and is not reverted yet; revert it before "
                          "deleting it.")
        dependants = self.dependants(name)
        if dependants and not force:
            raise Refusal(f"Step {name} gates {', '.join(dependants)}; deleting it would drop "
                          f"those gates. Say delstep {name} force to delete it anyway.")
        del self.steps[name]
        for dependant in dependants:
            step = self.steps[dependant]
            gates = tuple(g for g in step.definition.gates if g != name)
            step.definition = dataclasses.replace(step.definition, gates=gates)
        event = self._event(EventKind.STEP_REMOVED, actor, name, dependants=dependants)
        return self._edited([event], actor)

    def update_step(self, name: str, actor: str, **changes: Any) -> list[Event]:
        """Replace fields of a step definition (any `StepDef` field but `name` and `owner`).

        Gates are checked like a flow file's: no missing step, no self-gate, no cycle.
        """
        step = self.step(name)
        if "name" in changes or "owner" in changes:
            raise ValueError("use rename_step or set_owner to change a step's name or owner")
        new = dataclasses.replace(step.definition, **changes)
        self._check_definition(new, step.definition)
        if step.state is not StepState.PENDING:
            unfinished = [g for g in new.gates if g not in step.definition.gates
                          and self.steps[g].state is not StepState.FINISHED]
            if unfinished:
                raise Refusal(f"Step {name} is {step.state.display(self.reverting)}, so it "
                              f"cannot wait for {', '.join(unfinished)}, which "
                              f"{'has' if len(unfinished) == 1 else 'have'} not finished.")
        events = []
        for field_name, value in changes.items():
            old = getattr(step.definition, field_name)
            if old != value:
                events.append(self._event(EventKind.STEP_EDITED, actor, name,
                                          field=field_name, old=old, new=value))
        step.definition = new
        return self._edited(events, actor)

    def rename_step(self, name: str, new_name: str, actor: str) -> list[Event]:
        """Give a step a new name and update every gate that names it."""
        step = self.step(name)
        if new_name in self.steps:
            raise Refusal(f"Step {new_name} already exists; pick another name.")
        renamed = dataclasses.replace(step.definition, name=new_name)
        problems = step_problems(dataclasses.replace(renamed, line=None))
        if problems:
            raise FlowError(problems)
        self.steps = {
            (new_name if key == name else key): value for key, value in self.steps.items()
        }
        step.definition = renamed
        for dependant in self._successors[name]:
            other = self.steps[dependant]
            gates = tuple(new_name if g == name else g for g in other.definition.gates)
            other.definition = dataclasses.replace(other.definition, gates=gates)
        if self.failed_step == name:
            self.failed_step = new_name
        if name in self._actionable:
            # The renamed step was ready before, so it must not be announced as newly ready.
            self._actionable = (self._actionable - {name}) | {new_name}
        event = self._event(EventKind.STEP_EDITED, actor, new_name,
                            field="name", old=name, new=new_name)
        return self._edited([event], actor)

    # -- internals --------------------------------------------------------------------------

    def _move(self, step: RunStep, state: StepState) -> None:
        self._counts[step.state] -= 1
        self._counts[state] += 1
        step.state = state

    def _event(self, kind: EventKind, actor: str | None, step: str | None = None,
               **detail: Any) -> Event:
        return Event(kind, self.clock.now(), actor, step, detail)

    def _ready_event(self, name: str, actor: str | None) -> Event:
        step = self.steps[name]
        return self._event(EventKind.STEP_READY, actor, name, reverting=self.reverting,
                           owner=step.owner, groups=list(step.definition.groups),
                           revert_command=step.definition.revert_command is not None)

    def _end_events(self, actor: str) -> list[Event]:
        if not self.ended:
            return []
        counts = {state.value: n for state, n in self.counts().items()}
        log.info("flow %s ended (%s)", self.name, "reverted" if self.reverting else "finished")
        return [self._event(EventKind.FLOW_ENDED, actor, reverting=self.reverting, counts=counts)]

    def _check_owner(self, step: RunStep, actor: str) -> None:
        if step.owner is None:
            raise Refusal(f"Step {step.name} is unassigned; {actor} must take it first "
                          f"(gimme {step.name}).")
        if step.owner != actor:
            raise NotOwner(step.name, step.owner)

    def _check_forward_gates(self, step: RunStep) -> None:
        if self._unmet[step.name]:
            waiting = ", ".join(self.waiting_for(step.name))
            raise Refusal(f"Step {step.name} is gated: it waits for {waiting} to finish.")

    def _check_revertable(self, name: str, actor: str, target: StepState) -> RunStep:
        step = self.step(name)
        if not self.reverting:
            raise Refusal(f"The flow is not reverting, so {name} cannot be reverted; a step "
                          "must fail first.")
        self._check_owner(step, actor)
        if step.state is StepState.PENDING:
            raise Refusal(f"Step {name} never started, so there is nothing to revert.")
        if step.state is target:
            raise Refusal(f"Step {name} is already {target.value}.")
        if step.state.rank < target.rank:
            raise Refusal(f"Step {name} is {step.state.display(True)}; it cannot become "
                          f"{target.value}.")
        if self._blocking[name]:
            waiting = ", ".join(self.waiting_for(name))
            raise Refusal(f"Step {name} is gated: revert {waiting} first.")
        return step

    def _check_definition(self, new: StepDef, old: StepDef) -> None:
        """Raise FlowError if `new` (replacing `old`) breaks a name rule or the gate graph."""
        # The line a step came from means nothing in a chat reply, so it is left out.
        problems = step_problems(dataclasses.replace(new, line=None))
        for gate in new.gates:
            if gate == new.name:
                problems.append(Problem(f"a step cannot gate on itself ({gate!r})", step=new.name))
            elif gate not in self.steps:
                problems.append(Problem(f"gate {gate!r} names a missing step"
                                        f"{did_you_mean(gate, self.steps)}", step=new.name))
        if problems:
            raise FlowError(problems)
        if new.gates != old.gates or new.name not in self.steps:
            graph = {n: s.definition.gates for n, s in self.steps.items()}
            graph[new.name] = new.gates
            cycle = find_cycle(graph)
            if cycle is not None:
                raise FlowError([Problem("gates would form a cycle: " + " -> ".join(cycle),
                                         step=new.name)])

    def _edited(self, events: list[Event], actor: str) -> list[Event]:
        """Recompute gating after an edit and report steps that became ready through it."""
        before = set(self._actionable)
        self._rebuild()
        events.extend(self._ready_event(n, actor) for n in self._actionable - before
                      if n in self.steps)
        return events

    def _rebuild(self) -> None:
        """Recompute positions, successors, gate counters and the actionable set from scratch."""
        self._position = {name: i for i, name in enumerate(self.steps)}
        self._successors: dict[str, list[str]] = {name: [] for name in self.steps}
        for name, step in self.steps.items():
            for gate in step.definition.gates:
                self._successors[gate].append(name)
        self._unmet = {
            name: sum(self.steps[g].state is not StepState.FINISHED for g in s.definition.gates)
            for name, s in self.steps.items()
        }
        self._blocking = {
            name: sum(self.steps[x].state in STARTED_STATES for x in successors)
            for name, successors in self._successors.items()
        }
        self._counts = Counter(s.state for s in self.steps.values())
        if self.reverting:
            self._actionable = {n for n, s in self.steps.items()
                                if s.state in STARTED_STATES and not self._blocking[n]}
        else:
            self._actionable = {n for n, s in self.steps.items()
                                if s.state in FORWARD_STATES and not self._unmet[n]}
