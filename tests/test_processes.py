"""Tests of thehat.processes against real /bin/sh processes.

Every command has a timeout of a few seconds at most. Processes that a test starts in the
background are killed at teardown by the `stray_pids` fixture if a test failed before
checking that they are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from thehat import processes
from thehat.processes import (
    INHERITED_VARIABLES,
    CommandResult,
    CommandSpec,
    OutputRelay,
    command_environment,
    run_command,
)

# Upper bound for waiting on a killed process to disappear, in seconds.
GONE_TIMEOUT = 3.0
# A grandchild that outlives the shell unless its process group is killed.
GRANDCHILD = "echo $$; sleep 300 & echo $!; wait"
IGNORE_TERM = "trap '' TERM; "


def spec(command_line: str, timeout: float = 5.0, *, context: dict[str, str] | None = None,
         cwd: Path | None = None, label: str = "") -> CommandSpec:
    return CommandSpec(command_line, context or {}, timeout, cwd, label)


def process_state(pid: int) -> str | None:
    """Return the state letter of process `pid` from /proc, or None when it does not exist.

    The process may vanish between opening and reading its stat file; reading then fails
    with ProcessLookupError rather than FileNotFoundError.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


async def wait_until_gone(pid: int) -> bool:
    """Wait up to GONE_TIMEOUT seconds until `pid` no longer exists. A zombie counts as gone."""
    deadline = time.monotonic() + GONE_TIMEOUT
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if process_state(pid) == "Z":
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)


