"""The `thehat` command line: subcommands, exit statuses and start-up errors."""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar
from unittest import mock

import pytest
import yaml

from frontends.base import Frontend
from frontends.tty import TerminalFrontend
from thehat import __version__, cli
from thehat.config import Config, EngineConfig, load_config

REPO = Path(__file__).resolve().parents[1]
TOAST = REPO / "examples" / "toast.flow"


def write_config(tmp_path: Path, document: dict[str, object]) -> Path:
    path = tmp_path / "thehat.yaml"
    document = {"wfengine": {"datadir": str(tmp_path / "data")}, **document}
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


# -- version, validate, usage ------------------------------------------------------------------


def test_version_prints_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["version"]) == 0

    assert capsys.readouterr().out == f"thehat {__version__}\n"


def test_validate_valid_file_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", str(TOAST)]) == 0

    assert capsys.readouterr().out == f"{TOAST}: 8 steps, valid\n"


def test_validate_invalid_file_exits_one(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.flow"
    bad.write_text("- step: a\n  gates: [missing]\n", encoding="utf-8")

    assert cli.main(["validate", str(TOAST), str(bad)]) == 1

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{TOAST}: 8 steps, valid"
    assert len(lines) >= 2
    assert all(line.startswith(str(bad)) for line in lines[1:])
    assert "missing" in lines[1]


def test_validate_missing_config_exits_two(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.yaml"

    assert cli.main(["validate", "-c", str(missing), str(TOAST)]) == 2

    captured = capsys.readouterr()
    assert captured.out == ""
    assert str(missing) in captured.err
    assert "Traceback" not in captured.err


def test_validate_applies_config_limits(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "thehat.yaml"
    config.write_text("limits:\n  maxFlowSteps: 7\n", encoding="utf-8")

    assert cli.main(["validate", "-c", str(config), str(TOAST)]) == 1

    output = capsys.readouterr().out
    assert output.startswith(f"{TOAST}:")
    assert "the flow has more than 7 steps, the limit (limits.maxFlowSteps)" in output


def test_validate_needs_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate"]) == 2

    assert "FILE" in capsys.readouterr().err


def test_unknown_subcommand_exits_two(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["frobnicate"]) == 2

    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_missing_subcommand_exits_two(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2

    assert "required" in capsys.readouterr().err


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0

    help_text = capsys.readouterr().out
    for subcommand in ("tty", "run", "validate", "version"):
        assert subcommand in help_text


def test_invalid_log_level_exits_two(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["version", "--log-level", "loud"]) == 2

    assert "--log-level" in capsys.readouterr().err


def test_unwritable_log_file_exits_two(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["version", "--log-file", str(tmp_path)]) == 2

    assert f"cannot open log file {tmp_path}" in capsys.readouterr().err


def test_main_restores_root_logger() -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    cli.main(["version", "--log-level", "DEBUG"])

    assert root.handlers == handlers
    assert root.level == level


# -- tty ---------------------------------------------------------------------------------------


def test_tty_missing_config_exits_two(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.yaml"

    assert cli.main(["tty", "-c", str(missing)]) == 2

    err = capsys.readouterr().err
    assert err.startswith("thehat: ")
    assert str(missing) in err
    assert "Traceback" not in err


def test_tty_invalid_config_exits_two(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "thehat.yaml"
    path.write_text("wfengine:\n  bindport: seventy\n", encoding="utf-8")

    assert cli.main(["tty", "-c", str(path)]) == 2

    assert "wfengine.bindport" in capsys.readouterr().err


def test_tty_empty_user_exits_two(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["tty", "--user", " "]) == 2

    assert "--user is empty" in capsys.readouterr().err


def test_tty_log_file_records_session(tmp_path: Path) -> None:
    config = write_config(tmp_path, {})
    log_file = tmp_path / "thehat.log"
    program = Path(sys.executable).with_name("thehat")
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))

    result = subprocess.run(
        [str(program), "tty", "--user", "alice", "-c", str(config), "--log-level", "info",
         "--log-file", str(log_file)],
        input="quit\n", capture_output=True, text=True, timeout=30, env=env, check=False)

    assert result.returncode == 0
    assert result.stderr == ""
    records = log_file.read_text(encoding="utf-8")
    assert "INFO frontends.tty: terminal session of alice started (piped)" in records
    assert "terminal session of alice ended" in records


def test_default_user_is_login_name() -> None:
    with mock.patch.object(getpass, "getuser", autospec=True, return_value="carol"):
        assert cli.default_user() == "carol"


def test_default_user_falls_back_to_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("USER", raising=False)
    with mock.patch.object(getpass, "getuser", autospec=True, side_effect=KeyError("uid")):
        assert cli.default_user() == "operator"


def test_default_user_falls_back_to_user_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "dave")
    with mock.patch.object(getpass, "getuser", autospec=True, side_effect=OSError("no uid")):
        assert cli.default_user() == "dave"


# -- run ---------------------------------------------------------------------------------------


def test_run_without_frontend_exits_two(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, {})

    assert cli.main(["run", "-c", str(config)]) == 2

    err = capsys.readouterr().err
    assert f"no frontend enabled in {config}: add a thehat-irc or thehat-xmpp section, " \
           "or use 'thehat tty'" in err


def test_run_without_config_exits_two(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run"]) == 2

    assert "thehat run -c CONFIG" in capsys.readouterr().err


def test_run_section_without_frontend_names_extra(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "load_frontends", lambda: {"tty": TerminalFrontend})
    config = write_config(tmp_path, {"thehat-irc": {"nic": "flow", "channel": "ops"}})

    assert cli.main(["run", "-c", str(config)]) == 2

    assert "pip install 'thehat[irc]'" in capsys.readouterr().err


def test_run_unknown_frontend_section_exits_two(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "load_frontends", lambda: {"tty": TerminalFrontend})
    config = write_config(tmp_path, {"thehat-matrix": {"room": "#ops"}})

    assert cli.main(["run", "-c", str(config)]) == 2

    assert "no installed frontend handles section 'thehat-matrix'" in capsys.readouterr().err


class EndingFrontend(Frontend):
    """A frontend whose medium closes at once, like a quit from chat."""

    name = "ending"
    config_section = "thehat-ending"

    async def serve(self) -> None:
        return None


class WaitingFrontend(Frontend):
    """A frontend that serves until stopped, recording its instances for the test."""

    name = "waiting"
    config_section = "thehat-waiting"
    instances: ClassVar[list[WaitingFrontend]] = []

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.serving = asyncio.Event()
        self.stopped = asyncio.Event()
        WaitingFrontend.instances.append(self)

    async def serve(self) -> None:
        self.serving.set()
        await self.stopped.wait()

    async def stop(self) -> None:
        self.stopped.set()


class FailingFrontend(Frontend):
    name = "failing"
    config_section = "thehat-failing"

    async def serve(self) -> None:
        raise RuntimeError("simulated bug")


@pytest.fixture
def waiting_instances() -> list[WaitingFrontend]:
    WaitingFrontend.instances.clear()
    return WaitingFrontend.instances


def test_run_serves_enabled_frontends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      waiting_instances: list[WaitingFrontend]) -> None:
    frontends = {"ending": EndingFrontend, "waiting": WaitingFrontend, "tty": TerminalFrontend}
    monkeypatch.setattr(cli, "load_frontends", lambda: frontends)
    config = write_config(tmp_path, {"thehat-waiting": {}, "thehat-ending": {}})

    # The ending frontend returns at once, so the waiting one is stopped and run exits 0.
    assert cli.main(["run", "-c", str(config)]) == 0

    assert len(waiting_instances) == 1
    assert waiting_instances[0].stopped.is_set()


def test_select_frontends_in_section_order(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, {"thehat-waiting": {}, "thehat-ending": {}}))
    available: dict[str, type[Frontend]] = {
        "ending": EndingFrontend, "waiting": WaitingFrontend, "tty": TerminalFrontend}

    selected = cli.select_frontends(config, available, "thehat.yaml")

    assert selected == [WaitingFrontend, EndingFrontend]


def tmp_config(tmp_path: Path) -> Config:
    return Config(engine=EngineConfig(datadir=tmp_path / "data"))


async def test_serve_frontends_stops_on_sigterm(
        waiting_instances: list[WaitingFrontend], tmp_path: Path) -> None:
    serving = asyncio.create_task(cli.serve_frontends(tmp_config(tmp_path), [WaitingFrontend]))
    await asyncio.wait_for(_first_instance_serving(waiting_instances), 10)

    # serve_frontends installs its handler before any frontend task runs, so SIGTERM
    # reaches that handler instead of ending the pytest process.
    signal.raise_signal(signal.SIGTERM)

    assert await asyncio.wait_for(serving, 10) == 0
    assert waiting_instances[0].stopped.is_set()


async def test_serve_frontends_failure_exits_one(
        waiting_instances: list[WaitingFrontend], caplog: pytest.LogCaptureFixture,
        tmp_path: Path) -> None:
    status = await asyncio.wait_for(
        cli.serve_frontends(tmp_config(tmp_path), [FailingFrontend, WaitingFrontend]), 10)

    assert status == 1
    assert waiting_instances[0].stopped.is_set()
    failures = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(failures) == 1
    assert "frontend failing failed" in failures[0].getMessage()
    assert failures[0].exc_info is not None


async def _first_instance_serving(instances: list[WaitingFrontend]) -> None:
    while not instances:
        await asyncio.sleep(0.01)
    await instances[0].serving.wait()


def test_tty_with_invalid_flow_exits_2(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.flow"
    bad.write_text("- step: a\n  gates: [nosuch]\n", encoding="utf-8")
    config = tmp_path / "thehat.yaml"
    config.write_text(f"wfengine: {{datadir: '{tmp_path / 'data'}'}}\n", encoding="utf-8")
    status = cli.main(["tty", "--user", "alice", "-c", str(config), str(bad)])
    assert status == 2
    err = capsys.readouterr().err
    assert f"{bad}:1: step 'a': gate 'nosuch' names a missing step" in err


def test_version_option(capsys) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"thehat {__version__}\n"


def test_tty_ticks_without_commands(tmp_path: Path) -> None:
    """The terminal ticks too: a due clock acts without any further input."""
    flow = tmp_path / "soon.flow"
    flow.write_text("- step: announce\n  owner: clock-alarm:0/0/0@0:0:0\n- step: after\n"
                    "  gates: [announce]\n", encoding="utf-8")
    config = write_config(tmp_path, {})
    program = Path(sys.executable).with_name("thehat")
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    process = subprocess.Popen(
        [str(program), "tty", "--user", "alice", "-c", str(config), str(flow)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env)
    assert process.stdin is not None and process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout],
                              daemon=True)
    reader.start()
    seen = []
    try:
        process.stdin.write("clockProcessing on\n")
        process.stdin.flush()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            seen.append(line)
            if "CLOCK ADVANCE" in line:
                break
        process.stdin.write("quit\n")
        process.stdin.flush()
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert any("clock-alarm:0/0/0@0:0:0 changed state of step announce to done" in line
               for line in seen), "".join(seen)
    assert any("CLOCK ADVANCE" in line for line in seen)
    assert process.returncode == 0


def test_piped_tty_waits_for_exec(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"wfengine": {"datadir": str(tmp_path / "data"),
                                                  "allowExec": True}})
    program = Path(sys.executable).with_name("thehat")
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))

    result = subprocess.run(
        [str(program), "tty", "--user", "alice", "-c", str(config)],
        input="exec echo hi; sleep 1; echo bye\n", capture_output=True, text=True, timeout=60,
        env=env, check=False)

    assert result.returncode == 0
    assert "Waiting up to 600 s for exec to end" in result.stdout
    assert "bye" in result.stdout.splitlines()
    assert "The exec exited with status 0." in result.stdout
    assert "Unknown child process" not in result.stderr
