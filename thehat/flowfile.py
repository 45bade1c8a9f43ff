"""Read, check and write `.flow` files.

A flow file is one YAML document: a list of mappings, one per step, in display order. The keys
are those of `thehat.model.FILE_KEYS`. Loading is safe and strict:

- Every scalar keeps the text its author wrote. Only an empty plain value, `~`, `null`, `Null`
  and `NULL` mean "no value", so `no`, `on`, `1.10`, `010` and `12:30` stay text.
- Tags, unknown keys, duplicate keys, wrong value types, invalid names, dangling gates and
  cycles are problems. `parse_flow` reports all of them in one `FlowError`, each with its line.
- Alias expansion, recursive aliases and nesting depth are bounded, so a hostile file costs
  time in proportion to its size.

Saving writes a file that this loader and a YAML 1.1 loader (PyYAML `safe_load`, Ruby Psych)
read back as the same text. Recipient lists are written as one comma-separated string, because
the original Ruby TheHat fails to load a YAML list there.

This module does not resolve a flow name to a path: callers pass paths.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import re
import secrets
import stat
from collections.abc import Iterable, Iterator, Sequence
from typing import Final, NoReturn

import yaml
from yaml.composer import Composer
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from thehat.errors import FlowError, Problem, TheHatError
from thehat.flowscan import TooManySteps, compose_plain_layout
from thehat.limits import HARD_MAX_FLOW_BYTES, Limits
from thehat.model import (FILE_KEYS, MAX_TIMEOUT, NUMBER_KEYS, OPTIONAL_KEYS, RECIPIENT_KEYS,
                          TEXT_KEYS, Flow, StepDef, graph_problems, parse_timeout)
from thehat.names import did_you_mean

log = logging.getLogger(__name__)

# A flow nests four levels deep: list, step mapping, list of names, name. The PyYAML composer
# recurses once per level, so deeper documents are rejected before they exhaust the stack.
MAX_NESTING: Final = 32
# Nodes that aliases may add to a walk, beyond the distinct nodes of the document: the larger
# of these. A flow needs no aliases, so this only has to allow modest use of them.
MIN_NODE_BUDGET: Final = 100_000
NODES_PER_LINE: Final = 20
# Node counts stop growing here, so counting a "billion laughs" file stays cheap.
_COUNT_CAP: Final = 10**12

_NULL_TAG: Final = "tag:yaml.org,2002:null"
_STR_TAG: Final = "tag:yaml.org,2002:str"
_ALLOWED_TAGS: Final = frozenset({_NULL_TAG, _STR_TAG, "tag:yaml.org,2002:seq",
                                  "tag:yaml.org,2002:map"})
# The line breaks of YAML 1.1, which PyYAML counts when it numbers lines.
_LINE_BREAK: Final = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
_FLOW_SHAPE: Final = "a flow file is a YAML list of steps, each starting with '- step: <name>'"
_NO_DOCUMENT: Final = (f"the file is empty (it contains only comments or '---'); {_FLOW_SHAPE}, "
                       "or '--- []' for a flow without steps")


class FlowSaveError(TheHatError):
    """A flow could not be written to its file; the message names the path and the cause."""


# --------------------------------------------------------------------------------------------
# Composing YAML text into nodes


class _TextResolver(BaseResolver):
    """Resolve plain scalars to null or text, never to YAML 1.1 booleans, numbers or dates."""


_TextResolver.add_implicit_resolver(
    _NULL_TAG, re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])


class _CompositionError(yaml.MarkedYAMLError):
    """An alias or anchor is invalid, or the document is nested too deeply.

    `problem` is the whole message, written for the author of a flow file.
    """


class _FlowLoader(Reader, Scanner, Parser, Composer, _TextResolver):
    """PyYAML's reader, scanner, parser and composer, with bounded nesting and no constructor."""

    def __init__(self, text: str, max_steps: int | None = None) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _TextResolver.__init__(self)
        self._depth = 0
        self._open_anchors: set[str] = set()
        self._max_steps = max_steps
        self._steps = 0

    def compose_node(self, parent: Node | None, index: object) -> Node:
        event = self.peek_event()
        anchor = event.anchor
        if self._depth == 1 and isinstance(parent, SequenceNode) and self._max_steps is not None:
            # An item of the top-level list: a step. Counting here stops a huge file early.
            self._steps += 1
            if self._steps > self._max_steps:
                self._fail(_too_many_steps(self._max_steps), event.start_mark)
        if isinstance(event, AliasEvent):
            if anchor not in self.anchors:
                self._fail(f"alias '*{anchor}' names no anchor; define '&{anchor}' before it "
                           "or write the value out", event.start_mark)
            # The composer registers an anchor before its children, so an alias inside the
            # anchored node would make a cyclic structure.
            if anchor in self._open_anchors:
                self._fail(f"alias '*{anchor}' refers to the node that contains it; remove the "
                           "alias", event.start_mark)
            return super().compose_node(parent, index)

        if self._depth >= MAX_NESTING:
            self._fail(f"YAML nesting is deeper than {MAX_NESTING} levels; {_FLOW_SHAPE}",
                       event.start_mark)
        if anchor in self.anchors:
            first = self.anchors[anchor].start_mark.line + 1
            self._fail(f"anchor '&{anchor}' is defined twice (first on line {first}); rename "
                       "one of them", event.start_mark)
        self._depth += 1
        if anchor is not None:
            self._open_anchors.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if anchor is not None:
                self._open_anchors.discard(anchor)

    @staticmethod
    def _fail(message: str, mark: yaml.Mark) -> NoReturn:
        raise _CompositionError(None, None, message, mark)


