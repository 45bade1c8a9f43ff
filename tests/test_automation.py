"""The daemon's automation: modes, the tick, idle prompts, programs, step commands, exec, mail.

Clocks run on an injected clock, so no test sleeps for them; one test runs a short stopwatch in
real time. Programs and step commands are real /bin/sh processes, and mail goes to an aiosmtpd
server on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.helpers import FakeClock, MemoryConversation
from tests.test_mail import Collector, Server, StartServer, smtp_server, unused_port  # noqa: F401
from thehat.config import Config, EngineConfig
from thehat.daemon import Daemon, open_daemon
from thehat.engine import SystemClock
from thehat.mail import SmtpSettings
from thehat.model import StepState

# Seconds a test waits for background commands and mail before it fails.
SETTLE = 20.0


def write_flow(datadir: Path, name: str, text: str) -> None:
    datadir.mkdir(parents=True, exist_ok=True)
    (datadir / f"{name}.flow").write_text(text, encoding="utf-8")


class Bot:
    """A daemon with a fake clock and two attached conversations, `ops` and `watch`."""

    def __init__(self, tmp_path: Path, flow: str, *, allow_exec: bool = False,
                 admins: tuple[str, ...] = ("alice",), smtp: SmtpSettings | None = None,
                 store: bool = False, **engine: object) -> None:
        self.datadir = tmp_path / "data"
        write_flow(self.datadir, "auto", flow)
        config = Config(engine=EngineConfig(datadir=self.datadir, allow_exec=allow_exec,
                                            admins=admins, timezone="UTC",
                                            **engine),  # type: ignore[arg-type]
                        smtp=smtp)
        self.clock = FakeClock()
        self.daemon = open_daemon(config, self.clock) if store else Daemon(config, self.clock)
        self.ops = MemoryConversation("irc:#ops")
        self.watch = MemoryConversation("irc:#watch")
        self.daemon.register(self.ops)
        self.daemon.register(self.watch)

    async def say(self, text: str, user: str = "alice", where: MemoryConversation | None = None,
                  admin: bool | None = None) -> str:
        conversation = where or self.ops
        is_admin = user in self.daemon.config.engine.admins if admin is None else admin
        reply = await self.daemon.handle(conversation, user, text, admin=is_admin)
        return "\n".join(reply.lines)

    async def start(self) -> None:
        await self.say("load auto")
        await self.say("load auto", where=self.watch)
        self.ops.received.clear()
        self.watch.received.clear()

    async def settle(self) -> None:
        assert await self.daemon.automation.wait_idle(SETTLE), "background work still running"

    def state(self, step: str) -> StepState:
        return self.daemon.runs["auto"].steps[step].state

    def heard(self, conversation: MemoryConversation | None = None) -> str:
        return "\n".join((conversation or self.watch).received)


ALARM_CHAIN = """\
- step: announce
  owner: clock-alarm:12/5/2026@2:30:0
- step: first
  owner: clock-alarm:0/0/0@0:0:0
  gates: [announce]
- step: second
  owner: clock-alarm:0/0/0@0:0:0
  gates: [first]
- step: manual
  gates: [second]
