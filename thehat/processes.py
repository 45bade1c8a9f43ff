"""Running host commands: step commands, program owners and the admin `exec` command.

`run_command` runs a command line as `/bin/sh -c COMMAND_LINE` and returns a `CommandResult`.
The command line is text that the flow's author or an admin wrote, and it is passed to the shell
unchanged. Run-time context (flow name, step name, description, user, ...) reaches the command
only as environment variables, so no value from chat or a flow file is ever parsed by the shell.

The child gets a minimal environment (`command_environment`), so that secrets in the daemon's
environment, such as chat passwords, do not leak into it. Its standard input is /dev/null, its
standard error goes to its standard output, and it runs in a session of its own. A timeout or
a cancellation therefore reaches its whole process group, grandchildren included.

Output is read as it arrives. Only the last lines are kept, and each line is cut to
MAX_LINE_CHARACTERS, so output of any size takes bounded memory. `OutputRelay` limits how
many of those lines go to chat, and how fast.

NOTE: background processes that a command leaves behind when its shell exits normally are
not killed. If they keep the output pipe open, reading stops EXIT_DRAIN_SECONDS after the
shell exits, and they get SIGPIPE when they write to it again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import re
import signal
import subprocess
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final

log = logging.getLogger(__name__)

SHELL: Final = "/bin/sh"
DEFAULT_PATH: Final = "/usr/local/bin:/usr/bin:/bin"
# The only variables a command receives from the daemon's own environment.
INHERITED_VARIABLES: Final = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER",
                              "LOGNAME", "SHELL", "TMPDIR")
CONTEXT_NAME_PATTERN: Final = re.compile(r"[A-Z_][A-Z0-9_]*")

# An output line longer than this, after cleaning, is cut and ends with CUT_MARKER.
MAX_LINE_CHARACTERS: Final = 400
CUT_MARKER: Final = "…"
# Bytes of one output line kept before cleaning. The rest of the line is discarded unread.
# Eight kilobytes leave room for 400 characters of four bytes each plus escape sequences.
MAX_LINE_BYTES: Final = 8192
# After the shell exits, output is read until end of file for at most this many seconds.
EXIT_DRAIN_SECONDS: Final = 1.0

# ANSI/ECMA-48 control sequences (colours, cursor moves): removed whole, not only their ESC.
_CONTROL_SEQUENCE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
# C0 controls except tab, DEL and C1 controls: Unicode category Cc without U+0009.
# Bidirectional overrides and isolates (U+202A-U+202E, U+2066-U+2069) go too, because they
# could make a relayed line read differently from what the command printed.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

OutputCallback = Callable[[list[str]], Awaitable[None]]
_StartTask = asyncio.Task[tuple[asyncio.SubprocessTransport, "_CommandProtocol"]]

# Starts whose caller was cancelled, kept here until they end so that the tasks are not
# garbage-collected while they run.
_abandoned_starts: set[_StartTask] = set()


@dataclass(frozen=True)
class CommandSpec:
    """A command line to run, with its context variables and limits.

    Raises ValueError for an empty command line, one containing NUL, a timeout that is not
    a positive number of seconds, or an invalid context (see `command_environment`). The
    context is copied, so changing the caller's mapping later does not change the spec.
    """

    command_line: str
    context: Mapping[str, str]
    timeout: float
    cwd: Path | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if not self.command_line.strip():
            raise ValueError(f"command line of {self._name()} is empty; give a shell command")
        if "\0" in self.command_line:
            raise ValueError(f"command line of {self._name()} contains a NUL character, "
                             "which cannot be passed to a program")
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError(f"timeout of {self._name()} must be a positive number of "
                             f"seconds, not {self.timeout!r}")
        _check_context(self.context)
        object.__setattr__(self, "context", MappingProxyType(dict(self.context)))

    def _name(self) -> str:
        return self.label or "command"


@dataclass(frozen=True)
class CommandResult:
    """The outcome of a command and the end of its output.

    `exit_status` is None when the command timed out, could not start, or did not exit
    after SIGKILL. It is negative (-N) when signal N killed the shell.
    """

    exit_status: int | None
    timed_out: bool
    error: str | None
    tail: tuple[str, ...]
    line_count: int
    duration: float
    # The time limit that applied, in seconds, which summary() names after a timeout.
    timeout: float

    def succeeded(self) -> bool:
        return self.exit_status == 0

    def summary(self) -> str:
        """Describe the outcome in one line that completes a sentence about the command.

        >>> CommandResult(3, False, None, (), 0, 0.1, 30.0).summary()
        'exited with status 3'
        >>> CommandResult(None, True, None, (), 0, 30.2, 30.0).summary()
        'timed out after 30 s and was killed'
        >>> CommandResult(-9, False, None, (), 0, 0.1, 30.0).summary()
        'was killed by signal 9'
        """
        if self.error is not None:
            return f"could not start: {self.error}"
        if self.timed_out:
            return f"timed out after {self.timeout:g} s and was killed"
        if self.exit_status is None:
            return "did not exit after it was killed"
        if self.exit_status < 0:
            return f"was killed by signal {-self.exit_status}"
        return f"exited with status {self.exit_status}"


def command_environment(context: Mapping[str, str],
                        base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Build the environment of a command: INHERITED_VARIABLES from `base`, then `context`.

    `base` defaults to the daemon's os.environ. PATH is DEFAULT_PATH when `base` has none.
    A context variable replaces an inherited one of the same name. Raises ValueError for a
    context name that does not match CONTEXT_NAME_PATTERN, and for a value that contains NUL
    or cannot be encoded for the operating system (a lone surrogate).

    >>> command_environment({"THEHAT_FLOW": "toast"}, {"HOME": "/root", "SECRET": "x"})
    {'HOME': '/root', 'PATH': '/usr/local/bin:/usr/bin:/bin', 'THEHAT_FLOW': 'toast'}
    """
    _check_context(context)
    if base is None:
        base = os.environ
    environment = {name: base[name] for name in INHERITED_VARIABLES if name in base}
    environment.setdefault("PATH", DEFAULT_PATH)
    environment.update(context)
    return dict(sorted(environment.items()))


