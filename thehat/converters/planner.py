"""Import a GNOME Planner project (XML, `mrproject-version="2"`) as a flow.

Every `<task>` becomes one step, in file order, and these rules apply:

- Name: `task<id>`, or with `names="slug"` a slug of the task name. A slug has lower-case
  ASCII letters, digits, `_`, `-` and `.` only, loses accents, and is made unique with `-2`,
  `-3`, ... A task whose name has no usable character keeps `task<id>`.
- Description: the task name, unchanged (line breaks become spaces, with a warning).
- Owner: the name of the resource allocated to the task. With several allocations the first
  in the file wins and a warning names the others. A resource called `clock-...` or
  `program:...` makes the step a clock or program step.
- Gates: the task's predecessors. Finish-to-start without lag is exact. Start-to-start,
  finish-to-finish, start-to-finish and any lag or lead become ordinary gates (the step waits
  for the predecessor to finish), with one warning per task.
- Milestones become ordinary steps in the group `milestone`.
- Summary tasks (tasks with sub-tasks) are flattened. Each becomes a step gated on its direct
  children. Its own predecessors are added to the gates of each direct child that has no
  predecessor inside the summary task, so nothing inside starts before the summary could.
  The summary step and every step inside it get a group named after the summary task (its
  slug). A warning lists the summary tasks.
- Note: a note that is a YAML mapping of flow-file keys (all but `step`) sets those fields,
  overriding the derived ones. Its `gates` are added to the predecessor gates, and name a
  task either by step name or as `task<id>`. Any other note is kept as the step's `note` text.

Start and end dates, work, calendars, priorities and costs are ignored: a flow has no schedule.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Set
from dataclasses import dataclass, field
from typing import Final, Literal

from thehat.converters.conversion import Conversion, ConversionError, as_bytes, build_flow
from thehat.converters.stepfields import read_step_fields, step_arguments
from thehat.converters.xmltree import XmlDocument, parse_xml
from thehat.model import FILE_KEYS, StepDef

NOTE_KEYS: Final = frozenset(FILE_KEYS) - {"step"}
MILESTONE_GROUP: Final = "milestone"
# Summary tasks nested deeper than this are rejected.
MAX_NESTING: Final = 50
DEPENDENCY_TYPES: Final = {
    "FS": "finish-to-start",
    "SS": "start-to-start",
    "FF": "finish-to-finish",
    "SF": "start-to-finish",
}
_SLUG_SEPARATORS: Final = re.compile(r"[^a-z0-9_.]+")
_LINE_BREAKS: Final = re.compile(r"\r\n|[\r\n\x85\u2028\u2029]")


@dataclass
class _Dependency:
    task_id: str
    type: str
    lag: int
    line: int


@dataclass
class _Task:
    id: str
    name: str
    note: str
    milestone: bool
    line: int
    # Position in file order, and the position of the last task nested inside this one, so
    # that "is inside" is a comparison of positions.
    position: int
    last_descendant: int = -1
    parent: _Task | None = None
    children: list[_Task] = field(default_factory=list)
    dependencies: list[_Dependency] = field(default_factory=list)
    step_name: str = ""

    def contains(self, other: _Task) -> bool:
        return self.position < other.position <= self.last_descendant


def import_planner(text: str | bytes, source: str,
                   names: Literal["id", "slug"] = "id") -> Conversion:
    """Convert the Planner file `text` (read from `source`) to a flow, by the rules above.

    Raises ConversionError naming `source` and a line when the file is too large, is not
    well-formed XML, has a DOCTYPE or is not a Planner project. It is raised too when the file
    names a task or resource that does not exist, or gives an invalid flow (a dependency
    cycle, an invalid clock).
    """
    if names not in ("id", "slug"):
        raise ValueError(f"names must be 'id' or 'slug', not {names!r}")
    data = as_bytes(text, source, "Planner")
    document = parse_xml(data, source, "utf-8" if isinstance(text, str) else None)
    root = document.root
    if root.tag != "project":
        raise ConversionError(f"{source}:{document.line(root)}: the root element is "
                              f"<{root.tag}>; a GNOME Planner file starts with <project>")

    warnings: list[str] = []
    version = root.get("mrproject-version")
    if version is None:
        warnings.append("the file has no mrproject-version; this import reads version 2, so "
                        "check the result")
    elif version != "2":
        warnings.append(f"the file has mrproject-version {version!r}; this import reads "
                        "version 2, so check the result")
    tasks = _read_tasks(document, source)
    if not tasks:
        warnings.append("the file contains no tasks, so the flow has no steps")
    _assign_names(tasks, names)
    by_id = {task.id: task for task in tasks}
    owners = _read_owners(document, source, by_id, warnings)

    summary_groups = _summary_groups(tasks)
    step_names = {task.step_name for task in tasks}
    steps = [_step(task, by_id, owners, _derived_groups(task, summary_groups), step_names,
                   source, warnings)
             for task in tasks]
    if summary_groups:
        steps = _flatten_summaries(tasks, steps)
        listed = ", ".join(f"{tasks[position].step_name} (group {group})"
                           for position, group in summary_groups.items())
        warnings.append(f"flattened {len(summary_groups)} summary "
                        f"{'task' if len(summary_groups) == 1 else 'tasks'} into steps that "
                        f"wait for their direct sub-tasks: {listed}")
    return Conversion(build_flow(steps, source), warnings)


# --------------------------------------------------------------------------------------------
# Reading the document


def _elements(parent: ElementTree.Element | None, tag: str) -> list[ElementTree.Element]:
    return [] if parent is None else parent.findall(tag)


def _read_tasks(document: XmlDocument, source: str) -> list[_Task]:
    """Return every task in file order, nested ones after their parent."""
    tasks: list[_Task] = []
    seen: dict[str, int] = {}
    # Depth-first without recursion, because Planner files may nest tasks deeply.
    stack: list[tuple[ElementTree.Element, _Task | None, int]] = [
        (element, None, 1)
        for element in reversed(_elements(document.root.find("tasks"), "task"))]
    while stack:
        element, parent, depth = stack.pop()
        line = document.line(element)
        if depth > MAX_NESTING:
            # Every level adds a group to each step inside it, so deeper plans would make
            # flows that grow with the square of the depth.
            raise ConversionError(f"{source}:{line}: tasks are nested more than {MAX_NESTING} "
                                  "levels deep; flatten the plan in Planner and import again")
        task_id = element.get("id", "").strip()
        if not task_id:
            raise ConversionError(f"{source}:{line}: a <task> has no id attribute")
        if task_id in seen:
            raise ConversionError(f"{source}:{line}: duplicate task id {task_id!r} (first "
                                  f"used on line {seen[task_id]})")
        seen[task_id] = line
        task = _Task(task_id, element.get("name", ""), element.get("note", ""),
                     element.get("type") == "milestone", line, len(tasks), parent=parent)
        task.dependencies = [_read_dependency(document, source, task_id, predecessor)
                             for predecessor in _elements(element.find("predecessors"),
                                                          "predecessor")]
        tasks.append(task)
        if parent is not None:
            parent.children.append(task)
        stack.extend((child, task, depth + 1) for child in reversed(element.findall("task")))

    for task in reversed(tasks):
        last = task.children[-1].last_descendant if task.children else task.position
        task.last_descendant = last
    return tasks


def _read_dependency(document: XmlDocument, source: str, task_id: str,
                     element: ElementTree.Element) -> _Dependency:
    line = document.line(element)
    predecessor = element.get("predecessor-id", "").strip()
    if not predecessor:
        raise ConversionError(f"{source}:{line}: a <predecessor> of task {task_id} has no "
                              "predecessor-id attribute")
    kind = element.get("type", "FS")
    if kind not in DEPENDENCY_TYPES:
        raise ConversionError(f"{source}:{line}: task {task_id} has a dependency of unknown "
                              f"type {kind!r}; Planner writes FS, SS, FF or SF")
    lag_text = element.get("lag", "0")
    try:
        lag = int(lag_text)
    except ValueError:
        raise ConversionError(f"{source}:{line}: the lag {lag_text!r} of a dependency of task "
                              f"{task_id} is not a whole number of seconds") from None
    return _Dependency(predecessor, kind, lag, line)


def _read_owners(document: XmlDocument, source: str, tasks: dict[str, _Task],
                 warnings: list[str]) -> dict[str, str | None]:
    """Return the owner of each allocated task by task id: its first resource's name."""
    resources: dict[str, str] = {}
    for element in _elements(document.root.find("resources"), "resource"):
        resources[element.get("id", "").strip()] = element.get("name", "").strip()

    allocated: dict[str, list[str]] = {}
    for element in _elements(document.root.find("allocations"), "allocation"):
        line = document.line(element)
        task_id = element.get("task-id", "").strip()
        resource_id = element.get("resource-id", "").strip()
        if task_id not in tasks:
            raise ConversionError(f"{source}:{line}: an allocation names task {task_id!r}, "
                                  "but no task has that id")
        if resource_id not in resources:
            raise ConversionError(f"{source}:{line}: an allocation names resource "
                                  f"{resource_id!r}, but no resource has that id")
        allocated.setdefault(task_id, []).append(resources[resource_id])

    owners: dict[str, str | None] = {}
    for task_id, names in allocated.items():
        step = tasks[task_id].step_name
        owners[task_id] = names[0] or None
        if len(names) > 1:
            others = ", ".join(repr(name) for name in names[1:])
            warnings.append(f"{step}: {len(names)} resources are allocated; the first, "
                            f"{names[0]!r}, became the owner and {others} "
                            f"{'was' if len(names) == 2 else 'were'} left out")
        elif not names[0]:
            warnings.append(f"{step}: the allocated resource has no name, so the step has "
                            "no owner")
    return owners


