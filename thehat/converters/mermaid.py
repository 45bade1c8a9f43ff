"""Write a flow as a Mermaid flowchart, for Markdown pages that render Mermaid.

Each step is one node, `s0`, `s1`, ... in flow order, so an id never clashes with Mermaid's
keywords whatever the step is called. A node's label is the step name and, on a second line,
its description. Text is escaped with Mermaid's entity codes (`#quot;`, `#lt;`, ...), so a
description cannot end the label or add statements such as `click`.

NOTE: the output has been checked against Mermaid's documented syntax only, because no Mermaid
renderer runs in the test suite.
"""

from __future__ import annotations

import json
import re
from typing import Final

from thehat.model import Flow

# Characters that could end a quoted label, start markup or an entity code, or break the line.
_ESCAPES: Final = {
    "#": "#35;",
    '"': "#quot;",
    "<": "#lt;",
    ">": "#gt;",
    "&": "#amp;",
}
_LINE_BREAKS: Final = re.compile(r"\r\n|[\r\n\x85\u2028\u2029]")


def escape_label(text: str) -> str:
    """Return `text` for a quoted Mermaid label, with line breaks as `<br/>`.

    >>> escape_label('a "b" <c> #1 & d')
    'a #quot;b#quot; #lt;c#gt; #35;1 #amp; d'
    >>> escape_label("one\\ntwo")
    'one<br/>two'
    """
    escaped = "".join(_ESCAPES.get(char, char) for char in text)
    return _LINE_BREAKS.sub("<br/>", escaped)


def export_mermaid(flow: Flow, title: str | None = None) -> str:
    """Return `flow` as a Mermaid `flowchart TD`, each gate an edge to the step it gates.

    A `title` is written as front matter, on one line.
    """
    lines = []
    if title is not None:
        # A JSON string is a valid YAML double-quoted scalar, so any title is quoted safely.
        one_line = " ".join(_LINE_BREAKS.split(title))
        lines += ["---", f"title: {json.dumps(one_line)}", "---"]
    lines.append("flowchart TD")

    ids = {name: f"s{index}" for index, name in enumerate(flow.steps)}
    for step in flow:
        label = escape_label(step.name)
        if step.description:
            label += "<br/>" + escape_label(step.description)
        lines.append(f'    {ids[step.name]}["{label}"]')
    for step in flow:
        for gate in step.gates:
            lines.append(f"    {ids[gate]} --> {ids[step.name]}")
    return "\n".join(lines) + "\n"