def _check_context(context: Mapping[str, str]) -> None:
    # The values may be secret or hostile, so messages name the variable, never the value.
    for name, value in context.items():
        if not isinstance(name, str) or not CONTEXT_NAME_PATTERN.fullmatch(name):
            raise ValueError(f"invalid context variable name {name!r}: use capital ASCII "
                             "letters, digits and underscores, not starting with a digit")
        if not isinstance(value, str):
            raise ValueError(f"context variable {name} must be a string, not "
                             f"{type(value).__name__}")
        if "\0" in value:
            raise ValueError(f"context variable {name} contains a NUL character, which an "
                             "environment variable cannot hold")
        try:
            os.fsencode(value)
        except UnicodeEncodeError:
            raise ValueError(f"context variable {name} contains characters that cannot be "
                             "encoded for the operating system") from None


def clean_output_line(raw: bytes, *, cut: bool = False) -> str:
    """Turn one line of command output into text that is safe to show in chat.

    Decodes UTF-8 (invalid bytes become U+FFFD), removes ANSI control sequences and control
    characters other than tab, strips trailing whitespace and cuts the line to
    MAX_LINE_CHARACTERS, the last of which is then CUT_MARKER. Pass `cut=True` when the end
    of the raw line was already discarded, so that the marker is added as well.

    >>> clean_output_line(b"\\x1b[31mred\\x1b[0m\\tcaf\\xe9 \\r")
    'red\\tcaf\\ufffd'
    >>> len(clean_output_line(b"x" * 1000)), clean_output_line(b"x" * 1000)[-1]
    (400, '…')
    """
    text = raw.decode("utf-8", "replace")
    text = _CONTROL_SEQUENCE.sub("", text)
    text = _CONTROL_CHARACTER.sub("", text).rstrip()
    if cut or len(text) > MAX_LINE_CHARACTERS:
        return text[:MAX_LINE_CHARACTERS - 1] + CUT_MARKER
    return text