def _compose(text: str, max_steps: int | None = None) -> tuple[Node | None, list[Problem]]:
    """Compose the first YAML document of `text`; return its root node and syntax problems.

    The root is None when the text contains no document, has a syntax error before the
    document ends or has more than `max_steps` items in its top-level list. Every YAML error
    becomes a problem with its line.
    """
    problems: list[Problem] = []
    root = None
    try:
        loader = _FlowLoader(text, max_steps)
    except yaml.YAMLError as exc:
        return None, _syntax_problems(exc, text)
    try:
        if loader.check_node():
            root = loader.get_node()
            if loader.check_node():
                line = loader.peek_event().start_mark.line + 1
                problems.append(Problem(
                    "a second YAML document starts here; a flow file contains exactly one, so "
                    "remove the extra '---' line", line))
    except yaml.YAMLError as exc:
        problems.extend(_syntax_problems(exc, text))
    finally:
        loader.dispose()
    return root, problems


def _syntax_problems(exc: yaml.YAMLError, text: str) -> list[Problem]:
    """Translate a PyYAML error into problems, one per tab-indented line it explains."""
    if isinstance(exc, yaml.reader.ReaderError):
        return [_reader_problem(exc, text)]
    if not isinstance(exc, yaml.MarkedYAMLError):
        return [Problem(f"invalid YAML: {exc}")]

    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    if isinstance(exc, _CompositionError):
        return [Problem(str(exc.problem), line)]

    # PyYAML stops at the first tab that YAML forbids. Earlier tabs were inside scalars, where
    # they are allowed; later lines indented with tabs are almost surely wrong too.
    tab_lines = [n for n in _tab_indented_lines(text) if line is None or n >= line]
    problems = [Problem("tab character in indentation; indent with spaces", n)
                for n in tab_lines]
    if "'\\t'" in str(exc.problem):
        if line in tab_lines:
            return problems
        return [Problem("tab character between tokens; YAML separates with spaces, so replace "
                        "the tab with a space", line)] + problems

    message = f"invalid YAML: {exc.problem}"
    if exc.context is not None:
        message += f" ({exc.context}"
        if exc.context_mark is not None and exc.context_mark.line + 1 != line:
            message += f" that starts on line {exc.context_mark.line + 1}"
        message += ")"
    message += "; check the indentation and quoting"
    return [Problem(message, line)] + problems


