"""A fast reader for flow files written in the plain layout that thehat and the original save.

PyYAML needs seconds for a flow of 10,000 steps, in its pure-Python parser and even with libyaml,
mostly to build events and marks. Flow files almost always use one small layout: a list of
mappings, one `key: value` per line, block lists of names, quoted or plain one-line values and
`|` blocks for notes. `compose_plain_layout` reads exactly that layout, line by line, into the
same PyYAML nodes the full parser would build. At the first line outside the layout it returns
None, and the caller parses the whole text with PyYAML. Both paths are meant to give the same
tree; the test suite compares them on generated and mutated files.
"""

from __future__ import annotations

import re
from typing import Final

from yaml import Mark
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

_NULL_TAG: Final = "tag:yaml.org,2002:null"
_STR_TAG: Final = "tag:yaml.org,2002:str"
_SEQ_TAG: Final = "tag:yaml.org,2002:seq"
_MAP_TAG: Final = "tag:yaml.org,2002:map"
_NULL_WORDS: Final = frozenset({"~", "null", "Null", "NULL"})

# A key line: `- key: value` opens a step, `  key: value` continues it.
_KEY_LINE: Final = re.compile(r"(- |  )([A-Za-z_][A-Za-z0-9_]*):(?: (.*))?")
_ITEM_LINE: Final = re.compile(r"( {2,4})-(?: (.*))?")
_SINGLE_QUOTED: Final = re.compile(r"'((?:[^']|'')*)' *")
_DOUBLE_QUOTED: Final = re.compile(r'"([^"\\]*)" *')
# Characters that cannot start a plain scalar, or that the fast path leaves to PyYAML.
_PLAIN_START_EXCLUDED: Final = frozenset("-?:,[]{}#&*!|>'\"%@` ")
# Anything but printable text that YAML allows unescaped. Tabs and the YAML 1.1 line breaks
# U+0085, U+2028 and U+2029 are left to PyYAML too, because they change how lines are read.
_UNSUPPORTED: Final = re.compile(
    "[^\x20-\x7e\n\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]")


class _Unsupported(Exception):
    """The text uses YAML outside the plain layout; PyYAML must read it."""


class TooManySteps(Exception):
    """The top-level list has more items than allowed; `line` (1-based) starts the first extra."""

    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


def compose_plain_layout(text: str, max_steps: int | None = None) -> Node | None:
    """Return the node tree of `text`, or None when the text is outside the plain layout.

    The tree has the tags, values and line numbers that PyYAML gives with a resolver that
    resolves only null. With `max_steps`, reading stops with TooManySteps at the first item
    of the top-level list beyond that many, so an oversized file costs little.
    """
    if _UNSUPPORTED.search(text):
        return None
    try:
        return _Reader(text.split("\n"), max_steps).read()
    except _Unsupported:
        return None


