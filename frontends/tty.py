"""The terminal frontend: one local user talks to the daemon on stdin and stdout.

It has two modes, chosen by whether stdin is a terminal:

- interactive: a prompt_toolkit prompt `workflow(<flow name>)> ` with history and tab
  completion of command, step and group names. Lines the daemon sends on its own print above
  the prompt. Ctrl-C clears the line; Ctrl-D ends the session.
- piped: one command per line from stdin, replies on stdout and nothing else, flushed after
  every reply so that a program driving the pipe can read each reply before sending the next
  command.

In both modes a blank line is the `status` command, and the session ends with the daemon's
quit reply (`quit`, `exit`, `shutdown`) or at the end of input. prompt_toolkit is needed for
the interactive mode only.

The terminal frontend has no configuration section, so `thehat run` never starts it; `thehat
tty` does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, TextIO

from frontends.base import Conversation, Frontend
from thehat.access import Speaker
from thehat.errors import TheHatError

if TYPE_CHECKING:
    from thehat.config import Config
    from thehat.daemon import Daemon, Reply

log = logging.getLogger(__name__)

INTERNAL_ERROR_LINE = "internal error: see the log"


class LineSource(Protocol):
    """A source of command lines for the terminal frontend, used as an async context manager."""

    async def __aenter__(self) -> LineSource: ...

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, traceback: TracebackType | None) -> None: ...

    async def read_line(self) -> str | None:
        """Return the next command line without its line ending, or None at the end of input."""


class TerminalConversation(Conversation):
    """The conversation with the local user, one per `thehat tty` process."""

    medium = "tty"

    def __init__(self, frontend: TerminalFrontend, user: str) -> None:
        self.id = f"tty:{user}"
        self.user = user
        self._frontend = frontend

    async def send(self, lines: Sequence[str]) -> None:
        self._frontend.write_lines(lines)


class TerminalFrontend(Frontend):
    """Reads commands from the terminal or a pipe and prints the daemon's replies.

    `user` is the identity every command is issued as. `flow`, when given, is opened before
    the first command: a path to a flow file if such a file exists, otherwise the name of a
    flow in the data directory. `stdin`, `stdout` and `interactive` replace `sys.stdin`,
    `sys.stdout` and `sys.stdin.isatty()` in tests.
    """

    name = "tty"
    config_section = None

    def __init__(self, daemon: Daemon, config: Config, *, user: str, flow: str | None = None,
                 stdin: TextIO | None = None, stdout: TextIO | None = None,
                 interactive: bool | None = None) -> None:
        super().__init__(daemon, config)
        self.user = user
        # The terminal's user runs the bot, so is an admin unless the access section lists
        # them with another role.
        self.speaker = Speaker.terminal(user)
        self.flow = flow
        self.conversation = TerminalConversation(self, user)
        self._stdin = stdin
        self._stdout = stdout
        self._interactive = interactive
        self._stopping = False
        self._output_closed = False
        self._read_task: asyncio.Task[str | None] | None = None

    @property
    def interactive(self) -> bool:
        if self._interactive is not None:
            return self._interactive
        return (self._stdin or sys.stdin).isatty()

    async def serve(self) -> None:
        """Run the session until quit, the end of input or `stop`.

        Raises TheHatError when the interactive mode is requested but prompt_toolkit is not
        installed, and passes on a TheHatError that the daemon raises while opening the
        start-up flow.
        """
        source = self._line_source()
        self.daemon.register(self.conversation)
        log.info("terminal session of %s started (%s)", self.user,
                 "interactive" if self.interactive else "piped")
        try:
            async with source:
                if self.flow is not None:
                    self._print_reply(await self._open_flow(self.flow))
                while not self._stopping and not self._output_closed:
                    text = await self._read_line(source)
                    if text is None:
                        break
                    if await self._dispatch(text):
                        break
                await self._wait_for_commands()
        finally:
            self.daemon.unregister(self.conversation)
            log.info("terminal session of %s ended", self.user)

    async def _wait_for_commands(self) -> None:
        """Let commands and mail that are still running end, so their output is shown.

        Waits at most `wfengine.commandTimeout` seconds; Ctrl-C, or the end of that time,
        stops them when the daemon closes.
        """
        work = self.daemon.automation.pending_work()
        if not work or self._output_closed:
            return
        timeout = self.config.engine.command_timeout
        self.write_lines([f"Waiting up to {timeout:g} s for {', '.join(work)} to end; press "
                          "Ctrl-C to stop now."])
        if not await self.daemon.automation.wait_idle(timeout):
            self.write_lines(["Stopping what is still running."])

    async def stop(self) -> None:
        """End the session: stop waiting for input, or end after the command being handled."""
        self._stopping = True
        if self._read_task is not None:
            self._read_task.cancel()

    def write_lines(self, lines: Sequence[str]) -> None:
        """Print lines on stdout and flush it. Once stdout is closed, log and drop the lines."""
        if self._output_closed:
            log.debug("stdout closed, dropped %d lines", len(lines))
            return
        # Looked up at each call because prompt_toolkit's patch_stdout replaces sys.stdout
        # with a proxy that prints above the prompt.
        stream = self._stdout or sys.stdout
        try:
            for line in lines:
                stream.write(line + "\n")
            stream.flush()
        except (BrokenPipeError, ValueError) as exc:
            # BrokenPipeError: the reader of a piped stdout went away. ValueError: the
            # stream was closed. Either way no further output can be read.
            log.warning("stdout is closed (%s), so the terminal session of %s ends", exc,
                        self.user)
            self._output_closed = True

    async def _read_line(self, source: LineSource) -> str | None:
        # A task of its own, so that `stop` can cancel the wait without cancelling `serve`.
        self._read_task = asyncio.ensure_future(source.read_line())
        try:
            text = await self._read_task
        except asyncio.CancelledError:
            # Re-raise unless `stop` did the cancelling: `cancelling()` counts requests to
            # cancel `serve` itself.
            current = asyncio.current_task()
            if not self._stopping or (current is not None and current.cancelling()):
                raise
            log.info("terminal session of %s stopped", self.user)
            return None
        finally:
            self._read_task = None
        if text is None:
            log.info("end of input from %s", self.user)
        return text

    def _line_source(self) -> LineSource:
        if not self.interactive:
            return PipedLines(self._stdin or sys.stdin)
        try:
            from frontends.tty_prompt import PromptLines
        except ImportError as exc:
            if exc.name is None or not exc.name.startswith("prompt_toolkit"):
                raise
            raise TheHatError("the interactive terminal needs prompt_toolkit, which is not "
                              "installed: pip install 'thehat[tty]', or pipe commands into "
                              "'thehat tty' instead") from exc
        return PromptLines(self)

    def prompt_text(self) -> str:
        """Return the prompt, `workflow(<name of the attached flow or empty>)> `."""
        return f"workflow({self.daemon.flow_name(self.conversation) or ''})> "

    async def _open_flow(self, flow: str) -> Reply:
        if os.path.isfile(flow):
            log.info("opening flow file %s for %s", flow, self.user)
            return await self.daemon.open_file(self.conversation, flow, self.user)
        log.info("loading flow %s from the data directory for %s", flow, self.user)
        reply = await self.daemon.handle(self.conversation, self.speaker, f"load {flow}")
        if self.daemon.flow_name(self.conversation) is None:
            # The flow named on the command line did not load: stop, as for a bad file.
            raise TheHatError("\n".join(reply.lines))
        return reply

    async def _dispatch(self, text: str) -> bool:
        """Hand one command line to the daemon, print the reply and return whether to quit."""
        log.debug("<< %s: %s", self.user, text)
        try:
            reply = await self.daemon.handle(self.conversation, self.speaker, text)
        except TheHatError as exc:
            # The daemon normally turns these into reply lines itself. Their message is
            # written for the user, so it is shown as it is.
            self.write_lines(str(exc).splitlines())
            return False
        except Exception:
            log.exception("command %r from %s failed", text, self.user)
            self.write_lines([INTERNAL_ERROR_LINE])
            return False
        self._print_reply(reply)
        return reply.quit

    def _print_reply(self, reply: Reply) -> None:
        log.debug(">> %s: %d lines", self.user, len(reply.lines))
        self.write_lines(reply.lines)


class PipedLines:
    """Command lines from a non-terminal stdin, read in a daemon thread.

    A blocking `readline` cannot be cancelled. Reading in a daemon thread keeps it off the
    event loop, and it can never keep the process alive at exit (`asyncio.to_thread` would:
    the interpreter joins executor threads, so Ctrl-C would hang until the next input line).
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._thread: threading.Thread | None = None

    async def __aenter__(self) -> PipedLines:
        loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._read_all, args=(loop,), daemon=True,
                                        name="tty-stdin-reader")
        self._thread.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, traceback: TracebackType | None) -> None:
        # The thread ends by itself at the end of input. If it is still waiting for a
        # line at exit, the interpreter abandons it because it is a daemon thread.
        return None

    async def read_line(self) -> str | None:
        line = await self._queue.get()
        if line == "":
            return None
        return line.removesuffix("\n").removesuffix("\r")

    def _read_all(self, loop: asyncio.AbstractEventLoop) -> None:
        # `readline` returns "" only at the end of input; every other line, even a blank
        # one, ends with "\n" or is a non-empty last line. So "" marks the end in the queue.
        try:
            for line in iter(self._stream.readline, ""):
                if not self._put(loop, line):
                    return
        except (OSError, ValueError) as exc:
            # ValueError covers UnicodeDecodeError and reading a closed stream.
            log.warning("reading stdin failed (%s), so it is treated as the end of input", exc)
        self._put(loop, "")

    def _put(self, loop: asyncio.AbstractEventLoop, line: str) -> bool:
        try:
            loop.call_soon_threadsafe(self._queue.put_nowait, line)
        except RuntimeError:
            # The event loop is closed, so the session is over.
            return False
        return True