"""


# -- modes ------------------------------------------------------------------------------------

async def test_modes_off_after_load(tmp_path: Path) -> None:
    bot = Bot(tmp_path, ALARM_CHAIN)
    await bot.start()

    reply = await bot.say("clockProcessing")

    assert "Clock processing is off for flow auto" in reply
    assert "Notification processing is off" in await bot.say("notificationProcessing")


async def test_run_and_stop_switch_both(tmp_path: Path) -> None:
    bot = Bot(tmp_path, ALARM_CHAIN)
    await bot.start()

    reply = await bot.say("run")
    modes = bot.daemon.runs["auto"].modes

    assert "Notification processing enabled for flow auto." in reply
    assert "Clock processing enabled for flow auto." in reply
    assert modes.clocks and modes.notifications
    assert "alice: Clock processing enabled" in bot.heard()
    await bot.say("stop")
    assert not modes.clocks
    assert not modes.notifications


async def test_bad_switch_word_changes_nothing(tmp_path: Path) -> None:
    bot = Bot(tmp_path, ALARM_CHAIN)
    await bot.start()
    await bot.say("clockProcessing on")

    reply = await bot.say("clockProcessing 0")

    assert "takes on or off" in reply
    assert "'0'" in reply
    assert bot.daemon.runs["auto"].modes.clocks


async def test_modes_survive_restart(tmp_path: Path) -> None:
    bot = Bot(tmp_path, ALARM_CHAIN, store=True)
    await bot.start()
    await bot.say("clockProcessing on")
    await bot.say("idleprompt 12")
    await bot.daemon.close()

    again = open_daemon(bot.daemon.config, bot.clock)
    try:
        modes = again.runs["auto"].modes
        assert modes.clocks
        assert not modes.notifications
        assert modes.idle_minutes == 12
    finally:
        await again.close()


async def test_reload_turns_modes_off(tmp_path: Path) -> None:
    bot = Bot(tmp_path, ALARM_CHAIN)
    await bot.start()
    await bot.say("run")

    await bot.say("reload")

    assert not bot.daemon.runs["auto"].modes.clocks


# -- the tick ---------------------------------------------------------------------------------

async def test_tick_does_nothing_with_clocks_off(tmp_path: Path) -> None:
    bot = Bot(tmp_path, ALARM_CHAIN)
    await bot.start()
    bot.clock.advance(hours=1)

    await bot.daemon.tick()

    assert bot.state("announce") is StepState.PENDING


async def test_tick_advances_chain_and_announces(tmp_path: Path) -> None:
    bot = Bot(tmp_path, ALARM_CHAIN)
    await bot.start()
    await bot.say("clockProcessing on")
    bot.watch.received.clear()

    await bot.daemon.tick()
    assert bot.state("announce") is StepState.PENDING
    bot.clock.advance(minutes=30)
    await bot.daemon.tick()
    heard = bot.heard()

    assert bot.state("second") is StepState.FINISHED
    assert ">>> clock-alarm:12/5/2026@2:30:0 changed state of step announce to done" in heard
    assert ">>> clock-alarm:0/0/0@0:0:0 changed state of step second to done" in heard
    assert "CLOCK ADVANCE" in heard
    assert "CLOCK ADVANCE" in bot.heard(bot.ops)


async def test_status_names_next_clock(tmp_path: Path) -> None:
    bot = Bot(tmp_path, ALARM_CHAIN)
    await bot.start()

    assert "Clock processing is off" in await bot.say("status")
    await bot.say("clockProcessing on")
    assert "Next clock: step announce at 2026-12-05 02:30:00 UTC." in await bot.say("status")


async def test_tictoc_forces_a_pass(tmp_path: Path) -> None:
    bot = Bot(tmp_path, ALARM_CHAIN)
    await bot.start()
    bot.clock.advance(minutes=30)

    reply = await bot.say("tictoc")

    assert reply.startswith("(---tictoc---)")
    assert "CLOCK ADVANCE" in reply
    assert bot.state("second") is StepState.FINISHED
    assert "changed state of step first to done" in bot.heard()
    assert not bot.daemon.runs["auto"].modes.clocks


async def test_tictoc_with_nothing_due(tmp_path: Path) -> None:
    bot = Bot(tmp_path, ALARM_CHAIN)
    await bot.start()

    reply = await bot.say("tictoc")

    assert "No clock or program was due." in reply
    assert bot.state("announce") is StepState.PENDING


async def test_clock_pass_is_journaled(tmp_path: Path) -> None:
    bot = Bot(tmp_path, ALARM_CHAIN, store=True)
    try:
        await bot.start()
        await bot.say("clockProcessing on")
        bot.clock.advance(minutes=30)
        await bot.daemon.tick()

        entries = bot.daemon.store.history("auto") if bot.daemon.store else []
        ticks = [e for e in entries if e.command == "tick"]

        assert len(ticks) == 1
        assert ticks[0].actor == "clock"
        assert {e["step"] for e in ticks[0].events} >= {"announce", "first", "second"}
    finally:
        await bot.daemon.close()


async def test_clocks_silent_during_reversion(tmp_path: Path) -> None:
    flow = ("- step: timer\n  owner: clock-stopwatch:0/0/0@0:1:0\n"
            "- step: risky\n  owner: alice\n"
            "- step: later\n  owner: clock-alarm:0/0/0@0:0:0\n  gates: [risky]\n")
    bot = Bot(tmp_path, flow)
    await bot.start()
    await bot.say("run")
    await bot.say("idleprompt 0")
    await bot.daemon.tick()
    await bot.say("fail risky")
    bot.watch.received.clear()

    for _ in range(5):
        bot.clock.advance(minutes=1)
        await bot.daemon.tick()

    assert bot.watch.received == []
    assert bot.state("timer") is StepState.IN_PROGRESS


# -- idle prompts -----------------------------------------------------------------------------

async def test_idle_prompt_after_quiet_minutes(tmp_path: Path) -> None:
    bot = Bot(tmp_path, ALARM_CHAIN.replace("clock-alarm:12/5/2026@2:30:0", "bob"))
    await bot.start()
    await bot.say("status")

    bot.clock.advance(minutes=4, seconds=59)
    await bot.daemon.tick()
    assert bot.watch.received == []
    bot.clock.advance(seconds=1)
    await bot.daemon.tick()
    assert any(line.endswith(": IDLE") for line in bot.watch.received)
    bot.watch.received.clear()
    await bot.daemon.tick()
    assert bot.watch.received == []

    bot.clock.advance(minutes=5)
    await bot.daemon.tick()
    assert any(line.endswith(": IDLE") for line in bot.watch.received)


async def test_idle_prompt_configured_and_off(tmp_path: Path) -> None:
    bot = Bot(tmp_path, "- step: a\n", idle_minutes=2)
    await bot.start()
    await bot.say("status")

    assert "Idle prompting is set to 2 minutes for flow auto." in await bot.say("idleprompt")
    reply = await bot.say("idleprompt 0")
    bot.clock.advance(hours=3)
    await bot.daemon.tick()

    assert "Idle prompting is off for flow auto" in reply
    assert bot.watch.received == []


async def test_idleprompt_rejects_bad_minutes(tmp_path: Path) -> None:
    bot = Bot(tmp_path, "- step: a\n")
    await bot.start()

    reply = await bot.say("idleprompt soon")

    assert "idleprompt takes whole minutes from 0 to 1440, not 'soon'" in reply
    assert bot.daemon.runs["auto"].modes.idle_minutes == 5


async def test_no_idle_prompt_when_flow_ended(tmp_path: Path) -> None:
    bot = Bot(tmp_path, "- step: a\n  owner: alice\n")
    await bot.start()
    await bot.say("finish a")
    bot.watch.received.clear()

    bot.clock.advance(hours=1)
    await bot.daemon.tick()

    assert bot.watch.received == []


# -- program owners ---------------------------------------------------------------------------

PROGRAM_FLOW = """\
- step: check
  owner: "program:echo checking $THEHAT_STEP; exit ${CHECK_STATUS:-0}"
