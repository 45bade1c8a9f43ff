"""The automation that makes a flow run itself: the tick, program owners, step commands, mail.

`plan_pass` is the synchronous part of one tick for one run. It lets the clocks act
(`thehat.clockwork`), starts the steps that programs own and returns the commands to launch.
When a program step cannot go on by itself, it reports why, once. The daemon calls it under its
command lock.

`Automation` is the asynchronous part. It ticks every second and runs the commands that changes
request (program owners, `revertCommand`, `startCommand`, `finishCommand`, `exec`) as
subprocesses off the event loop. It relays their output to the conversations at a limited rate
and applies a program's exit status to its step. Step mail is sent in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from thehat.clocks import ClockKind, parse_clock_owner, program_command
from thehat.clockwork import advance_clocks
from thehat.engine import Run, RunStep
from thehat.events import Event, EventKind
from thehat.model import StepState
from thehat.processes import CommandResult, CommandSpec, run_command

if TYPE_CHECKING:
    from thehat.daemon import Daemon

log = logging.getLogger(__name__)

# The interval between two ticks, in seconds.
TICK_SECONDS: Final = 1.0
# Seconds the daemon waits for running commands to be killed when it closes.
CLOSE_GRACE: Final = 10.0
# Names of the values a step's commands receive, in the environment.
STATE_WORDS: Final = {
    StepState.PENDING: "pending",
    StepState.IN_PROGRESS: "in_progress",
    StepState.FINISHED: "finished",
    StepState.REVERTING: "reverting",
    StepState.REVERTED: "reverted",
    StepState.FAILED: "failed",
}


@dataclass(frozen=True)
class Launch:
    """A command to run on the host once the change that asked for it is committed.

    `kind` is `program`, `revertCommand`, `startCommand`, `finishCommand` or `exec`. `owner`
    is the program owner whose step the result applies to (program and revertCommand only).
    `origin` is the conversation that receives the output of `exec`; step commands report to
    every conversation attached to the run.
    """

    kind: str
    run_name: str | None
    step: str | None
    command_line: str
    context: dict[str, str]
    timeout: float
    owner: str | None = None
    origin: str | None = None
    actor: str | None = None
    # The run and step objects a program's result applies to. Steps are matched by identity,
    # so a result still applies after the step or the run was renamed.
    run: Run | None = field(default=None, compare=False, repr=False)
    target: RunStep | None = field(default=None, compare=False, repr=False)

    @property
    def label(self) -> str:
        if self.kind == "exec":
            return "exec"
        if self.kind == "program":
            return f"program of step {self.step}"
        return f"{self.kind} of step {self.step}"


@dataclass
class PassResult:
    """The result of one pass over a run: events, commands to launch and lines to announce."""

    events: list[Event] = field(default_factory=list)
    launches: list[Launch] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


def step_context(run: Run, step: RunStep, actor: str, event: str,
                 status_url: str | None) -> dict[str, str]:
    """Return the environment variables that describe `step` to its commands.

    Values reach the command only this way, never inside its command line.
    """
    definition = step.definition
    return {
        "THEHAT_FLOW": run.name,
        "THEHAT_STEP": step.name,
        "THEHAT_USER": actor,
        "THEHAT_STATE": STATE_WORDS[step.state],
        "THEHAT_EVENT": event,
        "THEHAT_URL": definition.url or "",
        "THEHAT_DESCRIPTION": definition.description or "",
        "THEHAT_NOTE": definition.note or "",
        "THEHAT_OWNER": step.owner or "",
        "THEHAT_STATUS_URL": status_url or "",
    }


def plan_pass(run: Run, now: datetime, zone: tzinfo | None, *, allow_exec: bool,
              default_timeout: float, running: Collection[str], reported: set[tuple[str, str]],
              status_url: str | None = None, forced: bool = False) -> PassResult:
    """Let the automatic owners of `run` act at time `now`.

    Acts only when the run's clock processing is on, or when `forced` (the `tictoc` command).
    `running` names the steps whose program or revertCommand is running now. `reported`
    contains the (step, reason) pairs already announced, so that a step that cannot go on is
    reported once, not every second.
    """
    result = PassResult()
    if not (run.modes.clocks or forced):
        return result
    result.events.extend(advance_clocks(run, now, zone))
    for step in run.actionable():
        command = program_command(step.owner)
        if command is None or step.name in running:
            continue
        assert step.owner is not None
        if run.reverting:
            _plan_revert(run, step, step.owner, result, allow_exec, default_timeout, reported,
                         status_url)
        elif step.state is StepState.PENDING:
            if not allow_exec:
                _notice_once(result, reported, step.name, "no exec",
                             f"Step {step.name} is owned by {step.owner}, but programs may not "
                             "run: wfengine.allowExec is false. Set it to true, or give the "
                             "step to a person.")
                continue
            result.events.extend(run.start(step.name, step.owner))
            result.launches.append(_step_launch(run, step, "program", command, step.owner,
                                                default_timeout, status_url))
        else:
            _notice_once(result, reported, step.name, "orphan",
                         f"Step {step.name} is in progress under {step.owner}, but no program "
                         "runs for it: a program starts only with a pending step, and a "
                         "running one stops when thehat restarts. Check the step, then take it "
                         f"(gimme {step.name}) and finish or fail it.")
    for step in [] if run.reverting else run.actionable():
        if _waits_forever(run, step, zone):
            _notice_once(result, reported, step.name, "endless wait",
                         f"Step {step.name} is owned by {step.owner}, which waits for a "
                         "clock-owned step after it, and there is none; it never finishes by "
                         f"itself. Take it (gimme {step.name}) and finish it when it is time.")
    return result


def _waits_forever(run: Run, step: RunStep, zone: tzinfo | None) -> bool:
    """Tell whether a started wait clock has no clock-owned successor that could end it."""
    if step.state is not StepState.IN_PROGRESS or not step.owner:
        return False
    clock = parse_clock_owner(step.owner, zone)
    if clock is None or clock.kind is not ClockKind.WAIT:
        return False
    for successor in run.dependants(step.name):
        other = parse_clock_owner(run.steps[successor].owner or "", zone)
        if other is not None and other.kind is not ClockKind.STOPWATCH:
            return False
    return True


def _plan_revert(run: Run, step: RunStep, owner: str, result: PassResult, allow_exec: bool,
                 default_timeout: float, reported: set[tuple[str, str]],
                 status_url: str | None) -> None:
    """Start the revertCommand of a program step that is due for reversion, or report why not."""
    revert = step.definition.revert_command
    if revert is None or not revert.strip():
        _notice_once(result, reported, step.name, "no revert",
                     f"Step {step.name} is owned by {owner} and has no revertCommand; a person "
                     f"must revert it: gimme {step.name}, undo it, then reverted {step.name}.")
        return
    if not allow_exec:
        _notice_once(result, reported, step.name, "no exec revert",
                     f"The revertCommand of step {step.name} may not run: wfengine.allowExec "
                     f"is false. A person must revert it: gimme {step.name}, then reverted "
                     f"{step.name}.")
        return
    if step.state is StepState.REVERTING:
        _notice_once(result, reported, step.name, "orphan revert",
                     f"The revertCommand of step {step.name} is not running: thehat "
                     "restarted, or the owner changed while it ran, so its result is "
                     f"unknown. Check the step, then take it (gimme {step.name}) and say "
                     f"reverted {step.name}.")
        return
    result.events.extend(run.mark_reverting(step.name, owner))
    result.launches.append(_step_launch(run, step, "revertCommand", revert, owner,
                                        default_timeout, status_url))


def _step_launch(run: Run, step: RunStep, kind: str, command: str, owner: str | None,
                 default_timeout: float, status_url: str | None, actor: str | None = None
                 ) -> Launch:
    event = {"program": "program", "revertCommand": "revert", "startCommand": "start",
             "finishCommand": "finish"}[kind]
    acting = actor or owner or ""
    return Launch(kind, run.name, step.name, command,
                  step_context(run, step, acting, event, status_url),
                  step.definition.timeout or default_timeout, owner=owner, actor=acting,
                  run=run, target=step)


def _notice_once(result: PassResult, reported: set[tuple[str, str]], step: str, reason: str,
                 line: str) -> None:
    if (step, reason) not in reported:
        reported.add((step, reason))
        result.notices.append(line)


def started_or_finished(run: Run, events: list[Event]
                        ) -> Iterator[tuple[Literal["start", "finish"], RunStep, Event]]:
    """Yield ("start" or "finish", step, event) for each step that `events` start or finish."""
    for event in events:
        change: Literal["start", "finish"]
        if event.kind is EventKind.STEP_STARTED:
            change = "start"
        elif event.kind is EventKind.STEP_FINISHED:
            change = "finish"
        else:
            continue
        step = run.steps.get(event.step or "")
        if step is not None:
            yield change, step, event


def step_command_launches(run: Run, events: list[Event], *, allow_exec: bool,
                          default_timeout: float, status_url: str | None
                          ) -> tuple[list[Launch], list[str]]:
    """Return the startCommand and finishCommand launches that `events` call for.

    Without `allow_exec` nothing runs, and a notice names each command that was skipped.
    """
    launches: list[Launch] = []
    notices: list[str] = []
    for change, step, event in started_or_finished(run, events):
        kind = "startCommand" if change == "start" else "finishCommand"
        command = (step.definition.start_command if change == "start"
                   else step.definition.finish_command)
        if not command:
            continue
        if not allow_exec:
            notices.append(f"The {kind} of step {step.name} was not run: wfengine.allowExec "
                           "is false.")
            continue
        launches.append(_step_launch(run, step, kind, command, step.owner, default_timeout,
                                     status_url, actor=event.actor))
    return launches, notices


class Automation:
    """The daemon's background work: the tick and the commands and mail that changes cause."""

    def __init__(self, daemon: Daemon, tick_seconds: float = TICK_SECONDS) -> None:
        self.daemon = daemon
        self.tick_seconds = tick_seconds
        # The tasks running a program or a revertCommand, with what they run.
        self.programs: dict[asyncio.Task[None], Launch] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._last_mail: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start ticking every `tick_seconds`."""
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick_forever(), name="thehat tick")

    def running_steps(self, run: Run) -> set[str]:
        """Return the names of the steps of `run` whose program or revertCommand runs now."""
        return {launch.target.name for launch in self.programs.values()
                if launch.run is run and launch.target is not None}

    async def _tick_forever(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            try:
                await self.daemon.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("tick failed; trying again at the next one")
            next_tick += self.tick_seconds
            # After a long stall (a suspended machine), tick once and go on from now.
            next_tick = max(next_tick, loop.time())
            await asyncio.sleep(next_tick - loop.time())

    def launch(self, launches: list[Launch]) -> None:
        """Start the commands that the committed change requested, each in its own task."""
        for launch in launches:
            task = asyncio.create_task(self._run(launch), name=launch.label)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            if launch.kind in ("program", "revertCommand"):
                self.programs[task] = launch
                task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self.programs.pop(task, None)

    def stop_programs(self, run: Run, reverts: bool = False) -> list[str]:
        """Kill the programs of `run`, and with `reverts` its revertCommands too.

        Returns the names of their steps.
        """
        stopped = []
        current = asyncio.current_task()
        for task, launch in list(self.programs.items()):
            # The task that applies a program's own failure must not cancel itself.
            if task is current or launch.run is not run:
                continue
            if reverts or launch.kind == "program":
                task.cancel()
                stopped.append(launch.target.name if launch.target else str(launch.step))
        return stopped

    def send_mail(self, run_name: str, mails: list[object]) -> None:
        """Send step mail in the background, in order; failures are announced and recorded."""
        for mail in mails:
            task = asyncio.create_task(self._mail(run_name, mail, self._last_mail),
                                       name="step mail")
            self._last_mail = task
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _mail(self, run_name: str, mail: object,
                    previous: asyncio.Task[None] | None) -> None:
        from thehat.mail import MailError, StepMail, send_step_mail

        if previous is not None:
            # One message at a time, so a step's start mail arrives before its finish mail.
            await asyncio.wait([previous])

        assert isinstance(mail, StepMail)
        settings = self.daemon.config.smtp
        assert settings is not None
        mail_text = f"{mail.kind} mail for step {mail.step} to {', '.join(mail.recipients)}"
        try:
            await send_step_mail(settings, mail)
        except MailError as exc:
            # thehat.mail has logged the failure as a warning already.
            log.info("%s of flow %s failed: %s", mail_text, run_name, exc)
            await self.daemon.announce(run_name, [f"Sending the {mail_text} failed: {exc}"])
            await self.daemon.record(run_name, "mail", f"send {mail_text}", "failed", str(exc))
            return
        except Exception:
            log.exception("%s of flow %s failed", mail_text, run_name)
            await self.daemon.announce(run_name, [f"Sending the {mail_text} failed; the error "
                                                  "was logged."])
            return
        await self.daemon.record(run_name, "mail", f"send {mail_text}", "accepted", "sent")

    async def _run(self, launch: Launch) -> None:
        prefix = "" if launch.kind == "exec" else f"[{launch.step}] "

        async def relay(lines: list[str]) -> None:
            await self._deliver(launch, [prefix + line for line in lines])

        if launch.kind != "exec":
            await self._deliver(launch, [f"Running the {launch.label} (timeout "
                                         f"{launch.timeout:g} s)."])
        try:
            spec = CommandSpec(launch.command_line, launch.context, launch.timeout,
                               self._directory(), label=launch.label)
            result = await run_command(spec, relay)
        except (ValueError, OSError) as exc:
            # Flow checks keep NUL characters and overlong text out, so this is a bug or a
            # value from an older store. The step must still get a result.
            log.error("%s of flow %s could not start: %s", launch.label, launch.run_name, exc)
            result = CommandResult(None, False, str(exc), (), 0, 0.0, launch.timeout)
        await self._finished(launch, result)

    def _directory(self) -> Path | None:
        """Return the data directory, where commands run, or None if it does not exist."""
        root = self.daemon.datadir.root
        return root if root.is_dir() else None

    def pending_work(self) -> list[str]:
        """Describe the commands and mail still running, such as `program of step x`."""
        return sorted(task.get_name() for task in self._tasks)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no command or mail task is left; return False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._tasks:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.wait(list(self._tasks), timeout=remaining)
        return True

    async def _deliver(self, launch: Launch, lines: list[str]) -> None:
        if launch.origin is not None:
            await self.daemon.send_to(launch.origin, lines)
        elif launch.run_name is not None:
            await self.daemon.announce(launch.run_name, lines)

    async def _finished(self, launch: Launch, result: CommandResult) -> None:
        summary = f"The {launch.label} {result.summary()}."
        record = "\n".join([summary, *result.tail])
        verdict = "accepted" if result.succeeded() else "failed"
        if launch.kind in ("program", "revertCommand"):
            assert launch.run_name is not None and launch.step is not None
            assert launch.owner is not None
            await self.daemon.apply_program_result(launch, result.succeeded(), summary, record)
            return
        await self._deliver(launch, [summary])
        await self.daemon.record(launch.run_name, launch.actor or "exec",
                                 f"{launch.kind} {launch.command_line}"
                                 if launch.kind == "exec" else f"{launch.label}",
                                 verdict, record, conversation=launch.origin)

    async def close(self) -> None:
        """Stop ticking and kill running commands; pending mail gets CLOSE_GRACE seconds."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        tasks = list(self._tasks)
        for task in tasks:
            if task.get_name() != "step mail":
                task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=CLOSE_GRACE)
            for task in pending:
                log.warning("%s did not end within %.0f s; leaving it", task.get_name(),
                            CLOSE_GRACE)
                task.cancel()

