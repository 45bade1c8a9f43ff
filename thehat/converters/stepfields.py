"""Read step fields that a converted file hides in free text: Planner notes and ZNode texts.

Such text counts as step fields when it is a YAML mapping whose keys are all flow-file keys.
It is parsed with PyYAML's BaseLoader, which constructs no objects and keeps every scalar as
the text written, so `no` and `1.10` stay text as in a flow file. Anything else is plain text,
which the caller keeps as it is: other YAML, invalid YAML, and text with an explicit tag such
as `!!python/name:os.system`. No text makes reading raise: the tests feed it invalid and
hostile YAML.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode
from yaml.resolver import BaseResolver

from thehat.model import FILE_KEYS, NAME_LIST_KEYS, NUMBER_KEYS, RECIPIENT_KEYS, TEXT_KEYS

# Longer text is not parsed: no step field may be longer than 32,768 characters, and PyYAML's
# pure-Python parser reads only about a quarter of a megabyte a second.
MAX_PARSED_CHARACTERS: Final = 128 * 1024
# The values that mean "no value" in a flow file.
_NULLS: Final = frozenset({"", "~", "null", "Null", "NULL"})
_NAME_SEPARATORS: Final = re.compile(r"[,\s]+")


@dataclass(frozen=True)
class FieldText:
    """The outcome of reading a text: step fields by file key, or None for plain text.

    `problem` explains why a text that looks like step fields was kept as plain text.
    """

    fields: dict[str, object] | None
    problem: str | None = None


def read_step_fields(text: str, keys: Collection[str]) -> FieldText:
    """Read `text` as a mapping of the flow-file `keys` to values.

    Values come back as StepDef takes them: text or None, tuples of names or recipients, and
    seconds as a float.

    >>> read_step_fields("url: https://example.com/x\\ngates: a, b", FILE_KEYS).fields
    {'url': 'https://example.com/x', 'gates': ('a', 'b')}
    >>> read_step_fields("url:http://x", FILE_KEYS).fields is None
    True
    """
    if len(text) > MAX_PARSED_CHARACTERS:
        return FieldText(None)
    loader = yaml.BaseLoader(text)
    try:
        node = loader.get_single_node()
        if node is None or _has_explicit_tag(node):
            return FieldText(None)
        document = loader.construct_document(node)
    except (yaml.YAMLError, RecursionError):
        # RecursionError: PyYAML composes nested collections recursively.
        return FieldText(None)
    finally:
        loader.dispose()
    if not isinstance(document, dict) or not document:
        return FieldText(None)

    unknown = [key for key in document if key not in keys]
    if unknown:
        if len(unknown) == len(document):
            return FieldText(None)
        names = ", ".join(repr(key) for key in unknown)
        return FieldText(None, f"it looks like step fields, but {names} "
                               f"{'is not a key' if len(unknown) == 1 else 'are not keys'} "
                               "of a flow file")

    fields: dict[str, object] = {}
    for key, value in document.items():
        converted = _convert(key, value)
        if isinstance(converted, _Invalid):
            return FieldText(None, f"it looks like step fields, but the value of {key!r} "
                                   f"{converted.reason}")
        fields[key] = converted
    return FieldText(fields)


_UNTAGGED: Final = frozenset({BaseResolver.DEFAULT_SCALAR_TAG, BaseResolver.DEFAULT_SEQUENCE_TAG,
                             BaseResolver.DEFAULT_MAPPING_TAG})


def _has_explicit_tag(root: Node) -> bool:
    """Tell whether a node below `root` has a tag such as `!!python/name`.

    BaseLoader would drop the tag and keep the value, so such text is treated as plain text.
    """
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        # Aliases make the node graph share nodes; each is visited once.
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.tag not in _UNTAGGED:
            return True
        if isinstance(node, SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, MappingNode):
            stack.extend(item for pair in node.value for item in pair)
    return False


@dataclass(frozen=True)
class _Invalid:
    reason: str


def _convert(key: str, value: object) -> object:
    if key in TEXT_KEYS or key == "step":
        if not isinstance(value, str):
            return _Invalid("is not text")
        return None if value in _NULLS else value
    if key in NUMBER_KEYS:
        if not isinstance(value, str):
            return _Invalid("is not a number")
        if value in _NULLS:
            return None
        try:
            return float(value)
        except ValueError:
            return _Invalid(f"{value!r} is not a number")
    if key in RECIPIENT_KEYS or key in NAME_LIST_KEYS:
        if isinstance(value, str):
            separators = "," if key in RECIPIENT_KEYS else _NAME_SEPARATORS
            items = re.split(separators, value) if value not in _NULLS else []
        elif isinstance(value, list) and all(isinstance(item, str) for item in value):
            items = value
        else:
            return _Invalid("is not a list of names")
        return tuple(item.strip() for item in items if item.strip())
    raise AssertionError(f"unhandled flow-file key {key!r}")


def step_arguments(fields: dict[str, object]) -> dict[str, object]:
    """Return `fields` (by file key, without `step`) as StepDef keyword arguments.

    >>> step_arguments({"group": ("a",), "startCommand": "make"})
    {'groups': ('a',), 'start_command': 'make'}
    """
    return {FILE_KEYS[key]: value for key, value in fields.items() if key != "step"}