class OutputRelay:
    """Rate limit for relaying command output to chat.

    A token bucket holds up to `burst` tokens and gains `per_second` tokens a second; each
    relayed line takes one. Lines wait in a queue rather than being dropped when tokens run
    out, and the ones that arrive within `batch_seconds` of the first waiting line go out
    together in one `send` call. At most `max_lines` lines are accepted in total; later
    lines are only counted, and `flush` reports their number.

    Nothing here sleeps: `send_due` sends when the time has come, and a caller that wants
    lines to go out while no new ones arrive calls it again after `due_in()` seconds.
    Exceptions from `send` propagate to the caller of `add`, `send_due` or `flush`.
    """

    def __init__(self, send: OutputCallback, *, burst: int = 10, per_second: float = 2.0,
                 max_lines: int = 60, batch_seconds: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if burst < 1:
            raise ValueError(f"burst must be at least 1 line, not {burst!r}")
        if not (math.isfinite(per_second) and per_second >= 0):
            raise ValueError(f"per_second must be a number of lines >= 0, not {per_second!r}")
        if max_lines < 0:
            raise ValueError(f"max_lines must be >= 0, not {max_lines!r}")
        if not (math.isfinite(batch_seconds) and batch_seconds >= 0):
            raise ValueError(f"batch_seconds must be a number of seconds >= 0, not "
                             f"{batch_seconds!r}")
        self._send = send
        self._burst = burst
        self._per_second = per_second
        self._max_lines = max_lines
        self._batch_seconds = batch_seconds
        self._clock = clock
        self._tokens = float(burst)
        self._refilled_at = clock()
        self._pending: list[str] = []
        self._batch_started_at = 0.0
        self._accepted = 0
        self.dropped = 0
        """Lines that exceeded `max_lines` and were not relayed."""

    @property
    def full(self) -> bool:
        """Whether `max_lines` lines were accepted, so that later lines are only counted."""
        return self._accepted >= self._max_lines

    def queue(self, line: str) -> None:
        """Accept `line` for sending later, or only count it once the relay is full."""
        if self.full:
            self.dropped += 1
            return
        if not self._pending:
            self._batch_started_at = self._clock()
        self._pending.append(line)
        self._accepted += 1

    def due_in(self) -> float | None:
        """Return the seconds until `send_due` sends a batch: 0 when due, None when idle.

        Returns math.inf when lines wait but `per_second` is 0 and no token is left.
        """
        if not self._pending:
            return None
        now = self._clock()
        self._refill(now)
        batch_due = self._batch_started_at + self._batch_seconds
        if self._tokens >= 1:
            token_due = now
        elif self._per_second == 0:
            return math.inf
        else:
            token_due = now + (1 - self._tokens) / self._per_second
        return max(0.0, batch_due - now, token_due - now)

    async def send_due(self) -> None:
        """Send the waiting lines that the batch delay and the tokens allow, as one batch."""
        if self.due_in() != 0:
            return
        count = min(len(self._pending), int(self._tokens))
        batch = self._pending[:count]
        del self._pending[:count]
        self._tokens -= count
        if self._pending:
            # The lines left behind start a new batch, so that a long output goes out in a
            # few larger messages rather than one line per token.
            self._batch_started_at = self._clock()
        await self._send(batch)

    async def add(self, line: str) -> None:
        """Queue `line` and send a batch if one is due."""
        self.queue(line)
        await self.send_due()

    async def flush(self) -> None:
        """Send every waiting line, without waiting for tokens, plus a line on dropped ones.

        The summary line reads "(N more lines of output not shown here; the last lines are
        in the history)". Calling flush again sends only what was queued since.
        """
        batch = self._pending
        self._pending = []
        if self.dropped:
            noun = "line" if self.dropped == 1 else "lines"
            batch.append(f"({self.dropped} more {noun} of output not shown here; "
                         "the last lines are in the history)")
            self.dropped = 0
        if batch:
            await self._send(batch)

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._refilled_at)
        self._tokens = min(float(self._burst), self._tokens + elapsed * self._per_second)
        self._refilled_at = now


async def run_command(spec: CommandSpec, on_output: OutputCallback | None = None, *,
                      tail_lines: int = 20, kill_grace: float = 5.0) -> CommandResult:
    """Run `spec` as `/bin/sh -c` in its own session and return how it ended.

    Output lines go to `on_output` in batches through an `OutputRelay` with its default
    limits, the last of them after the command ended. An exception from `on_output` is
    logged and the command goes on. `on_output` is awaited while the output is read, so
    a slow one delays the relay of later lines, but the output is still collected.

    After `spec.timeout` seconds the process group gets SIGTERM, and SIGKILL `kill_grace`
    seconds later or as soon as the shell exited and the output closed. Cancellation does
    the same and then re-raises CancelledError, so it takes at most about `kill_grace`
    seconds. A cancellation that arrives while the shell starts kills the new process group
    with SIGKILL as soon as it started, without waiting. A command that cannot start returns
    a result with `error` set. Raises ValueError for a negative `tail_lines` or `kill_grace`.
    """
    if tail_lines < 0:
        raise ValueError(f"tail_lines must be >= 0, not {tail_lines!r}")
    if not (math.isfinite(kill_grace) and kill_grace >= 0):
        raise ValueError(f"kill_grace must be a number of seconds >= 0, not {kill_grace!r}")
    label = spec.label or "command"
    guard = None if on_output is None else _CallbackGuard(on_output, label)
    relay = None if guard is None else OutputRelay(guard)
    collector = _OutputCollector(tail_lines, relay)
    environment = command_environment(spec.context)

    started = time.monotonic()
    try:
        transport, protocol = await _start(spec, environment, collector)
    except OSError as exc:
        result = CommandResult(None, False, _describe_start_error(exc, spec.cwd), (), 0,
                               time.monotonic() - started, spec.timeout)
        log.warning("%s %s", label, result.summary())
        return result
    # start_new_session makes the shell the leader of a new process group with its pid.
    group = transport.get_pid()
    log.info("started %s (pid %d)", label, group)
    log.debug("%s runs command line %r", label, spec.command_line)

    try:
        timed_out = not await _follow(protocol, relay, spec.timeout)
        if timed_out:
            log.warning("%s timed out after %g s; killing its process group %d", label,
                        spec.timeout, group)
            await _kill_group(group, protocol, kill_grace)
        await _drain(protocol, label)
    except asyncio.CancelledError:
        log.info("%s was cancelled; killing its process group %d", label, group)
        await _kill_group(group, protocol, kill_grace)
        raise
    finally:
        transport.close()

    collector.finish()
    if relay is not None:
        await relay.flush()
    result = CommandResult(None if timed_out else transport.get_returncode(), timed_out, None,
                           collector.tail(), collector.line_count, time.monotonic() - started,
                           spec.timeout)
    log.info("%s %s (lines of output: %d)", label, result.summary(), result.line_count)
    if guard is not None and guard.failures > 1:
        log.warning("relaying the output of %s failed %d times", label, guard.failures)
    return result