def _reader_problem(exc: yaml.reader.ReaderError, text: str) -> Problem:
    """Describe a character that YAML does not allow, such as NUL or a lone surrogate."""
    line = len(_LINE_BREAK.findall(text, 0, exc.position)) + 1
    code = exc.character if isinstance(exc.character, int) else ord(exc.character)
    return Problem(f"character U+{code:04X} is not allowed in YAML text; remove it or save the "
                   "file as plain UTF-8 text", line)


def _tab_indented_lines(text: str) -> list[int]:
    """Return the 1-based numbers of lines whose leading whitespace contains a tab.

    >>> _tab_indented_lines("a:\\n\\tb: 1\\n  \\tc\\n  d\\te\\n")
    [2, 3]
    """
    numbers = []
    for number, line in enumerate(_LINE_BREAK.split(text), start=1):
        indentation = line[:len(line) - len(line.lstrip(" \t"))]
        if "\t" in indentation:
            numbers.append(number)
    return numbers


def _scan_nodes(root: Node) -> tuple[int, int, list[Problem]]:
    """Count the nodes of `root` and check their tags.

    Returns three things. The first is the number of nodes a full walk visits, up to
    `_COUNT_CAP`, where each alias counts as a copy of the node it names. The second is the
    number of distinct nodes. The third lists a problem for each tag other than the standard
    text, null, list and mapping tags. Each distinct node is examined once, so a "billion
    laughs" document costs no more than its size.
    """
    sizes: dict[int, int] = {}
    problems: list[Problem] = []
    expanding: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_counted = stack.pop()
        key = id(node)
        children = _children(node)
        if children_counted:
            expanding.discard(key)
            sizes[key] = min(_COUNT_CAP, 1 + sum(sizes[id(child)] for child in children))
            continue
        if key in sizes:
            continue
        if key in expanding:
            # The composer rejects recursive aliases; this guards the walk all the same.
            sizes[key] = _COUNT_CAP
            continue
        expanding.add(key)
        if node.tag not in _ALLOWED_TAGS:
            problems.append(Problem(
                f"tag {_short_tag(node.tag)!r} is not allowed; a flow file contains only text, "
                "lists and mappings, so remove the tag", node.start_mark.line + 1))
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(root)], len(sizes), problems


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _short_tag(tag: str) -> str:
    """Return `tag` as its author most likely wrote it.

    >>> _short_tag("tag:yaml.org,2002:python/object:os.system")
    '!!python/object:os.system'
    """
    prefix = "tag:yaml.org,2002:"
    return "!!" + tag[len(prefix):] if tag.startswith(prefix) else tag


# --------------------------------------------------------------------------------------------
# Reading nodes into step definitions


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL_TAG


def _describe(node: Node) -> str:
    """Name what `node` is, for messages: `an empty value`, `text 'x'`, `a list`, `a mapping`."""
    if _is_null(node):
        return "an empty value"
    if isinstance(node, ScalarNode):
        text = node.value if len(node.value) <= 40 else node.value[:40] + "..."
        return f"text {text!r}"
    if isinstance(node, SequenceNode):
        return "a list"
    return "a mapping"


def _read_steps(root: Node, problems: list[Problem]) -> list[StepDef]:
    """Read every step of the top-level list and append what is wrong to `problems`.

    Returns the steps in file order, leaving out those without a usable name. An invalid value
    is replaced by an empty one, so later checks still see the step.
    """
    if _is_null(root):
        problems.append(Problem(_NO_DOCUMENT))
        return []
    if not isinstance(root, SequenceNode):
        problems.append(Problem(f"the top level is {_describe(root)}; {_FLOW_SHAPE}",
                                _line(root)))
        return []

    steps = []
    for item in root.value:
        if not isinstance(item, MappingNode):
            problems.append(Problem(
                f"a step must be a mapping of keys such as 'step: <name>', found "
                f"{_describe(item)}", _line(item)))
            continue
        step = _read_step(item, problems)
        if step is not None:
            steps.append(step)
    return steps