# --------------------------------------------------------------------------------------------
# Names


def slugify(text: str) -> str:
    """Return `text` as lower-case ASCII letters, digits, `_`, `.` and single `-`.

    Accented letters lose their accents; other characters that have no ASCII form are dropped.

    >>> slugify("Start procedure"), slugify("Fork1.2.1"), slugify("Café  -- ŝipo!"), slugify("日本")
    ('start-procedure', 'fork1.2.1', 'cafe-sipo', '')
    """
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _SLUG_SEPARATORS.sub("-", ascii_text.lower()).strip("-")


def unique_name(base: str, used: set[str]) -> str:
    """Return `base`, or `base-2`, `base-3`, ... whichever is not in `used`, and add it there.

    >>> used = {"a", "a-2"}
    >>> unique_name("a", used), unique_name("b", used)
    ('a-3', 'b')
    """
    name = base
    number = 2
    while name in used:
        name = f"{base}-{number}"
        number += 1
    used.add(name)
    return name


def _assign_names(tasks: Iterable[_Task], names: str) -> None:
    used: set[str] = set()
    for task in tasks:
        base = (slugify(task.name) if names == "slug" else "") or f"task{task.id}"
        task.step_name = unique_name(base, used)


# --------------------------------------------------------------------------------------------
# Steps


