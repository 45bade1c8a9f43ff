"""Import a ZNode graph export (JSON) as a flow.

The file is a JSON object with a list of `nodes` (`{"id": 1, "txt": "..."}`) and a list of
`connections` (`{"nodeA": 1, "nodeB": 2}`). Every node becomes one step, in file order:

- The node text, with each literal `\\n` turned into a line break, is read as YAML. A mapping
  whose keys are all flow-file keys sets those fields, `step` included. Any other text
  becomes the description, with line breaks replaced by spaces.
- The step name is the text's `step`, or else `task<id>`.
- A connection from nodeA to nodeB makes nodeB's step gate on nodeA's. Gates written in the
  text are added to those.

Other node and connection fields (positions, colours, sizes) are ignored.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from thehat.converters.conversion import Conversion, ConversionError, as_bytes, build_flow
from thehat.converters.stepfields import read_step_fields, step_arguments
from thehat.errors import Problem
from thehat.model import FILE_KEYS, StepDef

_LINE_BREAKS: Final = re.compile(r"\s*(?:\r\n|[\r\n\x85\u2028\u2029])\s*")


def import_znode(text: str | bytes, source: str) -> Conversion:
    """Convert the ZNode export `text` (read from `source`) to a flow, by the rules above.

    Raises ConversionError naming `source` and the line and column for malformed JSON. The
    error names the node for a node without an id, a duplicate id or step name, a connection
    to a missing node, and an invalid flow (a cycle, an invalid field value).
    """
    document = _load_json(text, source)
    if not isinstance(document, dict) or not isinstance(document.get("nodes"), list):
        raise ConversionError(f"{source}: a ZNode export is a JSON object with a list of "
                              "'nodes'; this file has none")
    connections = document.get("connections", [])
    if not isinstance(connections, list):
        raise ConversionError(f"{source}: 'connections' must be a list of objects with "
                              "nodeA and nodeB")

    warnings: list[str] = []
    nodes = _read_nodes(document["nodes"], source, warnings)
    by_id = {node.id: node for node in nodes}
    for index, connection in enumerate(connections, start=1):
        if not isinstance(connection, dict):
            raise ConversionError(f"{source}: connection {index} is not an object with "
                                  "nodeA and nodeB")
        ends = []
        for key in ("nodeA", "nodeB"):
            node_id = _node_id(connection.get(key))
            end = by_id.get(node_id) if node_id is not None else None
            if key not in connection:
                raise ConversionError(f"{source}: connection {index} has no {key}; give the "
                                      "ids of both nodes it joins")
            if end is None:
                raise ConversionError(f"{source}: connection {index} names missing node "
                                      f"{connection.get(key)!r} as {key}")
            ends.append(end)
        start, end = ends
        if start.name not in end.gates:
            end.gates.append(start.name)

    steps = []
    for node in nodes:
        gates = tuple(node.gates) + tuple(g for g in node.text_gates if g not in node.gates)
        steps.append(StepDef(node.name, gates=gates, line=node.index,
                             **node.arguments))  # type: ignore[arg-type]

    def locate(problem: Problem) -> str:
        if problem.line is None:
            return "nodes"
        return f"node {nodes[problem.line - 1].id}"

    return Conversion(build_flow(steps, source, locate), warnings)


class _Node:
    def __init__(self, index: int, node_id: str, name: str, arguments: dict[str, Any],
                 text_gates: tuple[str, ...]) -> None:
        self.index = index
        self.id = node_id
        self.name = name
        self.arguments = arguments
        self.text_gates = text_gates
        self.gates: list[str] = []


def _load_json(text: str | bytes, source: str) -> Any:
    data = as_bytes(text, source, "ZNode")
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise ConversionError(f"{source}:{exc.lineno}: invalid JSON at column {exc.colno}: "
                              f"{exc.msg}") from exc
    except UnicodeDecodeError as exc:
        raise ConversionError(f"{source}: invalid UTF-8 at byte offset {exc.start}; save the "
                              "file as UTF-8") from exc
    except RecursionError:
        raise ConversionError(f"{source}: the JSON is nested too deeply to read") from None


def _node_id(value: object) -> str | None:
    """Return a node id as text (JSON numbers and strings), or None for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    text = str(value).strip()
    return text or None


def _read_nodes(items: list[object], source: str, warnings: list[str]) -> list[_Node]:
    nodes: list[_Node] = []
    ids: dict[str, int] = {}
    names: dict[str, str] = {}
    for index, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise ConversionError(f"{source}: node {index} in 'nodes' is not an object")
        node_id = _node_id(item.get("id"))
        if node_id is None:
            raise ConversionError(f"{source}: node {index} in 'nodes' has no id (a number or "
                                  "text); give every node a unique id")
        if node_id in ids:
            raise ConversionError(f"{source}: node {node_id}: the id is used twice (nodes "
                                  f"{ids[node_id]} and {index} in 'nodes')")
        ids[node_id] = index

        node = _read_text(item.get("txt"), index, node_id, warnings)
        if node.name in names:
            raise ConversionError(f"{source}: node {node_id}: step name {node.name!r} is also "
                                  f"used by node {names[node.name]}")
        names[node.name] = node_id
        nodes.append(node)
    return nodes


def _read_text(value: object, index: int, node_id: str, warnings: list[str]) -> _Node:
    default_name = f"task{node_id}"
    if value is not None and not isinstance(value, str):
        warnings.append(f"node {node_id}: the text is {type(value).__name__} {value!r}, not "
                        f"text, so step {default_name} has no description")
        return _Node(index, node_id, default_name, {}, ())
    text = value.replace("\\n", "\n") if value is not None else ""
    if not text.strip():
        warnings.append(f"node {node_id}: the text is empty, so step {default_name} has no "
                        "description")
        return _Node(index, node_id, default_name, {}, ())

    read = read_step_fields(text, FILE_KEYS)
    if read.fields is None:
        if read.problem is not None:
            warnings.append(f"node {node_id}: the text became the description: {read.problem}")
        description = _LINE_BREAKS.sub(" ", text.strip())
        return _Node(index, node_id, default_name, {"description": description}, ())

    name = read.fields.pop("step", None) or default_name
    gates = read.fields.pop("gates", ())
    assert isinstance(name, str) and isinstance(gates, tuple)
    return _Node(index, node_id, name, step_arguments(read.fields), gates)