async def read_pids(path: Path, count: int) -> list[int]:
    """Wait up to five seconds until `path` contains `count` complete lines of pids."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_text().splitlines(keepends=True)
            if len(lines) >= count and all(line.endswith("\n") for line in lines[:count]):
                return [int(line) for line in lines[:count]]
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} did not get {count} pids within 5 s")


def marked_pids(marker: str) -> list[int]:
    """Return the pids of live processes whose environment has THEHAT_TEST_MARKER=`marker`."""
    needle = f"THEHAT_TEST_MARKER={marker}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def marker() -> Iterator[str]:
    """A value for THEHAT_TEST_MARKER; processes that still have it are killed at the end."""
    value = uuid.uuid4().hex
    yield value
    for pid in marked_pids(value):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def stray_pids() -> Iterator[list[int]]:
    """Collect pids of `sleep` processes that a test started, and kill those still running."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if cmdline.startswith(b"sleep\0"):
                os.kill(pid, signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError):
            continue


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """An output callback that stores every batch it receives."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    async def __call__(self, lines: list[str]) -> None:
        self.batches.append(list(lines))

    @property
    def lines(self) -> list[str]:
        return [line for batch in self.batches for line in batch]


# --- exit status and output ------------------------------------------------------------


async def test_success_reports_exit_zero_and_output() -> None:
    result = await run_command(spec("echo one; echo two"))

    assert result.exit_status == 0
    assert result.succeeded()
    assert not result.timed_out
    assert result.error is None
    assert result.tail == ("one", "two")
    assert result.line_count == 2
    assert result.summary() == "exited with status 0"


async def test_failure_reports_exit_status() -> None:
    result = await run_command(spec("echo oops; exit 3"))

    assert result.exit_status == 3
    assert not result.succeeded()
    assert result.tail == ("oops",)
    assert result.summary() == "exited with status 3"


async def test_exit_by_signal_is_negative_status() -> None:
    result = await run_command(spec("kill -9 $$"))

    assert result.exit_status == -9
    assert not result.succeeded()
    assert not result.timed_out
    assert result.summary() == "was killed by signal 9"


async def test_partial_last_line_counts() -> None:
    result = await run_command(spec(r"printf 'one\n\ntwo\nthree'"))

    assert result.tail == ("one", "", "two", "three")
    assert result.line_count == 4


async def test_no_output_has_no_lines() -> None:
    result = await run_command(spec("true"))

    assert result.tail == ()
    assert result.line_count == 0


async def test_stderr_merged_into_output() -> None:
    result = await run_command(spec("echo out; echo err >&2; echo out again"))

    assert result.tail == ("out", "err", "out again")


async def test_stdin_is_dev_null() -> None:
    # The test's own standard input becomes a pipe, so that a child inheriting it would
    # see that pipe rather than /dev/null.
    read_end, write_end = os.pipe()
    saved_stdin = os.dup(0)
    os.dup2(read_end, 0)
    try:
        result = await run_command(spec("readlink /proc/$$/fd/0"))
    finally:
        os.dup2(saved_stdin, 0)
        for descriptor in (saved_stdin, read_end, write_end):
            os.close(descriptor)

    assert result.tail == ("/dev/null",)


async def test_child_leads_own_session() -> None:
    # Fields 5 and 6 of /proc/PID/stat are the process group and the session.
    result = await run_command(spec("echo $$; cut -d ' ' -f 5,6 /proc/$$/stat"))

    pid = result.tail[0]
    assert result.tail[1] == f"{pid} {pid}"


async def test_tail_keeps_last_lines_of_long_output() -> None:
    result = await run_command(spec("seq 1 10000"), tail_lines=5)

    assert result.tail == ("9996", "9997", "9998", "9999", "10000")
    assert result.line_count == 10000


async def test_default_tail_is_twenty_lines() -> None:
    result = await run_command(spec("seq 1 10000"))

    assert result.tail == tuple(str(number) for number in range(9981, 10001))
    assert result.line_count == 10000


async def test_zero_tail_lines_still_counts() -> None:
    result = await run_command(spec("seq 1 50"), tail_lines=0)

    assert result.tail == ()
    assert result.line_count == 50


# --- line cleaning ---------------------------------------------------------------------


async def test_long_line_cut_with_marker() -> None:
    result = await run_command(spec(r"head -c 5000 /dev/zero | tr '\000' x; echo; echo after"))

    assert result.tail == ("x" * 399 + "…", "after")


async def test_endless_line_kept_bounded() -> None:
    # One megabyte without a newline: a single line, cut, and nothing else kept of it.
    result = await run_command(spec(r"head -c 1000000 /dev/zero | tr '\000' y"))

    assert result.line_count == 1
    assert result.tail == ("y" * 399 + "…",)


async def test_multibyte_line_cut_by_characters() -> None:
    result = await run_command(spec(r"i=0; while [ $i -lt 500 ]; do printf '\342\202\254'; "
                                    r"i=$((i + 1)); done; echo"))

    assert result.tail == ("€" * 399 + "…",)


async def test_byte_cut_does_not_split_character() -> None:
    # 8190 control bytes, then a euro sign across the MAX_LINE_BYTES boundary at 8192.
    result = await run_command(spec(r"head -c 8190 /dev/zero | tr '\000' '\001'; "
                                    r"printf '\342\202\254\342\202\254\n'"))

    assert processes.MAX_LINE_BYTES == 8192
    assert result.tail == ("…",)


async def test_invalid_utf8_replaced() -> None:
    result = await run_command(spec(r"printf 'caf\351 ok\n'; printf 'caf\303\251 \342\234\223\n'"))

    assert result.tail == ("caf\ufffd ok", "café ✓")


async def test_control_characters_removed() -> None:
    result = await run_command(spec(r"printf 'a\001b\033[1;31mred\033[0m\tc\177d  \r\n'"))

    assert result.tail == ("abred\tcd",)


async def test_crlf_line_endings_cleaned() -> None:
    result = await run_command(spec(r"printf 'one\r\ntwo\r\n'"))

    assert result.tail == ("one", "two")


# --- timeouts and cancellation -----------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", IGNORE_TERM], ids=["plain", "ignores-term"])
async def test_timeout_kills_process_group(prefix: str, stray_pids: list[int]) -> None:
    result = await run_command(spec(prefix + GRANDCHILD, timeout=0.5), kill_grace=0.5)
    pids = [int(line) for line in result.tail]
    stray_pids.extend(pids)

    assert result.timed_out
    assert result.exit_status is None
    assert not result.succeeded()
    assert result.summary() == "timed out after 0.5 s and was killed"
    assert len(pids) == 2
    for pid in pids:
        assert await wait_until_gone(pid), f"process {pid} survived the timeout"


async def test_timeout_kills_grandchild_after_shell_exits(stray_pids: list[int],
                                                          tmp_path: Path) -> None:
    # The shell dies on SIGTERM at once. The grandchild ignores SIGTERM and does not hold
    # the output open, so only the SIGKILL that follows reaches it.
    pids_file = tmp_path / "pids"
    command = ("(trap '' TERM; exec sleep 300) >/dev/null 2>&1 & echo $! >\"$THEHAT_PIDS\"; "
               "sleep 300")
    result = await run_command(spec(command, timeout=0.5,
                                    context={"THEHAT_PIDS": str(pids_file)}), kill_grace=0.5)
    [pid] = await read_pids(pids_file, 1)
    stray_pids.append(pid)

    assert result.timed_out
    assert await wait_until_gone(pid), f"grandchild {pid} survived the timeout"


@pytest.mark.parametrize("prefix", ["", IGNORE_TERM], ids=["plain", "ignores-term"])
async def test_cancellation_kills_process_group(prefix: str, stray_pids: list[int],
                                                tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    command = prefix + 'echo $$ >"$THEHAT_PIDS"; sleep 300 & echo $! >>"$THEHAT_PIDS"; wait'
    task = asyncio.create_task(run_command(
        spec(command, timeout=30, context={"THEHAT_PIDS": str(pids_file)}), kill_grace=0.5))
    pids = await read_pids(pids_file, 2)
    stray_pids.extend(pids)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    for pid in pids:
        assert await wait_until_gone(pid), f"process {pid} survived the cancellation"


@pytest.mark.parametrize("iterations", range(1, 7))
async def test_cancellation_while_starting(iterations: int, marker: str) -> None:
    # Cancelled after a few turns of the event loop, so that some cases hit the start of
    # the shell itself. Running `true` last keeps the shell from replacing itself by sleep.
    command = spec("sleep 300; true", timeout=30, context={"THEHAT_TEST_MARKER": marker})
    task = asyncio.create_task(run_command(command))
    for _ in range(iterations):
        await asyncio.sleep(0)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    # A sleep that survived would have been started by now.
    await asyncio.sleep(0.3)
    for pid in marked_pids(marker):
        assert await wait_until_gone(pid), f"process {pid} survived the cancellation"


async def test_background_process_holding_output(stray_pids: list[int]) -> None:
    # The shell exits at once, but the sleep keeps the output pipe open: the result must
    # come from the shell's exit, not from the timeout.
    result = await asyncio.wait_for(run_command(spec("sleep 300 & echo $!", timeout=5)), 10)
    pid = int(result.tail[0])
    stray_pids.append(pid)

    assert not result.timed_out
    assert result.exit_status == 0
    assert process_state(pid) not in (None, "Z"), "a normal exit must not kill the group"


# --- commands that cannot start ------------------------------------------------------------


async def test_missing_working_directory(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    result = await run_command(spec("echo never", cwd=missing))

    assert result.exit_status is None
    assert not result.timed_out
    assert not result.succeeded()
    assert result.error == f"working directory {str(missing)!r}: No such file or directory"
    assert result.summary() == f"could not start: {result.error}"
    assert result.tail == ()
    assert result.line_count == 0


async def test_working_directory_is_file(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    result = await run_command(spec("echo never", cwd=not_a_directory))

    assert result.error == f"working directory {str(not_a_directory)!r}: Not a directory"


async def test_missing_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shell = tmp_path / "no-such-shell"
    monkeypatch.setattr(processes, "SHELL", str(shell))
    result = await run_command(spec("echo never"))

    assert result.exit_status is None
    assert result.error == f"{shell}: No such file or directory"


async def test_working_directory_used(tmp_path: Path) -> None:
    result = await run_command(spec("pwd", cwd=tmp_path))

    assert result.tail == (str(tmp_path),)


# --- environment and context -------------------------------------------------------------


async def test_environment_is_minimal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THEHAT_TEST_SECRET", "hunter2")
    result = await run_command(spec("env", context={"THEHAT_FLOW": "toast"}), tail_lines=100)
    names = {line.split("=", 1)[0] for line in result.tail}

    assert "THEHAT_TEST_SECRET" not in names
    assert not any("hunter2" in line for line in result.tail)
    assert f"PATH={os.environ['PATH']}" in result.tail
    assert "THEHAT_FLOW=toast" in result.tail
    # PWD is exported by the shell itself.
    assert names <= {*INHERITED_VARIABLES, "THEHAT_FLOW", "PWD"}


HOSTILE_VALUES = [
    "; rm -rf x; touch pwned-semicolon",
    "$(touch pwned-dollar)",
    "`touch pwned-backtick`",
    "it's 'single' quoted; touch pwned-single",
    'a "double" quote"; touch pwned-double; echo "',
    "first line\ntouch pwned-newline\n",
    "|| touch pwned-or # * ? [a] ~ \\ $HOME \t tab  ",
]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
async def test_context_value_arrives_unchanged(value: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    out = tmp_path / "out"
    context = {"THEHAT_DESCRIPTION": value, "THEHAT_OUT": str(out)}
    result = await run_command(spec("printf '%s' \"$THEHAT_DESCRIPTION\" >\"$THEHAT_OUT\"",
                                    context=context, cwd=work))

    assert result.exit_status == 0
    assert out.read_bytes() == value.encode()
    assert list(work.iterdir()) == []


async def test_command_line_not_formatted() -> None:
    result = await run_command(spec("echo '{THEHAT_FLOW} $THEHAT_FLOW %s'",
                                    context={"THEHAT_FLOW": "toast"}))

    assert result.tail == ("{THEHAT_FLOW} $THEHAT_FLOW %s",)


def test_environment_takes_only_inherited_names() -> None:
    base = {"HOME": "/home/bot", "LANG": "C.UTF-8", "IRC_PASSWORD": "secret",
            "LD_PRELOAD": "/tmp/x.so", "PATH": "/opt/bin"}
    environment = command_environment({"THEHAT_STEP": "heat"}, base)

    assert environment == {"HOME": "/home/bot", "LANG": "C.UTF-8", "PATH": "/opt/bin",
                           "THEHAT_STEP": "heat"}


def test_environment_defaults_path() -> None:
    assert command_environment({}, {}) == {"PATH": "/usr/local/bin:/usr/bin:/bin"}


def test_environment_context_overrides_base() -> None:
    assert command_environment({"HOME": "/srv"}, {"HOME": "/root"})["HOME"] == "/srv"


def test_environment_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Paris")
    monkeypatch.setenv("THEHAT_TEST_SECRET", "hunter2")
    environment = command_environment({})

    assert environment["TZ"] == "Europe/Paris"
    assert "THEHAT_TEST_SECRET" not in environment


@pytest.mark.parametrize("name", ["lower", "1ST", "A-B", "", "A B", "É", "A=B", "PATH\n"])
def test_invalid_context_name_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="invalid context variable name"):
        command_environment({name: "x"})
    with pytest.raises(ValueError, match="invalid context variable name"):
        CommandSpec("true", {name: "x"}, 5)


@pytest.mark.parametrize("value", ["a\0b", "\0", "\ud800"], ids=["nul", "only-nul", "surrogate"])
def test_invalid_context_value_rejected(value: str) -> None:
    with pytest.raises(ValueError, match="THEHAT_NOTE") as raised:
        command_environment({"THEHAT_NOTE": value})
    assert value not in str(raised.value)
    with pytest.raises(ValueError, match="THEHAT_NOTE"):
        CommandSpec("true", {"THEHAT_NOTE": value}, 5)


def test_non_string_context_value_rejected() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        command_environment({"THEHAT_COUNT": 3})  # type: ignore[dict-item]


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf")])
def test_spec_rejects_bad_timeout(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        CommandSpec("true", {}, timeout)


@pytest.mark.parametrize("command_line", ["", "   ", "echo a\0b"])
def test_spec_rejects_bad_command_line(command_line: str) -> None:
    with pytest.raises(ValueError, match="command line"):
        CommandSpec(command_line, {}, 5)


def test_spec_copies_context() -> None:
    context = {"THEHAT_FLOW": "toast"}
    command = CommandSpec("true", context, 5)
    context["THEHAT_FLOW"] = "changed"

    assert command.context == {"THEHAT_FLOW": "toast"}


async def test_run_rejects_bad_limits() -> None:
    with pytest.raises(ValueError, match="tail_lines"):
        await run_command(spec("true"), tail_lines=-1)
    with pytest.raises(ValueError, match="kill_grace"):
        await run_command(spec("true"), kill_grace=-1)


# --- logging -----------------------------------------------------------------------------


async def test_logs_start_and_end_without_context(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="thehat.processes")
    command = spec("echo hello", context={"THEHAT_DESCRIPTION": "s3cr3t-value"},
                   label="startCommand of toast/heat")
    await run_command(command)
    messages = [record.getMessage() for record in caplog.records]

    assert any(message.startswith("started startCommand of toast/heat (pid ")
               for message in messages)
    assert ("startCommand of toast/heat exited with status 0 (lines of output: 1)"
            in messages)
    assert not any("s3cr3t-value" in message for message in messages)
    for record in caplog.records:
        if "echo hello" in record.getMessage():
            assert record.levelno == logging.DEBUG


# --- relaying output ---------------------------------------------------------------------


async def test_output_relayed_while_running(tmp_path: Path) -> None:
    # The command waits for a file that only the output callback creates, so it finishes
    # in time only if its first line is relayed before it exits.
    marker = tmp_path / "marker"
    seen: list[str] = []

    async def on_output(lines: list[str]) -> None:
        seen.extend(lines)
        if "first" in lines:
            marker.touch()

    command = spec('echo first; while [ ! -e "$THEHAT_MARKER" ]; do sleep 0.05; done; '
                   'echo second', timeout=5, context={"THEHAT_MARKER": str(marker)})
    result = await run_command(command, on_output)

    assert not result.timed_out
    assert result.exit_status == 0
    assert seen == ["first", "second"]


async def test_chatty_output_relay_capped() -> None:
    recorder = Recorder()
    result = await run_command(spec("seq 1 100"), recorder)

    assert recorder.lines == [
        *(str(number) for number in range(1, 61)),
        "(40 more lines of output not shown here; the last lines are in the history)",
    ]
    assert result.line_count == 100


async def test_failing_callback_does_not_stop_command(
        caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def on_output(lines: list[str]) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("chat is down")

    result = await run_command(spec("seq 1 5", label="exec"), on_output)
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]

    assert result.exit_status == 0
    assert result.tail == ("1", "2", "3", "4", "5")
    assert calls >= 1
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert "relaying the output of exec failed" in errors[0].getMessage()


async def test_no_callback_when_no_output() -> None:
    recorder = Recorder()
    await run_command(spec("true"), recorder)

    assert recorder.batches == []


# --- OutputRelay with an injected clock ---------------------------------------------------


async def test_relay_burst_then_refill() -> None:
    clock = FakeClock()
    recorder = Recorder()
    relay = OutputRelay(recorder, burst=3, per_second=1.0, batch_seconds=0, clock=clock)
    for number in range(1, 6):
        await relay.add(f"line {number}")

    assert recorder.batches == [["line 1"], ["line 2"], ["line 3"]]
    assert relay.due_in() == 1.0

    clock.now = 0.5
    await relay.send_due()
    assert len(recorder.batches) == 3
    assert relay.due_in() == 0.5

    clock.now = 1.0
    await relay.send_due()
    assert recorder.batches[3:] == [["line 4"]]

    clock.now = 5.0
    await relay.send_due()
    assert recorder.batches[4:] == [["line 5"]]
    assert relay.due_in() is None


async def test_relay_tokens_capped_at_burst() -> None:
    clock = FakeClock()
    recorder = Recorder()
    relay = OutputRelay(recorder, burst=2, per_second=1.0, batch_seconds=0, clock=clock)
    clock.now = 1000.0
    for number in range(1, 5):
        await relay.add(f"line {number}")

    assert recorder.lines == ["line 1", "line 2"]


async def test_relay_batches_lines_within_window() -> None:
    clock = FakeClock()
    recorder = Recorder()
    relay = OutputRelay(recorder, burst=10, per_second=2.0, batch_seconds=1.0, clock=clock)
    await relay.add("a")
    clock.now = 0.4
    await relay.add("b")

    assert recorder.batches == []
    assert relay.due_in() == pytest.approx(0.6)

    clock.now = 1.0
    await relay.send_due()
    assert recorder.batches == [["a", "b"]]

    clock.now = 1.2
    await relay.add("c")
    clock.now = 2.0
    await relay.send_due()
    assert recorder.batches == [["a", "b"]]

    clock.now = 2.5
    await relay.send_due()
    assert recorder.batches == [["a", "b"], ["c"]]


async def test_relay_batch_limited_by_tokens() -> None:
    clock = FakeClock()
    recorder = Recorder()
    relay = OutputRelay(recorder, burst=3, per_second=10.0, batch_seconds=1.0, clock=clock)
    for number in range(1, 6):
        relay.queue(str(number))
    clock.now = 1.0
    await relay.send_due()

    assert recorder.batches == [["1", "2", "3"]]
    # The two lines left start a new batch, which waits longer than the next token.
    assert relay.due_in() == 1.0

    clock.now = 2.0
    await relay.send_due()
    assert recorder.batches == [["1", "2", "3"], ["4", "5"]]


async def test_relay_max_lines_and_summary() -> None:
    recorder = Recorder()
    relay = OutputRelay(recorder, burst=100, max_lines=4, batch_seconds=0, clock=FakeClock())
    for number in range(1, 7):
        await relay.add(str(number))

    assert recorder.lines == ["1", "2", "3", "4"]
    assert relay.full
    assert relay.dropped == 2

    await relay.flush()
    assert recorder.batches[-1] == [
        "(2 more lines of output not shown here; the last lines are in the history)"]


async def test_relay_summary_singular() -> None:
    recorder = Recorder()
    relay = OutputRelay(recorder, max_lines=1, clock=FakeClock())
    await relay.add("kept")
    await relay.add("dropped")
    await relay.flush()

    assert recorder.batches == [
        ["kept", "(1 more line of output not shown here; the last lines are in the history)"]]


async def test_relay_flush_ignores_tokens() -> None:
    recorder = Recorder()
    relay = OutputRelay(recorder, burst=1, per_second=0.0, batch_seconds=0, clock=FakeClock())
    for line in ["a", "b", "c"]:
        await relay.add(line)

    assert recorder.batches == [["a"]]
    assert relay.due_in() == float("inf")

    await relay.flush()
    assert recorder.batches == [["a"], ["b", "c"]]


async def test_relay_flush_once() -> None:
    recorder = Recorder()
    relay = OutputRelay(recorder, max_lines=1, clock=FakeClock())
    await relay.add("a")
    await relay.add("b")
    await relay.flush()
    await relay.flush()

    assert len(recorder.batches) == 1


async def test_relay_flush_without_lines_sends_nothing() -> None:
    recorder = Recorder()
    await OutputRelay(recorder, clock=FakeClock()).flush()

    assert recorder.batches == []


@pytest.mark.parametrize("options", [
    {"burst": 0}, {"per_second": -1.0}, {"per_second": float("nan")}, {"max_lines": -1},
    {"batch_seconds": -1.0},
])
def test_relay_rejects_bad_limits(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        OutputRelay(Recorder(), **options)  # type: ignore[arg-type]


def test_result_summary_for_error() -> None:
    result = CommandResult(None, False, "/bin/sh: No such file or directory", (), 0, 0.0, 5.0)

    assert result.summary() == "could not start: /bin/sh: No such file or directory"
    assert not result.succeeded()


def test_bidirectional_controls_removed() -> None:
    line = processes.clean_output_line("safe \u202egnp.exe \u2066x\u2069".encode())

    assert line == "safe gnp.exe x"
