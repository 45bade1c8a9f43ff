"""The terminal frontend against the real daemon: piped through the real `thehat` program, and
interactive through a prompt_toolkit pipe input."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import pty
import queue
import select
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, TextIO

import pytest
import yaml
from prompt_toolkit.application.current import AppSession, create_app_session
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.data_structures import Size
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, InMemoryHistory
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output import DummyOutput
from prompt_toolkit.output.vt100 import Vt100_Output

from frontends.base import Conversation
from frontends.tty import INTERNAL_ERROR_LINE, TerminalFrontend
from frontends.tty_prompt import CommandCompleter, history_path, open_history
from thehat.config import Config, load_config
from thehat.daemon import Completions, Daemon, Reply
from thehat.errors import CommandError, TheHatError

REPO = Path(__file__).resolve().parents[2]
TOAST = REPO / "examples" / "toast.flow"
TOAST_STEPS = ["openbread", "gettoaster", "selectslice", "preptoaster", "adjusttoasting",
               "insertslice", "toastbread", "removetoast"]  # an order the gates allow
FLOW_ENDED = "** Flow ended **"
TIMEOUT = 30.0


# -- helpers -----------------------------------------------------------------------------------


def thehat_program() -> Path:
    """Return the `thehat` console script installed beside the interpreter running pytest."""
    program = Path(sys.executable).with_name("thehat")
    assert program.exists(), f"{program} is missing; install the package (scripts/setup test)"
    return program


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "thehat.yaml"
    path.write_text(yaml.safe_dump({"wfengine": {"datadir": str(tmp_path / "data")}}),
                    encoding="utf-8")
    return path


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    """The environment for `thehat` subprocesses: no history or data under the real home."""
    env = dict(os.environ)
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    env["XDG_DATA_HOME"] = str(tmp_path / "share")
    return env


def tty_command(config_path: Path, *flow: str) -> list[str]:
    return [str(thehat_program()), "tty", "--user", "alice", "-c", str(config_path), *flow]


def run_tty(config_path: Path, environ: dict[str, str], lines: Sequence[str],
            *flow: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(tty_command(config_path, *flow), input="".join(f"{line}\n"
                                                                         for line in lines),
                          capture_output=True, text=True, timeout=TIMEOUT, cwd=REPO,
                          env=environ, check=False)


def changed_line(step: str, state: str) -> str:
    return f">>> alice changed state of step {step} to {state}"


class LineReader:
    """Collects the lines of a subprocess pipe in a thread, so a test can wait with a timeout."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, predicate: Callable[[str], bool]) -> str:
        while True:
            line = self.lines.get(timeout=TIMEOUT)
            assert line is not None, "output ended before the expected line"
            if predicate(line):
                return line


class RecordingConversation(Conversation):
    """Another participant, for checking what reaches the terminal from elsewhere."""

    medium = "test"

    def __init__(self, conversation_id: str) -> None:
        self.id = conversation_id
        self.lines: list[str] = []

    async def send(self, lines: Sequence[str]) -> None:
        self.lines.extend(lines)


