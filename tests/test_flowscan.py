"""The fast reader of the plain flow layout must agree with PyYAML wherever it accepts a file."""

from __future__ import annotations

import random

import pytest
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from thehat.flowfile import _compose, dump_flow
from thehat.flowscan import compose_plain_layout
from thehat.model import Flow, StepDef

from tests.test_flowfile import AWKWARD_NOTES, AWKWARD_TEXT, MUTATION_PIECES, TEA_FLOW, mutate


def shape(node: Node) -> tuple:
    """Describe a node tree by class, tag, value and line, the parts the flow loader reads."""
    line = node.start_mark.line
    if isinstance(node, ScalarNode):
        return ("scalar", node.tag, node.value, line)
    if isinstance(node, SequenceNode):
        return ("sequence", node.tag, [shape(item) for item in node.value], line)
    assert isinstance(node, MappingNode)
    return ("mapping", node.tag, [(shape(k), shape(v)) for k, v in node.value], line)


def one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


def assert_agrees(text: str) -> bool:
    """Check that a file the fast reader accepts gives PyYAML's tree; return if it accepted."""
    fast = compose_plain_layout(text)
    if fast is None:
        return False
    full, problems = _compose(text)
    assert problems == [], text
    assert full is not None
    assert shape(fast) == shape(full), text
    return True


def test_original_layout_takes_fast_path() -> None:
    text = (
        "---\n"
        "- step: openbread\n"
        "  description: Open bread bag\n"
        "  owner: \n"
        "  notifyAtStart: []\n"
        "  group:\n"
        "  - food\n"
        "  gates: []\n"
        "- step: selectslice\n"
        "  owner:\n"
        "  group:\n"
        "    - food\n"
        "  gates:\n"
        "  - openbread\n"
        "\n"
    )
    assert assert_agrees(text)


@pytest.mark.parametrize("value", AWKWARD_TEXT + AWKWARD_NOTES, ids=ascii)
def test_dumped_awkward_values_agree(value: str) -> None:
    flow = Flow([StepDef("a", description=one_line(value), owner="x", url="u", note=value,
                         groups=("g",), gates=()),
                 StepDef("b", gates=("a",),
                         start_command=one_line(value) if value.strip() else None)])
    assert_agrees(dump_flow(flow))


def test_dumped_flows_mostly_fast() -> None:
    rng = random.Random(7)
    accepted = 0
    for _ in range(200):
        steps = []
        for number in range(rng.randrange(1, 8)):
            words = rng.sample(["alpha", "beta: x", "it's", "no", "#5", "multi\nline", "é"], 3)
            steps.append(StepDef(f"s{number}", description=words[0].replace("\n", " "),
                                 note=words[1], url=words[2].replace("\n", " "),
                                 groups=("ops",), gates=(f"s{number - 1}",) if number else ()))
        accepted += assert_agrees(dump_flow(Flow(steps)))
    # Plain, quoted and block values all stay on the fast path when dumped by thehat.
    assert accepted == 200


def test_mutated_files_agree_when_accepted() -> None:
    rng = random.Random(3)
    accepted = 0
    for _ in range(4000):
        accepted += assert_agrees(mutate(TEA_FLOW, rng))
    assert accepted > 100


@pytest.mark.parametrize("piece", MUTATION_PIECES, ids=ascii)
def test_single_insertions_agree(piece: str) -> None:
    for where in range(0, len(TEA_FLOW) + 1, 7):
        assert_agrees(TEA_FLOW[:where] + piece + TEA_FLOW[where:])


@pytest.mark.parametrize("text", [
    "- step: a\n  note: |\n    x\n   y\n",
    "- step: a\n  note: |+\n    x\n\n",
    "- step: a\n  note: >\n    x\n",
    "- step: a\n  gates: [a, b]\n",
    "- step: a\n  description: two\n    lines\n",
    "- step: a\n  owner: &x bob\n",
    "- step: a\n- *x\n",
    "--- []\n",
    "step: a\n",
    "- step: a\r\n",
    "- step: a\n  note: |\n    x",
    "- step: a\n  null: x\n",
    "- step: a\n  Null: x\n",
    "",
])
def test_outside_layout_falls_back(text: str) -> None:
    assert compose_plain_layout(text) is None
