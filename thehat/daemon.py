"""The daemon core: many runs keyed by flow name, and the conversations attached to them.

Each conversation (the terminal, an IRC channel, an XMPP room) is attached to at most one run
at a time; several conversations may share a run. `handle` runs one command line off the event
loop, under a lock so commands never interleave, then sends the events it caused to the other
conversations attached to the same run.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

from frontends.base import Conversation
from thehat import commands
from thehat.commands import Context, Outcome
from thehat.config import Config
from thehat.datadir import DataDirectory
from thehat.engine import Clock, Run, SystemClock
from thehat.errors import CommandError, FlowError
from thehat.flowfile import load_flow
from thehat.model import Flow
from thehat.status import event_lines, status_block

log = logging.getLogger(__name__)


@dataclass
class Reply:
    """The lines to send back to the speaker; `quit` is set when the speaker asked to quit."""

    lines: list[str]
    quit: bool = False


@dataclass
class Completions:
    """Words a frontend can offer for completion in a conversation."""

    commands: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)


class Daemon:
    """Hosts the runs and routes command lines and events between them and conversations."""

    def __init__(self, config: Config | None = None, clock: Clock | None = None) -> None:
        self.config = config or Config()
        self.clock: Clock = clock or SystemClock()
        engine = self.config.engine
        self.zone: tzinfo | None = ZoneInfo(engine.timezone) if engine.timezone else None
        self.datadir = DataDirectory(engine.datadir)
        self.runs: dict[str, Run] = {}
        self.attachments: dict[str, str] = {}
        self.conversations: dict[str, Conversation] = {}
        self._lock: asyncio.Lock | None = None

    # -- conversations ----------------------------------------------------------------------

    def register(self, conversation: Conversation) -> None:
        self.conversations[conversation.id] = conversation

    def unregister(self, conversation: Conversation) -> None:
        self.conversations.pop(conversation.id, None)

    def run_for(self, conversation_id: str) -> Run | None:
        name = self.attachments.get(conversation_id)
        return None if name is None else self.runs.get(name)

    def flow_name(self, conversation: Conversation) -> str | None:
        run = self.run_for(conversation.id)
        return None if run is None else run.name

    def attached(self, run_name: str) -> list[str]:
        """Return the ids of the conversations attached to `run_name`."""
        return [cid for cid, name in self.attachments.items() if name == run_name]

    def completions(self, conversation: Conversation) -> Completions:
        run = self.run_for(conversation.id)
        if run is None:
            return Completions(commands.command_words())
        return Completions(commands.command_words(), list(run.steps), run.groups())

    # -- command handling -------------------------------------------------------------------

    async def handle(self, conversation: Conversation, user: str, text: str) -> Reply:
        """Execute one command line and return the reply for the speaker.

        Blocking work (flow files) runs in a worker thread; the lock keeps commands in order.
        """
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            outcome = await asyncio.to_thread(self.execute, conversation.id, user, text)
        await self._broadcast(conversation.id, outcome)
        return Reply(outcome.lines, outcome.quit)

    def execute(self, conversation_id: str, user: str, text: str) -> Outcome:
        """Run one command synchronously; the caller must serialise calls."""
        before = self.attachments.get(conversation_id)
        audience = set(self.attached(before)) if before else set()
        outcome = commands.execute(self, conversation_id, user, text)
        if outcome.run_name:
            audience.update(self.attached(outcome.run_name))
        audience.discard(conversation_id)
        outcome.audience = sorted(audience)
        log.debug("%s in %s: %r -> %d lines, %d events", user, conversation_id, text,
                  len(outcome.lines), len(outcome.events))
        return outcome

    async def _broadcast(self, origin: str, outcome: Outcome) -> None:
        lines = event_lines(outcome.events) + outcome.notices
        if not lines:
            return
        for conversation_id in outcome.audience:
            conversation = self.conversations.get(conversation_id)
            if conversation is None or conversation_id == origin:
                continue
            try:
                await conversation.send(lines)
            except Exception:
                log.exception("sending %d lines to %s failed", len(lines), conversation_id)

    async def open_file(self, conversation: Conversation, path: str, user: str) -> Reply:
        """Load a flow from a file path given on the command line and attach `conversation`.

        The run is named after the file (`examples/toast.flow` -> `toast`). If a run of that
        name is active, the conversation joins it instead. Raises FlowError (file, line and
        cause of every problem) when the file does not load.
        """
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            outcome = await asyncio.to_thread(self._open_file, conversation.id, path, user)
        return Reply(outcome.lines, outcome.quit)

    def _open_file(self, conversation_id: str, path: str, user: str) -> Outcome:
        outcome = Outcome()
        name = Path(path).name.removesuffix(".flow") or Path(path).name
        if name in self.runs:
            self.attachments[conversation_id] = name
            outcome.lines.append(f"Flow {name} is already running; joined that run.")
            outcome.lines.extend(self.status(self.runs[name], "status"))
            return outcome
        flow = load_flow(path)
        run = Run(name, flow, self.clock)
        self.runs[name] = run
        self.attachments[conversation_id] = name
        log.info("%s loaded flow %s from %s (%d steps)", user, name, path, len(flow))
        outcome.lines.extend(self.status(run, f"Loaded workflow '{name}', read {len(flow)} "
                                              "steps"))
        return outcome

    async def close(self) -> None:
        """Release resources; runs stay in memory until the process ends."""

    # -- operations used by commands --------------------------------------------------------

    def status(self, run: Run | None, header: str) -> list[str]:
        return status_block(run, header, self.clock.now(), self.zone, self.config.engine.baseurl)

    def load(self, context: Context, name: str, fresh: bool) -> None:
        """Attach the conversation to run `name`, loading it from its file if needed.

        With `fresh`, an active run of that name is replaced by a new one from the file. A
        missing or invalid file leaves every run as it was and reports file, line and cause.
        """
        name = name.removesuffix(".flow")
        if name in self.runs and not fresh:
            self.attachments[context.conversation_id] = name
            context.outcome.run_name = name
            context.reply(f"Flow {name} is already running; joined that run. Say reload to "
                          "start it over from its file.")
            context.outcome.status_header = "status"
            return
        try:
            flow = self.datadir.read(name)
        except FlowError as exc:
            raise CommandError(f"Error loading flow {name}; nothing changed:\n{exc}") from exc
        run = Run(name, flow, self.clock)
        replaced = name in self.runs
        self.runs[name] = run
        self.attachments[context.conversation_id] = name
        context.outcome.run_name = name
        log.info("%s %s flow %s (%d steps)", context.user, "reloaded" if replaced else "loaded",
                 name, len(flow))
        if replaced:
            context.notice(f"{context.user} reloaded flow {name} from its file; every step "
                           "starts over.")
        context.outcome.status_header = f"Loaded workflow '{name}', read {len(flow)} steps"

    def unload(self, name: str) -> None:
        """End run `name` and detach every conversation from it."""
        self.runs.pop(name, None)
        for conversation_id in self.attached(name):
            del self.attachments[conversation_id]
        log.info("unloaded flow %s", name)

    def restore(self, context: Context, name: str) -> None:
        name = name.removesuffix(".flow")
        if name not in self.runs:
            active = ", ".join(sorted(self.runs)) or "none"
            raise CommandError(f"No active run of flow {name!r} to restore (active runs: "
                               f"{active}); load it to start a new run.")
        self.attachments[context.conversation_id] = name
        context.outcome.run_name = name
        context.reply(f"Restored flow '{name}'.")
        context.outcome.status_header = "status"

    def new(self, context: Context, name: str) -> None:
        name = name.removesuffix(".flow")
        self.datadir.path_for(name)
        if name in self.runs:
            raise CommandError(f"A run of flow {name} is active; unload it first or pick "
                               "another name.")
        run = Run(name, Flow([]), self.clock)
        self.runs[name] = run
        self.attachments[context.conversation_id] = name
        context.outcome.run_name = name
        context.outcome.status_header = f"Created workflow '{name}'"
        context.reply("IMPORTANT: *save* your workflow before running it, else your work will "
                      "be lost!")

    def save(self, context: Context, new_name: str | None) -> None:
        """Write the attached run's flow to the data directory; rename only after success."""
        run = context.require_run()
        name = (new_name or run.name).removesuffix(".flow")
        if name != run.name and name in self.runs:
            raise CommandError(f"A run of flow {name} is active; pick another name.")
        path = self.datadir.write(name, run.flow())
        if name != run.name:
            old = run.name
            self.runs[name] = self.runs.pop(old)
            run.name = name
            for conversation_id in self.attached(old):
                self.attachments[conversation_id] = name
            context.notice(f"{context.user} renamed flow {old} to {name}.")
        context.outcome.run_name = name
        context.reply(f"Saved workflow '{name}' to {path}")
