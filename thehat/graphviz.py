"""Running graphviz: the only module that starts `dot`.

`run_dot` lays a graph out once and writes every requested format in the same `dot` process
(`-Tsvg -o<file> -Tpng -o<file> ...` into a temporary directory). Layout is most of the cost,
so one process for SVG, PNG and cmapx takes about as long as PNG alone, where three processes
took the sum of the three (measured with graphviz 2.43.0 on 100 and 1,000 nodes).

The DOT text goes to dot's standard input and the arguments are a list, never a shell line.

NOTE: graphviz scales a PNG down to at most 32,767 pixels a side ("graph is too large for
cairo-renderer bitmaps" on stderr) but writes the cmapx coordinates unscaled, so the image map
of such a graph no longer matches its picture. The focused view keeps graphs far below that.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from thehat.errors import TheHatError

log = logging.getLogger(__name__)

DOT_EXECUTABLE: Final = "dot"
FORMATS: Final = ("svg", "png", "cmapx", "dot")
LAYOUTS: Final = ("dot", "neato", "fdp", "sfdp", "circo", "twopi", "osage", "patchwork")
INSTALL_HINT: Final = "install graphviz: apt-get install graphviz"

# dot's standard error is kept in messages up to this many characters.
MAX_STDERR_CHARACTERS: Final = 2000


class GraphvizError(TheHatError):
    """`dot` is missing, rejected its input, or ran out of time."""


async def run_dot(dot_text: str, formats: Sequence[str], *, layout: str = "dot",
                  timeout: float = 60.0, extra_args: Sequence[str] = ()) -> dict[str, bytes]:
    """Lay out `dot_text` with `layout` and return the output of each format, by format.

    `formats` are taken from FORMATS; `extra_args` go to dot as they are (for example
    `-Gnslimit=1`). Raises GraphvizError when dot is not installed, exits with an error (the
    message carries dot's standard error) or runs longer than `timeout` seconds, in which
    case the process is killed first. Raises ValueError for an unknown format or layout.
    """
    requested = _check_request(formats, layout, extra_args)
    directory = await asyncio.to_thread(tempfile.mkdtemp, prefix="thehat-dot-")
    try:
        paths = {fmt: Path(directory) / f"graph.{fmt}" for fmt in requested}
        command = [DOT_EXECUTABLE, f"-K{layout}", *extra_args]
        for fmt, path in paths.items():
            command += [f"-T{fmt}", f"-o{path}"]
        await _run(command, dot_text.encode("utf-8"), timeout)
        return await asyncio.to_thread(_read_outputs, paths)
    finally:
        await asyncio.to_thread(shutil.rmtree, directory, True)


def render_graph_file(dot_text: str, format: str, path: str | Path, *,
                      layout: str = "dot", timeout: float = 60.0) -> None:
    """Run dot on `dot_text` and write the `format` output to `path`, for the command line.

    Blocks until dot ends; do not call it from a running event loop. Raises as `run_dot`.
    """
    outputs = asyncio.run(run_dot(dot_text, [format], layout=layout, timeout=timeout))
    Path(path).write_bytes(outputs[format])
    log.debug("wrote %s graph to %s", format, path)


def _check_request(formats: Sequence[str], layout: str, extra_args: Sequence[str]) -> list[str]:
    if isinstance(formats, str):
        raise ValueError(f"formats must be a sequence of format names, not the string "
                         f"{formats!r}")
    if isinstance(extra_args, str):
        raise ValueError(f"extra_args must be a sequence of arguments, not the string "
                         f"{extra_args!r}")
    requested = list(dict.fromkeys(formats))
    if not requested:
        raise ValueError(f"no output format requested; choose from {', '.join(FORMATS)}")
    for fmt in requested:
        if fmt not in FORMATS:
            raise ValueError(f"unsupported graphviz format {fmt!r}; choose from "
                             f"{', '.join(FORMATS)}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown graphviz layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    return requested


async def _run(command: list[str], stdin: bytes, timeout: float) -> None:
    """Run `command` with `stdin`; raise GraphvizError unless it exits with status 0."""
    log.debug("running %s on %d bytes of DOT", command, len(stdin))
    try:
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
    except FileNotFoundError as exc:
        raise GraphvizError(f"graphviz executable {command[0]!r} not found on PATH; "
                            f"{INSTALL_HINT}") from exc
    except OSError as exc:
        raise GraphvizError(f"cannot run graphviz executable {command[0]!r}: {exc}") from exc

    try:
        _, stderr = await asyncio.wait_for(process.communicate(stdin), timeout)
    except TimeoutError:
        await _kill(process)
        raise GraphvizError(f"{command[0]} timed out after {timeout:g} s on a graph of "
                            f"{len(stdin)} bytes and was killed; draw fewer steps (the "
                            "focused view) or allow more time") from None
    except BaseException:
        # Cancelled with the render task: the child must not outlive it.
        await _kill(process)
        raise

    message = stderr.decode("utf-8", "replace").strip()
    if process.returncode != 0:
        raise GraphvizError(f"{command[0]} failed with exit status {process.returncode}: "
                            f"{_shorten(message) or '(no message)'}")
    if message:
        log.warning("%s reported: %s", command[0], _shorten(message))


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        log.debug("killing %s (pid %d)", DOT_EXECUTABLE, process.pid)
        try:
            process.kill()
        except ProcessLookupError:
            pass
    await process.wait()


def _read_outputs(paths: dict[str, Path]) -> dict[str, bytes]:
    outputs = {}
    for fmt, path in paths.items():
        try:
            outputs[fmt] = path.read_bytes()
        except FileNotFoundError:
            raise GraphvizError(f"{DOT_EXECUTABLE} exited without writing its {fmt} "
                                "output") from None
    return outputs


def _shorten(text: str) -> str:
    if len(text) <= MAX_STDERR_CHARACTERS:
        return text
    return text[:MAX_STDERR_CHARACTERS] + " [...]"