- step: after
  owner: bob
  gates: [check]
"""


async def test_program_success_finishes_step(tmp_path: Path) -> None:
    bot = Bot(tmp_path, PROGRAM_FLOW, allow_exec=True)
    await bot.start()
    await bot.say("clockProcessing on")

    await bot.daemon.tick()
    assert bot.state("check") is StepState.IN_PROGRESS
    await bot.settle()
    heard = bot.heard()

    assert bot.state("check") is StepState.FINISHED
    assert "[check] checking check" in heard
    assert "The program of step check exited with status 0." in heard
    assert "changed state of step check to done" in heard
    assert "Step after is ready - bob, it's yours." in heard


async def test_program_failure_starts_reversion(tmp_path: Path) -> None:
    flow = """\
- step: prepare
  owner: alice
- step: check
  owner: "program:echo broken; exit 3"
  gates: [prepare]
"""
    bot = Bot(tmp_path, flow, allow_exec=True)
    await bot.start()
    await bot.say("clockProcessing on")
    await bot.say("finish prepare")

    await bot.daemon.tick()
    await bot.settle()
    heard = bot.heard()
    run = bot.daemon.runs["auto"]

    assert bot.state("check") is StepState.FAILED
    assert run.failed_step == "check"
    assert "exited with status 3" in heard
    assert "STEP check FAILED - BEGINNING REVERSION PROCESS" in heard
    assert "Step prepare can be reverted now" in heard


async def test_program_timeout_fails_step(tmp_path: Path) -> None:
    flow = '- step: slow\n  owner: "program:sleep 30"\n  timeout: 0.5\n'
    bot = Bot(tmp_path, flow, allow_exec=True)
    await bot.start()
    await bot.say("clockProcessing on")

    await bot.daemon.tick()
    await bot.settle()

    assert bot.state("slow") is StepState.FAILED
    assert "timed out" in bot.heard()


async def test_program_waits_without_allow_exec(tmp_path: Path) -> None:
    bot = Bot(tmp_path, PROGRAM_FLOW, allow_exec=False)
    await bot.start()
    reply = await bot.say("clockProcessing on")

    await bot.daemon.tick()
    await bot.daemon.tick()

    assert "wfengine.allowExec is false, so the programs that own check will not run" in reply
    assert bot.state("check") is StepState.PENDING
    assert bot.heard().count("programs may not run: wfengine.allowExec is false") == 1
    assert await bot.daemon.automation.wait_idle(0)


async def test_revert_command_reverts_program_step(tmp_path: Path) -> None:
    marker = tmp_path / "undone"
    flow = f"""\
- step: migrate
  owner: "program:echo migrated"
  revertCommand: "touch {marker}; echo undoing $THEHAT_STEP"
- step: verify
  owner: alice
  gates: [migrate]
