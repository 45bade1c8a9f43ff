"""`thehat import` and `thehat export` from the command line, on real files."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from thehat import cli
from thehat.engine import Run
from thehat.flowfile import load_flow

REPO = Path(__file__).resolve().parents[1]
PLANNER = REPO / "tests" / "data" / "planner"


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "thehat.yaml"
    config.write_text(f"wfengine:\n  datadir: {tmp_path / 'data'}\n", encoding="utf-8")
    return config


def run_to_end(run: Run) -> None:
    for _ in range(2 * len(run.steps) + 1):
        ready = run.actionable()
        if not ready:
            break
        for step in ready:
            run.set_owner(step.name, "alice", "alice")
            run.finish(step.name, "alice")
    assert run.ended


def test_import_planner_into_datadir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)

    status = cli.main(["import", "planner", str(PLANNER / "nested.planner"), "-c", str(config)])
    output = capsys.readouterr()
    flow = load_flow(tmp_path / "data" / "nested.flow")

    assert status == 0
    assert f"steps to {tmp_path / 'data' / 'nested.flow'}" in output.out
    assert "warning:" in output.err
    run_to_end(Run("nested", flow))


def test_import_refuses_to_replace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "plan.flow"
    target.write_text("--- []\n", encoding="utf-8")

    status = cli.main(["import", "planner", str(PLANNER / "dependencies.planner"), "-o",
                       str(target)])

    assert status == 2
    assert "exists; give --force" in capsys.readouterr().err
    assert target.read_text(encoding="utf-8") == "--- []\n"
    assert cli.main(["import", "planner", str(PLANNER / "dependencies.planner"), "-o",
                     str(target), "--force"]) == 0
    assert len(load_flow(target)) > 0


def test_import_error_names_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["import", "planner", str(PLANNER / "dangling-predecessor.planner"),
                       "-o", str(tmp_path / "x.flow")])

    assert status == 2
    assert "dangling-predecessor.planner:" in capsys.readouterr().err
    assert not (tmp_path / "x.flow").exists()


def test_planner_script_wraps_import(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "planner-to-flow"),
         str(PLANNER / "resources.planner"), "-o", str(tmp_path / "r.flow"), "--names", "slug"],
        capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 0, result.stderr
    assert len(load_flow(tmp_path / "r.flow")) > 0


def test_csv_export_import_round_trip(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    source = REPO / "examples" / "db-minor-upgrade.flow"
    exported = tmp_path / "db.csv"

    assert cli.main(["export", "csv", str(source), "-o", str(exported)]) == 0
    assert cli.main(["import", "csv", str(exported), "-o", str(tmp_path / "back.flow")]) == 0

    assert load_flow(tmp_path / "back.flow") == load_flow(source)
    rows = list(csv.reader(io.StringIO(exported.read_text(encoding="utf-8"))))
    assert rows[0][:3] == ["step", "description", "owner"]


def test_export_mermaid_by_flow_name(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "toast.flow").write_bytes((REPO / "examples" / "toast.flow")
                                                   .read_bytes())

    status = cli.main(["export", "mermaid", "toast", "-c", str(config)])
    text = capsys.readouterr().out

    assert status == 0
    assert "flowchart TD" in text
    assert "toastbread" in text


def test_export_refuses_path_outside_datadir(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)

    # Not a file here, so it is taken as a flow name, which may not leave the data directory.
    status = cli.main(["export", "csv", "../outside/secret", "-c", str(config)])

    assert status == 2
    assert "Invalid flow name" in capsys.readouterr().err


def test_import_refuses_special_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["import", "planner", "/dev/zero", "-o", str(tmp_path / "z.flow")])

    assert status == 2
    assert "/dev/zero is not a regular file" in capsys.readouterr().err


def test_import_refuses_oversized_flow(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "thehat.yaml"
    config.write_text("limits:\n  maxFlowBytes: 100\n", encoding="utf-8")

    status = cli.main(["import", "planner", str(PLANNER / "nested.planner"), "-c", str(config),
                       "-o", str(tmp_path / "big.flow")])

    assert status == 2
    error = capsys.readouterr().err
    assert "more than the limit of 100 (limits.maxFlowBytes); nothing was written" in error
    assert "raise limits.maxFlowBytes in the configuration" in error
    assert not (tmp_path / "big.flow").exists()


def test_import_refuses_too_many_steps(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "thehat.yaml"
    config.write_text("limits:\n  maxFlowSteps: 2\n", encoding="utf-8")

    status = cli.main(["import", "planner", str(PLANNER / "nested.planner"), "-c", str(config),
                       "-o", str(tmp_path / "long.flow")])

    assert status == 2
    error = capsys.readouterr().err
    assert "steps, more than the limit of 2 (limits.maxFlowSteps); nothing was written" in error
    assert not (tmp_path / "long.flow").exists()


def test_export_applies_step_limit(tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "thehat.yaml"
    config.write_text("limits:\n  maxFlowSteps: 2\n", encoding="utf-8")

    status = cli.main(["export", "csv", str(REPO / "examples" / "toast.flow"), "-c",
                       str(config)])

    assert status == 2
    assert "the flow has more than 2 steps" in capsys.readouterr().err
