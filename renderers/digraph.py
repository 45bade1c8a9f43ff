"""The graph view: a run as graphviz DOT text, one box per step and one arrow per gate.

Colours follow the original TheHat's graph legend (see `LEGEND`): the border shows whether a
step has an owner, and the fill shows whether it needs attention now, is in progress, is done,
or waits for its gates. Each box lists the step's details, links to its url (http, https and
mailto only) and shows its note as a tooltip.

Every node id and attribute value is a quoted DOT string, so any step name or text is safe.
The escaping rules were checked against graphviz 2.43 for SVG, PNG and cmapx output:

- In a quoted string dot's parser only turns `\\"` into `"`; other backslashes stay.
- Labels then read `\\\\` as one backslash and `\\n` as a line break. Tooltips take a second
  unescaping pass, so one backslash is written as four.
- Labels and tooltips decode HTML entities (`&amp;`, `&#10;`), and SVG output copies them
  into node titles and links unchanged, so `&` is written as `&amp;` everywhere.

This module only builds text. `thehat.graphviz` runs `dot` on it.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import tzinfo
from typing import Final, NamedTuple

from renderers.base import Renderer
from renderers.details import clean_text, safe_link, step_fields
from thehat.engine import STARTED_STATES, Run, RunStep
from thehat.model import StepState


class LegendEntry(NamedTuple):
    """One colour of the graph: its graphviz name, its RGB value and what it means."""

    colour: str
    hex: str
    meaning: str


# X11 colour names from graphviz's colour table. The RGB values are those that `dot -Tfig`
# (graphviz 2.43.0) writes for these names.
ATTENTION: Final = "IndianRed"
IN_PROGRESS: Final = "gold"
DONE: Final = "PaleGreen2"
WAITING: Final = "LightGrey"
OWNED: Final = "PaleGreen2"
UNASSIGNED: Final = "IndianRed"
SATISFIED_GATE: Final = "grey55"

LEGEND: Final = (
    LegendEntry(ATTENTION, "#CD5C5C", "Fill: needs attention now: ready to start, or to "
                "revert while the flow reverts; also the failed step"),
    LegendEntry(IN_PROGRESS, "#FFD700", "Fill: in progress, or being reverted"),
    LegendEntry(DONE, "#90EE90", "Fill: finished, or reverted"),
    LegendEntry(WAITING, "#D3D3D3", "Fill: pending, still waiting for its gates"),
    LegendEntry(OWNED, "#90EE90", "Border: the step has an owner"),
    LegendEntry(UNASSIGNED, "#CD5C5C", "Border: the step is unassigned"),
    LegendEntry(SATISFIED_GATE, "#8C8C8C", "Arrow: a gate that no longer blocks a step"),
)

# Label lines wrap at this many characters, and each field's value is cut to
# MAX_VALUE_CHARACTERS, so one field takes at most four lines of a box.
LABEL_WIDTH: Final = 40
MAX_VALUE_CHARACTERS: Final = 120
MAX_TOOLTIP_CHARACTERS: Final = 2000
ELLIPSIS: Final = "\u2026"
CLICK_FOR_DETAILS: Final = "Click for details"

_STATE_CLASSES: Final = {
    StepState.PENDING: "pending",
    StepState.IN_PROGRESS: "in-progress",
    StepState.FINISHED: "finished",
    StepState.REVERTING: "reverting",
    StepState.REVERTED: "reverted",
    StepState.FAILED: "failed",
}
_STATE_WORDS: Final = {
    StepState.PENDING: "pending",
    StepState.IN_PROGRESS: "in progress",
    StepState.FINISHED: "finished",
    StepState.REVERTING: "reverting",
    StepState.REVERTED: "reverted",
    StepState.FAILED: "failed",
}


# -- quoting ------------------------------------------------------------------------------------


def quote(text: str) -> str:
    """Quote `text` as a DOT string for a node id or a value that graphviz does not unescape.

    Backslashes are doubled so that a trailing one cannot escape the closing quote. A node
    id keeps them doubled, which only shows in the `<title>` of names that contain one.

    >>> print(quote('node'), quote('say "hi"'), quote('C:\\\\'), quote('R&D'))
    "node" "say \\"hi\\"" "C:\\\\" "R&amp;D"
    """
    text = _escape_entities(clean_text(text)).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def quote_label(lines: Iterable[str]) -> str:
    """Quote label lines as one DOT string; each line shows as written, centred.

    >>> print(quote_label(["Name: a\\\\N", "x & <y>"]))
    "Name: a\\\\N\\nx &amp; <y>"
    """
    escaped = [_escape_entities(clean_text(line)).replace("\\", "\\\\").replace('"', '\\"')
               .replace("\n", " ") for line in lines]
    return '"' + "\\n".join(escaped) + '"'


def quote_tooltip(text: str) -> str:
    """Quote a tooltip so that it shows as written, its line breaks included.

    >>> print(quote_tooltip('a\\\\N\\n"b"'))
    "a\\\\\\\\N\\n\\"b\\""
    """
    text = _escape_entities(clean_text(text))
    text = text.replace("\\", "\\\\\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def _escape_entities(text: str) -> str:
    # NOTE: graphviz 2.43 decodes entities in tooltips once more for cmapx output than for
    # SVG, so a note that itself contains an entity such as "&lt;" shows as "<" in the image
    # map. Plain "&", "<" and ">" show correctly in both.
    return text.replace("&", "&amp;")


def _attributes(pairs: Iterable[tuple[str, str]]) -> str:
    return "[" + ", ".join(f"{name}={value}" for name, value in pairs) + "]"


# -- one step --------------------------------------------------------------------------------


def label_lines(step: RunStep, zone: tzinfo | None = None) -> list[str]:
    """Return the lines of a step's box: its fields, wrapped at `LABEL_WIDTH` characters."""
    lines: list[str] = []
    for label, value in step_fields(step, zone):
        if len(value) > MAX_VALUE_CHARACTERS:
            value = value[:MAX_VALUE_CHARACTERS - 1] + ELLIPSIS
        lines.extend(textwrap.wrap(f"{label}: {value}", LABEL_WIDTH, subsequent_indent="  ",
                                   break_on_hyphens=False))
    return lines