async def wait_until(condition: Callable[[], object], description: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while not condition():
        assert loop.time() < deadline, f"timed out waiting until {description}"
        await asyncio.sleep(0.01)


def record_commands(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every command line the daemon receives, still handling it for real."""
    received: list[str] = []
    handle = daemon.handle

    async def recording_handle(conversation: Conversation, user: str, text: str,
                               admin: bool = False) -> Reply:
        received.append(text)
        return await handle(conversation, user, text, admin)

    monkeypatch.setattr(daemon, "handle", recording_handle)
    return received


@pytest.fixture
def config(config_path: Path) -> Config:
    return load_config(config_path)


@pytest.fixture
def daemon(config: Config) -> Daemon:
    return Daemon(config)


@pytest.fixture
def stdin_pipe() -> Iterator[tuple[TextIO, TextIO]]:
    """A real pipe for piped-mode stdin: (read end for the frontend, write end for the test)."""
    read_fd, write_fd = os.pipe()
    reader = open(read_fd, encoding="utf-8")
    writer = open(write_fd, "w", encoding="utf-8")
    yield reader, writer
    for stream in (writer, reader):
        if not stream.closed:
            stream.close()


def owner(daemon: Daemon, step: str) -> str | None:
    return daemon.runs["toast"].step(step).owner


# -- piped mode through the real program -------------------------------------------------------


def test_piped_toast_runs_to_the_end(config_path: Path, environ: dict[str, str]) -> None:
    commands = ["gimme " + " ".join(TOAST_STEPS)]
    for step in TOAST_STEPS:
        commands += [f"start {step}", f"finish {step}"]
    commands.append("quit")

    result = run_tty(config_path, environ, commands, str(TOAST))

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    for step in TOAST_STEPS:
        assert changed_line(step, "done") in lines
    assert lines.count(FLOW_ENDED) == 1
    assert lines.index(FLOW_ENDED) > lines.index(changed_line("removetoast", "done"))


def test_piped_failure_reverts_to_the_end(config_path: Path, environ: dict[str, str]) -> None:
    finished = ["openbread", "gettoaster", "selectslice", "preptoaster", "adjusttoasting"]
    reverted = ["preptoaster", "adjusttoasting", "selectslice", "openbread", "gettoaster"]
    commands = ["gimme " + " ".join(TOAST_STEPS)]
    commands += [f"finish {step}" for step in finished]
    commands += ["start insertslice", "fail insertslice"]
    commands += [f"reverted {step}" for step in reverted]
    commands.append("quit")

    result = run_tty(config_path, environ, commands, str(TOAST))

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert changed_line("insertslice", "failed") in lines
    for step in reverted:
        assert changed_line(step, "reverted") in lines
    assert lines.count(FLOW_ENDED) == 1
    assert lines.index(FLOW_ENDED) > lines.index(changed_line("gettoaster", "reverted"))
    assert lines.index(FLOW_ENDED) > lines.index(changed_line("insertslice", "failed"))


def status_rows(block: str) -> list[str]:
    """Return the NAME column of the status table in one reply."""
    lines = block.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("OWNER"))
    name_column = lines[header].index("NAME")
    return [line[name_column:].split()[0] for line in lines[header + 1:]
            if len(line) > name_column]


def test_piped_reversion_status_row_by_row(config_path: Path,
                                           environ: dict[str, str]) -> None:
    finished = ["openbread", "gettoaster", "selectslice", "preptoaster", "adjusttoasting"]
    commands = ["gimme " + " ".join(TOAST_STEPS)]
    commands += [f"finish {step}" for step in finished]
    commands += ["start insertslice", "fail insertslice", "start adjusttoasting",
                 "reverting gettoaster", "reverting preptoaster", "reverted preptoaster",
                 "reverted adjusttoasting", "reverted selectslice", "reverted toastbread",
                 "reverted openbread", "reverted gettoaster", "reverted gettoaster", "quit"]

    # `version` after each command marks where its reply ends.
    marked = [line for command in commands for line in (command, "version")]
    result = run_tty(config_path, environ, marked, str(TOAST))

    assert result.returncode == 0, result.stderr
    # The first reply also holds the status printed when the flow was opened.
    replies = re.split(r"^thehat version .*\n", result.stdout, flags=re.MULTILINE)
    after = dict(zip(commands, replies))
    assert status_rows(after["fail insertslice"]) == ["adjusttoasting", "selectslice",
                                                      "preptoaster"]
    assert "pending reversion" in after["fail insertslice"]
    assert "Don't start adjusttoasting: insertslice failed" in after["start adjusttoasting"]
    assert ("gettoaster is gated: revert adjusttoasting, preptoaster first"
            in after["reverting gettoaster"])
    assert status_rows(after["reverting preptoaster"]) == ["adjusttoasting", "selectslice",
                                                           "preptoaster"]
    assert status_rows(after["reverted preptoaster"]) == ["adjusttoasting", "selectslice"]
    assert status_rows(after["reverted adjusttoasting"]) == ["selectslice", "gettoaster"]
    assert status_rows(after["reverted selectslice"]) == ["openbread", "gettoaster"]
    assert ("toastbread never started, so there is nothing to revert"
            in after["reverted toastbread"])
    assert status_rows(after["reverted openbread"]) == ["gettoaster"]
    last_two = replies[len(commands) - 3:len(commands) - 1]
    assert FLOW_ENDED in last_two[0]
    assert "All started steps are reverted; the flow has ended." in last_two[0]
    assert "Step gettoaster is already reverted." in last_two[1]


def test_piped_end_of_input_exits_zero(config_path: Path, environ: dict[str, str]) -> None:
    result = run_tty(config_path, environ, ["gimme openbread"], str(TOAST))

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert any("alice" in line for line in result.stdout.splitlines())


def test_piped_without_input_exits_zero(config_path: Path, environ: dict[str, str]) -> None:
    result = run_tty(config_path, environ, [])

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("word", ["quit", "exit", "shutdown"])
def test_piped_quit_words_end_session(config_path: Path, environ: dict[str, str],
                                      word: str) -> None:
    result = run_tty(config_path, environ, [word, "gimme openbread"], str(TOAST))

    assert result.returncode == 0, result.stderr
    # The command after the quit word is never run.
    assert not any("alice" in line for line in result.stdout.splitlines())


def test_piped_reply_flushed_before_next_line(config_path: Path,
                                              environ: dict[str, str]) -> None:
    process = subprocess.Popen(tty_command(config_path, str(TOAST)), stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=REPO, env=environ)
    try:
        assert process.stdin is not None and process.stdout is not None
        output = LineReader(process.stdout)
        process.stdin.write("gimme openbread\n")
        process.stdin.flush()

        # stdin stays open: the reply must arrive without waiting for more input.
        output.wait_for(lambda line: "alice" in line)

        process.stdin.write("quit\n")
        process.stdin.close()
        assert process.wait(timeout=TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_tty_missing_flow_file_is_load_by_name(config_path: Path,
                                               environ: dict[str, str]) -> None:
    # No file "nosuchflow" exists, so the argument is a flow name and goes through `load`,
    # which fails, so the session does not start.
    result = run_tty(config_path, environ, ["quit"], "nosuchflow")

    assert result.returncode == 2
    assert "Error loading flow nosuchflow" in result.stderr
    assert "nosuchflow.flow: cannot read the file: No such file or directory" in result.stderr


# -- interactive mode through the real program on a pseudo-terminal ---------------------------


class PseudoTerminal:
    """Runs a program with stdin, stdout and stderr on a pseudo-terminal, as a user would."""

    # prompt_toolkit requests the cursor position (CPR) from the terminal before drawing the
    # prompt. A terminal answers with ESC [ row ; column R, so this one answers row 1,
    # column 1.
    CURSOR_POSITION_REQUEST = b"\x1b[6n"
    CURSOR_POSITION_REPORT = b"\x1b[1;1R"

    def __init__(self, command: list[str], environ: dict[str, str]) -> None:
        self._master, slave = pty.openpty()
        self.process = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave,
                                        cwd=REPO, env={**environ, "TERM": "xterm"})
        os.close(slave)
        self.output = b""

    def type(self, keys: str) -> None:
        os.write(self._master, keys.encode())

    def wait_for(self, text: str) -> None:
        """Read output until `text` appears after what was read before."""
        start = len(self.output)
        deadline = time.monotonic() + TIMEOUT
        while text.encode() not in self.output[start:]:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{text!r} not shown; output: {self.output[start:]!r}"
            readable, _, _ = select.select([self._master], [], [], remaining)
            if not readable:
                continue
            try:
                data = os.read(self._master, 65536)
            except OSError:  # Linux raises EIO once the program has closed the terminal.
                data = b""
            assert data, f"the program ended before showing {text!r}"
            self.output += data
            if self.CURSOR_POSITION_REQUEST in data:
                os.write(self._master, self.CURSOR_POSITION_REPORT)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self._master)


def test_terminal_stdin_gets_prompt(config_path: Path, environ: dict[str, str],
                                    tmp_path: Path) -> None:
    terminal = PseudoTerminal(tty_command(config_path, str(TOAST)), environ)
    try:
        terminal.wait_for("workflow(toast)>")

        # Typed one key group at a time and waiting for the echo, as a person types, so
        # that each Tab completes before the next keys arrive.
        terminal.type("gimme ")
        terminal.wait_for("gimme")
        terminal.type("openb")
        terminal.wait_for("openb")
        terminal.type("\t")
        terminal.wait_for("read")
        terminal.type("\r")
        terminal.wait_for("alice")
        terminal.wait_for("workflow(toast)>")
        terminal.type("\x04")  # Ctrl-D

        assert terminal.process.wait(timeout=TIMEOUT) == 0
    finally:
        terminal.close()
    history = tmp_path / "state" / "thehat" / "tty-history"
    assert "+gimme openbread" in history.read_text(encoding="utf-8").splitlines()


# -- piped mode in-process ---------------------------------------------------------------------


async def test_blank_line_is_sent_as_command(daemon: Daemon, config: Config,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    received = record_commands(daemon, monkeypatch)
    output = io.StringIO()
    frontend = TerminalFrontend(daemon, config, user="alice", flow=str(TOAST),
                                stdin=io.StringIO("\n"), stdout=output, interactive=False)

    await asyncio.wait_for(frontend.serve(), TIMEOUT)

    assert received == [""]
    assert output.getvalue().count("TheHat ") == 2  # the load status and the blank-line status


async def test_crlf_line_endings_are_removed(daemon: Daemon, config: Config,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    received = record_commands(daemon, monkeypatch)
    frontend = TerminalFrontend(daemon, config, user="alice", stdin=io.StringIO("status\r\n"),
                                stdout=io.StringIO(), interactive=False)

    await asyncio.wait_for(frontend.serve(), TIMEOUT)

    assert received == ["status"]


async def test_unexpected_error_keeps_session(
        daemon: Daemon, config: Config, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    handle = daemon.handle

    async def failing_handle(conversation: Conversation, user: str, text: str,
                             admin: bool = False) -> Reply:
        if text == "boom":
            raise RuntimeError("simulated bug")
        return await handle(conversation, user, text)

    monkeypatch.setattr(daemon, "handle", failing_handle)
    output = io.StringIO()
    frontend = TerminalFrontend(daemon, config, user="alice", flow=str(TOAST),
                                stdin=io.StringIO("boom\ngimme openbread\n"), stdout=output,
                                interactive=False)

    await asyncio.wait_for(frontend.serve(), TIMEOUT)

    assert INTERNAL_ERROR_LINE in output.getvalue().splitlines()
    assert "simulated bug" not in output.getvalue()
    assert owner(daemon, "openbread") == "alice"
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert "boom" in errors[0].getMessage()


async def test_expected_error_message_shown(daemon: Daemon, config: Config,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    async def rejecting_handle(conversation: Conversation, user: str, text: str,
                               admin: bool = False) -> Reply:
        raise CommandError("Step 'x' is gated")

    monkeypatch.setattr(daemon, "handle", rejecting_handle)
    output = io.StringIO()
    frontend = TerminalFrontend(daemon, config, user="alice", stdin=io.StringIO("start x\n"),
                                stdout=output, interactive=False)

    await asyncio.wait_for(frontend.serve(), TIMEOUT)

    assert output.getvalue() == "Step 'x' is gated\n"


async def test_other_users_events_printed(daemon: Daemon, config: Config,
                                          stdin_pipe: tuple[TextIO, TextIO]) -> None:
    reader, writer = stdin_pipe
    output = io.StringIO()
    frontend = TerminalFrontend(daemon, config, user="alice", flow=str(TOAST), stdin=reader,
                                stdout=output, interactive=False)
    task = asyncio.create_task(frontend.serve())
    await wait_until(lambda: daemon.flow_name(frontend.conversation) == "toast",
                     "the terminal is attached to toast")
    bob = RecordingConversation("test:bob")
    daemon.register(bob)
    await daemon.open_file(bob, str(TOAST), "bob")

    await daemon.handle(bob, "bob", "gimme openbread")

    await wait_until(lambda: "bob" in output.getvalue(), "bob's change reaches the terminal")
    writer.close()
    await asyncio.wait_for(task, TIMEOUT)
    assert owner(daemon, "openbread") == "bob"


async def test_stop_ends_session_waiting_for_input(daemon: Daemon, config: Config,
                                                   stdin_pipe: tuple[TextIO, TextIO]) -> None:
    reader, _writer = stdin_pipe
    frontend = TerminalFrontend(daemon, config, user="alice", stdin=reader,
                                stdout=io.StringIO(), interactive=False)
    task = asyncio.create_task(frontend.serve())
    await wait_until(lambda: frontend.conversation.id in daemon.conversations,
                     "the terminal is registered")

    await frontend.stop()

    await asyncio.wait_for(task, TIMEOUT)
    assert frontend.conversation.id not in daemon.conversations


async def test_closed_stdout_ends_session(daemon: Daemon, config: Config,
                                          caplog: pytest.LogCaptureFixture) -> None:
    output = io.StringIO()
    output.close()
    frontend = TerminalFrontend(daemon, config, user="alice",
                                stdin=io.StringIO("status\nstatus\n"), stdout=output,
                                interactive=False)

    await asyncio.wait_for(frontend.serve(), TIMEOUT)

    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "stdout is closed" in warnings[0].getMessage()


def test_conversation_id_names_user(daemon: Daemon, config: Config) -> None:
    frontend = TerminalFrontend(daemon, config, user="alice", interactive=False)

    assert frontend.conversation.id == "tty:alice"
    assert frontend.conversation.medium == "tty"


async def test_interactive_without_prompt_toolkit_raises(
        daemon: Daemon, config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes `import prompt_toolkit` fail as if it were not installed.
    monkeypatch.setitem(sys.modules, "prompt_toolkit", None)
    monkeypatch.delitem(sys.modules, "frontends.tty_prompt", raising=False)
    frontend = TerminalFrontend(daemon, config, user="alice", interactive=True)

    with pytest.raises(TheHatError, match=r"pip install 'thehat\[tty\]'"):
        await frontend.serve()
    assert frontend.conversation.id not in daemon.conversations


# -- interactive mode through a prompt_toolkit pipe input --------------------------------------


@asynccontextmanager
async def interactive_session(daemon: Daemon, config: Config, output: io.StringIO,
                              flow: str | None = str(TOAST),
                              terminal: DummyOutput | Vt100_Output | None = None,
                              ) -> AsyncIterator[tuple[PipeInput, AppSession, asyncio.Task[None]]]:
    """Run the interactive frontend on a pipe input; yield (keyboard, app session, serve task)."""
    with create_pipe_input() as keyboard, \
            create_app_session(input=keyboard, output=terminal or DummyOutput()) as session:
        frontend = TerminalFrontend(daemon, config, user="alice", flow=flow, stdout=output,
                                    interactive=True)
        task = asyncio.create_task(frontend.serve())
        try:
            yield keyboard, session, task
        finally:
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def typed_text(session: AppSession) -> str | None:
    """Return the text in the prompt's input line, or None while no prompt is shown."""
    app = session.app
    if app is None or not app.is_running:
        return None
    return app.current_buffer.text


async def type_keys(keyboard: PipeInput, session: AppSession, keys: str, expected: str) -> None:
    keyboard.send_text(keys)
    await wait_until(lambda: typed_text(session) == expected, f"the input line is {expected!r}")


@pytest.fixture
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state"


async def test_interactive_tab_completes_names(daemon: Daemon, config: Config,
                                               state_home: Path) -> None:
    output = io.StringIO()
    async with interactive_session(daemon, config, output) as (keyboard, session, task):
        await wait_until(lambda: typed_text(session) == "", "the prompt is shown")

        await type_keys(keyboard, session, "gim\t", "gimme")
        await type_keys(keyboard, session, " openb\t", "gimme openbread")
        await type_keys(keyboard, session, ",gett\t", "gimme openbread,gettoaster")
        keyboard.send_text("\r")
        await wait_until(lambda: owner(daemon, "gettoaster") == "alice", "gimme is handled")

        await type_keys(keyboard, session, "gimmeg\t", "gimmegroup")
        await type_keys(keyboard, session, " hardw\t", "gimmegroup hardware")
        keyboard.send_text("\r")
        await wait_until(lambda: owner(daemon, "preptoaster") == "alice",
                         "gimmegroup is handled")

        keyboard.send_text("quit\r")
        await asyncio.wait_for(task, TIMEOUT)

    assert owner(daemon, "openbread") == "alice"
    assert owner(daemon, "adjusttoasting") == "alice"
    assert owner(daemon, "selectslice") is None


async def test_interactive_ctrl_c_clears_line(daemon: Daemon, config: Config,
                                              state_home: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    received = record_commands(daemon, monkeypatch)
    async with interactive_session(daemon, config, io.StringIO()) as (keyboard, session, task):
        await type_keys(keyboard, session, "gimme openbread", "gimme openbread")

        keyboard.send_text("\x03")  # Ctrl-C

        await wait_until(lambda: typed_text(session) == "", "the line is cleared")
        assert not task.done()
        keyboard.send_text("status\r")
        await wait_until(lambda: received == ["status"], "status is handled")
        keyboard.send_text("\x04")  # Ctrl-D on an empty line
        await asyncio.wait_for(task, TIMEOUT)

    assert owner(daemon, "openbread") is None


async def test_interactive_ctrl_d_ends_session(daemon: Daemon, config: Config,
                                               state_home: Path) -> None:
    async with interactive_session(daemon, config, io.StringIO()) as (keyboard, session, task):
        await wait_until(lambda: typed_text(session) == "", "the prompt is shown")

        keyboard.send_text("\x04")

        await asyncio.wait_for(task, TIMEOUT)
    assert task.exception() is None


async def test_interactive_history_written(daemon: Daemon, config: Config,
                                           state_home: Path) -> None:
    async with interactive_session(daemon, config, io.StringIO()) as (keyboard, session, task):
        await wait_until(lambda: typed_text(session) == "", "the prompt is shown")
        keyboard.send_text("gimme openbread\r")
        await wait_until(lambda: owner(daemon, "openbread") == "alice", "gimme is handled")
        keyboard.send_text("quit\r")
        await asyncio.wait_for(task, TIMEOUT)

    history = (state_home / "thehat" / "tty-history").read_text(encoding="utf-8")
    assert "+gimme openbread" in history.splitlines()


async def test_interactive_prompt_shows_flow_name(daemon: Daemon, config: Config,
                                                  state_home: Path) -> None:
    # A real VT100 renderer on a string shows what the terminal would draw. It draws the
    # prompt's trailing space as a cursor movement, so the checks stop at ">".
    screen = io.StringIO()
    terminal = Vt100_Output(screen, lambda: Size(rows=24, columns=80))
    async with interactive_session(daemon, config, io.StringIO(), flow=None,
                                   terminal=terminal) as (keyboard, session, task):
        await wait_until(lambda: "workflow()>" in screen.getvalue(),
                         "the prompt without a flow is drawn")

        keyboard.send_text("quit\r")
        await asyncio.wait_for(task, TIMEOUT)

    drawn_before = len(screen.getvalue())
    async with interactive_session(daemon, config, io.StringIO(),
                                   terminal=terminal) as (keyboard, session, task):
        await wait_until(lambda: "workflow(toast)>" in screen.getvalue()[drawn_before:],
                         "the prompt with the flow name is drawn")
        keyboard.send_text("quit\r")
        await asyncio.wait_for(task, TIMEOUT)


async def test_prompt_text_names_attached_flow(daemon: Daemon, config: Config) -> None:
    frontend = TerminalFrontend(daemon, config, user="alice", interactive=True)
    assert frontend.prompt_text() == "workflow()> "

    await daemon.open_file(frontend.conversation, str(TOAST), "alice")

    assert frontend.prompt_text() == "workflow(toast)> "


# -- completion and history units --------------------------------------------------------------


def completions_for(text: str) -> list[tuple[str, int, str]]:
    names = Completions(commands=["gimme", "gimmeall", "gimmegroup", "status"],
                        steps=["openbread", "gettoaster", "food"], groups=["food", "hardware"])
    completer = CommandCompleter(lambda: names)
    return [(completion.text, completion.start_position, completion.display_meta_text)
            for completion in completer.get_completions(Document(text), CompleteEvent())]


def test_completer_first_word_is_command() -> None:
    assert completions_for("gim") == [("gimme", -3, "command"), ("gimmeall", -3, "command"),
                                      ("gimmegroup", -3, "command")]
    assert completions_for("  st") == [("status", -2, "command")]


def test_completer_later_words_are_names() -> None:
    assert completions_for("gimme o") == [("openbread", -1, "step")]
    assert completions_for("gimme openbread,g") == [("gettoaster", -1, "step")]
    assert completions_for("gimmegroup h") == [("hardware", -1, "group")]


def test_completer_name_both_step_and_group_once() -> None:
    assert completions_for("gimme f") == [("food", -1, "step")]


def test_completer_empty_word_lists_all_names() -> None:
    assert [text for text, _, _ in completions_for("gimme ")] == [
        "food", "gettoaster", "openbread", "hardware"]


def test_completer_error_gives_no_completions(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> Completions:
        raise RuntimeError("simulated bug")

    completer = CommandCompleter(broken)

    assert list(completer.get_completions(Document("gim"), CompleteEvent())) == []
    assert caplog.records[0].exc_info is not None


def test_history_path_defaults_to_local_state(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))

    assert history_path({}) == tmp_path / ".local" / "state" / "thehat" / "tty-history"


def test_history_created_with_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "tty-history"

    history = open_history(path)

    assert isinstance(history, FileHistory)
    assert path.exists()


def test_unwritable_history_kept_in_memory(tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", encoding="utf-8")

    history = open_history(blocker / "thehat" / "tty-history")

    assert isinstance(history, InMemoryHistory)
    assert [record.levelno for record in caplog.records] == [logging.WARNING]
    assert str(blocker) in caplog.records[0].getMessage()


def test_history_file_private(tmp_path: Path) -> None:
    from frontends.tty_prompt import open_history

    path = tmp_path / "state" / "thehat" / "tty-history"

    open_history(path)

    assert path.stat().st_mode & 0o777 == 0o600