def _step(task: _Task, tasks: dict[str, _Task], owners: dict[str, str | None],
          groups: tuple[str, ...], step_names: Set[str], source: str,
          warnings: list[str]) -> StepDef:
    """Return the step of one task before summary tasks are flattened."""
    description: str | None = task.name or None
    if description is not None and _LINE_BREAKS.search(description):
        description = _LINE_BREAKS.sub(" ", description)
        warnings.append(f"{task.step_name}: the line breaks of the task name were replaced "
                        "by spaces, because a description is one line")

    gates = _gates(task, tasks, source, warnings)
    arguments: dict[str, object] = {
        "description": description,
        "owner": owners.get(task.id),
        "groups": groups,
    }
    note = task.note if task.note.strip() else None
    if note is not None:
        read = read_step_fields(note, NOTE_KEYS)
        if read.fields is not None:
            note_gates = read.fields.pop("gates", ())
            assert isinstance(note_gates, tuple)
            gates = _merged(gates, (_resolve_gate(gate, tasks, step_names)
                                     for gate in note_gates))
            arguments.update(step_arguments(read.fields))
        else:
            if read.problem is not None:
                warnings.append(f"{task.step_name}: the note was kept as text: {read.problem}")
            arguments["note"] = note
    return StepDef(task.step_name, gates=gates, line=task.line,
                   **arguments)  # type: ignore[arg-type]