"""
    bot = Bot(tmp_path, flow, allow_exec=True)
    await bot.start()
    await bot.say("clockProcessing on")
    await bot.daemon.tick()
    await bot.settle()
    assert bot.state("migrate") is StepState.FINISHED

    await bot.say("fail verify")
    await bot.daemon.tick()
    await bot.settle()
    heard = bot.heard()

    assert marker.exists()
    assert bot.state("migrate") is StepState.REVERTED
    assert "[migrate] undoing migrate" in heard
    assert "The revertCommand of step migrate exited with status 0." in heard
    assert bot.daemon.runs["auto"].ended


async def test_program_without_revert_command_asks_a_person(tmp_path: Path) -> None:
    flow = '- step: migrate\n  owner: "program:true"\n- step: verify\n  owner: alice\n' \
           '  gates: [migrate]\n'
    bot = Bot(tmp_path, flow, allow_exec=True)
    await bot.start()
    await bot.say("clockProcessing on")
    await bot.daemon.tick()
    await bot.settle()
    await bot.say("fail verify")

    await bot.daemon.tick()
    await bot.daemon.tick()

    assert bot.heard().count("has no revertCommand; a person must revert it") == 1
    assert bot.state("migrate") is StepState.FINISHED


async def test_failing_revert_command_leaves_step(tmp_path: Path) -> None:
    flow = ('- step: migrate\n  owner: "program:true"\n  revertCommand: "exit 1"\n'
            '- step: verify\n  owner: alice\n  gates: [migrate]\n')
    bot = Bot(tmp_path, flow, allow_exec=True)
    await bot.start()
    await bot.say("clockProcessing on")
    await bot.daemon.tick()
    await bot.settle()
    await bot.say("fail verify")

    await bot.daemon.tick()
    await bot.settle()

    assert bot.state("migrate") is StepState.REVERTING
    assert "A person must revert step migrate" in bot.heard()


async def test_reversion_stops_running_program(tmp_path: Path) -> None:
    flow = ('- step: long\n  owner: "program:sleep 60"\n'
            '- step: other\n  owner: alice\n')
    bot = Bot(tmp_path, flow, allow_exec=True)
    await bot.start()
    await bot.say("clockProcessing on")
    await bot.daemon.tick()
    run = bot.daemon.runs["auto"]
    assert bot.daemon.automation.running_steps(run) == {"long"}

    await bot.say("fail other")
    await bot.settle()

    assert bot.daemon.automation.running_steps(run) == set()
    assert bot.state("long") is StepState.IN_PROGRESS
    assert "Stopped the program of step long; its result will not be applied." in bot.heard()


async def test_program_owner_needs_admin(tmp_path: Path) -> None:
    bot = Bot(tmp_path, "- step: a\n", allow_exec=True)
    await bot.start()

    reply = await bot.say("giveto program:./deploy.sh a", user="mallory")
    assert ("Only admins can give steps to a program, because it runs on the bot's host; "
            "mallory is an operator. Admins are listed in wfengine.admins.") in reply
    assert bot.daemon.runs["auto"].steps["a"].owner is None

    await bot.say("giveto program:./deploy.sh a", user="alice")
    assert bot.daemon.runs["auto"].steps["a"].owner == "program:./deploy.sh"


async def test_invalid_clock_owner_rejected_by_giveto(tmp_path: Path) -> None:
    bot = Bot(tmp_path, "- step: a\n")
    await bot.start()

    reply = await bot.say("giveto clock-alarm:12/5/2026@2:00 a")

    assert "is not M/D/YYYY@H:M:S" in reply
    assert bot.daemon.runs["auto"].steps["a"].owner is None


async def test_clock_owner_reply_shows_time_with_zone(tmp_path: Path) -> None:
    bot = Bot(tmp_path, "- step: a\n")
    await bot.start()

    reply = await bot.say("giveto clock-alarm:2026-12-05T04:00+01:00 a")

    assert "acts at 2026-12-05 03:00:00 UTC" in reply


# -- step commands ----------------------------------------------------------------------------

HOSTILE = "x; touch pwned-semicolon $(touch pwned-dollar) `touch pwned-tick` 'q' \"d\""


async def test_step_commands_get_context_only_in_environment(tmp_path: Path) -> None:
    out = tmp_path / "seen"
    flow = f"""\
- step: deploy
  description: '{HOSTILE.replace("'", "''")}'
  owner: alice
  url: https://wiki.example.com/deploy
  startCommand: printf '%s|%s|%s|%s|%s|%s\\n' "$THEHAT_FLOW" "$THEHAT_STEP" "$THEHAT_USER" "$THEHAT_STATE" "$THEHAT_URL" "$THEHAT_DESCRIPTION" > {out}
  finishCommand: echo finished $THEHAT_STATE