async def _start(spec: CommandSpec, environment: dict[str, str], collector: _OutputCollector,
                 ) -> tuple[asyncio.SubprocessTransport, _CommandProtocol]:
    """Start the shell of `spec` in a new session; raise OSError when it cannot start.

    Cancelling loop.subprocess_exec itself can hang, or kill only the shell and leave its
    children running (seen with CPython 3.11.7). So the start goes on under a shield, and a
    cancelled caller leaves the new process group to `_kill_after_start`.
    """
    loop = asyncio.get_running_loop()
    starting = asyncio.ensure_future(loop.subprocess_exec(
        lambda: _CommandProtocol(collector, loop), SHELL, "-c", spec.command_line,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=environment, cwd=spec.cwd, start_new_session=True))
    try:
        return await asyncio.shield(starting)
    except asyncio.CancelledError:
        _abandoned_starts.add(starting)
        starting.add_done_callback(functools.partial(_kill_after_start, spec.label or "command"))
        raise


def _kill_after_start(label: str, starting: _StartTask) -> None:
    _abandoned_starts.discard(starting)
    if starting.cancelled() or starting.exception() is not None:
        return
    transport, _ = starting.result()
    group = transport.get_pid()
    log.info("%s was cancelled while it started; killing its process group %d", label, group)
    _signal_group(group, signal.SIGKILL)
    transport.close()


class _OutputCollector:
    """Splits output into lines, counts them, keeps the last ones and queues each to a relay.

    Memory stays bounded: the tail has at most `tail_lines` lines and a line keeps at most
    MAX_LINE_BYTES bytes, however long the output and its lines are.
    """

    def __init__(self, tail_lines: int, relay: OutputRelay | None) -> None:
        self.line_count = 0
        self._tail_lines = tail_lines
        self._tail: deque[tuple[bytes, bool]] = deque(maxlen=tail_lines)
        self._relay = relay
        self._line = bytearray()
        self._line_cut = False

    def feed(self, data: bytes) -> None:
        *complete, rest = data.split(b"\n")
        if complete:
            # The first piece ends the line that earlier data began.
            self._extend(complete[0])
            self._end_line()
            self._add_lines(complete[1:])
        self._extend(rest)

    def finish(self) -> None:
        """End a last line that has no newline."""
        if self._line or self._line_cut:
            self._end_line()

    def tail(self) -> tuple[str, ...]:
        return tuple(clean_output_line(raw, cut=cut) for raw, cut in self._tail)

    def _add_lines(self, lines: list[bytes]) -> None:
        index = 0
        while index < len(lines) and self._relay is not None and not self._relay.full:
            self._add_line(lines[index])
            index += 1

        # Once no relay wants them, lines that would leave the tail before the end of this
        # data are only counted. This keeps a chunk of many short lines cheap.
        skipped = max(0, len(lines) - index - self._tail_lines)
        self.line_count += skipped
        if self._relay is not None:
            self._relay.dropped += skipped
        for line in lines[index + skipped:]:
            self._add_line(line)

    def _add_line(self, line: bytes) -> None:
        self._extend(line)
        self._end_line()

    def _extend(self, piece: bytes) -> None:
        if self._line_cut:
            return
        room = MAX_LINE_BYTES - len(self._line)
        if len(piece) <= room:
            self._line += piece
            return
        # Cut before a UTF-8 continuation byte (0b10xxxxxx), so that no character is split.
        # A character has at most three of them.
        end = room
        while end > max(0, room - 3) and piece[end] & 0xC0 == 0x80:
            end -= 1
        self._line += piece[:end]
        self._line_cut = True

    def _end_line(self) -> None:
        raw, cut = bytes(self._line), self._line_cut
        self._line.clear()
        self._line_cut = False
        self.line_count += 1
        self._tail.append((raw, cut))
        if self._relay is None:
            return
        if self._relay.full:
            # A full relay only counts the line, so it is not cleaned for it.
            self._relay.dropped += 1
        else:
            self._relay.queue(clean_output_line(raw, cut=cut))