def _read_step(mapping: MappingNode, problems: list[Problem]) -> StepDef | None:
    """Read one step mapping; return None when it has no usable name."""
    name = _read_name(mapping, problems)
    fields: dict[str, object] = {}
    seen: dict[str, int] = {}
    for key_node, value_node in mapping.value:
        key = _read_key(key_node, name, problems)
        if key is None:
            continue
        if key in seen:
            problems.append(Problem(f"duplicate key {key!r} (also on line {seen[key]}); keep "
                                    "one of them", _line(key_node), name))
            continue
        seen[key] = _line(key_node)
        if key == "step":
            continue
        if key in TEXT_KEYS:
            value: object = _read_text(key, value_node, name, problems)
        elif key in NUMBER_KEYS:
            value = _read_seconds(key, value_node, name, problems)
        elif key in RECIPIENT_KEYS:
            value = _read_recipients(key, value_node, name, problems)
        else:  # NAME_LIST_KEYS: group, gates
            value = _read_names(key, value_node, name, problems)
        fields[FILE_KEYS[key]] = value

    if name is None:
        return None
    return StepDef(name=name, line=_line(mapping), **fields)  # type: ignore[arg-type]


def _read_name(mapping: MappingNode, problems: list[Problem]) -> str | None:
    """Return the value of the first `step` key, or None with a problem when it is unusable."""
    for key_node, value_node in mapping.value:
        if not (isinstance(key_node, ScalarNode) and key_node.value == "step"):
            continue
        if _is_null(value_node) or (isinstance(value_node, ScalarNode) and value_node.value == ""):
            problems.append(Problem("empty step name; give 'step' a name of letters, digits, "
                                    "'_', '-' or '.'", _line(key_node)))
            return None
        if not isinstance(value_node, ScalarNode):
            problems.append(Problem(f"key 'step' must be a name, found {_describe(value_node)}",
                                    _line(key_node)))
            return None
        return str(value_node.value)
    problems.append(Problem("missing key 'step'; add 'step: <name>' to name this step",
                            _line(mapping)))
    return None


def _read_key(node: Node, step: str | None, problems: list[Problem]) -> str | None:
    """Return a known key's text, or None with a problem for anything else."""
    if not isinstance(node, ScalarNode) or _is_null(node):
        problems.append(Problem(f"a key must be text, found {_describe(node)}; the keys are "
                                + ", ".join(FILE_KEYS), _line(node), step))
        return None
    key = str(node.value)
    if key in FILE_KEYS:
        return key
    if key == "<<":
        message = "merge keys ('<<') are not supported; write each key out"
    else:
        hint = did_you_mean(key, FILE_KEYS)
        if hint:
            message = f"unknown key {key!r}{hint}"
        else:
            message = f"unknown key {key!r}; remove it or use one of: " + ", ".join(FILE_KEYS)
    problems.append(Problem(message, _line(node), step))
    return None


def _read_text(key: str, node: Node, step: str | None, problems: list[Problem]) -> str | None:
    """Return the text of a scalar; an empty or null value means the key is absent."""
    if isinstance(node, ScalarNode):
        if _is_null(node) or node.value == "":
            return None
        return str(node.value)
    if isinstance(node, SequenceNode):
        hint = "quote the value if it is text that starts with '[' or '-'"
    else:
        hint = "quote the value if it is text that contains ': ' or starts with '{'"
    problems.append(Problem(f"key {key!r} must be text, found {_describe(node)}; {hint}",
                            _line(node), step))
    return None


def _read_seconds(key: str, node: Node, step: str | None,
                  problems: list[Problem]) -> float | None:
    """Return a number of seconds greater than 0; an empty value means the key is absent."""
    text = _read_text(key, node, step, problems)
    if text is None:
        return None
    seconds = parse_timeout(text)
    if seconds is None:
        problems.append(Problem(f"key {key!r} is {text!r}; give a number of seconds greater "
                                f"than 0 and at most {MAX_TIMEOUT}, such as 300", _line(node),
                                step))
        return None
    return seconds