"""
    bot = Bot(tmp_path, flow, allow_exec=True)
    await bot.start()

    await bot.say("start deploy")
    await bot.settle()
    await bot.say("finish deploy")
    await bot.settle()

    expected = f"auto|deploy|alice|in_progress|https://wiki.example.com/deploy|{HOSTILE}\n"
    assert out.read_text(encoding="utf-8") == expected
    assert not any(p.name.startswith("pwned") for p in bot.datadir.iterdir())
    assert not any(p.name.startswith("pwned") for p in tmp_path.iterdir())
    assert "The startCommand of step deploy exited with status 0." in bot.heard()
    assert "[deploy] finished finished" in bot.heard()


async def test_step_command_skipped_without_allow_exec(tmp_path: Path) -> None:
    flow = "- step: a\n  owner: alice\n  startCommand: touch ran\n"
    bot = Bot(tmp_path, flow, allow_exec=False)
    await bot.start()

    reply = await bot.say("start a")

    assert "The startCommand of step a was not run: wfengine.allowExec is false." in reply
    assert not (bot.datadir / "ran").exists()
    assert await bot.daemon.automation.wait_idle(0)


async def test_step_command_result_in_history(tmp_path: Path) -> None:
    flow = "- step: a\n  owner: alice\n  finishCommand: echo one; echo two; exit 4\n"
    bot = Bot(tmp_path, flow, allow_exec=True, store=True)
    try:
        await bot.start()
        await bot.say("finish a")
        await bot.settle()

        assert bot.daemon.store is not None
        entries = bot.daemon.store.history("auto")
        entry = entries[-1]

        assert entry.command == "finishCommand of step a"
        assert entry.outcome == "failed"
        assert entry.result.splitlines() == [
            "The finishCommand of step a exited with status 4.", "one", "two"]
    finally:
        await bot.daemon.close()


async def test_setting_commands_needs_admin(tmp_path: Path) -> None:
    bot = Bot(tmp_path, "- step: a\n", allow_exec=True)
    await bot.start()

    reply = await bot.say("set a startCommand rm -rf /", user="mallory")
    assert "Only admins can set startCommand" in reply
    assert "mallory is an operator" in reply
    assert bot.daemon.runs["auto"].steps["a"].definition.start_command is None

    await bot.say("set a revertCommand ./undo.sh")
    await bot.say("set a timeout 90")
    definition = bot.daemon.runs["auto"].steps["a"].definition
    assert definition.revert_command == "./undo.sh"
    assert definition.timeout == 90


# -- exec -------------------------------------------------------------------------------------

async def test_exec_runs_for_admin(tmp_path: Path) -> None:
    bot = Bot(tmp_path, "- step: a\n", allow_exec=True)
    await bot.start()

    reply = await bot.say("exec echo hello; false")
    await bot.settle()

    assert "Running on the bot's host" in reply
    assert "hello" in bot.ops.received
    assert "The exec exited with status 1." in bot.ops.received
    assert bot.watch.received == []


async def test_exec_refused_for_others(tmp_path: Path) -> None:
    bot = Bot(tmp_path, "- step: a\n", allow_exec=True)
    await bot.start()

    reply = await bot.say("exec touch pwned", user="mallory")
    await bot.settle()

    assert ("exec needs the admin role; mallory is an operator. Admins are "
            "listed in wfengine.admins.") in reply
    assert not (bot.datadir / "pwned").exists()


async def test_exec_refused_without_allow_exec(tmp_path: Path) -> None:
    bot = Bot(tmp_path, "- step: a\n", allow_exec=False)
    await bot.start()

    reply = await bot.say("exec touch pwned")

    assert "exec is not allowed: wfengine.allowExec is false" in reply


# -- mail -------------------------------------------------------------------------------------

MAIL_FLOW = """\
- step: deploy
  description: Deploy the release
  owner: alice
  url: https://wiki.example.com/deploy
  note: Watch the error rate
  notifyAtStart: ops@example.com, dba@example.com
  notifyAtFinish: [boss@example.com]
