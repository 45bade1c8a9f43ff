"""Running dot: outputs, errors, time limits, against the real graphviz."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import stat
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from thehat import graphviz
from thehat.graphviz import GraphvizError, render_graph_file, run_dot

SMALL = 'digraph "g" { "a" [URL="https://e.example/" tooltip="tip"]; "a" -> "b"; }\n'


def random_dag(size: int, seed: int = 7) -> str:
    """A DOT graph of `size` nodes, each with two random predecessors."""
    rnd = random.Random(seed)
    lines = ["digraph big {"]
    for i in range(1, size):
        for j in {rnd.randrange(i), rnd.randrange(i)}:
            lines.append(f'\t"n{j}" -> "n{i}";')
    lines.append("}")
    return "\n".join(lines)


def fake_dot(directory: Path, body: str) -> Path:
    """Write an executable `dot` shell script into `directory`."""
    path = directory / "dot"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def read_pid(path: Path) -> int:
    for _ in range(200):
        text = path.read_text() if path.exists() else ""
        if text.endswith("\n"):
            return int(text)
        await asyncio.sleep(0.01)
    raise AssertionError(f"the fake dot never wrote {path}")


async def test_all_formats_in_one_call() -> None:
    outputs = await run_dot(SMALL, ["svg", "png", "cmapx", "dot"])

    assert set(outputs) == {"svg", "png", "cmapx", "dot"}
    assert ElementTree.fromstring(outputs["svg"]).tag == "{http://www.w3.org/2000/svg}svg"
    assert outputs["png"].startswith(b"\x89PNG\r\n\x1a\n")
    assert b'href="https://e.example/"' in outputs["cmapx"]
    assert b"pos=" in outputs["dot"]


async def test_layout_engine_used() -> None:
    outputs = await run_dot(SMALL, ["dot"], layout="neato")

    assert b"pos=" in outputs["dot"]


async def test_extra_args_passed() -> None:
    outputs = await run_dot(SMALL, ["dot"], extra_args=["-Gcomment=from-extra-args"])

    assert b"from-extra-args" in outputs["dot"]


async def test_command_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="thehat.graphviz")

    await run_dot(SMALL, ["svg"])

    assert any("running ['dot', '-Kdot', '-Tsvg'" in r.getMessage() for r in caplog.records)


async def test_warning_logged(caplog: pytest.LogCaptureFixture) -> None:
    outputs = await run_dot('digraph { a [shape="nosuchshape"] }', ["svg"])

    assert outputs["svg"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "nosuchshape" in warnings[0].getMessage()


async def test_missing_dot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(GraphvizError) as caught:
        await run_dot(SMALL, ["svg"])

    message = str(caught.value)
    assert "'dot' not found" in message
    assert "apt-get install graphviz" in message


async def test_invalid_dot_text() -> None:
    with pytest.raises(GraphvizError) as caught:
        await run_dot("digraph { a -> ; }", ["svg"])

    message = str(caught.value)
    assert "exit status 1" in message
    assert "syntax error in line 1" in message


@pytest.mark.parametrize("formats", [["svg", "pdf"], [], "svg"])
async def test_bad_formats_rejected(formats: object) -> None:
    with pytest.raises(ValueError):
        await run_dot(SMALL, formats)  # type: ignore[arg-type]


async def test_bad_layout_rejected() -> None:
    with pytest.raises(ValueError, match="unknown graphviz layout 'spring'"):
        await run_dot(SMALL, ["svg"], layout="spring")


async def test_real_dot_timeout() -> None:
    with pytest.raises(GraphvizError, match="timed out after 0.05 s"):
        await run_dot(random_dag(1000), ["svg"], timeout=0.05)


async def test_timeout_kills_dot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    fake_dot(tmp_path, f'echo $$ > "{pid_file}"\nexec sleep 30\n')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")

    started = time.monotonic()
    with pytest.raises(GraphvizError, match="timed out"):
        await run_dot(SMALL, ["svg"], timeout=0.5)

    # The fake sleeps 30 s, so returning well before that means it was killed.
    assert time.monotonic() - started < 10
    assert process_gone(int(pid_file.read_text()))


async def test_cancel_kills_dot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    fake_dot(tmp_path, f'echo $$ > "{pid_file}"\nexec sleep 30\n')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    task = asyncio.create_task(run_dot(SMALL, ["svg"]))
    pid = await read_pid(pid_file)

    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert time.monotonic() - started < 10
    assert process_gone(pid)


async def test_missing_output(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_dot(tmp_path, "cat > /dev/null\nexit 0\n")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")

    with pytest.raises(GraphvizError, match="without writing its svg output"):
        await run_dot(SMALL, ["svg"])


def test_render_graph_file(tmp_path: Path) -> None:
    path = tmp_path / "graph.svg"

    render_graph_file(SMALL, "svg", path)

    assert ElementTree.parse(path).getroot().tag == "{http://www.w3.org/2000/svg}svg"


async def test_temporary_files_removed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(graphviz.tempfile, "tempdir", None)

    await run_dot(SMALL, ["svg", "png"])

    assert list(tmp_path.iterdir()) == []