def _read_names(key: str, node: Node, step: str | None,
                problems: list[Problem]) -> tuple[str, ...]:
    """Return the items of a list of group or step names; an empty value means no names."""
    if _is_null(node):
        return ()
    if isinstance(node, ScalarNode):
        words = [w for w in re.split(r"[,\s]+", node.value) if w]
        problems.append(Problem(
            f"key {key!r} must be a list, found {_describe(node)}; write "
            f"'{key}: [{', '.join(words)}]'", _line(node), step))
        return ()
    if isinstance(node, MappingNode):
        problems.append(Problem(f"key {key!r} must be a list, found a mapping; write "
                                f"'{key}: [a, b]'", _line(node), step))
        return ()

    names = []
    for index, item in enumerate(node.value, start=1):
        if _is_null(item):
            problems.append(Problem(f"item {index} of {key!r} is empty; remove it or write a "
                                    "name", _line(item), step))
        elif not isinstance(item, ScalarNode):
            problems.append(Problem(f"item {index} of {key!r} must be a name, found "
                                    f"{_describe(item)}", _line(item), step))
        else:
            names.append(str(item.value))
    return tuple(names)


def _read_recipients(key: str, node: Node, step: str | None,
                     problems: list[Problem]) -> tuple[str, ...]:
    """Return mail recipients given as a comma-separated text or as a list.

    Items are stripped and empty items dropped, in both forms.
    """
    if _is_null(node):
        return ()
    if isinstance(node, ScalarNode):
        return _split_recipients(str(node.value))
    if isinstance(node, MappingNode):
        problems.append(Problem(f"key {key!r} must be addresses separated by commas or a list "
                                "of addresses, found a mapping", _line(node), step))
        return ()

    recipients = []
    for index, item in enumerate(node.value, start=1):
        if isinstance(item, ScalarNode):
            if not _is_null(item) and item.value.strip():
                recipients.append(str(item.value).strip())
        else:
            problems.append(Problem(f"item {index} of {key!r} must be an address, found "
                                    f"{_describe(item)}", _line(item), step))
    return tuple(recipients)


def _split_recipients(text: str) -> tuple[str, ...]:
    """Split a comma-separated recipient text.

    >>> _split_recipients(" a@x.org, b@y.org,, ")
    ('a@x.org', 'b@y.org')
    """
    return tuple(item.strip() for item in text.split(",") if item.strip())


# --------------------------------------------------------------------------------------------
# Loading and validating


def parse_flow(text: str, source: str, max_steps: int | None = None) -> Flow:
    """Parse the YAML `text` of a flow file into a `Flow`.

    `source` names the file in messages. Raises `FlowError` listing every problem found, sorted
    by line; no other exception escapes, whatever `text` contains. A flow of more than
    `max_steps` steps (None: no limit) is rejected with that one problem, as soon as the
    reader reaches the first step beyond the limit.
    """
    with _collection_paused():
        try:
            root = compose_plain_layout(text, max_steps)
        except TooManySteps as exc:
            assert max_steps is not None
            raise FlowError([Problem(_too_many_steps(max_steps), exc.line)], source) from None
        if root is not None:
            # The plain layout has no aliases and no tags, so there is nothing to scan.
            problems: list[Problem] = []
        else:
            root, problems = _compose(text, max_steps)
            _check_nodes(root, text, source, problems)
        steps = _read_steps(root, problems)
        flow = _build_flow(steps, source, problems)
    if flow is None or problems:
        problems.sort(key=lambda problem: problem.line or 0)
        raise FlowError(problems, source)
    return flow


@contextlib.contextmanager
def _collection_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a flow's many small objects are built.

    Building nodes and steps allocates hundreds of thousands of objects that form no cycles;
    with the collector on, its repeated full passes over them cost more than the parsing.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _check_nodes(root: Node | None, text: str, source: str, problems: list[Problem]) -> None:
    """Raise FlowError when there is no document or aliases expand too far; note bad tags."""
    if root is None:
        if not problems:
            problems.append(Problem(_NO_DOCUMENT))
        raise FlowError(problems, source)
    size, distinct, tag_problems = _scan_nodes(root)
    budget = distinct + max(MIN_NODE_BUDGET, NODES_PER_LINE * (text.count("\n") + 1))
    if size > budget:
        problems.append(Problem(f"YAML aliases expand to more than {budget} nodes; the file "
                                "is not a flow, and a flow file needs no aliases", _line(root)))
        raise FlowError(problems, source)
    problems.extend(tag_problems)