def fill_colour(run: Run, step: RunStep) -> str:
    """Return the fill colour of a step; waiting for someone to act outranks the state.

    A step waits for someone to act when it is the failed step or when it needs attention
    and no work on it has begun. Going forward that is a ready pending step. While
    reverting, it is a finished or in-progress step that is free to be reverted. A step in
    progress going forward, or one being reverted, also needs attention but is drawn as work
    in progress.
    """
    if step.state is StepState.FAILED or _waits_for_action(run, step):
        return ATTENTION
    if step.state in (StepState.IN_PROGRESS, StepState.REVERTING):
        return IN_PROGRESS
    if step.state in (StepState.FINISHED, StepState.REVERTED):
        return DONE
    return WAITING


def _waits_for_action(run: Run, step: RunStep) -> bool:
    if not run.is_actionable(step.name):
        return False
    if run.reverting:
        return step.state in (StepState.FINISHED, StepState.IN_PROGRESS)
    return step.state is StepState.PENDING


def _node(run: Run, step: RunStep, index: int, zone: tzinfo | None) -> str:
    classes = ["step", _STATE_CLASSES[step.state]]
    if run.is_actionable(step.name):
        classes.append("actionable")
    pairs = [
        ("id", quote(f"step-{index}")),
        ("class", quote(" ".join(classes))),
        ("label", quote_label(label_lines(step, zone))),
        ("color", quote(OWNED if step.owner else UNASSIGNED)),
        ("fillcolor", quote(fill_colour(run, step))),
    ]
    url = safe_link(step.definition.url)
    note = step.definition.note
    if url is not None:
        pairs.append(("URL", quote(url)))
    if note:
        if len(note) > MAX_TOOLTIP_CHARACTERS:
            note = note[:MAX_TOOLTIP_CHARACTERS - 1] + ELLIPSIS
        pairs.append(("tooltip", quote_tooltip(note)))
    elif url is not None:
        pairs.append(("tooltip", quote(CLICK_FOR_DETAILS)))
    return f"\t{quote(step.name)} {_attributes(pairs)};"


def _gate_holds(run: Run, predecessor: RunStep, successor: RunStep) -> bool:
    """Tell whether the gate predecessor -> successor still blocks one of the two steps.

    Going forward the successor waits until the predecessor finishes. While reverting, the
    predecessor waits until the successor, if it was started, is reverted.
    """
    if run.reverting:
        return successor.state in STARTED_STATES
    return predecessor.state is not StepState.FINISHED


def _edge(run: Run, predecessor: RunStep, successor: RunStep) -> str:
    pairs = [("class", quote("gate"))]
    if not _gate_holds(run, predecessor, successor):
        pairs = [("class", quote("gate satisfied")), ("color", quote(SATISFIED_GATE))]
    return f"\t{quote(predecessor.name)} -> {quote(successor.name)} {_attributes(pairs)};"


# -- the graph -------------------------------------------------------------------------------


def render_dot(run: Run, zone: tzinfo | None = None, focus: int | None = None) -> str:
    """Build the DOT text of `run`, with times shown in `zone` (None: the local zone).

    With `focus`, a run of more than `focus` steps is drawn in part: see `focused_steps`.
    Node ids are the step names, so SVG output has each name in the node's `<title>`. Each
    node's `id` attribute is `step-<n>`, where n is the step's position in the run. Its
    `class` lists `step`, the state and `actionable` when the step needs attention. Graphviz
    copies `id` and `class` onto the node's `<g>` element in SVG.
    """
    position = {name: index for index, name in enumerate(run.steps)}
    visible: list[str] = list(run.steps)
    hidden: dict[str, list[str]] = {}
    if focus is not None and len(run.steps) > focus:
        visible, hidden = focused_steps(run, focus)
    visible_names = set(visible)

    defaults = _attributes([("shape", quote("box")), ("style", quote("filled")),
                            ("fontsize", quote("9"))])
    lines = [f"digraph {quote(run.name)} {{", f"\tnode {defaults};"]
    for name in visible:
        lines.append(_node(run, run.steps[name], position[name], zone))
    for name in visible:
        successor = run.steps[name]
        for gate in successor.definition.gates:
            if gate in visible_names:
                lines.append(_edge(run, run.steps[gate], successor))
    if hidden:
        lines.extend(_summary_lines(run, visible, hidden))
    lines.append("}")
    return "\n".join(lines) + "\n"


