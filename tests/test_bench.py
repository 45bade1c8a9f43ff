"""The benchmark script, run on tiny flows: generator, results table, goals and document.

These tests check what the script computes and writes, never how fast anything is. Running
scripts/bench checks the timing goals.
"""

from __future__ import annotations

import doctest
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """Import scripts/bench, which has no .py suffix, as the module `thehat_bench`."""
    loader = importlib.machinery.SourceFileLoader("thehat_bench", str(BENCH_SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    # The dataclass decorator looks the module up in sys.modules while the script runs.
    sys.modules[loader.name] = module
    loader.exec_module(module)
    return module


def test_generated_flow_is_layered(bench: ModuleType) -> None:
    flow = bench.generate_flow(50)
    steps = list(flow)
    first_layer = bench.layer_sizes(50)[0]

    assert len(steps) == 50
    assert steps[0].name == "s00000"
    assert steps[-1].name == "s00049"
    assert all(step.gates == () for step in steps[:first_layer])
    assert all(1 <= len(step.gates) <= 4 for step in steps[first_layer:])
    position = {step.name: index for index, step in enumerate(steps)}
    assert all(position[gate] < position[step.name] for step in steps for gate in step.gates)
    assert bench.generate_flow(50) == flow


def test_bench_table_on_tiny_flow(bench: ModuleType, tmp_path: Path) -> None:
    # More samples than steps, so both walks start a second run.
    result = bench.measure_size(50, samples=60, directory=tmp_path, load_repeats=2,
                                dryrun_repeats=1)

    assert result.steps == 50
    assert len(result.load_ns) == 2
    assert len(result.engine_ns) == 60
    assert len(result.command_ns) == 60
    assert len(result.simulate_ns) == 1
    assert len(result.dryrun_command_ns) == 1
    assert len(result.stored_ns) == 60
    assert len(result.floor_ns) == 60
    assert result.traced_peak_bytes > 0

    lines = bench.results_table([result])
    assert lines[0] == "| Measurement | 50 steps |"
    assert lines[1] == "|---|---:|"
    labels = [line.split(" | ")[0].removeprefix("| ") for line in lines[2:]]
    assert labels == [row.label for row in bench.ROWS]
    for line in lines[2:]:
        cell = line.removesuffix(" |").rsplit(" | ", 1)[1]
        assert float(cell.replace(",", "")) > 0, line


def test_goals_marked_from_numbers(bench: ModuleType) -> None:
    slow_load = bench.SizeResult(
        steps=10_000, file_bytes=1, load_ns=[2_000_000_000], engine_ns=[500_000],
        command_ns=[3_000_000], simulate_ns=[1], dryrun_command_ns=[1], traced_peak_bytes=1,
        max_rss_bytes=1, stored_ns=[1_400_000], floor_ns=[1_000_000])

    lines = bench.goal_lines([slow_load])
    assert lines[0].startswith("- **FAIL**: Load and validate")
    assert lines[0].endswith("measured 2,000 ms")
    assert lines[1].startswith("- **PASS**: gimme+start+finish through the engine")
    assert lines[2].startswith("- **FAIL**: gimme+start+finish through the command layer")
    assert lines[3].startswith("- NOT MEASURED: gimme+start+finish with the run store")
    assert lines[4].startswith("- **PASS**: gimme+start+finish with the run store")
    assert lines[4].endswith("measured 1.40 times the floor")
    assert all(line.startswith("- NOT MEASURED") for line in bench.goal_lines([]))


def test_update_document_keeps_other_sections(bench: ModuleType) -> None:
    start, end = bench.MARKER_START, bench.MARKER_END
    existing = f"# Benchmarks\n\nIntro.\n\n{start}\nold numbers\n{end}\n\n## Rendering\n\nKept.\n"

    updated = bench.update_document(existing, "new numbers")
    assert updated == existing.replace("old numbers", "new numbers")

    appended = bench.update_document("# Benchmarks\n\n## Rendering\n", "new numbers")
    assert appended == f"# Benchmarks\n\n## Rendering\n\n{start}\nnew numbers\n{end}\n"

    created = bench.update_document(None, "new numbers")
    assert created.startswith("# Benchmarks\n")
    assert created.endswith(f"{start}\nnew numbers\n{end}\n")

    with pytest.raises(ValueError, match="markers"):
        bench.update_document(f"{end}\n{start}\n", "new numbers")
    with pytest.raises(ValueError, match="markers"):
        bench.update_document(f"{start}\nno end marker\n", "new numbers")


def test_bench_doctests_pass(bench: ModuleType) -> None:
    failures, tried = doctest.testmod(bench)
    assert tried > 0
    assert failures == 0


def test_render_measurements_small(bench: ModuleType, tmp_path) -> None:
    import asyncio

    flow = bench.generate_flow(40)
    run = bench.half_finished_run(flow)
    finished = sum(step.state.value == "done" for step in run.steps.values())
    assert finished == 20
    render_ns = bench.measure_render(run, 1)
    finish_ns = asyncio.run(bench.measure_finish_to_svg(flow, tmp_path, 2))
    assert len(render_ns) == 1
    assert render_ns[0] > 0
    assert len(finish_ns) == 2
    assert min(finish_ns) > 0

    section = bench.render_section([(40, render_ns, finish_ns)], bench.datetime.now(
        bench.timezone.utc), None)
    assert section.startswith("## Rendering")
    assert "| Render the graph views, median (ms) |" in section
