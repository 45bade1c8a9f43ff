"""The interactive mode of the terminal frontend, built on prompt_toolkit.

Kept apart from `frontends.tty` so that piping commands into `thehat tty` works without
prompt_toolkit installed. `frontends.tty` imports this module only for a terminal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.patch_stdout import patch_stdout

if TYPE_CHECKING:
    from frontends.tty import TerminalFrontend

log = logging.getLogger(__name__)

# The word being typed: everything after the last space or comma, because commands that take
# several step or group names accept both as separators.
_CURRENT_WORD = re.compile(r"[^\s,]*\Z")


class CompletionNames(Protocol):
    """The names `Daemon.completions` returns for a conversation."""

    commands: list[str]
    steps: list[str]
    groups: list[str]


def history_path(environ: Mapping[str, str] = os.environ) -> Path:
    """Return `$XDG_STATE_HOME/thehat/tty-history`, or `~/.local/state/thehat/tty-history`.

    >>> history_path({"XDG_STATE_HOME": "/var/lib/alice"}).as_posix()
    '/var/lib/alice/thehat/tty-history'
    """
    base = environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                         "state")
    return Path(base) / "thehat" / "tty-history"


def open_history(path: Path) -> History:
    """Return a history kept in `path`, creating its directories and making it private.

    When the file cannot be written, log a warning and return a history kept in memory for
    this session only.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The history may hold exec commands, so only its owner may read it.
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.close(descriptor)
        os.chmod(path, 0o600)
    except OSError as exc:
        log.warning("cannot write the command history file %s (%s), so the history of "
                    "this session is kept in memory only", path, exc)
        return InMemoryHistory()
    return FileHistory(str(path))


class CommandCompleter(Completer):
    """Completes the first word as a command, and later words as step or group names.

    `names` is called for every completion, so the candidates follow the flow that is
    attached at that moment.
    """

    def __init__(self, names: Callable[[], CompletionNames]) -> None:
        self._names = names

    def get_completions(self, document: Document,
                        complete_event: CompleteEvent) -> Iterable[Completion]:
        before = document.text_before_cursor
        word = _CURRENT_WORD.search(before).group()  # type: ignore[union-attr]
        first_word = not before[:len(before) - len(word)].strip()
        try:
            names = self._names()
        except Exception:
            # An exception escaping a completer reaches prompt_toolkit's event loop
            # handler, which disturbs the screen. A missing completion is the lesser harm.
            log.exception("listing completions for %r failed", before)
            return
        if first_word:
            candidates = [(command, "command") for command in sorted(set(names.commands))]
        else:
            steps = set(names.steps)
            candidates = [(step, "step") for step in sorted(steps)]
            candidates += [(group, "group") for group in sorted(set(names.groups) - steps)]
        for name, kind in candidates:
            if name.startswith(word):
                yield Completion(name, start_position=-len(word), display_meta=kind)


class PromptLines:
    """Command lines typed at a prompt_toolkit prompt, with history and completion.

    While it is entered, `patch_stdout` is active, so anything written to sys.stdout or
    sys.stderr (replies, lines from other users, log records) prints above the prompt.
    Ctrl-C clears the line being typed; Ctrl-D on an empty line ends the input.
    """

    def __init__(self, frontend: TerminalFrontend) -> None:
        self._frontend = frontend
        self._exit_stack = contextlib.ExitStack()
        self._session: PromptSession[str] | None = None

    async def __aenter__(self) -> PromptLines:
        daemon = self._frontend.daemon
        conversation = self._frontend.conversation
        # complete_while_typing is off so that completion behaves as in a shell: a menu
        # appears only on Tab, never between lines printed by other users.
        self._session = PromptSession(
            history=open_history(history_path()),
            completer=CommandCompleter(lambda: daemon.completions(conversation)),
            complete_while_typing=False,
        )
        self._exit_stack.enter_context(patch_stdout())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, traceback: TracebackType | None) -> None:
        self._exit_stack.close()

    async def read_line(self) -> str | None:
        assert self._session is not None, "read_line called outside 'async with'"
        while True:
            try:
                return await self._session.prompt_async(self._frontend.prompt_text)
            except KeyboardInterrupt:
                continue
            except EOFError:
                return None
