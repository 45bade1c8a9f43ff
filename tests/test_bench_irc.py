"""The IRC latency benchmark, run with a few commands: what it measures and writes, not how fast.

Running scripts/bench-irc checks the latency goal.
"""

from __future__ import annotations

import asyncio
import importlib.machinery
import importlib.util
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType

import pytest

from tests.servers import find_program

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench-irc"


@pytest.fixture(scope="module")
def bench_irc() -> ModuleType:
    """Import scripts/bench-irc, which has no .py suffix, as the module `thehat_bench_irc`."""
    loader = importlib.machinery.SourceFileLoader("thehat_bench_irc", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module
    loader.exec_module(module)
    return module


def test_bench_irc_measures_and_writes_section(bench_irc: ModuleType, tmp_path: Path) -> None:
    if find_program("ngircd") is None:
        pytest.skip("ngircd is not installed (scripts/test installs it)")
    results = asyncio.run(bench_irc.measure(tmp_path, 5))

    assert len(results.command_ns) == 5
    assert len(results.relay_ns) == 5
    assert all(value > 0 for value in results.command_ns + results.relay_ns)
    assert results.reply_lines == 5

    bench = bench_irc.load_bench_module()
    section = bench_irc.irc_section(bench, results, 5, datetime.now(timezone.utc), 0.5)
    document = tmp_path / "benchmarks.md"
    document.write_text("# Benchmarks\n\nother text\n", encoding="utf-8")
    # A process of its own, because main() sets up logging for the whole process.
    run = subprocess.run([sys.executable, str(SCRIPT), "--commands", "2", "--output",
                          str(document)], capture_output=True, text=True, timeout=120,
                         check=False)
    assert run.returncode == 0, run.stderr

    text = document.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks\n\nother text\n")
    assert bench_irc.MARKER_START in text
    assert bench_irc.MARKER_END in text
    assert "## IRC channel: command to first reply" in section
    assert "| `thehat: status` to the bot's first reply line |" in text
    assert "Goal:" in text