def _too_many_steps(max_steps: int) -> str:
    return (f"the flow has more than {max_steps:,} steps, the limit (limits.maxFlowSteps), "
            f"and step {max_steps + 1:,} starts here; split the flow, or raise "
            "limits.maxFlowSteps in the configuration")


def _build_flow(steps: Sequence[StepDef], source: str, problems: list[Problem]) -> Flow | None:
    """Build the flow, or return None after adding its problems to `problems`.

    `Flow` checks the graph only when every step is valid. This function checks the graph in
    that case too, so that one report lists both kinds of problem.
    """
    try:
        return Flow(steps, source)
    except FlowError as exc:
        problems.extend(exc.problems)
        # Flow checked the graph itself only if every step was valid.
        if any(p.message.startswith(("gate ", "gates ")) for p in exc.problems):
            return None
        first_of_each: dict[str, StepDef] = {}
        for step in steps:
            first_of_each.setdefault(step.name, step)
        problems.extend(graph_problems(first_of_each))
        return None


def load_flow(path: str | os.PathLike[str], limits: Limits | None = None) -> Flow:
    """Read the flow file at `path` (UTF-8) and parse it.

    `limits` sets the largest file (`max_flow_bytes`, never above `HARD_MAX_FLOW_BYTES`) and
    the most steps (`max_flow_steps`); without it only `HARD_MAX_FLOW_BYTES` applies. Raises
    `FlowError` naming the path when the file cannot be read, is over a limit, is not valid
    UTF-8 or is not a valid flow.
    """
    source = os.fspath(path)
    max_bytes = HARD_MAX_FLOW_BYTES
    max_steps = None
    if limits is not None:
        max_bytes = min(limits.max_flow_bytes, HARD_MAX_FLOW_BYTES)
        max_steps = limits.max_flow_steps
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is rejected just below.
        descriptor = os.open(source, os.O_RDONLY | os.O_NONBLOCK)
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            os.close(descriptor)
            raise FlowError([Problem("not a regular file; a flow is a YAML text file")], source)
        with os.fdopen(descriptor, "rb") as file:
            # Size the read by the file, so a small file does not allocate the whole limit. A
            # file over the limit is not read at all, and one that grew is read on up to it.
            size = os.fstat(file.fileno()).st_size
            if size > max_bytes:
                raise FlowError([Problem(_too_many_bytes(size, max_bytes))], source)
            data = file.read(size + 1)
            if len(data) > size:
                data += file.read(max_bytes + 1 - len(data))
    except OSError as exc:
        raise FlowError([Problem(f"cannot read the file: {_os_cause(exc)}; check the path and "
                                 "its permissions")], source) from exc
    if len(data) > max_bytes:
        raise FlowError([Problem(_too_many_bytes(None, max_bytes))], source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise FlowError([Problem(f"invalid UTF-8: byte {data[exc.start]:#04x} at offset "
                                 f"{exc.start} ({exc.reason}); save the file as UTF-8", line)],
                        source) from exc
    return parse_flow(text, source, max_steps)


def _too_many_bytes(size: int | None, max_bytes: int) -> str:
    """Describe a file of `size` bytes (None: it grew while read) over `max_bytes`."""
    if max_bytes < HARD_MAX_FLOW_BYTES:
        advice = "split the flow, or raise limits.maxFlowBytes in the configuration"
    else:
        advice = (f"split the flow, because {HARD_MAX_FLOW_BYTES:,} bytes is the most that "
                  "limits.maxFlowBytes allows")
    limit = f"the limit of {max_bytes:,} bytes (limits.maxFlowBytes)"
    if size is None:
        return f"the file grew to more than {limit} while it was read; {advice}"
    return f"the file is {size:,} bytes, more than {limit}; {advice}"


def validate_files(paths: Iterable[str],
                   limits: Limits | None = None) -> tuple[list[str], int]:
    """Check flow files, within `limits` if given; return report lines and an exit status
    (0 all valid, 1 otherwise).

    A valid file gets one line (`toast.flow: 8 steps, valid`); an invalid one gets one line per
    problem (`bad.flow:3: step 'x': message`).
    """
    lines: list[str] = []
    status = 0
    for path in paths:
        try:
            flow = load_flow(path, limits)
        except FlowError as exc:
            status = 1
            lines.extend(problem.describe(exc.source) for problem in exc.problems)
            continue
        count = len(flow)
        lines.append(f"{path}: {count} {'step' if count == 1 else 'steps'}, valid")
    return lines, status


def _os_cause(exc: OSError) -> str:
    """Describe an OS error for people, as `No such file or directory` without the number."""
    return exc.strerror or str(exc)


# --------------------------------------------------------------------------------------------
# Writing


_YAML11_WORDS: Final = frozenset({"y", "n", "yes", "no", "true", "false", "on", "off", "null"})
# Starts with a letter, so no YAML 1.1 loader reads it as a number, date, symbol or indicator.
_PLAIN: Final = re.compile(r"[^\W\d_][\w .,/@+=~%^()$;!?*&'\"<>|\\:#-]*")
_BREAKS: Final = frozenset("\r\n\x85\u2028\u2029")
_SHORT_ESCAPES: Final = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r",
                         "\0": "\\0"}