class _CommandProtocol(asyncio.SubprocessProtocol):
    """Feeds the output to a collector and resolves futures when the shell exits and when
    the output reaches end of file.

    asyncio's own Process.wait() returns only after the output closed as well (CPython 3.11,
    asyncio/base_subprocess.py), and a background process can delay that indefinitely.
    """

    def __init__(self, collector: _OutputCollector, loop: asyncio.AbstractEventLoop) -> None:
        self._collector = collector
        self._loop = loop
        self.exited: asyncio.Future[None] = loop.create_future()
        self.output_closed: asyncio.Future[None] = loop.create_future()
        self._activity: asyncio.Future[None] | None = None

    def next_activity(self) -> asyncio.Future[None]:
        """Return a future that completes at the next output, end of file or exit."""
        self._activity = self._loop.create_future()
        return self._activity

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        assert isinstance(data, bytes)
        self._collector.feed(data)
        self._wake()

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        _resolve(self.output_closed)
        self._wake()

    def process_exited(self) -> None:
        _resolve(self.exited)
        self._wake()

    def _wake(self) -> None:
        if self._activity is not None:
            _resolve(self._activity)


class _CallbackGuard:
    """Calls an output callback and logs its exceptions instead of raising them."""

    def __init__(self, callback: OutputCallback, label: str) -> None:
        self._callback = callback
        self._label = label
        self.failures = 0

    async def __call__(self, lines: list[str]) -> None:
        try:
            await self._callback(lines)
        except Exception:
            self.failures += 1
            if self.failures == 1:
                log.exception("relaying the output of %s failed; the command goes on",
                              self._label)


async def _follow(protocol: _CommandProtocol, relay: OutputRelay | None,
                  timeout: float) -> bool:
    """Relay output until the shell exits; return False if `timeout` seconds passed first."""
    try:
        async with asyncio.timeout(timeout):
            while not protocol.exited.done():
                delay = None if relay is None else relay.due_in()
                if delay == math.inf:
                    delay = None
                await asyncio.wait([protocol.next_activity()], timeout=delay)
                if relay is not None:
                    await relay.send_due()
    except TimeoutError:
        return False
    return True


async def _kill_group(group: int, protocol: _CommandProtocol, grace: float) -> None:
    """Send SIGTERM to the process group, then SIGKILL after at most `grace` seconds."""
    _signal_group(group, signal.SIGTERM)
    try:
        await asyncio.wait([protocol.exited, protocol.output_closed], timeout=grace)
    finally:
        # Sent even when the shell exited and the output closed in time, because members
        # that ignore SIGTERM and write elsewhere leave no other trace. Linux frees a pid
        # number only when no process uses it as pid, group or session id (__change_pid in
        # kernel/pid.c), so once the group is empty this fails with ESRCH unless the pid
        # numbers wrapped around in the meantime.
        _signal_group(group, signal.SIGKILL)


async def _drain(protocol: _CommandProtocol, label: str) -> None:
    """Wait up to EXIT_DRAIN_SECONDS for the exit and the end of the output."""
    await asyncio.wait([protocol.exited, protocol.output_closed], timeout=EXIT_DRAIN_SECONDS)
    if not protocol.exited.done():
        log.warning("%s did not exit after SIGKILL; leaving it", label)
    elif not protocol.output_closed.done():
        log.warning("%s exited, but processes it started still hold its output open; "
                    "stopped reading after %g s", label, EXIT_DRAIN_SECONDS)


def _signal_group(group: int, signum: signal.Signals) -> None:
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        pass
    except PermissionError:
        log.warning("not allowed to send %s to process group %d", signum.name, group)


def _describe_start_error(exc: OSError, cwd: Path | None) -> str:
    if cwd is not None and exc.filename is not None and os.fspath(exc.filename) == os.fspath(cwd):
        return f"working directory {os.fspath(cwd)!r}: {exc.strerror}"
    if exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