"""


def smtp_for(server: Server) -> SmtpSettings:
    return server.settings()


async def test_start_and_finish_mail(tmp_path: Path, smtp_server: StartServer) -> None:
    server = smtp_server()
    bot = Bot(tmp_path, MAIL_FLOW, smtp=smtp_for(server), baseurl="http://ops.example:8808")
    await bot.start()
    await bot.say("notificationProcessing on")

    await bot.say("start deploy")
    await bot.say("finish deploy")
    await bot.settle()
    start, finish = server.handler.messages()
    start_body = start.get_body().get_content()  # type: ignore[union-attr]
    finish_body = finish.get_body().get_content()  # type: ignore[union-attr]

    assert server.handler.envelopes[0].rcpt_tos == ["ops@example.com", "dba@example.com"]
    assert server.handler.envelopes[1].rcpt_tos == ["boss@example.com"]
    assert start["Subject"] == "[auto]: deploy (Deploy the release) has started"
    assert finish["Subject"] == "[auto]: deploy (Deploy the release) has finished"
    assert "The workflow step entitled 'Deploy the release' has begun." in start_body
    assert "https://wiki.example.com/deploy" in start_body
    assert "Watch the error rate" in start_body
    assert "http://ops.example:8808/flows/auto/" in start_body
    assert "was finished by alice" in finish_body


async def test_no_mail_when_notifications_off(tmp_path: Path,
                                              smtp_server: StartServer) -> None:
    server = smtp_server()
    bot = Bot(tmp_path, MAIL_FLOW, smtp=smtp_for(server))
    await bot.start()

    reply = await bot.say("start deploy")
    await bot.settle()

    assert server.handler.envelopes == []
    assert "Notifications are off, so no start mail for step deploy went to " \
           "ops@example.com, dba@example.com" in reply


async def test_mail_failure_reported_and_run_goes_on(tmp_path: Path) -> None:
    settings = SmtpSettings(host="127.0.0.1", port=unused_port(), security="none",
                            sender="thehat@example.com", timeout=5)
    bot = Bot(tmp_path, MAIL_FLOW, smtp=settings)
    await bot.start()
    await bot.say("run")

    await bot.say("start deploy")
    await bot.settle()
    await bot.say("finish deploy")
    await bot.settle()

    assert "Sending the start mail for step deploy to ops@example.com, dba@example.com " \
           "failed" in bot.heard(bot.ops)
    assert bot.state("deploy") is StepState.FINISHED


async def test_clock_started_step_sends_mail(tmp_path: Path, smtp_server: StartServer) -> None:
    server = smtp_server()
    flow = MAIL_FLOW.replace("owner: alice", "owner: clock-alarm:0/0/0@0:0:0")
    bot = Bot(tmp_path, flow, smtp=smtp_for(server))
    await bot.start()
    await bot.say("run")

    await bot.daemon.tick()
    await bot.settle()

    assert [m["Subject"].split(") has ")[1] for m in server.handler.messages()] == [
        "started", "finished"]


async def test_mail_without_smtp_section(tmp_path: Path) -> None:
    bot = Bot(tmp_path, MAIL_FLOW)
    await bot.start()

    reply = await bot.say("notificationProcessing on")
    start = await bot.say("start deploy")

    assert "the configuration has no smtp section" in reply
    assert "No start mail for step deploy went to ops@example.com, dba@example.com: the " \
           "configuration has no smtp section." in start


# -- real time --------------------------------------------------------------------------------

async def test_stopwatch_in_real_time(tmp_path: Path) -> None:
    import asyncio

    flow = "- step: soak\n  owner: clock-stopwatch:0/0/0@0:0:1\n- step: done\n  gates: [soak]\n"
    bot = Bot(tmp_path, flow)
    bot.daemon.clock = SystemClock()
    await bot.start()
    bot.daemon.runs["auto"].clock = bot.daemon.clock
    await bot.say("clockProcessing on")
    bot.daemon.start_automation()
    try:
        for _ in range(200):
            if bot.state("soak") is StepState.FINISHED:
                break
            await asyncio.sleep(0.1)
    finally:
        await bot.daemon.close()
    heard = bot.heard()

    assert bot.state("soak") is StepState.FINISHED
    assert "changed state of step soak to in prog" in heard
    assert "changed state of step soak to done" in heard
    run_step = bot.daemon.runs["auto"].steps["soak"]
    assert run_step.finished_at is not None and run_step.started_at is not None
    assert (run_step.finished_at - run_step.started_at).total_seconds() >= 1


def test_config_keys(tmp_path: Path) -> None:
    from thehat.config import parse_config
    from thehat.errors import ConfigError

    config = parse_config({"wfengine": {"commandTimeout": 90, "idlePrompt": 0,
                                        "allowExec": "true"}}, tmp_path / "c.yaml")

    assert config.engine.command_timeout == 90
    assert config.engine.idle_minutes == 0
    assert config.engine.allow_exec is True
    with pytest.raises(ConfigError, match="commandTimeout is 'soon'"):
        parse_config({"wfengine": {"commandTimeout": "soon"}})
    assert dataclasses.replace(config.engine).command_timeout == 90


async def test_unload_stops_running_program(tmp_path: Path) -> None:
    bot = Bot(tmp_path, '- step: long\n  owner: "program:sleep 60"\n', allow_exec=True)
    await bot.start()
    await bot.say("clockProcessing on")
    await bot.daemon.tick()

    await bot.say("unload")
    await bot.settle()

    assert bot.daemon.automation.programs == {}
    assert "Stopped the program of step long" in bot.heard()


async def test_reload_stops_and_restarts_program(tmp_path: Path) -> None:
    bot = Bot(tmp_path, '- step: long\n  owner: "program:sleep 60"\n', allow_exec=True)
    await bot.start()
    await bot.say("clockProcessing on")
    await bot.daemon.tick()
    (first,) = bot.daemon.automation.programs

    await bot.say("reload")
    await bot.say("clockProcessing on")
    await bot.daemon.tick()
    (second,) = bot.daemon.automation.programs

    assert first.cancelled()
    assert bot.state("long") is StepState.IN_PROGRESS
    assert second is not first
    await bot.say("unload")
    await bot.settle()


async def test_program_output_tail_in_history(tmp_path: Path) -> None:
    flow = '- step: check\n  owner: "program:for i in $(seq 1 30); do echo line $i; done"\n'
    bot = Bot(tmp_path, flow, allow_exec=True, store=True)
    try:
        await bot.start()
        await bot.say("clockProcessing on")
        await bot.daemon.tick()
        await bot.settle()

        assert bot.daemon.store is not None
        entry = bot.daemon.store.history("auto")[-1]
        result = entry.result.splitlines()

        assert entry.actor == 'program:for i in $(seq 1 30); do echo line $i; done'
        assert entry.command == "program of step check"
        assert result[0] == "The program of step check exited with status 0."
        assert result[1:] == [f"line {i}" for i in range(11, 31)]
        assert [e["kind"] for e in entry.events] == ["step_finished", "flow_ended"]
    finally:
        await bot.daemon.close()


async def test_renamed_program_step_gets_result(tmp_path: Path) -> None:
    bot = Bot(tmp_path, '- step: a\n  owner: "program:sleep 0.5"\n', allow_exec=True)
    await bot.start()
    await bot.say("clockProcessing on")
    await bot.daemon.tick()

    await bot.say("set a name y")
    await bot.daemon.tick()
    await bot.settle()
    await bot.daemon.tick()

    assert "no program runs for it" not in bot.heard()
    assert bot.state("y") is StepState.FINISHED


async def test_owner_change_during_program(tmp_path: Path) -> None:
    bot = Bot(tmp_path, '- step: a\n  owner: "program:sleep 0.5"\n', allow_exec=True)
    await bot.start()
    await bot.say("clockProcessing on")
    await bot.daemon.tick()

    await bot.say("giveto bob a")
    await bot.settle()

    assert "Step a is now owned by bob, so the result was not applied." in bot.heard()
    assert bot.state("a") is StepState.IN_PROGRESS


async def test_bad_command_text_fails_step(tmp_path: Path) -> None:
    bot = Bot(tmp_path, '- step: a\n  owner: "program:true"\n', allow_exec=True)
    await bot.start()
    await bot.say("clockProcessing on")
    run = bot.daemon.runs["auto"]
    # Values like this cannot come from a flow file; an older store could hold one.
    run.steps["a"].owner = "program:echo a\x00b"

    await bot.daemon.tick()
    await bot.settle()

    assert bot.state("a") is StepState.FAILED
    assert "could not start" in bot.heard()


async def test_wait_without_clock_successor_noticed(tmp_path: Path) -> None:
    flow = ("- step: w\n  owner: clock-wait:0/0/0@0:0:0\n"
            "- step: manual\n  owner: bob\n  gates: [w]\n")
    bot = Bot(tmp_path, flow)
    await bot.start()
    await bot.say("clockProcessing on")

    await bot.daemon.tick()
    await bot.daemon.tick()

    assert bot.state("w") is StepState.IN_PROGRESS
    assert bot.heard().count("it never finishes by itself") == 1


async def test_large_clock_pass_shortened(tmp_path: Path) -> None:
    steps = ["- step: s0\n  owner: clock-alarm:0/0/0@0:0:0\n"]
    steps += [f"- step: s{i}\n  owner: clock-alarm:0/0/0@0:0:0\n  gates: [s{i - 1}]\n"
              for i in range(1, 100)]
    bot = Bot(tmp_path, "".join(steps), store=True)
    try:
        await bot.start()
        await bot.say("clockProcessing on")
        bot.watch.received.clear()

        await bot.daemon.tick()
        changes = [line for line in bot.watch.received if line.startswith(">>> ")]

        assert bot.daemon.runs["auto"].ended
        assert len(changes) <= 60
        assert any("more lines of clock changes; history lists them all" in line
                   for line in bot.watch.received)
        assert bot.daemon.store is not None
        entry = bot.daemon.store.history("auto")[-1]
        assert entry.result.count("changed state of step") == 200
    finally:
        await bot.daemon.close()


async def test_idleprompt_rejects_superscript(tmp_path: Path) -> None:
    bot = Bot(tmp_path, "- step: a\n")
    await bot.start()

    reply = await bot.say("idleprompt ³")

    assert "Internal error" not in reply
    assert "idleprompt takes whole minutes" in reply


async def test_duplicate_recipients_get_one_mail(tmp_path: Path,
                                                 smtp_server: StartServer) -> None:
    server = smtp_server()
    flow = "- step: a\n  owner: alice\n  notifyAtStart: ok@example.com, OK@example.com\n"
    bot = Bot(tmp_path, flow, smtp=smtp_for(server))
    await bot.start()
    await bot.say("notificationProcessing on")

    await bot.say("start a")
    await bot.settle()

    assert server.handler.envelopes[0].rcpt_tos == ["ok@example.com"]


async def test_stored_run_with_old_owner_restored(tmp_path: Path) -> None:
    import json
    import sqlite3

    bot = Bot(tmp_path, "- step: a\n  owner: alice\n- step: b\n  owner: bob\n  gates: [a]\n",
              store=True, idle_minutes=9)
    await bot.start()
    await bot.say("start a")
    await bot.daemon.close()
    with sqlite3.connect(bot.datadir / "thehat.db") as db:
        (definition,) = db.execute("SELECT definition FROM steps WHERE name = 'b'").fetchone()
        fields = json.loads(definition)
        # The owner an older version accepted and this one rejects in a flow file.
        fields["owner"] = "clock-alarm:12/5/2026@2:00"
        db.execute("UPDATE steps SET definition = ?, owner = ? WHERE name = 'b'",
                   (json.dumps(fields), fields["owner"]))
        db.execute("UPDATE runs SET modes = NULL")

    again = open_daemon(bot.daemon.config, bot.clock)
    try:
        run = again.runs["auto"]
        assert run.steps["a"].state is StepState.IN_PROGRESS
        assert run.steps["b"].owner == "clock-alarm:12/5/2026@2:00"
        assert run.modes.idle_minutes == 9
        assert "auto" in "\n".join(again.report("auto"))
    finally:
        await again.close()


async def test_giveto_program_with_arguments_rejected(tmp_path: Path) -> None:
    bot = Bot(tmp_path, "- step: q\n", allow_exec=True)
    await bot.start()

    reply = await bot.say("giveto program:echo hello q")

    assert "giveto takes the owner as one word, and hello is not a step" in reply
    assert "set <step> owner program:<command line>" in reply
    assert bot.daemon.runs["auto"].steps["q"].owner is None


async def test_status_shows_running_clock_end(tmp_path: Path) -> None:
    bot = Bot(tmp_path, "- step: settle\n  owner: clock-stopwatch:PT2M\n")
    await bot.start()
    await bot.say("clockProcessing on")
    await bot.daemon.tick()

    reply = await bot.say("status")

    assert "Step settle ends at 2026-12-05 02:02:00 UTC (clock-stopwatch:PT2M)." in reply


async def test_status_explains_programs_without_exec(tmp_path: Path) -> None:
    bot = Bot(tmp_path, PROGRAM_FLOW, allow_exec=False)
    await bot.start()
    await bot.say("clockProcessing on")

    reply = await bot.say("status")

    assert "Programs may not run here (wfengine.allowExec is false)" in reply
    assert "Clock processing is off" not in reply


async def test_reversion_hint_for_clock_step(tmp_path: Path) -> None:
    flow = ("- step: alarm\n  owner: clock-alarm:0/0/0@0:0:0\n"
            "- step: risky\n  owner: alice\n  gates: [alarm]\n")
    bot = Bot(tmp_path, flow)
    await bot.start()
    await bot.say("tictoc")

    reply = await bot.say("fail risky")

    assert ("Step alarm can be reverted now; its owner clock-alarm:0/0/0@0:0:0 does not "
            "revert steps, so take it (gimme alarm)") in reply


async def test_dump_shows_revert_command_and_timeout(tmp_path: Path) -> None:
    bot = Bot(tmp_path, '- step: a\n  owner: "program:true"\n  revertCommand: ./undo.sh\n'
                        "  timeout: 90\n")
    await bot.start()

    reply = await bot.say("dump")

    assert "Revert cmd: ./undo.sh" in reply
    assert "Timeout: 90 s" in reply


async def test_reload_repeats_step_notices(tmp_path: Path) -> None:
    bot = Bot(tmp_path, PROGRAM_FLOW, allow_exec=False)
    await bot.start()
    await bot.say("clockProcessing on")
    await bot.daemon.tick()

    await bot.say("reload")
    await bot.say("clockProcessing on")
    await bot.daemon.tick()

    assert bot.heard().count("programs may not run: wfengine.allowExec is false") == 2