class _Reader:
    """One pass over the lines; `read` raises _Unsupported at the first line outside the layout."""

    def __init__(self, lines: list[str], max_steps: int | None = None) -> None:
        self.lines = lines
        self.max_steps = max_steps
        # Only the line of a mark is read by the flow loader, so one mark per line is enough.
        self.marks = [Mark("<flow>", 0, number, 0, None, None) for number in range(len(lines))]

    def read(self) -> Node:
        lines, marks = self.lines, self.marks
        steps: list[Node] = []
        pairs: list[tuple[Node, Node]] = []
        # The key whose value may turn out to be a block list: its pair index and item indent.
        open_key: int | None = None
        item_indentation: str | None = None
        items: list[Node] = []
        number = 0
        seen_document_start = False
        while number < len(lines):
            line = lines[number]
            stripped = line.lstrip(" ")
            if stripped == "" or stripped[0] == "#":
                number += 1
                continue
            match = _ITEM_LINE.fullmatch(line) if stripped[0] == "-" and line[0] == " " else None
            if match is not None:
                if open_key is None or (item_indentation not in (None, match.group(1))):
                    raise _Unsupported
                item_indentation = match.group(1)
                raw = (match.group(2) or "").strip(" ")
                if raw == "[]" or raw.startswith("|"):
                    raise _Unsupported
                items.append(_value_node(raw, marks[number]))
                number += 1
                continue
            if items:
                assert open_key is not None
                key, _ = pairs[open_key]
                pairs[open_key] = (key, SequenceNode(_SEQ_TAG, items, items[0].start_mark,
                                                     items[-1].end_mark, flow_style=False))
                items = []
            open_key = item_indentation = None

            if line.startswith("- "):
                if pairs:
                    steps.append(self.mapping(pairs, number))
                    pairs = []
                if self.max_steps is not None and len(steps) >= self.max_steps:
                    raise TooManySteps(number + 1)
            elif not line.startswith("  ") or line.startswith("   ") or not steps and not pairs:
                if line.rstrip(" ") == "---" and not seen_document_start and not pairs \
                        and not steps:
                    seen_document_start = True
                    number += 1
                    continue
                raise _Unsupported
            match = _KEY_LINE.fullmatch(line)
            if match is None or match.group(2) in _NULL_WORDS:
                # PyYAML reads a key spelled null as a null key, not as text.
                raise _Unsupported
            mark = marks[number]
            key_node = ScalarNode(_STR_TAG, match.group(2), mark, mark)
            raw = (match.group(3) or "").strip(" ")
            number += 1
            if raw in ("|", "|-"):
                value, number = self.literal(number, strip=raw == "|-", header=mark)
            else:
                value = _value_node(raw, mark)
                if raw == "":
                    open_key = len(pairs)
            pairs.append((key_node, value))

        if items:
            assert open_key is not None
            key, _ = pairs[open_key]
            pairs[open_key] = (key, SequenceNode(_SEQ_TAG, items, items[0].start_mark,
                                                 items[-1].end_mark, flow_style=False))
        if not pairs:
            raise _Unsupported
        steps.append(self.mapping(pairs, len(lines)))
        return SequenceNode(_SEQ_TAG, steps, steps[0].start_mark, marks[-1], flow_style=False)

    def mapping(self, pairs: list[tuple[Node, Node]], end: int) -> MappingNode:
        return MappingNode(_MAP_TAG, pairs, pairs[0][0].start_mark, self.marks[end - 1],
                           flow_style=False)

    def literal(self, number: int, strip: bool, header: Mark) -> tuple[ScalarNode, int]:
        """Read the content lines of a `|` or `|-` block under a key indented by two.

        Returns the scalar and the number of the first line after the block.
        """
        lines = self.lines
        if number >= len(lines):
            raise _Unsupported
        first = lines[number]
        indentation = len(first) - len(first.lstrip(" "))
        if indentation < 3 or not first.strip(" "):
            raise _Unsupported
        prefix = " " * indentation
        content: list[str] = []
        while number < len(lines):
            line = lines[number]
            if line.strip(" ") == "":
                if len(line) > indentation:
                    raise _Unsupported
                content.append("")
            elif line.startswith(prefix):
                content.append(line[indentation:])
            else:
                break
            number += 1
        if number == len(lines) and content[-1] != "":
            # The block's last line ends the file without a line break, which "|" would
            # not add; PyYAML reads that case.
            raise _Unsupported
        while content and content[-1] == "":
            content.pop()
        value = "\n".join(content) + ("" if strip else "\n")
        return ScalarNode(_STR_TAG, value, header, self.marks[number - 1], style="|"), number


def _value_node(raw: str, mark: Mark) -> Node:
    """Return the node of a one-line value; raise _Unsupported for anything but plain text."""
    if raw == "" or raw in _NULL_WORDS:
        return ScalarNode(_NULL_TAG, raw, mark, mark)
    if raw == "[]":
        return SequenceNode(_SEQ_TAG, [], mark, mark, flow_style=True)
    first = raw[0]
    if first == "'":
        match = _SINGLE_QUOTED.fullmatch(raw)
        if match is None:
            raise _Unsupported
        return ScalarNode(_STR_TAG, match.group(1).replace("''", "'"), mark, mark, style="'")
    if first == '"':
        match = _DOUBLE_QUOTED.fullmatch(raw)
        if match is None:
            raise _Unsupported
        return ScalarNode(_STR_TAG, match.group(1), mark, mark, style='"')
    if first in _PLAIN_START_EXCLUDED or ": " in raw or " #" in raw or raw.endswith(":"):
        raise _Unsupported
    return ScalarNode(_STR_TAG, raw, mark, mark)