def _gates(task: _Task, tasks: dict[str, _Task], source: str,
           warnings: list[str]) -> tuple[str, ...]:
    gates: list[str] = []
    approximated: list[str] = []
    approximated_names: list[str] = []
    for dependency in task.dependencies:
        predecessor = tasks.get(dependency.task_id)
        if predecessor is None:
            raise ConversionError(f"{source}:{dependency.line}: task {task.id} has predecessor "
                                  f"{dependency.task_id!r}, but no task has that id")
        name = predecessor.step_name
        if name not in gates:
            gates.append(name)
        if dependency.type != "FS" or dependency.lag != 0:
            approximated.append(f"dependency on {name} is {DEPENDENCY_TYPES[dependency.type]}"
                                f"{_describe_lag(dependency.lag)}")
            approximated_names.append(name)
    if approximated:
        waited = ", ".join(dict.fromkeys(approximated_names))
        plural = "s" if len(approximated) > 1 else ""
        warnings.append(f"{task.step_name}: {'; '.join(approximated)}; imported as "
                        f"{'ordinary gates' if plural else 'an ordinary gate'} "
                        f"({task.step_name} waits for {waited} to finish)")
    return tuple(gates)


def _resolve_gate(gate: str, tasks: dict[str, _Task], step_names: Set[str]) -> str:
    """Return the step name of a note's gate: a step name, or a task as `task<id>`."""
    if gate not in step_names and gate.startswith("task") and gate[4:] in tasks:
        return tasks[gate[4:]].step_name
    return gate


def _describe_lag(seconds: int) -> str:
    """Describe a Planner lag in seconds as text that follows a dependency type.

    >>> _describe_lag(0), _describe_lag(7200), _describe_lag(-1800), _describe_lag(90)
    ('', ' with a lag of 2 h', ' with a lead of 30 min', ' with a lag of 90 s')
    """
    if seconds == 0:
        return ""
    size = abs(seconds)
    if size % 3600 == 0:
        amount = f"{size // 3600} h"
    elif size % 60 == 0:
        amount = f"{size // 60} min"
    else:
        amount = f"{size} s"
    return f" with a {'lag' if seconds > 0 else 'lead'} of {amount}"


def _merged(first: tuple[str, ...], second: Iterable[str]) -> tuple[str, ...]:
    return first + tuple(name for name in dict.fromkeys(second) if name not in first)


# --------------------------------------------------------------------------------------------
# Summary tasks


def _summary_groups(tasks: Iterable[_Task]) -> dict[int, str]:
    """Return the group name of each summary task by position: its slug, made unique."""
    used = {MILESTONE_GROUP}
    groups = {}
    for task in tasks:
        if task.children:
            groups[task.position] = unique_name(slugify(task.name) or task.step_name, used)
    return groups


def _derived_groups(task: _Task, summary_groups: dict[int, str]) -> tuple[str, ...]:
    """Return the groups of the summary tasks around `task` (outermost first) and its own."""
    chain = []
    current: _Task | None = task
    while current is not None:
        if current.children:
            chain.append(summary_groups[current.position])
        current = current.parent
    if task.milestone:
        chain.insert(0, MILESTONE_GROUP)
    return tuple(reversed(chain))


def _flatten_summaries(tasks: list[_Task], steps: list[StepDef]) -> list[StepDef]:
    """Apply the gate rule for summary tasks of the module docstring to `steps`.

    `steps[i]` is the step of `tasks[i]`, gated on its predecessors only.
    """
    by_name = {task.step_name: task for task in tasks}
    inherited: dict[int, tuple[str, ...]] = {}
    result = []
    # A parent comes before its children in file order, so its inherited gates are final
    # before it passes them on.
    for task, step in zip(tasks, steps):
        gates = _merged(step.gates, inherited.get(task.position, ()))
        if task.children:
            for child in task.children:
                inside = [gate for gate in steps[child.position].gates
                          if gate in by_name and task.contains(by_name[gate])]
                if not inside:
                    inherited[child.position] = gates
            gates = tuple(child.step_name for child in task.children)
        result.append(dataclasses.replace(step, gates=gates))
    return result
