"""Killing `thehat tty` with SIGKILL at random moments loses no acknowledged change.

Each trial starts the real program on a fresh data directory, drives a chain flow through more
than 200 state changes (claim, start and finish every step, then a failure and the reversion),
and kills the process at a random point: either right after a reply was read, or while the next
command is in flight. A restarted program must restore exactly the state after the last reply
read; with a command in flight, the state after that command is also correct, because the
command may have been committed just before the kill.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from thehat.config import Config, EngineConfig
from thehat.daemon import Daemon
from thehat.engine import Run
from thehat.flowfile import save_flow
from thehat.model import Flow, StepDef

from tests.frontends.test_tty import thehat_program

CHAIN_LENGTH = 61
TRIALS = 50
MARKER = "thehat version"
REPLY_TIMEOUT = 20.0


def chain_flow() -> Flow:
    names = [f"s{number:02d}" for number in range(CHAIN_LENGTH)]
    return Flow(StepDef(name, description=f"step {name}", gates=(names[i - 1],) if i else ())
                for i, name in enumerate(names))


def script() -> list[str]:
    """Claim, start and finish 60 steps, fail the last one, revert the 60 in reverse."""
    names = [f"s{number:02d}" for number in range(CHAIN_LENGTH)]
    commands = []
    for name in names[:-1]:
        commands += [f"gimme {name}", f"start {name}", f"finish {name}"]
    commands += [f"gimme {names[-1]}", f"start {names[-1]}", f"fail {names[-1]}"]
    commands += [f"reverted {name}" for name in reversed(names[:-1])]
    return commands


def expected_states(commands: list[str]) -> list[dict[str, tuple[str, str]]]:
    """Return, for k = 0..len(commands), the (state, owner) of every step after k commands."""
    daemon = Daemon(Config(engine=EngineConfig(datadir=Path("/nonexistent"))))
    daemon.runs["chain"] = Run("chain", chain_flow())
    daemon.attachments["tty:alice"] = "chain"
    states = [visible_state(daemon.runs["chain"])]
    for command in commands:
        daemon.execute("tty:alice", "alice", command)
        states.append(visible_state(daemon.runs["chain"]))
    return states


def visible_state(run: Run) -> dict[str, tuple[str, str]]:
    return {name: (step.state.display(run.reverting), step.owner or "")
            for name, step in run.steps.items()}


class Session:
    """A running `thehat tty` whose replies are read line by line in a thread."""

    def __init__(self, config: Path, flow: Path, home: Path) -> None:
        environment = dict(os.environ, HOME=str(home), XDG_STATE_HOME=str(home / "state"))
        self.process = subprocess.Popen(
            [str(thehat_program()), "tty", "--user", "alice", "-c", str(config), str(flow)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", env=environment)
        self.lines: queue.Queue[str | None] = queue.Queue()
        assert self.process.stdout is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def send(self, command: str | None) -> None:
        """Send a command (None: none) and the `version` command that marks its reply's end."""
        assert self.process.stdin is not None
        if command is not None:
            self.process.stdin.write(f"{command}\n")
        self.process.stdin.write("version\n")
        self.process.stdin.flush()

    def reply(self) -> list[str]:
        """Read up to the marker that follows each command's reply."""
        lines = []
        while True:
            line = self.lines.get(timeout=REPLY_TIMEOUT)
            if line is None:
                raise AssertionError(f"thehat ended early: {self.process.stderr.read()}")
            if line.startswith(MARKER):
                return lines
            lines.append(line)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=REPLY_TIMEOUT)

    def quit(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("quit\n")
        self.process.stdin.close()
        assert self.process.wait(timeout=REPLY_TIMEOUT) == 0


def parse_list(lines: list[str]) -> dict[str, tuple[str, str]]:
    """Read the NAME, STATE and OWNER columns of the `list` reply."""
    header = next(line for line in lines if line.startswith("NAME"))
    state_at, owner_at, groups_at = (header.index(word) for word in ("STATE", "OWNER", "GROUPS"))
    rows = lines[lines.index(header) + 1:]
    return {row[:state_at].strip(): (row[state_at:owner_at].strip(),
                                     row[owner_at:groups_at].strip()) for row in rows}


@pytest.fixture(scope="module")
def states() -> list[dict[str, tuple[str, str]]]:
    return expected_states(script())


def test_script_has_enough_state_changes() -> None:
    assert len(script()) >= 200


@pytest.mark.parametrize("trial", range(TRIALS))
def test_sigkill_loses_no_acknowledged_change(trial: int, tmp_path: Path,
                                              states: list[dict[str, tuple[str, str]]]) -> None:
    rng = random.Random(1000 + trial)
    commands = script()
    datadir = tmp_path / "data"
    config = tmp_path / "thehat.yaml"
    config.write_text(f"wfengine: {{datadir: '{datadir}'}}\n", encoding="utf-8")
    flow = tmp_path / "chain.flow"
    save_flow(chain_flow(), flow)

    session = Session(config, flow, tmp_path)
    session.send(None)
    session.reply()  # the status printed when the flow was opened
    acknowledged = rng.randrange(len(commands))
    for command in commands[:acknowledged]:
        session.send(command)
        session.reply()
    in_flight = trial % 2 == 1
    if in_flight:
        session.send(commands[acknowledged])
        time.sleep(rng.uniform(0, 0.004))
    session.kill()

    restarted = Session(config, flow, tmp_path)
    restarted.send(None)
    restarted.reply()
    restarted.send("list")
    restored = parse_list(restarted.reply())
    restarted.quit()

    allowed = [states[acknowledged]]
    if in_flight:
        allowed.append(states[acknowledged + 1])
    assert restored in allowed, f"after {acknowledged} acknowledged commands"
    database = sqlite3.connect(datadir / "thehat.db")
    try:
        assert database.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        database.close()


SAVER = """
import sys
from thehat.flowfile import save_flow
from thehat.model import Flow, StepDef

path = sys.argv[1]
versions = [Flow(StepDef(f"{prefix}{n:04d}", description="x" * 60,
                         gates=(f"{prefix}{n - 1:04d}",) if n else ()) for n in range(2000))
            for prefix in ("a", "b")]
save_flow(versions[1], path)
print("ready", flush=True)
turn = 0
while True:
    save_flow(versions[turn % 2], path)
    turn += 1
"""


@pytest.mark.parametrize("trial", range(10))
def test_sigkill_during_save_leaves_whole_file(trial: int, tmp_path: Path) -> None:
    from thehat.flowfile import load_flow

    path = tmp_path / "big.flow"
    python = Path(thehat_program()).parent / "python"
    saver = subprocess.Popen([str(python), "-c", SAVER, str(path)], stdout=subprocess.PIPE,
                             text=True)
    assert saver.stdout is not None
    assert saver.stdout.readline() == "ready\n"
    time.sleep(random.Random(trial).uniform(0.05, 0.6))
    saver.send_signal(signal.SIGKILL)
    saver.wait(timeout=REPLY_TIMEOUT)

    flow = load_flow(path)
    assert len(flow) == 2000
    assert {name[0] for name in flow.steps} in ({"a"}, {"b"})
