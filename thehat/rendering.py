"""Rendered views of each run, kept fresh in the web directory off the command path.

The daemon calls `mark_stale` after every change to a run. For each flow at most one render is
in flight and at most one more is queued, so a burst of commands costs two renders, not one per
command, and a command's reply never waits for a render. A render copies the run (under the
daemon's lock, so no command changes it meanwhile), builds every view in a worker thread, runs
`dot` as a subprocess without blocking the event loop, and replaces each output file
atomically. Listeners (the web site) are told when a flow's files are new.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Final

from thehat.errors import TheHatError

if TYPE_CHECKING:
    from thehat.daemon import Daemon
    from thehat.engine import Run

log = logging.getLogger(__name__)

# File names of the views in a flow's web directory.
VIEW_FILES: Final = {
    "dot": "digraph.dot",
    "svg": "digraph.svg",
    "png": "digraph.png",
    "cmapx": "digraph.cmapx",
    "text": "dump.txt",
    "ical": "calendar.ics",
}
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_.-]")
# Above this many steps the graph shows the steps that need attention and their neighbours.
DEFAULT_FOCUS_STEPS: Final = 300

Listener = Callable[[str, int], Awaitable[None]]


def web_key(flow: str) -> str:
    """Return the directory name of a flow's views, never `.` or `..`.

    A name made only of letters, digits, `_`, `-` and `.` is used as it is. Otherwise the odd
    characters become `_` and a short hash of the name follows, so that `ops/db` and `ops_db`
    get different directories.

    >>> web_key("toast"), web_key("ops/db"), web_key("ops_db"), web_key("..")
    ('toast', 'ops_db-953c7dbe', 'ops_db', '_..')
    """
    key = _UNSAFE.sub("_", flow) or "_"
    if key != flow:
        key += "-" + hashlib.sha256(flow.encode("utf-8")).hexdigest()[:8]
    return "_" + key if key.startswith(".") else key


@dataclass
class _FlowState:
    """Render bookkeeping of one flow."""

    task: asyncio.Task[None] | None = None
    queued: bool = False
    version: int = 0
    error: str | None = None
    rendered: asyncio.Event = field(default_factory=asyncio.Event)


class RenderService:
    """Keeps the views of every run in `webdir/<web_key(flow)>/` up to date.

    `focus_steps`: above this many steps the graph shows only the steps that need attention
    and their neighbours. `graph_formats` are run through `dot`; `views` names the renderers
    (`digraph`, `text`, `ical`) whose outputs are written.
    """

    def __init__(self, daemon: Daemon, webdir: Path, views: tuple[str, ...],
                 focus_steps: int = DEFAULT_FOCUS_STEPS, dot_timeout: float = 60.0) -> None:
        self.daemon = daemon
        self.webdir = webdir
        self.views = views
        self.focus_steps = focus_steps
        self.dot_timeout = dot_timeout
        self.listeners: list[Listener] = []
        self._flows: dict[str, _FlowState] = {}

    def directory(self, flow: str) -> Path:
        return self.webdir / web_key(flow)

    def path(self, flow: str, view: str) -> Path:
        return self.directory(flow) / view_file(view)

    def version(self, flow: str) -> int:
        """Return how many times the flow's views were written; 0 before the first render."""
        state = self._flows.get(flow)
        return 0 if state is None else state.version

    def last_error(self, flow: str) -> str | None:
        state = self._flows.get(flow)
        return None if state is None else state.error

    def mark_stale(self, flow: str) -> None:
        """Ask for the views of `flow` to be rendered again soon. Call on the event loop."""
        state = self._flows.setdefault(flow, _FlowState())
        if state.task is not None and not state.task.done():
            state.queued = True
            return
        state.rendered.clear()
        state.task = asyncio.get_running_loop().create_task(self._render_loop(flow, state),
                                                            name=f"render {flow}")

    async def wait_rendered(self, flow: str) -> None:
        """Wait until no render of `flow` is in flight or queued (for tests and the CLI)."""
        state = self._flows.get(flow)
        if state is not None:
            await state.rendered.wait()

    async def close(self) -> None:
        """Cancel renders in flight and wait for them to end."""
        tasks = [s.task for s in self._flows.values() if s.task is not None and not s.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _render_loop(self, flow: str, state: _FlowState) -> None:
        try:
            while True:
                state.queued = False
                await self._render_once(flow, state)
                if not state.queued:
                    break
        finally:
            state.rendered.set()

    async def _render_once(self, flow: str, state: _FlowState) -> None:
        snapshot = await self.daemon.snapshot(flow)
        if snapshot is None:
            return
        try:
            outputs = await render_views(snapshot, self.views, self.daemon.zone,
                                         self.focus_steps, self.dot_timeout)
            await asyncio.to_thread(self._write, flow, outputs)
        except TheHatError as exc:
            state.error = str(exc)
            log.warning("rendering flow %s failed: %s", flow, exc)
        except OSError as exc:
            state.error = f"cannot write the views of flow {flow}: {exc.strerror}"
            log.warning("writing the views of flow %s failed: %s", flow, exc)
        else:
            state.error = None
            state.version += 1
        # Listeners hear of failed renders too: the run changed even if its graph did not,
        # and last_error tells them why the graph is old.
        for listener in list(self.listeners):
            try:
                await listener(flow, state.version)
            except Exception:
                log.exception("render listener failed for flow %s", flow)

    def _write(self, flow: str, outputs: dict[str, bytes]) -> None:
        directory = self.directory(flow)
        directory.mkdir(parents=True, exist_ok=True)
        for view, data in outputs.items():
            write_atomically(directory / view_file(view), data)
        log.debug("wrote %d views of flow %s to %s", len(outputs), flow, directory)


async def render_views(run: Run, views: tuple[str, ...], zone: tzinfo | None, focus_steps: int,
                       dot_timeout: float) -> dict[str, bytes]:
    """Render the views of a snapshot: pure renderers in a thread, `dot` as a subprocess.

    Returns view name (a key of VIEW_FILES) -> bytes. Raises GraphvizError when dot fails.
    """
    outputs: dict[str, bytes] = {}
    if "text" in views:
        from renderers.text import render_text

        outputs["text"] = (await asyncio.to_thread(render_text, run, zone)).encode("utf-8")
    if "ical" in views:
        from renderers.ical import render_ical

        outputs["ical"] = await asyncio.to_thread(render_ical, run, zone)
    if "digraph" in views:
        from renderers.digraph import render_dot
        from thehat.graphviz import run_dot

        focus = focus_steps if len(run.steps) > focus_steps else None
        dot_text = await asyncio.to_thread(render_dot, run, zone, focus)
        outputs["dot"] = dot_text.encode("utf-8")
        graphs = await run_dot(dot_text, ("svg", "png", "cmapx"), timeout=dot_timeout)
        outputs.update(graphs)
    extra = [view for view in views if view not in BUILT_IN_VIEWS]
    if extra:
        from thehat.plugins import load_renderers

        registered = load_renderers()
        for view in extra:
            renderer = registered[view]()
            outputs[view] = await asyncio.to_thread(renderer.render, run, zone)
    return outputs


BUILT_IN_VIEWS: Final = frozenset({"digraph", "text", "ical"})


def view_file(view: str) -> str:
    """Return the file name of a view: a built-in one's from VIEW_FILES, else the name of the
    registered renderer followed by its suffix (`mermaid` -> `mermaid.mmd`)."""
    if view in VIEW_FILES:
        return VIEW_FILES[view]
    from thehat.plugins import load_renderers

    renderer = load_renderers()[view]
    return web_key(view) + renderer.suffix


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: readers see the old file or the new one, never a part."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
