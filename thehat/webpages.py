"""The HTML of the status web site: pages, the parts the live page swaps in, and the graph.

Everything that comes from a flow, a run or a chat (names, descriptions, owners, notes, urls,
commands) goes through `html.escape`, and becomes a link only when its scheme is http, https
or mailto. The graph is dot's SVG output, but its text comes from users too. So it is parsed
and written out again with only the elements and attributes that graphviz uses for drawing:
no scripts, no event handler attributes, no links of other schemes.

This module builds text only; `thehat.web` serves it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from html import escape
from typing import Final
from urllib.parse import quote
from xml.etree import ElementTree

from renderers.details import safe_link
from renderers.digraph import LEGEND, fill_colour
from thehat.engine import Run
from thehat.model import StepState
from thehat.status import UNASSIGNED, format_time, progress_line
from thehat.store import JournalEntry

SVG_NAMESPACE: Final = "http://www.w3.org/2000/svg"
XLINK_NAMESPACE: Final = "http://www.w3.org/1999/xlink"
XML_NAMESPACE: Final = "http://www.w3.org/XML/1998/namespace"

# The elements graphviz writes into SVG; every other element is dropped with its content.
SVG_ELEMENTS: Final = frozenset({
    "svg", "g", "title", "desc", "a", "polygon", "polyline", "path", "ellipse", "circle",
    "rect", "line", "text", "tspan", "defs", "linearGradient", "radialGradient", "stop",
})
_PLAIN_ATTRIBUTE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*\Z")
_COORDINATES: Final = re.compile(r"[0-9.,\s-]*\Z")
AREA_SHAPES: Final = frozenset({"rect", "circle", "poly", "default"})
IMAGE_MAP_NAME: Final = "graph"

# File names of the downloads and what the live page calls them, in the order shown.
DOWNLOAD_LABELS: Final = (
    ("digraph.svg", "graph (SVG)"),
    ("digraph.png", "graph (PNG)"),
    ("map", "graph (PNG with links)"),
    ("digraph.dot", "graph source (DOT)"),
    ("dump.txt", "text dump"),
    ("calendar.ics", "calendar (iCalendar)"),
)

# Ids of the live page's elements whose content comes from `LiveParts`; the page script
# replaces them with each update.
LIVE_PART_IDS: Final = ("progress", "steps", "graph", "events", "updated")


def flow_path(name: str) -> str:
    """Return the path of a flow's live page; `/` in a name is percent-encoded.

    >>> flow_path("ops/db upgrade")
    '/flows/ops%2Fdb%20upgrade/'
    """
    return "/flows/" + quote(name, safe="") + "/"


def link(url: str | None, text: str | None = None) -> str:
    """Return an escaped link to `url`, or `url` as escaped text when its scheme is not
    http, https or mailto.

    >>> link("https://x.example/?a=1&b=2")
    '<a href="https://x.example/?a=1&amp;b=2" rel="noreferrer">https://x.example/?a=1&amp;b=2</a>'
    >>> link("javascript:alert(1)")
    '<span class="unlinked">javascript:alert(1)</span>'
    """
    if not url:
        return ""
    target = safe_link(url)
    label = escape(text if text is not None else url, quote=False)
    if target is None:
        return f'<span class="unlinked">{label}</span>'
    return f'<a href="{escape(target)}" rel="noreferrer">{label}</a>'


# -- the graph --------------------------------------------------------------------------------


def sanitize_svg(data: bytes) -> str:
    """Return dot's SVG output as markup that is safe to put into an HTML page.

    Only the elements in SVG_ELEMENTS are kept, and only plain presentation attributes,
    `xlink:title`, and links (`href`, `xlink:href`) whose scheme is http, https or mailto.
    Attributes whose names start with `on` and `style` attributes are dropped. Raises
    ValueError when `data` is not an SVG document.
    """
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise ValueError(f"the graph is not well-formed SVG: {exc}") from exc
    if root.tag != f"{{{SVG_NAMESPACE}}}svg":
        raise ValueError(f"the graph's root element is {root.tag!r}, not svg")
    output: list[str] = []
    _write_svg_element(root, output, is_root=True)
    return "".join(output)


def _write_svg_element(element: ElementTree.Element, output: list[str],
                       is_root: bool = False) -> None:
    name = _svg_element_name(element.tag)
    if name is None:
        return
    attributes = _svg_attributes(name, element.attrib)
    if is_root:
        attributes = [("xmlns", SVG_NAMESPACE), ("xmlns:xlink", XLINK_NAMESPACE)] + attributes
    output.append("<" + name + "".join(f' {key}="{escape(value)}"' for key, value in attributes)
                  + ">")
    if element.text:
        output.append(escape(element.text, quote=False))
    for child in element:
        _write_svg_element(child, output)
        if child.tail:
            output.append(escape(child.tail, quote=False))
    output.append(f"</{name}>")


def _svg_element_name(tag: str) -> str | None:
    namespace, _, name = tag[1:].partition("}") if tag.startswith("{") else ("", "", tag)
    if namespace != SVG_NAMESPACE or name not in SVG_ELEMENTS:
        return None
    return name


def _svg_attributes(element: str, attributes: dict[str, str]) -> list[tuple[str, str]]:
    allowed: list[tuple[str, str]] = []
    has_link = False
    for key, value in attributes.items():
        if key.startswith("{"):
            namespace, _, name = key[1:].partition("}")
            if namespace == XLINK_NAMESPACE and name == "title":
                allowed.append(("xlink:title", value))
                continue
            if namespace == XML_NAMESPACE and name == "space":
                allowed.append(("xml:space", value))
                continue
            if not (namespace == XLINK_NAMESPACE and name == "href"):
                continue
            key = "xlink:href"
        if key in ("href", "xlink:href"):
            target = safe_link(value)
            if target is not None:
                allowed.append((key, target))
                has_link = True
            continue
        lowered = key.lower()
        if not _PLAIN_ATTRIBUTE.match(key) or lowered.startswith("on") or lowered == "style":
            continue
        allowed.append((key, value))
    if element == "a" and has_link:
        allowed.append(("target", "_blank"))
    return allowed


def image_map(data: bytes) -> str:
    """Build a `<map>` named IMAGE_MAP_NAME from dot's cmapx output.

    Each area keeps its shape, coordinates and title; its link only when the scheme is
    http, https or mailto. Raises ValueError when `data` is not a cmapx document.
    """
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise ValueError(f"the image map is not well-formed: {exc}") from exc
    areas = []
    for area in root.iter("area"):
        shape = area.get("shape", "rect")
        coords = area.get("coords", "")
        if shape not in AREA_SHAPES or not _COORDINATES.match(coords):
            continue
        title = area.get("title") or ""
        parts = [f'shape="{shape}"', f'coords="{escape(coords)}"']
        target = safe_link(area.get("href"))
        if target is not None:
            parts.append(f'href="{escape(target)}" target="_blank" rel="noreferrer"')
        parts.append(f'title="{escape(title)}" alt="{escape(title or "step")}"')
        areas.append("<area " + " ".join(parts) + ">")
    return f'<map name="{IMAGE_MAP_NAME}">' + "\n".join(areas) + "</map>"


# -- parts of the live page -------------------------------------------------------------------


@dataclass
class LiveParts:
    """The parts of a live page that change with the run, as HTML, plus the render version
    the graph belongs to."""

    version: int
    progress: str
    steps: str
    graph: str
    events: str
    updated: str

    def as_json(self) -> dict[str, str | int]:
        return {"version": self.version, "progress": self.progress, "steps": self.steps,
                "graph": self.graph, "events": self.events, "updated": self.updated}


def progress_html(run: Run) -> str:
    """Return the progress line, marked as a warning while the run reverts."""
    if not run.steps:
        return f'<p class="progress">Flow {escape(run.name)} has no steps yet.</p>'
    css = "progress reverting" if run.reverting else "progress"
    return f'<p class="{css}">{escape(progress_line(run))}</p>'


def steps_table(run: Run, now: datetime) -> str:
    """Return the table of the steps that need attention now, as the chat status shows it.

    The state cell has the step's fill colour in the graph; a step's note is the tooltip of
    its name.
    """
    actionable = run.actionable()
    if not actionable:
        if not run.steps:
            return '<p class="muted">No steps yet.</p>'
        if run.reverting:
            return "<p>All started steps are reverted; the flow has ended.</p>"
        return "<p>All steps completed!</p>"
    rows = []
    for step in actionable:
        definition = step.definition
        if step.owner:
            owner = escape(step.owner)
        else:
            owner = f'<span class="unassigned">{UNASSIGNED}</span>'
        note = f' title="{escape(definition.note)}"' if definition.note else ""
        rows.append(
            "<tr>"
            f"<td>{owner}</td>"
            f'<td class="{colour_class(fill_colour(run, step))}">'
            f"{escape(step.state.display(run.reverting))}</td>"
            f'<td class="number">{step.duration_minutes(now)}</td>'
            f'<td class="name"{note}>{escape(step.name)}</td>'
            f"<td>{escape(definition.description or '')}</td>"
            f'<td class="url">{link(definition.url)}</td>'
            "</tr>")
    return ('<table class="steps"><thead><tr><th>OWNER</th><th>STATE</th>'
            '<th title="minutes since the step started">DUR</th><th>NAME</th>'
            "<th>DESCRIPTION</th><th>LINK</th></tr></thead><tbody>"
            + "\n".join(rows) + "</tbody></table>")


def events_table(entries: Sequence[JournalEntry], zone: tzinfo | None) -> str:
    """Return journal entries as a table, newest first; the full result is the tooltip."""
    if not entries:
        return '<p class="muted">No journal entries for this flow yet.</p>'
    rows = []
    for entry in reversed(entries):
        first, _, rest = entry.result.partition("\n")
        more = f' title="{escape(entry.result)}"' if rest else ""
        rows.append(
            "<tr>"
            f'<td class="time">{escape(format_time(entry.time, zone))}</td>'
            f"<td>{escape(entry.actor or '')}</td>"
            f"<td><code>{escape(entry.command)}</code></td>"
            f'<td class="outcome-{escape(entry.outcome.replace(" ", "-"))}">'
            f"{escape(entry.outcome)}</td>"
            f"<td{more}>{escape(first)}</td>"
            "</tr>")
    return ('<table class="events"><thead><tr><th>TIME</th><th>WHO</th><th>COMMAND</th>'
            "<th>OUTCOME</th><th>RESULT</th></tr></thead><tbody>"
            + "\n".join(rows) + "</tbody></table>")


def graph_message(text: str) -> str:
    """Return the text shown in place of a graph that cannot be shown."""
    return f'<p class="muted">{escape(text)}</p>'


def updated_html(now: datetime, zone: tzinfo | None) -> str:
    return f"As of {escape(format_time(now, zone))}"


# -- pages ------------------------------------------------------------------------------------


def colour_class(colour: str) -> str:
    """Return the CSS class that paints a cell in a graphviz colour of the legend.

    >>> colour_class("IndianRed")
    'colour-indianred'
    """
    return "colour-" + re.sub(r"[^a-z0-9]", "", colour.lower())


def legend_html() -> str:
    """Return the graph legend: one swatch and meaning per colour.

    A meaning that starts with "Border" gets a hollow swatch in that colour.
    """
    items = []
    for colour, _, meaning in LEGEND:
        kind = "border" if meaning.startswith("Border") else "fill"
        items.append(f'<li><span class="swatch {kind} {colour_class(colour)}"></span>'
                     f"{escape(meaning)}</li>")
    return f'<ul class="legend">{"".join(items)}</ul>'


def _legend_css() -> str:
    # Distinct colour names only: a name can appear in the legend more than once.
    colours = {entry[0]: entry[1] for entry in LEGEND}
    rules = []
    for name, hex_value in colours.items():
        if re.fullmatch(r"#[0-9A-Fa-f]{6}", hex_value):
            rules.append(f".{colour_class(name)}{{background:{hex_value}}}")
            rules.append(f".swatch.border.{colour_class(name)}{{background:#fff;"
                         f"border:3px solid {hex_value}}}")
    return "\n".join(rules)


STYLE: Final = """
body{margin:0 auto;max-width:90rem;padding:0 1rem 2rem;font:16px/1.45 system-ui,sans-serif;
 color:#111;background:#fbfbf8}
h1{font-size:1.6rem;margin:.8rem 0 .3rem}
h2{font-size:1.2rem;margin:1.6rem 0 .5rem;border-bottom:1px solid #bbb}
a{color:#0645ad}
nav{margin-top:.6rem}
.progress{font-size:1.15rem;font-weight:600;margin:.3rem 0}
.progress.reverting{background:#cd5c5c;color:#000;padding:.4rem .6rem}
.muted,footer{color:#444}
.unlinked{color:#444}
.unassigned,.warning{font-weight:700}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #ccc;vertical-align:top}
th{background:#e8e8e4}
td.number{text-align:right;font-variant-numeric:tabular-nums}
td.name{font-weight:600}
td.url,td code{overflow-wrap:anywhere}
td.time{white-space:nowrap}
.outcome-refused,.outcome-partly-refused{font-weight:700}
.graph{overflow:auto;border:1px solid #bbb;background:#fff;padding:.5rem}
.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.3rem 1.5rem}
.swatch{display:inline-block;width:1.1em;height:1.1em;border:1px solid #333;
 vertical-align:-.2em;margin-right:.4em}
.downloads a{margin-right:.8rem;white-space:nowrap}
footer{margin-top:2rem;font-size:.9rem}
"""

# The live page's script: wait for server-sent events and swap in the changed parts.
LIVE_SCRIPT: Final = """
"use strict";
(function () {
  var body = document.body;
  var shown = Number(body.getAttribute("data-version"));
  var live = document.getElementById("live");
  var parts = %(parts)s;
  var loading = false;
  var again = false;
  var source = null;

  function say(text) { live.textContent = text; }

  function apply(data) {
    parts.forEach(function (id) {
      var element = document.getElementById(id);
      if (element && typeof data[id] === "string") { element.innerHTML = data[id]; }
    });
    shown = data.version;
    body.setAttribute("data-version", String(shown));
  }

  function refresh() {
    if (loading) { again = true; return; }
    loading = true;
    fetch("fragment", {cache: "no-store"})
      .then(function (response) {
        if (response.status === 404) {
          say("This run is no longer active.");
          source.close();
          return null;
        }
        if (!response.ok) { throw new Error("HTTP status " + response.status); }
        return response.json();
      })
      .then(function (data) {
        if (data) { apply(data); say("Live: connected"); }
      })
      .catch(function (error) {
        say("Live update failed (" + error.message + "); trying again at the next change.");
      })
      .finally(function () {
        loading = false;
        if (again) { again = false; refresh(); }
      });
  }

  source = new EventSource("events");
  source.addEventListener("open", function () { say("Live: connected"); });
  source.addEventListener("error", function () {
    if (source.readyState !== EventSource.CLOSED) { say("Live: reconnecting\\u2026"); }
  });
  source.addEventListener("rendered", function (event) {
    if (JSON.parse(event.data).version !== shown) { refresh(); }
  });
  source.addEventListener("gone", function () {
    say("This run is no longer active.");
    source.close();
  });
})();
"""


def document(title: str, body: str, nonce: str, script: str | None = None,
             body_attributes: str = "") -> str:
    """Wrap `body` (HTML) into a page; `title` is text. The style and script carry `nonce`,
    which the page's Content-Security-Policy allows."""
    script_element = f'<script nonce="{nonce}">{script}</script>' if script else ""
    return ("<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title>"
            f'<style nonce="{nonce}">{STYLE}{_legend_css()}</style></head>'
            f"<body{body_attributes}>{body}{script_element}</body></html>\n")


def live_page(name: str, parts: LiveParts, nonce: str) -> str:
    """Return the live page of run `name`: progress, steps, graph, legend, events, downloads."""
    downloads = "".join(f'<a href="{file}">{escape(label)}</a>'
                        for file, label in DOWNLOAD_LABELS)
    body = (
        '<header><nav><a href="../../">All active runs</a></nav>'
        f"<h1>Flow {escape(name)}</h1>"
        f'<div id="progress">{parts.progress}</div>'
        f'<p class="downloads">Downloads: {downloads}</p></header>'
        "<main>"
        f'<section><h2>Needs attention now</h2><div id="steps">{parts.steps}</div></section>'
        f'<section><h2>Graph</h2><div id="graph" class="graph">{parts.graph}</div>'
        f"{legend_html()}</section>"
        f'<section><h2>Recent events</h2><div id="events">{parts.events}</div></section>'
        "</main>"
        '<footer><span id="live">Live: connecting\u2026</span> \u00b7 '
        f'<span id="updated">{parts.updated}</span></footer>')
    script = LIVE_SCRIPT % {"parts": '["' + '", "'.join(LIVE_PART_IDS) + '"]'}
    return document(f"thehat: {name}", body, nonce, script,
                    f' data-version="{parts.version}"')


@dataclass
class RunSummary:
    """One row of the index: a run's counts and audience."""

    name: str
    counts: dict[StepState, int]
    total: int
    actionable: int
    reverting: bool
    failed_step: str | None
    ended: bool
    conversations: int


def index_page(summaries: Iterable[RunSummary], now: datetime, zone: tzinfo | None,
               nonce: str) -> str:
    """Return the index: one row per active run, with a link to its live page."""
    rows = []
    for summary in summaries:
        counts = ", ".join(f"{count} {state.display(summary.reverting)}"
                           for state, count in summary.counts.items() if count)
        if summary.reverting:
            direction = f"reverting after {summary.failed_step} failed"
        else:
            direction = "forward"
        if summary.ended:
            direction += ", ended"
        rows.append(
            "<tr>"
            f'<td class="name"><a href="{escape(flow_path(summary.name))}">'
            f"{escape(summary.name)}</a></td>"
            f'<td class="number">{summary.total}</td>'
            f"<td>{escape(counts)}</td>"
            f'<td class="number">{summary.actionable}</td>'
            f'<td class="{"warning" if summary.reverting else ""}">{escape(direction)}</td>'
            f'<td class="number">{summary.conversations}</td>'
            "</tr>")
    if rows:
        table = ('<table class="runs"><thead><tr><th>FLOW</th><th>STEPS</th><th>STATES</th>'
                 "<th>NEED ATTENTION</th><th>DIRECTION</th><th>CONVERSATIONS</th></tr></thead>"
                 "<tbody>" + "\n".join(rows) + "</tbody></table>")
    else:
        table = '<p class="muted">No flow is running. Load one from a chat with load FLOW.</p>'
    body = (f"<header><h1>thehat: active runs</h1></header><main>{table}</main>"
            f"<footer>{updated_html(now, zone)}</footer>")
    return document("thehat: active runs", body, nonce)


def map_page(name: str, areas: str, nonce: str) -> str:
    """Return the PNG graph of run `name` with its clickable image map (`areas`, HTML)."""
    body = (
        '<header><nav><a href="./">Live page</a> \u00b7 <a href="../../">All active runs</a>'
        f"</nav><h1>Flow {escape(name)}</h1></header>"
        f"<main>{areas}"
        f'<div class="graph"><img src="digraph.png" usemap="#{IMAGE_MAP_NAME}" '
        f'alt="Graph of flow {escape(name)}"></div>{legend_html()}</main>')
    return document(f"thehat: {name} (PNG)", body, nonce)