_INDENT: Final = "    "


def _printable(char: str) -> bool:
    """Tell whether YAML allows `char` unescaped (the YAML 1.1 printable set, minus BOM)."""
    return ("\x20" <= char <= "\x7e" or char in "\t\n\r\x85"
            or "\xa0" <= char <= "\ud7ff" or "\ue000" <= char <= "\ufffd" and char != "\ufeff"
            or char >= "\U00010000")


def _scalar(text: str) -> str:
    """Return `text` as a one-line YAML scalar that YAML 1.1 loaders read back unchanged.

    Plain when that is safe, else single-quoted, else double-quoted with escapes.

    >>> [_scalar(t) for t in ["toast", "no", "1.10", "a: b", "tab\\there", "é"]]
    ['toast', "'no'", "'1.10'", "'a: b'", '"tab\\\\there"', 'é']
    """
    if (_PLAIN.fullmatch(text) and text.casefold() not in _YAML11_WORDS
            and ": " not in text and " #" not in text and not text.endswith((":", " "))):
        return text
    if text and all(_printable(c) and c != "\t" and c not in _BREAKS for c in text):
        return "'" + text.replace("'", "''") + "'"
    return _double_quoted(text)


def _double_quoted(text: str) -> str:
    r"""Return `text` as a double-quoted YAML scalar on one line.

    >>> print(_double_quoted('a "b"\n\x07'))
    "a \"b\"\n\x07"
    """
    parts = ['"']
    for char in text:
        if char in _SHORT_ESCAPES:
            parts.append(_SHORT_ESCAPES[char])
        elif _printable(char) and char not in _BREAKS:
            parts.append(char)
        elif ord(char) <= 0xFF:
            parts.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            parts.append(f"\\u{ord(char):04x}")
        else:
            parts.append(f"\\U{ord(char):08x}")
    parts.append('"')
    return "".join(parts)


def _literal_block(text: str) -> list[str] | None:
    """Return `text` as a literal block scalar (header, then lines), or None if it cannot be one.

    The content is indented by four spaces, under a key indented by two. The result is parsed
    back and used only when it gives `text` again.
    """
    if any(c in "\r\x85\u2028\u2029" or not _printable(c) for c in text):
        return None
    trailing = len(text) - len(text.rstrip("\n"))
    if trailing == 0:
        chomping = "-"
    elif trailing == 1:
        chomping = ""
    else:
        chomping = "+"
    indentation = "2" if text.startswith((" ", "\n")) else ""
    lines = text.split("\n")
    if trailing:
        lines.pop()
    block = ["|" + indentation + chomping] + [_INDENT + line if line else "" for line in lines]

    # A block scalar is never resolved to anything but text, so PyYAML's reading is ours too.
    try:
        reread = yaml.safe_load("- k: " + "\n".join(block) + "\n")
    except yaml.YAMLError:
        return None
    return block if reread == [{"k": text}] else None


