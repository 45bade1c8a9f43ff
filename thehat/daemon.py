"""The daemon core: many runs keyed by flow name, and the conversations attached to them.

Each conversation (the terminal, an IRC channel, an XMPP room) is attached to at most one run
at a time; several conversations may share a run. `handle` runs one command line off the event
loop, under a lock so commands never interleave. With a run store, the change a command made is
committed before the reply is returned; if that fails, the runs are read back from the store,
so memory and disk agree, and the reply says nothing was changed. Then the events are sent to
the other conversations attached to the same run.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from frontends.base import Conversation
from thehat import commands
from thehat.access import Speaker
from thehat.automation import (Automation, Launch, PassResult, plan_pass, started_or_finished,
                               step_command_launches)
from thehat.commands import Context, Outcome
from thehat.config import Config
from thehat.datadir import DataDirectory
from thehat.engine import Clock, Modes, Run, RunStep, SystemClock
from thehat.errors import CommandError, FlowError
from thehat.events import Event, EventKind
from thehat.flowfile import load_flow
from thehat.limits import RateLimiter, wait_words
from thehat.lock import DirectoryLock
from thehat.model import Flow, StepState
from thehat.rendering import RenderService
from thehat.status import event_lines, run_url, status_block
from thehat.store import DATABASE_NAME, Change, JournalEntry, RunStore, SqliteStore, StoreError
from thehat.vcs import VcsError, VersionControl, make_vcs

log = logging.getLogger(__name__)

DEFINITION_EVENTS = frozenset({EventKind.STEP_ADDED, EventKind.STEP_REMOVED,
                               EventKind.STEP_EDITED})
# Journal entries kept in memory per run when the daemon has no store.
RECENT_ENTRIES = 50
# Event lines one clock pass announces; the rest are counted, and the journal keeps them all.
MAX_TICK_LINES = 60


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


def rate_key(speaker: Speaker) -> str:
    """Return the key of a speaker's rate limit: the first verified identity, else where the
    speaker connects from (so a nick change does not reset it), else the name."""
    if speaker.verified:
        return speaker.verified[0].key
    if speaker.origin is not None:
        return f"origin:{speaker.origin}"
    return speaker.identities[0].key if speaker.identities else f"name:{speaker.name}"


class Daemon:
    """Hosts the runs and routes command lines and events between them and conversations.

    Without a `store` nothing is persisted (unit tests); `open_daemon` builds the real one.
    """

    def __init__(self, config: Config | None = None, clock: Clock | None = None,
                 store: RunStore | None = None) -> None:
        self.config = config or Config()
        self.clock: Clock = clock or SystemClock()
        engine = self.config.engine
        self.zone: tzinfo | None = ZoneInfo(engine.timezone) if engine.timezone else None
        self.datadir = DataDirectory(engine.datadir, self.config.limits)
        self.store = store
        self.runs: dict[str, Run] = {}
        self.attachments: dict[str, str] = {}
        self.conversations: dict[str, Conversation] = {}
        self.lock: DirectoryLock | None = None
        self.renderer: RenderService | None = None
        # The status page address shown in status blocks; the web site fills it in once it
        # is bound, when the configuration gives none.
        self.baseurl: str | None = engine.baseurl
        # Without a store, the newest journal entries of each run, for the web site.
        self.recent: dict[str, deque[JournalEntry]] = {}
        # When each run's status block was last shown, for idle prompts.
        self.last_status: dict[str, datetime] = {}
        # (step, reason) pairs each run has announced once, so they are not repeated.
        self.reported: dict[str, set[tuple[str, str]]] = {}
        self.automation = Automation(self)
        self.vcs: VersionControl | None = None
        # Why the configured version control could not be set up; the reply on every use.
        self.vcs_problem: str | None = None
        self._set_up_vcs()
        limits = self.config.limits
        self.rate_limiter = RateLimiter(limits.commands_per_minute, limits.command_burst)
        log.info("access: %s", self.config.access.summary())
        for problem in self.config.access.warnings():
            log.warning("access: %s", problem)
        if self.config.access.configured and engine.admins:
            log.warning("wfengine.admins is ignored because the configuration has an access "
                        "section; list the admins under access.admin instead")
        self._lock: asyncio.Lock | None = None
        self._change: Change | None = None

    @property
    def max_steps(self) -> int:
        """The maximum number of steps in a run (limits.maxFlowSteps)."""
        return self.config.limits.max_flow_steps

    @property
    def command_lock(self) -> asyncio.Lock:
        """The lock that keeps commands, ticks and program results from interleaving."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def _set_up_vcs(self) -> None:
        """Build the configured version control; a broken setup is logged, not raised."""
        engine = self.config.engine
        try:
            self.vcs = make_vcs(engine.vcs, engine.datadir)
        except VcsError as exc:
            self.vcs_problem = str(exc)
            log.error("version control is not available: %s", exc)
            return
        if self.vcs is not None:
            log.info("using %s version control for %s", self.vcs.label, engine.datadir)

    def version_control(self) -> VersionControl:
        """Return the configured version control; raise CommandError saying why there is none."""
        if self.vcs is not None:
            return self.vcs
        if self.vcs_problem is not None:
            raise CommandError(f"Version control is not available: {self.vcs_problem}")
        raise CommandError("No version control is configured: set wfengine.vcs (class Git or "
                           "Subversion, root) in the configuration.")

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

    def attach(self, conversation_id: str, name: str | None) -> None:
        """Attach a conversation to run `name` (None: detach), recording it for the store."""
        if name is None:
            self.attachments.pop(conversation_id, None)
        else:
            self.attachments[conversation_id] = name
        if self._change is not None:
            self._change.attachments[conversation_id] = name

    # -- command handling -------------------------------------------------------------------

    async def handle(self, conversation: Conversation, speaker: Speaker | str, text: str,
                     admin: bool = False) -> Reply:
        """Execute one command line and return the reply for the speaker.

        A plain name for `speaker` stands for a speaker without identities, an admin when
        `admin` (tests and scripts). A speaker over their command rate gets a reply saying when
        to try again, and nothing runs. Blocking work (flow files, the store) runs in a worker
        thread; the lock keeps commands in order. Commands that the change requests start after
        the reply is built.
        """
        if isinstance(speaker, str):
            speaker = Speaker.plain(speaker, admin)
        key, now = rate_key(speaker), time.monotonic()
        wait = 0.0 if speaker.local else self.rate_limiter.take(key, now)
        if wait:
            log.info("rate limit: ignored a command from %s in %s", speaker.describe(),
                     conversation.id)
            if not self.rate_limiter.tell(key, now, wait):
                return Reply([])
            return Reply([f"{speaker.name}: too many commands; wait {wait_words(wait)} and "
                          f"send it again (limits.commandsPerMinute is "
                          f"{self.config.limits.commands_per_minute}). Nothing was done, and "
                          "more commands before then get no reply."])
        async with self.command_lock:
            outcome = await asyncio.to_thread(self.execute, conversation.id, speaker, text)
        self._mark_stale(outcome)
        await self._broadcast(conversation.id, outcome)
        await self._start_follow_ups(outcome)
        return Reply(outcome.lines, outcome.quit)

    async def _start_follow_ups(self, outcome: Outcome) -> None:
        """Stop the programs of runs that revert or ended, then start what `outcome` requests."""
        stopping: dict[Run, bool] = dict.fromkeys(outcome.stopped_runs, True)
        run = self.runs.get(outcome.run_name or "")
        if run is not None and any(e.kind is EventKind.REVERSION_STARTED
                                   for e in outcome.events):
            stopping.setdefault(run, False)
        for stopped_run, ended in stopping.items():
            steps = self.automation.stop_programs(stopped_run, reverts=ended)
            if not steps:
                continue
            log.info("stopped the programs of steps %s of flow %s", ", ".join(steps),
                     stopped_run.name)
            lines = [f"Stopped the program of step {step}; its result will not be applied."
                     for step in steps]
            # An unloaded run has no attached conversations left, so tell its last ones.
            for conversation_id in dict.fromkeys([*self.attached(stopped_run.name),
                                                  *outcome.audience]):
                await self.send_to(conversation_id, lines)
            await self.record(stopped_run.name, "thehat", "stop programs", "accepted",
                              "\n".join(lines))
        self.automation.launch(outcome.launches)
        if outcome.run_name is not None and outcome.mails:
            self.automation.send_mail(outcome.run_name, list(outcome.mails))

    def _mark_stale(self, outcome: Outcome) -> None:
        if self.renderer is not None:
            for name in outcome.changed_runs:
                if name in self.runs:
                    self.renderer.mark_stale(name)

    async def snapshot(self, name: str) -> Run | None:
        """Return a copy of run `name` taken between commands, or None if it is not active."""
        async with self.command_lock:
            run = self.runs.get(name)
            return None if run is None else run.clone()

    def execute(self, conversation_id: str, speaker: Speaker | str, text: str,
                admin: bool = False) -> Outcome:
        """Run one command synchronously and commit what it changed; callers serialise calls."""
        if isinstance(speaker, str):
            speaker = Speaker.plain(speaker, admin)
        user = self.config.access.actor(speaker)
        before = self.attachments.get(conversation_id)
        audience = set(self.attached(before)) if before else set()
        self._change = Change(self.clock.now(), user, conversation_id, text, "", "")
        try:
            outcome = commands.execute(self, conversation_id, speaker, text)
            self._plan_follow_ups(outcome)
            if not self._commit(self._change, outcome):
                outcome.launches, outcome.mails = [], []
            if self.store is None:
                self._remember(self._change, outcome)
        finally:
            self._change = None
        if outcome.run_name:
            audience.update(self.attached(outcome.run_name))
        audience.discard(conversation_id)
        outcome.audience = sorted(audience)
        log.debug("%s in %s: %r -> %d lines, %d events", user, conversation_id, text,
                  len(outcome.lines), len(outcome.events))
        return outcome

    def _commit(self, change: Change, outcome: Outcome) -> bool:
        """Store what the command changed; on failure, put memory back as the store has it.

        Records the names of the runs that changed in `outcome.changed_runs`. Returns False,
        with the reply replaced by the reason, when the store failed.
        """
        change.run_name = outcome.run_name
        change.events = outcome.events
        if outcome.run_name is not None and outcome.events:
            steps = change.runs.setdefault(outcome.run_name, set())
            steps.update(e.step for e in outcome.events if e.step is not None)
            if any(e.kind in DEFINITION_EVENTS for e in outcome.events):
                change.definitions.add(outcome.run_name)
        changed = bool(outcome.events or change.new_runs or change.ended_runs or change.renamed
                       or change.attachments or change.reactivated or change.saved
                       or change.modes)
        if outcome.events and outcome.run_name is not None:
            outcome.changed_runs.add(outcome.run_name)
        outcome.changed_runs.update(run.name for run in change.new_runs + change.ended_runs)
        outcome.changed_runs.update(change.renamed.values())
        outcome.changed_runs.update(change.reactivated)
        outcome.changed_runs.update(change.modes)
        if self.store is None or (not changed and not outcome.refusals):
            return True
        if changed:
            change.outcome = "partly refused" if outcome.refusals else "accepted"
        else:
            change.outcome = "refused"
        change.result = "\n".join(outcome.result)
        try:
            self.store.commit(change, self.runs)
        except StoreError as exc:
            self.reload_from_store()
            outcome.changed_runs = set()
            outcome.events = []
            outcome.notices = []
            outcome.lines = [f"{exc}", "Nothing was changed: the command's effect was undone "
                             "so that thehat and its store agree. Fix the data directory (is "
                             "the disk full or read-only?) and repeat the command."]
            outcome.quit = False
            return False
        return True

    def _remember(self, change: Change, outcome: Outcome) -> None:
        """Keep a journal entry in memory for a command that acted on a run (no store)."""
        if outcome.run_name is None or not (outcome.events or outcome.refusals):
            return
        if outcome.events:
            verdict = "partly refused" if outcome.refusals else "accepted"
        else:
            verdict = "refused"
        entries = self.recent.setdefault(outcome.run_name, deque(maxlen=RECENT_ENTRIES))
        number = entries[-1].entry_id + 1 if entries else 1
        entries.append(JournalEntry(
            entry_id=number, run_id=None, flow=outcome.run_name, time=change.time,
            actor=change.actor, conversation=change.conversation, command=change.command,
            outcome=verdict, result="\n".join(outcome.result or event_lines(outcome.events))))

    async def recent_history(self, name: str, limit: int) -> list[JournalEntry]:
        """Return the newest `limit` journal entries of flow `name`, oldest first.

        Reads the store between commands, in a worker thread; without a store, returns what
        this process remembers of the run.
        """
        async with self.command_lock:
            if self.store is None:
                return list(self.recent.get(name, ()))[-limit:]
            return await asyncio.to_thread(self.store.history, name, (), limit)

    def reload_from_store(self) -> None:
        """Replace every run and attachment in memory by what the store holds."""
        assert self.store is not None
        records, attachments = self.store.load_active()
        self.runs = {}
        for record in records:
            try:
                self.runs[record.name] = Run.restored(
                    record.name, record.steps, record.failed_step, self.clock, record.source,
                    record.modes or self.new_modes(), self.max_steps)
            except FlowError as exc:
                log.error("stored run %d of flow %s is invalid and was not restored: %s",
                          record.run_id, record.name, exc)
        self.attachments = {c: n for c, n in attachments.items() if n in self.runs}
        log.info("restored %d active runs and %d attachments from %s", len(self.runs),
                 len(self.attachments), getattr(self.store, "path", "the store"))

    async def _broadcast(self, origin: str | None, outcome: Outcome) -> None:
        announced = outcome.announced
        lines = (event_lines(outcome.events) if announced is None else announced) \
            + outcome.notices
        if not lines:
            return
        for conversation_id in outcome.audience:
            if conversation_id != origin:
                await self.send_to(conversation_id, lines)

    async def send_to(self, conversation_id: str, lines: list[str]) -> None:
        """Send lines to one conversation; a failure is logged, never raised."""
        conversation = self.conversations.get(conversation_id)
        if conversation is None or not lines:
            return
        try:
            await conversation.send(lines)
        except Exception:
            log.exception("sending %d lines to %s failed", len(lines), conversation_id)

    async def announce(self, run_name: str, lines: list[str]) -> None:
        """Send lines to every conversation attached to run `run_name`."""
        for conversation_id in self.attached(run_name):
            await self.send_to(conversation_id, lines)

    # -- automation -------------------------------------------------------------------------

    def start_automation(self) -> None:
        """Start the tick: clocks, programs and idle prompts act from now on."""
        self.automation.start()

    def modes_changed(self, run: Run) -> None:
        """Record that the modes of `run` changed, so the store keeps them."""
        if self._change is not None:
            self._change.modes.add(run.name)

    def new_modes(self) -> Modes:
        """Return the modes of a new run: automation off, idle prompts as configured."""
        return Modes(idle_minutes=self.config.engine.idle_minutes)

    def default_timeout(self) -> float:
        return self.config.engine.command_timeout

    def _plan_follow_ups(self, outcome: Outcome) -> None:
        """Add the step commands, mail and notices that the events of `outcome` call for."""
        run = self.runs.get(outcome.run_name or "")
        if run is None or not outcome.events:
            return
        launches, notices = step_command_launches(
            run, outcome.events, allow_exec=self.config.engine.allow_exec,
            default_timeout=self.default_timeout(), status_url=run_url(self.baseurl, run.name))
        outcome.launches.extend(launches)
        mails, mail_notices = self._step_mails(run, outcome.events)
        outcome.mails.extend(mails)
        for line in notices + mail_notices:
            outcome.lines.append(line)
            outcome.notices.append(line)

    def _step_mails(self, run: Run, events: list[Event]) -> tuple[list[object], list[str]]:
        """Build the start and finish mail that `events` call for, or a notice why none is sent."""
        mails: list[object] = []
        notices: list[str] = []
        for kind, step, event in started_or_finished(run, events):
            definition = step.definition
            recipients = (definition.notify_at_start if kind == "start"
                          else definition.notify_at_finish)
            if not recipients:
                continue
            to = ", ".join(recipients)
            if not run.modes.notifications:
                notices.append(f"Notifications are off, so no {kind} mail for step {step.name} "
                               f"went to {to} (say notificationProcessing on).")
                continue
            if self.config.smtp is None:
                notices.append(f"No {kind} mail for step {step.name} went to {to}: the "
                               "configuration has no smtp section.")
                continue
            mails.append(self._step_mail(run, step, kind, event.actor or "", recipients))
        return mails, notices

    def _step_mail(self, run: Run, step: RunStep, kind: Literal["start", "finish"], actor: str,
                   recipients: tuple[str, ...]) -> object:
        from thehat.mail import StepMail

        definition = step.definition
        # The same address written twice, in any case, gets one message.
        unique = tuple({address.casefold(): address for address in reversed(recipients)}
                       .values())[::-1]
        return StepMail(kind=kind, flow=run.name, step=step.name,
                        description=definition.description, owner=step.owner, actor=actor,
                        url=definition.url, note=definition.note,
                        status_url=run_url(self.baseurl, run.name), recipients=unique)

    async def tick(self) -> None:
        """Let clocks and programs act and post idle prompts, for every run; then announce.

        Runs the synchronous pass in a worker thread under the command lock.
        """
        async with self.command_lock:
            outcomes = await asyncio.to_thread(self.tick_runs)
        for outcome in outcomes:
            self._mark_stale(outcome)
            await self._broadcast(None, outcome)
            await self._start_follow_ups(outcome)

    def tick_runs(self) -> list[Outcome]:
        """Do one tick for every run synchronously; return what to announce for each."""
        outcomes = []
        for run in list(self.runs.values()):
            outcome = self.automatic_pass(run)
            if not outcome.events and not outcome.notices:
                self._idle_prompt(run, outcome)
            if outcome.notices:
                outcome.audience = self.attached(run.name)
                outcomes.append(outcome)
        return outcomes

    def plan_automatic(self, run: Run, forced: bool = False) -> PassResult:
        """Let the clocks and programs of `run` act now; return what they did, uncommitted.

        `forced` acts even when clock processing is off (the `tictoc` command).
        """
        return plan_pass(run, self.clock.now(), self.zone,
                         allow_exec=self.config.engine.allow_exec,
                         default_timeout=self.default_timeout(),
                         running=self.automation.running_steps(run),
                         reported=self.reported.setdefault(run.name, set()),
                         status_url=run_url(self.baseurl, run.name), forced=forced)

    def automatic_pass(self, run: Run) -> Outcome:
        """Let the clocks and programs of `run` act, commit what they did, and return it.

        The lines for the attached conversations, a `CLOCK ADVANCE` status block included,
        are in `notices`; the caller announces them.
        """
        outcome = Outcome(run_name=run.name)
        result = self.plan_automatic(run)
        if not result.events:
            outcome.notices.extend(result.notices)
            return outcome
        outcome.events = result.events
        outcome.launches = result.launches
        outcome.result = event_lines(result.events) + result.notices
        self._plan_follow_ups(outcome)
        outcome.notices = result.notices + outcome.notices
        outcome.announced = _shortened(event_lines(result.events))
        self._change = Change(self.clock.now(), "clock", None, "tick", "", "")
        try:
            committed = self._commit(self._change, outcome)
        finally:
            self._change = None
        if not committed:
            log.error("a clock pass of flow %s was undone: %s", run.name,
                      " ".join(outcome.lines))
            return Outcome(run_name=run.name, notices=outcome.lines)
        outcome.notices.extend(self.status(run, "CLOCK ADVANCE"))
        return outcome

    def _idle_prompt(self, run: Run, outcome: Outcome) -> None:
        """Post the status as `IDLE` when the run has waited `idle_minutes` with no status."""
        minutes = run.modes.idle_minutes
        if not minutes or not run.steps or run.ended or not self.attached(run.name):
            return
        now = self.clock.now()
        last = self.last_status.setdefault(run.name, now)
        if (now - last).total_seconds() >= minutes * 60:
            outcome.notices.extend(self.status(run, "IDLE"))

    async def apply_program_result(self, launch: Launch, succeeded: bool, summary: str,
                                   record: str) -> None:
        """Finish, fail or revert a program's step by its exit status, then announce it."""
        async with self.command_lock:
            outcome = await asyncio.to_thread(self._apply_program_result, launch, succeeded,
                                              summary, record)
        self._mark_stale(outcome)
        await self._broadcast(None, outcome)
        await self._start_follow_ups(outcome)

    def _apply_program_result(self, launch: Launch, succeeded: bool, summary: str,
                              record: str) -> Outcome:
        assert launch.run_name is not None and launch.step is not None
        assert launch.owner is not None
        # Match the run and step by identity: a result applies after a rename, never to a
        # run that was reloaded or a step that was deleted.
        run = launch.run if launch.run is not None and \
            self.runs.get(launch.run.name) is launch.run else None
        step = launch.target if run is not None and launch.target is not None and \
            run.steps.get(launch.target.name) is launch.target else None
        name = launch.target.name if step is not None and launch.target else launch.step
        outcome = Outcome(run_name=run.name if run is not None else launch.run_name)
        outcome.audience = self.attached(outcome.run_name or "")
        lines = [summary]
        action = None
        if run is None or step is None:
            lines.append(f"Step {launch.step} is no longer in an active run, so the result "
                         "was not applied.")
        elif step.owner != launch.owner:
            lines.append(f"Step {name} is now owned by {step.owner or 'nobody'}, so the "
                         "result was not applied.")
        elif launch.kind == "program" and not run.reverting and \
                step.state is StepState.IN_PROGRESS:
            action = run.finish if succeeded else run.fail
        elif launch.kind == "revertCommand" and step.state is StepState.REVERTING:
            if succeeded:
                action = run.revert
            else:
                lines.append(f"A person must revert step {name}: gimme {name}, undo it, then "
                             f"reverted {name}.")
        else:
            lines.append(f"Step {name} is {step.state.display(run.reverting)} now, so the "
                         "result was not applied.")
        self._change = Change(self.clock.now(), launch.owner, None, launch.label, "", "")
        try:
            if action is not None:
                assert run is not None
                outcome.events = action(name, launch.owner)
                self._plan_follow_ups(outcome)
            outcome.result = [record]
            outcome.notices = lines + outcome.notices
            if not outcome.events:
                outcome.refusals = 1
            committed = self._commit(self._change, outcome)
        finally:
            self._change = None
        if not committed:
            return Outcome(run_name=launch.run_name, audience=outcome.audience,
                           notices=[summary, *outcome.lines])
        if outcome.events and run is not None:
            outcome.notices.extend(self.status(run, "(status)"))
        return outcome

    async def record(self, run_name: str | None, actor: str, command: str, verdict: str,
                     result: str, conversation: str | None = None) -> None:
        """Add an entry to the journal of `run_name` for work done outside a command."""
        async with self.command_lock:
            await asyncio.to_thread(self._record, run_name, actor, command, verdict, result,
                                    conversation)

    def _record(self, run_name: str | None, actor: str, command: str, verdict: str,
                result: str, conversation: str | None) -> None:
        change = Change(self.clock.now(), actor, conversation, command, verdict, result,
                        run_name=run_name)
        if self.store is None:
            if run_name is not None:
                entries = self.recent.setdefault(run_name, deque(maxlen=RECENT_ENTRIES))
                entries.append(JournalEntry(
                    entry_id=entries[-1].entry_id + 1 if entries else 1, run_id=None,
                    flow=run_name, time=change.time, actor=actor, conversation=conversation,
                    command=command, outcome=verdict, result=result))
            return
        try:
            self.store.commit(change, self.runs)
        except StoreError as exc:
            log.error("recording %r of flow %s failed: %s", command, run_name, exc)

    async def open_file(self, conversation: Conversation, path: str, user: str) -> Reply:
        """Load a flow from a file path given on the command line and attach `conversation`.

        The run is named after the file (`examples/toast.flow` -> `toast`). If a run of that
        name is active, the conversation joins it instead. Raises FlowError (file, line and
        cause of every problem) when the file does not load.
        """
        async with self.command_lock:
            outcome = await asyncio.to_thread(self._open_file, conversation.id, path, user)
        self._mark_stale(outcome)
        return Reply(outcome.lines, outcome.quit)

    def _open_file(self, conversation_id: str, path: str, user: str) -> Outcome:
        outcome = Outcome()
        # The run is named after the file, made a valid flow name so that save works.
        stem = Path(path).name.removesuffix(".flow")
        name = re.sub(r"[^\w.-]", "_", stem).lstrip(".") or "flow"
        self._change = Change(self.clock.now(), user, conversation_id, f"open {path}", "", "")
        try:
            if name in self.runs:
                self.attach(conversation_id, name)
                outcome.lines = [f"Flow {name} is already running; joined that run. Say "
                                 "reload to start it over from its file."]
                header = "status"
            else:
                flow = load_flow(path, self.config.limits)
                self.start_run(Run(name, flow, self.clock, str(Path(path).resolve()),
                                   self.new_modes(), self.max_steps))
                self.attach(conversation_id, name)
                log.info("%s loaded flow %s from %s (%d steps)", user, name, path, len(flow))
                header = f"Loaded workflow '{name}', read {len(flow)} steps"
            outcome.result = list(outcome.lines) or [f"Loaded flow {name} from {path}."]
            outcome.run_name = name
            committed = self._commit(self._change, outcome)
        finally:
            self._change = None
        if committed:
            outcome.lines.extend(self.status(self.runs[name], header))
        return outcome

    async def close(self) -> None:
        """Stop the automation and rendering, close the store and release the directory."""
        await self.automation.close()
        if self.renderer is not None:
            await self.renderer.close()
        if self.store is not None:
            self.store.close()
        if self.lock is not None:
            self.lock.release()

    # -- operations used by commands --------------------------------------------------------

    def status(self, run: Run | None, header: str, complete: bool = False) -> list[str]:
        """Build the status block; unless `complete`, list at most `wfengine.statusRows` steps."""
        limit = None if complete else self.config.engine.status_rows
        now = self.clock.now()
        if run is not None:
            self.last_status[run.name] = now
        return status_block(run, header, now, self.zone, self.baseurl, limit,
                            self.config.engine.allow_exec)

    def start_run(self, run: Run) -> None:
        """Make `run` an active run, replacing (and ending) an active run of the same name."""
        old = self.runs.get(run.name)
        if old is not None and self._change is not None:
            self._change.ended_runs.append(old)
        self.runs[run.name] = run
        # A new run of the flow announces again what its steps cannot do.
        self.reported.pop(run.name, None)
        if self._change is not None:
            self._change.new_runs.append(run)

    def load(self, context: Context, name: str, fresh: bool) -> None:
        """Attach the conversation to run `name`, loading it from its file if needed.

        With `fresh`, an active run of that name is replaced by a new one from the file it was
        read from. A missing or invalid file leaves every run as it was and reports file, line
        and cause.
        """
        name = self.datadir.normalize(name)
        if not fresh and name not in self.runs:
            # A name that reaches an active run's file another way (a symbolic link inside
            # the data directory) joins that run rather than starting a second one.
            resolved = str(self.datadir.path_for(name).resolve())
            name = next((run.name for run in self.runs.values() if run.source == resolved),
                        name)
        if name in self.runs and not fresh:
            self.attach(context.conversation_id, name)
            context.outcome.run_name = name
            context.reply(f"Flow {name} is already running; joined that run. Say reload to "
                          "start it over from its file.")
            context.outcome.status_header = "status"
            return
        current = self.runs.get(name)
        source = current.source if fresh and current is not None else None
        try:
            if source is not None:
                flow = load_flow(source, self.config.limits)
            else:
                source = str(self.datadir.path_for(name).resolve())
                flow = self.datadir.read(name)
        except FlowError as exc:
            raise CommandError(f"Error loading flow {name}; nothing changed:\n{exc}") from exc
        replaced = current is not None
        if current is not None:
            context.outcome.stopped_runs.add(current)
        others = self.attached(name)
        self.start_run(Run(name, flow, self.clock, source, self.new_modes(), self.max_steps))
        # The new run replaces the old one for every conversation that was attached to it.
        for conversation_id in [context.conversation_id, *others]:
            self.attach(conversation_id, name)
        context.outcome.run_name = name
        log.info("%s %s flow %s (%d steps)", context.user, "reloaded" if replaced else "loaded",
                 name, len(flow))
        if replaced:
            context.notice(f"{context.user} reloaded flow {name} from its file; every step "
                           "starts over.")
        context.outcome.status_header = f"Loaded workflow '{name}', read {len(flow)} steps"

    def unload(self, name: str) -> None:
        """End run `name` and detach every conversation from it."""
        run = self.runs.pop(name, None)
        if run is not None and self._change is not None:
            self._change.ended_runs.append(run)
        for conversation_id in self.attached(name):
            self.attach(conversation_id, None)
        log.info("unloaded flow %s", name)

    def restore(self, context: Context, name: str) -> None:
        """Attach to the active run of flow `name`, or bring back its latest ended run."""
        name = self.datadir.normalize(name)
        if name not in self.runs:
            record = self.store.latest_run(name, active=False) if self.store else None
            if record is None:
                active = ", ".join(sorted(self.runs)) or "none"
                raise CommandError(f"No run of flow {name!r} to restore (active runs: "
                                   f"{active}); load it to start a new run.")
            run = Run.restored(name, record.steps, record.failed_step, self.clock,
                               record.source, record.modes or self.new_modes(), self.max_steps)
            self.runs[name] = run
            if self._change is not None:
                self._change.reactivated[name] = record.run_id
            ended = record.ended_at.isoformat(" ", "seconds") if record.ended_at else "?"
            context.reply(f"Brought back run {record.run_id} of flow {name}, which ended at "
                          f"{ended}.")
        self.attach(context.conversation_id, name)
        context.outcome.run_name = name
        context.reply(f"Restored flow '{name}'.")
        context.outcome.status_header = "status"

    def new(self, context: Context, name: str) -> None:
        name = self.datadir.normalize(name)
        path = self.datadir.path_for(name)
        if name in self.runs:
            raise CommandError(f"A run of flow {name} is active; unload it first or pick "
                               "another name.")
        if path.exists():
            raise CommandError(f"Flow file {path} exists; load {name} to run it, or pick "
                               "another name so that save does not replace it.")
        self.start_run(Run(name, Flow([]), self.clock, modes=self.new_modes(),
                           max_steps=self.max_steps))
        self.attach(context.conversation_id, name)
        context.outcome.run_name = name
        context.outcome.status_header = f"Created workflow '{name}'"
        context.reply("IMPORTANT: *save* your workflow before running it, else your work will "
                      "be lost!")

    def save(self, context: Context, new_name: str | None, force: bool = False) -> None:
        """Write the attached run's flow to the data directory; rename only after success.

        Saving under another name refuses to replace an existing file unless `force`.
        """
        run = context.require_run()
        name = self.datadir.normalize(new_name) if new_name else run.name
        if name != run.name and name in self.runs:
            raise CommandError(f"A run of flow {name} is active; pick another name.")
        if name != run.name and not force and self.datadir.path_for(name).exists():
            raise CommandError(f"Flow file {self.datadir.path_for(name)} exists; say save "
                               f"{name} force to replace it, or pick another name.")
        path = self.datadir.write(name, run.flow())
        if self._change is not None:
            self._change.saved = True
        if name != run.name:
            old = run.name
            self.runs[name] = self.runs.pop(old)
            run.name = name
            for conversation_id in self.attached(old):
                self.attachments[conversation_id] = name
            if self._change is not None:
                self._change.renamed[old] = name
            context.notice(f"{context.user} renamed flow {old} to {name}.")
        context.outcome.run_name = name
        context.reply(f"Saved workflow '{name}' to {path}")

    def history(self, name: str, steps: list[str], limit: int) -> list[str]:
        """Format the newest journal entries of flow `name`, optionally about `steps` only."""
        from thehat.records import history_lines

        if self.store is None:
            return ["No history is kept: this daemon runs without a store."]
        return history_lines(self.store.history(name, steps, limit), self.zone)

    def report(self, name: str) -> list[str]:
        """Format the change record of the latest run of flow `name`."""
        from thehat.records import report_text

        if self.store is None:
            return ["No report: this daemon runs without a store."]
        record = self.store.latest_run(name)
        if record is None:
            return [f"No run of flow {name!r} is recorded."]
        return report_text(record, self.clock.now(), self.zone).splitlines()


def _shortened(lines: list[str]) -> list[str]:
    """Keep the first event lines of a large clock pass, so it cannot flood a chat room."""
    if len(lines) <= MAX_TICK_LINES:
        return lines
    hidden = len(lines) - MAX_TICK_LINES
    return lines[:MAX_TICK_LINES] + [f"... and {hidden} more lines of clock changes; history "
                                     "lists them all."]


def open_daemon(config: Config, clock: Clock | None = None) -> Daemon:
    """Build the daemon for `config`: lock the data directory, open the store, restore runs.

    Raises TheHatError subclasses naming the directory or file when any of that fails.
    """
    datadir = config.engine.datadir
    try:
        datadir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"Cannot create the data directory {datadir}: {exc.strerror}.") from exc
    lock = DirectoryLock(datadir)
    lock.acquire()
    try:
        store = SqliteStore(datadir / DATABASE_NAME)
    except BaseException:
        lock.release()
        raise
    daemon = Daemon(config, clock, store)
    daemon.lock = lock
    daemon.reload_from_store()
    return daemon
