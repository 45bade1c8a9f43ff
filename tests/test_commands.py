"""The command language driven through the real daemon, one chat line at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from thehat import commands
from thehat.access import Speaker
from thehat.config import Config, EngineConfig
from thehat.daemon import Daemon
from thehat.engine import Run
from thehat.model import Flow, StepDef, StepState

from tests.helpers import FakeClock, toast_flow

TTY = "tty:alice"


class Chat:
    """A conversation driven by a test: `say` sends one line and returns the reply text."""

    def __init__(self, daemon: Daemon, conversation_id: str = TTY, user: str = "alice") -> None:
        self.daemon = daemon
        self.conversation_id = conversation_id
        self.user = user

    def say(self, text: str, user: str | None = None, admin: bool = False) -> str:
        outcome = self.daemon.execute(self.conversation_id, user or self.user, text, admin)
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


def test_version_control_words_need_configuration(chat: Chat) -> None:
    for line in ("checkout toast.flow", "commit toast.flow some message"):
        reply = chat.say(line, admin=True)
        assert reply == ("No version control is configured: set wfengine.vcs (class Git or "
                         "Subversion, root) in the configuration."), line


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
    assert daemon.execute(TTY, Speaker.terminal("alice"), "quit").quit
    assert daemon.execute("irc:#ops", "root", "quit", admin=True).quit


def test_quit_from_chat_needs_an_admin(daemon: Daemon) -> None:
    outcome = daemon.execute("irc:#ops", "bob", "quit")
    assert not outcome.quit
    assert outcome.lines == ["quit needs the admin role; bob is an operator. Admins are listed "
                             "in wfengine.admins."]


def test_no_flow_attached(daemon: Daemon) -> None:
    reply = "\n".join(daemon.execute("irc:#ops", "bob", "start openbread").lines)
    assert "No flow is loaded here; load one with load <flow>" in reply
    reply = "\n".join(daemon.execute("irc:#ops", "bob", "").lines)
    assert "No flow loaded or defined here" in reply


def test_status_after_change_is_capped(daemon: Daemon, clock: FakeClock) -> None:
    steps = [StepDef(f"check{n:02d}") for n in range(40)]
    daemon.runs["wide"] = Run("wide", Flow(steps), clock)
    daemon.attachments["irc:#ops"] = "wide"
    wide = Chat(daemon, "irc:#ops")
    lines = wide.say("gimme check00").splitlines()
    rows = [line for line in lines if line.split()[-1:] and line.split()[-1].startswith("check")]
    assert len(rows) == 25
    assert lines[-1] == "... and 15 more steps need attention; say status to list them all."
    # Header, progress line, column headings and every one of the 40 steps.
    assert len(wide.say("status").splitlines()) == 3 + 40


def test_refusal_alone_has_no_status(chat: Chat) -> None:
    reply = chat.say("start openbread")
    assert reply == "Step openbread is unassigned; alice must take it first (gimme openbread)."


def test_revert_is_alias_of_reverted(chat: Chat, daemon: Daemon) -> None:
    chat.say("gimmeall")
    chat.say("finish openbread")
    chat.say("start gettoaster")
    reply = chat.say("fail gettoaster")
    assert "alice  pending reversion" in reply
    chat.say("revert openbread")
    run = daemon.runs["toast"]
    assert run.step("openbread").state is StepState.REVERTED
    assert "Flow toast was REVERTED after gettoaster failed: 1 of 1 started steps" in chat.say(
        "status")


def test_in_progress_step_marked_for_reversion(chat: Chat) -> None:
    chat.say("gimmeall")
    chat.say("finish gettoaster")
    chat.say("start openbread")
    reply = chat.say("fail adjusttoasting")
    row = next(line for line in reply.splitlines() if line.endswith("Open bread bag"))
    assert row.split()[:4] == ["alice", "in", "prog,", "revert"]
    assert "alice: stop what you're doing with step openbread - we're reverting!!" in reply


def test_dryrun_rejects_unfit_fail_step(chat: Chat) -> None:
    chat.say("gimmeall")
    chat.say("finish openbread")
    assert "openbread is finished; only a step that has not finished" in chat.say(
        "dryrun openbread")
    chat.say("fail gettoaster")
    assert "already reverting after gettoaster failed" in chat.say("dryrun selectslice")
    assert "Dry run ended after 1 iteration: " in chat.say("dryrun")


def test_giveto_swapped_arguments_hint(chat: Chat) -> None:
    reply = chat.say("giveto openbread bob")
    assert "openbread is a step and bob is not; the owner comes first" in reply
    assert "giveto bob openbread" in reply


def test_givegroupto_unknown_group_only(chat: Chat) -> None:
    reply = chat.say("givegroupto bob food")
    assert reply.startswith("No step is in group 'bob'")
    assert "Giving" not in reply


def test_set_without_change_says_so(chat: Chat) -> None:
    chat.say("set openbread url https://x.example")
    reply = chat.say("set openbread url https://x.example")
    assert reply.startswith("Nothing changed: url already has that value.")


def test_rename_error_has_no_file_line(chat: Chat) -> None:
    reply = chat.say("set openbread name Open Bread")
    assert reply == ("step 'Open Bread': invalid step name 'Open Bread': ' ' (U+0020) is not "
                     "allowed; use only letters, digits, '_', '-' and '.'")


def test_lists_with_comma_spaces(chat: Chat, daemon: Daemon) -> None:
    chat.say("givegroupto food, hardware bob smith")
    run = daemon.runs["toast"]
    assert {s.owner for s in run.steps.values()} == {"bob smith"}
    chat.say("set openbread, gettoaster owner carol")
    assert run.step("gettoaster").owner == "carol"
    chat.say("addsequence spread, serve removetoast")
    assert run.step("serve").definition.gates == ("spread",)


def test_any_space_after_command_word(chat: Chat) -> None:
    assert "Owner of step openbread is now alice" in chat.say("gimme\topenbread")
    assert "Owner of step gettoaster is now alice" in chat.say("gimme\xa0gettoaster")


def test_delstep_of_step_named_force(chat: Chat, daemon: Daemon) -> None:
    chat.say("addstep force")
    assert "Deleted step 'force'" in chat.say("delstep force")
    assert "force" not in daemon.runs["toast"].steps


def test_too_many_names_refused(chat: Chat) -> None:
    names = ",".join(f"s{n}" for n in range(201))
    reply = chat.say(f"addstep {names}")
    assert reply == "201 names in one command; give at most 200, or use a group (gimmegroup, " \
                    "givegroupto)."


def test_suggestions_only_for_first_unknown_names(chat: Chat) -> None:
    reply = chat.say("gimme " + " ".join(f"openbrea{n}" for n in range(12)))
    assert reply.count("did you mean") == 10
    assert reply.count("No step named") == 12
