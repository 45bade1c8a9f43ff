"""Helpers for the graph tests: runs with any step names, and readers of dot's output."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from typing import Any

from thehat.engine import Run
from thehat.model import StepDef

from tests.helpers import FakeClock

SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}"

# One statement per line in render_dot's output: a quoted id, an optional `-> "id"`, then
# attributes as name="value" pairs.
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_STATEMENT = re.compile(rf'^\t({_QUOTED})(?: -> ({_QUOTED}))? \[(.*)\];$', re.MULTILINE)
_ATTRIBUTE = re.compile(rf'(\w+)=({_QUOTED})')


def unchecked_run(steps: list[StepDef], name: str = "flow") -> Run:
    """Build a run without the loader's checks, so steps may have names it would reject.

    `Run` only iterates its flow argument, and a list of definitions iterates the same way.
    """
    return Run(name, steps, FakeClock())  # type: ignore[arg-type]


def unquote(text: str) -> str:
    """Undo `renderers.digraph.quote` for a node id or a plain attribute value."""
    return re.sub(r'\\(["\\])', r"\1", text[1:-1])


def dot_nodes(dot_text: str) -> dict[str, dict[str, str]]:
    """Read node statements back from render_dot's output: node id -> raw attribute values."""
    nodes = {}
    for match in _STATEMENT.finditer(dot_text):
        if match[2] is None:
            nodes[unquote(match[1])] = {k: v[1:-1] for k, v in _ATTRIBUTE.findall(match[3])}
    return nodes


def dot_edges(dot_text: str) -> list[tuple[str, str, dict[str, str]]]:
    edges = []
    for match in _STATEMENT.finditer(dot_text):
        if match[2] is not None:
            attributes = {k: v[1:-1] for k, v in _ATTRIBUTE.findall(match[3])}
            edges.append((unquote(match[1]), unquote(match[2]), attributes))
    return edges


@dataclass
class SvgNode:
    """The parts of one node in dot's SVG output."""

    id: str
    classes: list[str]
    title: str
    texts: list[str]
    fill: str | None
    stroke: str | None
    href: str | None
    tooltip: str | None


@dataclass
class SvgGraph:
    nodes: dict[str, SvgNode] = field(default_factory=dict)
    edges: list[tuple[str, list[str]]] = field(default_factory=list)


def parse_svg(svg: bytes) -> SvgGraph:
    """Parse dot's SVG with ElementTree: nodes by `id`, and edges as (title, classes)."""
    root = ElementTree.fromstring(svg)
    graph = SvgGraph()
    for group in root.iter(f"{SVG}g"):
        classes = (group.get("class") or "").split()
        if "node" in classes:
            shape = group.find(f".//{SVG}polygon")
            link = group.find(f".//{SVG}a")
            graph.nodes[group.get("id", "")] = SvgNode(
                id=group.get("id", ""),
                classes=classes,
                title=_text(group.find(f"{SVG}title")),
                texts=[text.text or "" for text in group.iter(f"{SVG}text")],
                fill=None if shape is None else shape.get("fill"),
                stroke=None if shape is None else shape.get("stroke"),
                href=None if link is None else link.get(f"{XLINK}href"),
                tooltip=None if link is None else link.get(f"{XLINK}title"),
            )
        elif "edge" in classes:
            graph.edges.append((_text(group.find(f"{SVG}title")), classes))
    return graph


def _text(element: Any) -> str:
    return "" if element is None else (element.text or "")