class DigraphRenderer(Renderer):
    """The DOT text of the graph view, as UTF-8."""

    name = "digraph"
    suffix = "-digraph.dot"
    media_type = "text/vnd.graphviz"

    def render(self, run: Run, zone: tzinfo | None = None) -> bytes:
        return render_dot(run, zone).encode("utf-8")


# -- the focused view ------------------------------------------------------------------------

# Summary box titles; `{steps}` becomes "step" or "steps".
REGION_TITLES: Final = {
    "earlier": "earlier {steps} not shown",
    "later": "later {steps} not shown",
    "other": "{steps} on other branches not shown",
}


def focused_steps(run: Run, limit: int) -> tuple[list[str], dict[str, list[str]]]:
    """Choose at most `limit` steps to draw and group the others by region.

    The steps that need attention and the failed step come first, then their direct
    predecessors and successors, each in flow order, for as long as there is room. Returns
    the names to draw in flow order, and the hidden names by region: "earlier" (a drawn step
    depends on them), "later" (they depend on a drawn step) and "other".
    """
    position = {name: index for index, name in enumerate(run.steps)}
    core = [step.name for step in run.actionable()]
    if run.failed_step is not None and run.failed_step not in core:
        core.append(run.failed_step)
    core.sort(key=position.__getitem__)
    chosen = dict.fromkeys(core[:max(limit, 0)])

    neighbours: set[str] = set()
    for name in chosen:
        neighbours.update(run.steps[name].definition.gates)
        neighbours.update(run.dependants(name))
    for name in sorted(neighbours - chosen.keys(), key=position.__getitem__):
        if len(chosen) >= limit:
            break
        chosen[name] = None

    visible = sorted(chosen, key=position.__getitem__)
    earlier = _reachable(visible, lambda name: run.steps[name].definition.gates)
    later = _reachable(visible, run.dependants)
    hidden: dict[str, list[str]] = {region: [] for region in REGION_TITLES}
    for name in run.steps:
        if name in chosen:
            continue
        if name in earlier:
            hidden["earlier"].append(name)
        elif name in later:
            hidden["later"].append(name)
        else:
            hidden["other"].append(name)
    return visible, {region: names for region, names in hidden.items() if names}


def _reachable(starts: list[str], neighbours: Callable[[str], Iterable[str]]) -> set[str]:
    """Return every step reachable from `starts` through `neighbours`, without `starts`."""
    seen: set[str] = set()
    stack = list(starts)
    while stack:
        for name in neighbours(stack.pop()):
            if name not in seen:
                seen.add(name)
                stack.append(name)
    return seen.difference(starts)


def _summary_lines(run: Run, visible: list[str], hidden: dict[str, list[str]]) -> list[str]:
    """Draw one dashed box per region of hidden steps, linked to the drawn steps it touches."""
    region_of = {name: region for region, names in hidden.items() for name in names}
    node_ids = {region: _free_id("(" + REGION_TITLES[region].format(steps="steps") + ")",
                                 run.steps)
                for region in hidden}
    lines = []
    for region, names in hidden.items():
        counts = Counter(run.steps[name].state for name in names)
        state_text = ", ".join(f"{counts[state]} {word}" for state, word in _STATE_WORDS.items()
                               if counts[state])
        title = REGION_TITLES[region].format(steps="step" if len(names) == 1 else "steps")
        text = [f"{len(names)} {title}:", state_text]
        attention = sum(run.is_actionable(name) for name in names)
        if attention:
            verb = "needs" if attention == 1 else "need"
            text.append(f"{attention} of them {verb} attention now")
        wrapped = [line for part in text for line in textwrap.wrap(part, LABEL_WIDTH)]
        pairs = [("id", quote(f"hidden-{region}")), ("class", quote(f"summary {region}")),
                 ("label", quote_label(wrapped)), ("style", quote("dashed")),
                 ("color", quote(SATISFIED_GATE))]
        lines.append(f"\t{quote(node_ids[region])} {_attributes(pairs)};")

    links: dict[tuple[str, str], None] = {}
    for name in visible:
        for gate in run.steps[name].definition.gates:
            if gate in region_of:
                links[(node_ids[region_of[gate]], name)] = None
        for successor in run.dependants(name):
            if successor in region_of:
                links[(name, node_ids[region_of[successor]])] = None
    style = _attributes([("class", quote("summary")), ("style", quote("dashed")),
                         ("color", quote(SATISFIED_GATE))])
    lines.extend(f"\t{quote(tail)} -> {quote(head)} {style};" for tail, head in links)
    return lines


def _free_id(base: str, step_names: Iterable[str]) -> str:
    """Return `base`, with `'` appended as often as needed to differ from every step name."""
    names = set(step_names)
    while base in names:
        base += "'"
    return base
