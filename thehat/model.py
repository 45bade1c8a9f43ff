"""Flow definitions: steps, their fields and the checks that make a graph of them valid.

A `StepDef` is the immutable definition of one step as a flow file states it. A `Flow` is an
ordered, validated collection of them. The mutable part of a running flow (state, owner changes,
times) lives in `thehat.engine`. This module does no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from thehat.addresses import address_problem
from thehat.clocks import owner_problem
from thehat.errors import FlowError, Problem
from thehat.names import did_you_mean, name_problem


class StepState(enum.Enum):
    """The state of a step in a run.

    The value is the word shown in ">>> alice changed state of step x to <value>" lines, kept
    from the original TheHat. A step only ever moves to a state of lower `rank`.
    """

    PENDING = "pending"
    IN_PROGRESS = "in prog"
    FINISHED = "done"
    REVERTING = "reverting"
    REVERTED = "reverted"
    FAILED = "failed"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def display(self, reverting: bool = False) -> str:
        """Return the name shown in status tables.

        Once a run reverts, finished steps await reversion and steps in progress must be
        stopped and reverted too.
        """
        if self is StepState.FINISHED:
            return "pending reversion" if reverting else "finished"
        if self is StepState.IN_PROGRESS and reverting:
            return "in prog, revert"
        return self.value


_RANKS: Final = {
    StepState.PENDING: 2,
    StepState.IN_PROGRESS: 1,
    StepState.FINISHED: 0,
    StepState.REVERTING: -1,
    StepState.REVERTED: -2,
    StepState.FAILED: -3,
}


@dataclass(frozen=True, slots=True)
class StepDef:
    """One step of a flow as its file defines it.

    Text fields are None when absent. `line` is where the step starts in its source file, for
    error messages; it takes no part in comparisons.
    """

    name: str
    description: str | None = None
    owner: str | None = None
    start_command: str | None = None
    notify_at_start: tuple[str, ...] = ()
    finish_command: str | None = None
    notify_at_finish: tuple[str, ...] = ()
    url: str | None = None
    note: str | None = None
    groups: tuple[str, ...] = ()
    gates: tuple[str, ...] = ()
    # The command that undoes a program-owned step when the run reverts.
    revert_command: str | None = None
    # Seconds that the step's commands may run; None: the configured default.
    timeout: float | None = None
    line: int | None = field(default=None, compare=False)


# File key -> StepDef attribute, in the order `save` writes them (the original's order).
FILE_KEYS: Final[dict[str, str]] = {
    "step": "name",
    "description": "description",
    "owner": "owner",
    "startCommand": "start_command",
    "notifyAtStart": "notify_at_start",
    "finishCommand": "finish_command",
    "notifyAtFinish": "notify_at_finish",
    "url": "url",
    "note": "note",
    "group": "groups",
    "gates": "gates",
    "revertCommand": "revert_command",
    "timeout": "timeout",
}
# Keys the original TheHat does not know; `save` writes them only when they have a value.
OPTIONAL_KEYS: Final = frozenset({"revertCommand", "timeout"})
TEXT_KEYS: Final = frozenset({"description", "owner", "startCommand", "finishCommand", "url",
                              "note", "revertCommand"})
NUMBER_KEYS: Final = frozenset({"timeout"})
# The maximum step timeout: a week, in seconds.
MAX_TIMEOUT: Final = 7 * 24 * 3600
# Text values reach commands as environment variables, and Linux limits one of those to
# 128 KiB (MAX_ARG_STRLEN); 32,768 characters of up to 4 bytes each stay below it.
MAX_TEXT_CHARACTERS: Final = 32_768
MAX_COMMAND_CHARACTERS: Final = 32_768
COMMAND_KEYS: Final = frozenset({"startCommand", "finishCommand", "revertCommand"})
TEXT_ATTRIBUTES: Final = {key: FILE_KEYS[key] for key in sorted(TEXT_KEYS)}
RECIPIENT_KEYS: Final = frozenset({"notifyAtStart", "notifyAtFinish"})
NAME_LIST_KEYS: Final = frozenset({"group", "gates"})


def parse_timeout(value: object) -> float | None:
    """Read a timeout: seconds greater than 0 and at most MAX_TIMEOUT, else None.

    >>> parse_timeout(" 90.5 "), parse_timeout("0"), parse_timeout("soon")
    (90.5, None, None)
    """
    try:
        seconds = float(str(value).strip())
    except ValueError:
        return None
    return seconds if 0 < seconds <= MAX_TIMEOUT else None


def find_cycle(gates: Mapping[str, Iterable[str]]) -> list[str] | None:
    """Return one cycle of the gate graph as a path that ends where it starts, or None.

    Gates naming steps outside `gates` are ignored. Iterative, so deep graphs are safe.

    >>> find_cycle({"a": ["c"], "b": ["a"], "c": ["b"]})
    ['a', 'c', 'b', 'a']
    >>> find_cycle({"a": [], "b": ["a"]}) is None
    True
    """
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(gates, white)
    for root in gates:
        if colour[root] != white:
            continue
        path = [root]
        iterators = [iter(gates[root])]
        colour[root] = grey
        while iterators:
            for gate in iterators[-1]:
                if gate not in colour:
                    continue
                if colour[gate] == grey:
                    return path[path.index(gate):] + [gate]
                if colour[gate] == white:
                    colour[gate] = grey
                    path.append(gate)
                    iterators.append(iter(gates[gate]))
                    break
            else:
                colour[path.pop()] = black
                iterators.pop()
    return None


# Close-match suggestions compare a name with every step name, so a file with thousands of
# missing gates gets suggestions for the first few only.
MAX_SUGGESTIONS: Final = 20


def graph_problems(steps: Mapping[str, StepDef]) -> list[Problem]:
    """List what makes the gates of `steps` invalid: missing steps, self-gates and cycles."""
    problems = []
    suggested = 0
    for step in steps.values():
        for gate in step.gates:
            if gate == step.name:
                problems.append(Problem(f"gates on itself ({gate!r}); remove it from 'gates'",
                                        step.line, step.name))
            elif gate not in steps:
                hint = did_you_mean(gate, steps) if suggested < MAX_SUGGESTIONS else ""
                suggested += 1
                problems.append(Problem(f"gate {gate!r} names a missing step{hint}",
                                        step.line, step.name))
    cycle = find_cycle({name: [g for g in s.gates if g != name] for name, s in steps.items()})
    if cycle is not None:
        first = steps[cycle[0]]
        problems.append(Problem(
            "gates form a cycle: " + " -> ".join(cycle) + " (each waits for the next)",
            first.line, first.name))
    return problems


def step_problems(step: StepDef, values: bool = True) -> list[Problem]:
    """List what is wrong with one step's own fields.

    Names of the step, its groups and gates are always checked. With `values`, so are the
    owner, recipients, timeout and text values (NUL characters, blank commands, overlong
    text). Runs restored from the store skip those, because older versions stored values that
    this version rejects, and a run must never be lost on restart.
    """
    problems = []
    message = name_problem(step.name)
    if message is not None:
        problems.append(Problem(message, step.line, step.name or None))
    for group in step.groups:
        message = name_problem(group, "group name")
        if message is not None:
            problems.append(Problem(message, step.line, step.name))
    for gate in step.gates:
        message = name_problem(gate, "gate name")
        if message is not None:
            problems.append(Problem(message, step.line, step.name))
    for attribute in ("description", "owner", "url"):
        value = getattr(step, attribute)
        if value is not None and ("\n" in value or "\r" in value):
            problems.append(Problem(f"{attribute} must be a single line", step.line, step.name))
    if values:
        problems.extend(_value_problems(step))
    return problems


def _value_problems(step: StepDef) -> list[Problem]:
    problems = []
    for key, attribute in TEXT_ATTRIBUTES.items():
        value = getattr(step, attribute)
        if value is None:
            continue
        message = text_problem(value, MAX_COMMAND_CHARACTERS if key in COMMAND_KEYS
                               else MAX_TEXT_CHARACTERS)
        if message is None and key in COMMAND_KEYS and not value.strip():
            message = "is blank; remove the key or write a command"
        if message is not None:
            problems.append(Problem(f"{key} {message}", step.line, step.name))
    message = owner_problem(step.owner)
    if message is not None:
        problems.append(Problem(f"owner: {message}", step.line, step.name))
    for key, recipients in (("notifyAtStart", step.notify_at_start),
                            ("notifyAtFinish", step.notify_at_finish)):
        for address in recipients:
            message = address_problem(address)
            if message is not None:
                problems.append(Problem(f"{key}: {message}", step.line, step.name))
    if step.timeout is not None and not 0 < step.timeout <= MAX_TIMEOUT:
        problems.append(Problem(f"timeout is {step.timeout:g}; give a number of seconds "
                                f"greater than 0 and at most {MAX_TIMEOUT}", step.line,
                                step.name))
    return problems


def text_problem(value: str, limit: int = MAX_TEXT_CHARACTERS) -> str | None:
    """Return why a text value cannot reach a command's environment, or None.

    >>> text_problem("ok"), text_problem("a\\x00b")
    (None, 'contains a NUL character')
    """
    if "\x00" in value:
        return "contains a NUL character"
    if len(value) > limit:
        return f"is {len(value):,} characters long; the limit is {limit:,}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a character that is not valid Unicode (a lone surrogate)"
    return None


class Flow:
    """An ordered, validated set of step definitions.

    Construction checks every step and the graph and raises `FlowError` listing all problems.
    Without `check_values`, only names and the graph are checked (see `step_problems`).
    """

    __slots__ = ("_steps",)

    def __init__(self, steps: Iterable[StepDef], source: str | None = None,
                 check_values: bool = True) -> None:
        ordered: dict[str, StepDef] = {}
        problems: list[Problem] = []
        for step in steps:
            problems.extend(step_problems(step, check_values))
            if step.name in ordered:
                first = ordered[step.name].line
                where = f" (first defined on line {first})" if first is not None else ""
                problems.append(Problem(f"duplicate step name {step.name!r}{where}",
                                        step.line, step.name))
                continue
            ordered[step.name] = step
        if not problems:
            problems.extend(graph_problems(ordered))
        if problems:
            raise FlowError(problems, source)
        self._steps = ordered

    @property
    def steps(self) -> Mapping[str, StepDef]:
        return self._steps

    def __len__(self) -> int:
        return len(self._steps)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._steps.values())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Flow):
            return NotImplemented
        return list(self._steps.values()) == list(other._steps.values())

    def __repr__(self) -> str:
        return f"Flow({list(self._steps)!r})"