def _text_lines(key: str, text: str | None) -> list[str]:
    if not text:
        return [f"  {key}:"]
    if "\n" in text:
        block = _literal_block(text)
        if block is not None:
            return [f"  {key}: {block[0]}"] + block[1:]
    return [f"  {key}: {_scalar(text)}"]


def _list_lines(key: str, items: tuple[str, ...]) -> list[str]:
    if not items:
        return [f"  {key}: []"]
    return [f"  {key}:"] + [f"  - {_scalar(item)}" for item in items]


def _recipient_lines(key: str, recipients: tuple[str, ...]) -> list[str]:
    # Written as "a@x,b@y" when that splits back into the same items: the original Ruby TheHat
    # splits this text on commas and fails on a YAML list.
    if recipients and all(r and "," not in r and r == r.strip() for r in recipients):
        return [f"  {key}: {_scalar(','.join(recipients))}"]
    return _list_lines(key, recipients)


def dump_flow(flow: Flow) -> str:
    """Return `flow` as the text of a flow file, steps in order and keys in `FILE_KEYS` order.

    Absent text is written as an empty value and an empty text counts as absent, so it reloads
    as None. Every other value reloads unchanged, with this module and with YAML 1.1 loaders.
    """
    steps = list(flow)
    if not steps:
        return "--- []\n"
    lines = ["---"]
    for step in steps:
        lines.append(f"- step: {_scalar(step.name)}")
        for key, attribute in FILE_KEYS.items():
            value = getattr(step, attribute)
            if key == "step" or (key in OPTIONAL_KEYS and value is None):
                continue
            if key in NUMBER_KEYS:
                lines.append(f"  {key}: {int(value) if value.is_integer() else value!r}")
            elif key in TEXT_KEYS:
                lines.extend(_text_lines(key, value))
            elif key in RECIPIENT_KEYS:
                lines.extend(_recipient_lines(key, value))
            else:
                lines.extend(_list_lines(key, value))
    return "\n".join(lines) + "\n"


def save_flow(flow: Flow, path: str | os.PathLike[str]) -> None:
    """Write `flow` to `path` atomically.

    The text goes to a temporary file in the target's directory, which is flushed, synced and
    renamed over the target; then the directory is synced. A symbolic link at `path` is kept
    and its target replaced. An existing file keeps its permission bits; a new one gets 0666
    minus the umask. Raises `FlowSaveError` naming the path and the cause; the temporary file
    is removed on failure.
    """
    target = os.path.realpath(os.fspath(path))
    directory, base = os.path.split(target)
    name = base.removesuffix(".flow")
    data = dump_flow(flow).encode("utf-8")
    temporary = os.path.join(directory, f".{base}.{secrets.token_hex(4)}.tmp")
    renamed = False
    try:
        _write_synced(temporary, data, _existing_mode(target))
        os.replace(temporary, target)
        renamed = True
        _sync_directory(directory)
    except OSError as exc:
        if not renamed:
            try:
                os.unlink(temporary)
            except OSError:
                pass
        raise FlowSaveError(f"cannot write flow {name!r} to {os.fspath(path)}: "
                            f"{_os_cause(exc)}") from exc
    log.debug("wrote flow %r to %s: %d steps, %d bytes", name, target, len(flow), len(data))


def _existing_mode(path: str) -> int | None:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None


def _write_synced(path: str, data: bytes, mode: int | None) -> None:
    """Create `path` exclusively, write `data`, set `mode` if given, and fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_directory(directory: str) -> None:
    """Fsync `directory` so the rename survives a crash (POSIX only; elsewhere a no-op)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
