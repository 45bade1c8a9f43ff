"""The command language driven through the real daemon, one chat line at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from thehat import commands
from thehat.config import Config, EngineConfig
from thehat.daemon import Daemon
from thehat.engine import Run
from thehat.model import StepState

from tests.helpers import FakeClock, toast_flow

TTY = "tty:alice"


class Chat:
    """A conversation driven by a test: `say` sends one line and returns the reply text."""

    def __init__(self, daemon: Daemon, conversation_id: str = TTY, user: str = "alice") -> None:
        self.daemon = daemon
        self.conversation_id = conversation_id
        self.user = user

    def say(self, text: str, user: str | None = None) -> str:
        outcome = self.daemon.execute(self.conversation_id, user or self.user, text)
        return "\n".join(outcome.lines)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def daemon(tmp_path: Path, clock: FakeClock) -> Daemon:
    config = Config(engine=EngineConfig(datadir=tmp_path / "data", timezone="UTC"))
    daemon = Daemon(config, clock)
    daemon.runs["toast"] = Run("toast", toast_flow(), clock)
    daemon.attachments[TTY] = "toast"
    return daemon


@pytest.fixture
def chat(daemon: Daemon) -> Chat:
    return Chat(daemon)


def state(daemon: Daemon, step: str) -> StepState:
    return daemon.runs["toast"].step(step).state


def test_every_command_has_help() -> None:
    for entry in commands.COMMANDS.values():
        assert entry.usage.split()[0] == entry.name
        assert entry.summary.endswith(".")
        assert entry.section in commands.SECTIONS


def test_original_command_words_exist() -> None:
    words = ("status list dump ls load reload unload new save restore addstep addsequence "
             "delstep set gimme giveto gimmegroup givegroupto gimmeall start finish fail "
             "reverting reverted dryrun help version date time hello exec tictoc run stop "
             "clockProcessing notificationProcessing idleprompt checkout commit history report")
    for word in words.split():
        assert commands.lookup(word) is not None, word


def test_later_words_say_not_available(chat: Chat) -> None:
    for word in ("exec ls", "tictoc", "clockProcessing on", "idleprompt 5", "checkout x"):
        reply = chat.say(word)
        assert "is not available yet" in reply, word


def test_unknown_command_suggests(chat: Chat) -> None:
    reply = chat.say("strat openbread")
    assert "Unknown command 'strat'" in reply
    assert "did you mean 'start'" in reply


def test_command_words_ignore_case(chat: Chat) -> None:
    assert "Owner of step openbread is now alice" in chat.say("GIMME openbread")


def test_gimme_then_start_shows_status(chat: Chat, daemon: Daemon) -> None:
    reply = chat.say("gimme openbread, gettoaster")
    assert "Owner of step openbread is now alice" in reply
    assert "Owner of step gettoaster is now alice" in reply
    reply = chat.say("start openbread")
    assert ">>> alice changed state of step openbread to in prog" in reply
    assert "TheHat 2026-12-05 02:00:00 UTC: (status)" in reply
    assert "OWNER  STATE    DUR  NAME        DESCRIPTION" in reply
    assert "alice  in prog  0    openbread   Open bread bag" in reply
    assert state(daemon, "openbread") is StepState.IN_PROGRESS


def test_status_columns_fit_long_state(chat: Chat) -> None:
    chat.say("gimmeall")
    chat.say("finish openbread gettoaster selectslice")
    chat.say("start insertslice")
    chat.say("fail insertslice")
    lines = chat.say("status").splitlines()
    header = next(line for line in lines if line.startswith("OWNER"))
    row = next(line for line in lines if "gettoaster" in line)
    assert row.index("pending reversion") == header.index("STATE")
    assert row.index("gettoaster") == header.index("NAME")


def test_unknown_step_suggests_close_name(chat: Chat) -> None:
    reply = chat.say("gimme openbraed")
    assert "No step named 'openbraed' (did you mean 'openbread'?)" in reply


def test_refusal_does_not_stop_other_steps(chat: Chat, daemon: Daemon) -> None:
    chat.say("gimmeall")
    reply = chat.say("finish toastbread openbread")
    assert "toastbread is gated" in reply
    assert ">>> alice changed state of step openbread to done" in reply
    assert state(daemon, "openbread") is StepState.FINISHED


def test_ready_prompt_names_owner(chat: Chat) -> None:
    chat.say("gimme openbread")
    chat.say("giveto bob selectslice")
    reply = chat.say("finish openbread")
    assert "Step selectslice is ready - bob, it's yours." in reply


def test_ready_prompt_for_unassigned_names_group(chat: Chat) -> None:
    chat.say("gimme openbread")
    reply = chat.say("finish openbread")
    assert "Step selectslice is ready and unassigned (group food)" in reply


def test_givegroupto_and_gimmegroup(chat: Chat, daemon: Daemon) -> None:
    reply = chat.say("givegroupto hardware bob")
    assert "Giving step group(s) hardware to bob..." in reply
    run = daemon.runs["toast"]
    hardware = [s.name for s in run.steps.values() if s.owner == "bob"]
    assert hardware == ["adjusttoasting", "preptoaster", "gettoaster", "toastbread"]
    reply = chat.say("gimmegroup food,nosuch")
    assert "No step is in group 'nosuch'" in reply
    assert run.step("toastbread").owner == "alice"


def test_usage_shown_for_missing_arguments(chat: Chat) -> None:
    assert "usage: giveto <owner> <step>[,<step>...]" in chat.say("giveto bob")
    assert "usage: gimme" in chat.say("gimme")
    assert "usage: fail <step>" in chat.say("fail a b")


def test_set_properties(chat: Chat, daemon: Daemon) -> None:
    reply = chat.say("set openbread,gettoaster url https://wiki.example.com/toast")
    assert "'url' set to 'https://wiki.example.com/toast' for step 'openbread'." in reply
    chat.say("set openbread description Open the bag, carefully")
    chat.say("set openbread notifyAtStart a@example.com, b@example.com")
    chat.say("set openbread addgroup kitchen")
    chat.say("set openbread owner carol")
    definition = daemon.runs["toast"].step("openbread").definition
    assert definition.url == "https://wiki.example.com/toast"
    assert definition.description == "Open the bag, carefully"
    assert definition.notify_at_start == ("a@example.com", "b@example.com")
    assert definition.groups == ("food", "kitchen")
    assert daemon.runs["toast"].step("openbread").owner == "carol"


def test_set_gates_validated(chat: Chat, daemon: Daemon) -> None:
    reply = chat.say("set openbread gates removetoast")
    assert "cycle" in reply
    assert daemon.runs["toast"].step("openbread").definition.gates == ()
    reply = chat.say("set selectslice delgate nosuch")
    assert "has no gate nosuch" in reply
    chat.say("set selectslice delgate openbread")
    assert daemon.runs["toast"].is_actionable("selectslice")
    reply = chat.say("set selectslice colour red")
    assert "'colour' is not a step property" in reply


def test_set_name_renames(chat: Chat, daemon: Daemon) -> None:
    reply = chat.say("set openbread name unwrap")
    assert "Renamed step 'openbread' to 'unwrap'." in reply
    assert daemon.runs["toast"].step("selectslice").definition.gates == ("unwrap",)


def test_addstep_addsequence_delstep(chat: Chat, daemon: Daemon) -> None:
    reply = chat.say("addstep butter,plate")
    assert "Added new step 'butter' to workflow." in reply
    assert "already exists" in chat.say("addstep butter")
    reply = chat.say("addsequence spread,serve removetoast,butter")
    run = daemon.runs["toast"]
    assert run.step("spread").definition.gates == ("removetoast", "butter")
    assert run.step("serve").definition.gates == ("spread",)
    assert "Step nosuch does not exist" in chat.say("addsequence x nosuch")
    assert "x" not in run.steps
    reply = chat.say("delstep butter")
    assert "butter gates spread" in reply
    assert "butter" in run.steps
    reply = chat.say("delstep butter --force")
    assert "Deleted step 'butter'; dropped its gate from spread." in reply
    assert "butter" not in run.steps


def test_invalid_step_name_rejected(chat: Chat, daemon: Daemon) -> None:
    reply = chat.say("addstep bad;name")
    assert "invalid step name 'bad;name'" in reply
    assert "bad;name" not in daemon.runs["toast"].steps


def test_dryrun_leaves_live_run(chat: Chat, daemon: Daemon) -> None:
    reply = chat.say("dryrun")
    assert "Iteration 1: finished openbread, gettoaster" in reply
    assert "Dry run ended after 5 iterations: 8 finished." in reply
    run = daemon.runs["toast"]
    assert all(s.state is StepState.PENDING and s.owner is None for s in run.steps.values())


def test_dryrun_with_failure_reverts(chat: Chat) -> None:
    reply = chat.say("dryrun insertslice").splitlines()
    assert reply[1] == "(planned failure at step insertslice)"
    assert reply[2] == "Iteration 1: finished openbread, gettoaster"
    assert reply[3] == "Iteration 2: finished adjusttoasting, selectslice, preptoaster"
    assert reply[4] == "Iteration 3: failed insertslice"
    assert reply[5] == "Iteration 4: reverted adjusttoasting, selectslice, preptoaster"
    assert reply[6] == "Iteration 5: reverted openbread, gettoaster"
    assert "5 reverted" in reply[7]


def test_dump_lists_every_step(chat: Chat) -> None:
    chat.say("gimme openbread")
    chat.say("finish openbread")
    reply = chat.say("dump")
    assert reply.startswith("Steps in toast:")
    assert reply.count("Name: ") == 8
    assert "Finished at: 2026-12-05 02:00:00 UTC" in reply
    assert "Gates: insertslice, adjusttoasting, preptoaster" in reply


def test_list_sorted_by_name(chat: Chat) -> None:
    lines = chat.say("list").splitlines()
    assert lines[0].startswith("NAME")
    assert [line.split()[0] for line in lines[1:]] == sorted(
        ["adjusttoasting", "insertslice", "selectslice", "removetoast", "preptoaster",
         "openbread", "gettoaster", "toastbread"])


def test_help_lists_and_explains(chat: Chat) -> None:
    reply = chat.say("help")
    for section in commands.SECTIONS:
        assert f"{section}:" in reply
    assert "gimmegroup <group>[,<group>...]" in reply
    reply = chat.say("help delstep")
    assert "usage: delstep" in reply
    assert "force" in reply
    assert "did you mean 'start'" in chat.say("help strat")


def test_small_talk_commands(chat: Chat) -> None:
    assert chat.say("hello").startswith("Hello alice!")
    assert chat.say("ping").startswith("Hello alice!")
    assert chat.say("version").startswith("thehat version ")
    assert chat.say("time") == "Workflow engine time is: 2026-12-05 02:00:00 UTC"


def test_quit_sets_flag(daemon: Daemon) -> None:
    assert daemon.execute(TTY, "alice", "quit").quit


def test_no_flow_attached(daemon: Daemon) -> None:
    reply = "\n".join(daemon.execute("irc:#ops", "bob", "start openbread").lines)
    assert "No flow is loaded here; load one with load <flow>" in reply
    reply = "\n".join(daemon.execute("irc:#ops", "bob", "").lines)
    assert "No flow loaded or defined here" in reply
