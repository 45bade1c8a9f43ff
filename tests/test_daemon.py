"""The daemon: runs in the data directory, conversations attached to them, events between them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from thehat.config import Config, EngineConfig
from thehat.daemon import Daemon
from thehat.flowfile import load_flow, save_flow
from thehat.limits import Limits
from thehat.model import StepState

from tests.helpers import FakeClock, MemoryConversation, toast_flow


@pytest.fixture
def datadir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    save_flow(toast_flow(), path / "toast.flow")
    return path


@pytest.fixture
def daemon(datadir: Path) -> Daemon:
    return Daemon(Config(engine=EngineConfig(datadir=datadir, timezone="UTC")), FakeClock())


def say(daemon: Daemon, conversation: str, text: str, user: str = "alice") -> str:
    return "\n".join(daemon.execute(conversation, user, text).lines)


def test_load_attaches_and_shows_status(daemon: Daemon) -> None:
    reply = say(daemon, "tty:alice", "load toast")
    assert "Loaded workflow 'toast', read 8 steps" in reply
    assert "UNASSIGNED  pending  0    openbread" in reply
    assert daemon.run_for("tty:alice") is daemon.runs["toast"]


def test_load_missing_file_keeps_current_flow(daemon: Daemon) -> None:
    say(daemon, "tty:alice", "load toast")
    say(daemon, "tty:alice", "gimme openbread")
    reply = say(daemon, "tty:alice", "load nosuch")
    assert "Error loading flow nosuch; nothing changed" in reply
    assert "nosuch.flow" in reply
    assert daemon.run_for("tty:alice").step("openbread").owner == "alice"


def test_load_invalid_file_names_line(daemon: Daemon, datadir: Path) -> None:
    (datadir / "broken.flow").write_text("- step: a\n  gates: [b]\n", encoding="utf-8")
    reply = say(daemon, "tty:alice", "load broken")
    assert "broken.flow:1: step 'a': gate 'b' names a missing step" in reply
    assert "broken" not in daemon.runs


def test_load_refuses_path_traversal(daemon: Daemon, tmp_path: Path) -> None:
    for name in ("../outside", "/etc/passwd", "a/../../x", ".hidden", "sub/.hidden"):
        reply = say(daemon, "tty:alice", f"load {name}")
        assert "Invalid flow name" in reply
    (tmp_path / "outside.flow").write_text("- step: a\n", encoding="utf-8")
    os.symlink(tmp_path / "outside.flow", daemon.datadir.root / "link.flow")
    assert "outside the data directory" in say(daemon, "tty:alice", "load link")


def test_second_conversation_joins_run(daemon: Daemon) -> None:
    say(daemon, "tty:alice", "load toast")
    reply = say(daemon, "irc:#ops", "load toast", user="bob")
    assert "Flow toast is already running; joined that run" in reply
    assert daemon.run_for("irc:#ops") is daemon.run_for("tty:alice")


async def test_events_reach_other_conversations(daemon: Daemon) -> None:
    tty = MemoryConversation("tty:alice")
    irc = MemoryConversation("irc:#ops")
    xmpp = MemoryConversation("xmpp:ops@conference.example.org")
    for conversation in (tty, irc, xmpp):
        daemon.register(conversation)
    await daemon.handle(tty, "alice", "load toast")
    await daemon.handle(irc, "bob", "load toast")
    reply = await daemon.handle(tty, "alice", "gimme openbread")
    assert "Owner of step openbread is now alice" in reply.lines
    await daemon.handle(tty, "alice", "finish openbread")
    assert irc.received == [
        "Owner of step openbread is now alice",
        ">>> alice changed state of step openbread to done",
        "Step selectslice is ready and unassigned (group food); claim it with gimme selectslice.",
    ]
    assert tty.received == []
    assert xmpp.received == []


def test_reload_starts_over_and_tells_others(daemon: Daemon) -> None:
    say(daemon, "tty:alice", "load toast")
    say(daemon, "irc:#ops", "load toast", user="bob")
    say(daemon, "tty:alice", "gimme openbread")
    say(daemon, "tty:alice", "finish openbread")
    outcome = daemon.execute("tty:alice", "alice", "reload")
    assert outcome.audience == ["irc:#ops"]
    assert "alice reloaded flow toast from its file; every step starts over." in outcome.notices
    assert daemon.runs["toast"].step("openbread").state is StepState.PENDING
    assert daemon.run_for("irc:#ops") is daemon.runs["toast"]


def test_unload_detaches_everyone(daemon: Daemon) -> None:
    say(daemon, "tty:alice", "load toast")
    say(daemon, "irc:#ops", "load toast", user="bob")
    outcome = daemon.execute("tty:alice", "alice", "unload")
    assert "Unloaded flow toast" in outcome.lines[0]
    assert outcome.audience == ["irc:#ops"]
    assert "toast" not in daemon.runs
    assert daemon.run_for("irc:#ops") is None


def test_restore_attaches_active_run(daemon: Daemon) -> None:
    say(daemon, "tty:alice", "load toast")
    reply = say(daemon, "irc:#ops", "restore toast", user="bob")
    assert "Restored flow 'toast'." in reply
    assert daemon.run_for("irc:#ops") is daemon.runs["toast"]
    assert "No run of flow 'other' to restore" in say(daemon, "irc:#ops", "restore other")


def test_new_edit_save_reload(daemon: Daemon, datadir: Path) -> None:
    reply = say(daemon, "tty:alice", "new ops/window")
    assert "Created workflow 'ops/window'" in reply
    assert "IMPORTANT: *save* your workflow" in reply
    say(daemon, "tty:alice", "addsequence announce,drain,upgrade")
    say(daemon, "tty:alice", "set upgrade note no")
    reply = say(daemon, "tty:alice", "save")
    assert f"Saved workflow 'ops/window' to {datadir / 'ops' / 'window.flow'}" in reply
    flow = load_flow(datadir / "ops" / "window.flow")
    assert [s.name for s in flow] == ["announce", "drain", "upgrade"]
    assert flow.steps["upgrade"].gates == ("drain",)
    assert flow.steps["upgrade"].note == "no"


def test_save_as_renames_after_write(daemon: Daemon, datadir: Path) -> None:
    say(daemon, "tty:alice", "load toast")
    reply = say(daemon, "tty:alice", "save toast2")
    assert "Saved workflow 'toast2'" in reply
    assert "toast2" in daemon.runs and "toast" not in daemon.runs
    assert (datadir / "toast2.flow").is_file()


def test_failed_save_as_keeps_name(daemon: Daemon, datadir: Path) -> None:
    say(daemon, "tty:alice", "load toast")
    (datadir / "blocker").write_text("a file where a directory is needed", encoding="utf-8")
    reply = say(daemon, "tty:alice", "save blocker/copy")
    assert "Cannot create directory" in reply
    assert "toast" in daemon.runs
    assert "blocker/copy" not in daemon.runs


def test_ls_lists_flows(daemon: Daemon, datadir: Path) -> None:
    (datadir / "sub").mkdir()
    save_flow(toast_flow(), datadir / "sub" / "second.flow")
    (datadir / "notes.txt").write_text("not a flow", encoding="utf-8")
    say(daemon, "tty:alice", "load toast")
    lines = say(daemon, "tty:alice", "ls").splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "MODIFIED", "RUN"]
    assert [line.split()[0] for line in lines[1:]] == ["sub/second", "toast"]
    assert lines[2].endswith("active")


async def test_open_file_names_run_after_file(daemon: Daemon, tmp_path: Path) -> None:
    path = tmp_path / "elsewhere" / "toast.flow"
    path.parent.mkdir()
    save_flow(toast_flow(), path)
    tty = MemoryConversation("tty:alice")
    daemon.register(tty)
    reply = await daemon.open_file(tty, str(path), "alice")
    assert "Loaded workflow 'toast', read 8 steps" in "\n".join(reply.lines)
    assert daemon.flow_name(tty) == "toast"
    completions = daemon.completions(tty)
    assert "gimme" in completions.commands
    assert "openbread" in completions.steps
    assert "hardware" in completions.groups


def test_flow_names_normalized_once(daemon: Daemon, datadir: Path) -> None:
    say(daemon, "tty:alice", "load toast.flow")
    reply = say(daemon, "tty:alice", "save copy.flow.flow")
    assert f"Saved workflow 'copy.flow' to {datadir / 'copy.flow.flow'}" in reply
    assert "copy.flow" in daemon.runs


def test_symlinked_name_joins_same_run(daemon: Daemon, datadir: Path) -> None:
    os.symlink(".", datadir / "loop")
    say(daemon, "tty:alice", "load toast")
    reply = say(daemon, "irc:#ops", "load loop/toast", user="bob")
    assert "already running; joined" in reply
    assert list(daemon.runs) == ["toast"]


def test_new_refuses_existing_file(daemon: Daemon, datadir: Path) -> None:
    reply = say(daemon, "tty:alice", "new toast")
    assert "toast.flow exists; load toast to run it" in reply
    assert "toast" not in daemon.runs


def test_save_as_needs_force_to_replace(daemon: Daemon, datadir: Path) -> None:
    save_flow(toast_flow(), datadir / "other.flow")
    say(daemon, "tty:alice", "new scratch")
    say(daemon, "tty:alice", "addstep one")
    reply = say(daemon, "tty:alice", "save other")
    assert "other.flow exists; say save other force to replace it" in reply
    assert len(load_flow(datadir / "other.flow")) == 8
    assert "Saved workflow 'other'" in say(daemon, "tty:alice", "save other force")
    assert len(load_flow(datadir / "other.flow")) == 1


async def test_file_name_with_spaces_gives_valid_name(daemon: Daemon, tmp_path: Path) -> None:
    path = tmp_path / "my toast.flow"
    save_flow(toast_flow(), path)
    tty = MemoryConversation("tty:alice")
    daemon.register(tty)
    await daemon.open_file(tty, str(path), "alice")
    assert daemon.flow_name(tty) == "my_toast"
    assert "Saved workflow 'my_toast'" in say(daemon, "tty:alice", "save")


def test_flow_limits_apply_to_load_and_edits(datadir: Path) -> None:
    config = Config(engine=EngineConfig(datadir=datadir, timezone="UTC"),
                    limits=Limits(max_flow_steps=5, max_flow_bytes=100_000))
    daemon = Daemon(config, FakeClock())
    reply = say(daemon, "tty:alice", "load toast")
    assert "limits.maxFlowSteps" in reply
    assert "toast" not in daemon.runs

    say(daemon, "tty:alice", "new small")
    reply = say(daemon, "tty:alice", "addstep a,b,c,d,e,f")
    assert "limits.maxFlowSteps" in reply
    assert len(daemon.runs["small"].steps) == 5


def test_flow_byte_limit_applies_to_load(datadir: Path) -> None:
    config = Config(engine=EngineConfig(datadir=datadir, timezone="UTC"),
                    limits=Limits(max_flow_bytes=50))
    daemon = Daemon(config, FakeClock())
    reply = say(daemon, "tty:alice", "load toast")
    assert "limits.maxFlowBytes" in reply
    assert "toast" not in daemon.runs


def test_overlong_flow_name_rejected(daemon: Daemon) -> None:
    say(daemon, "tty:alice", "load toast")
    for command in ("save", "new", "load", "restore"):
        reply = say(daemon, "tty:alice", f"{command} {'x' * 300}")
        assert "is 300 bytes long; the limit is 200 bytes" in reply, command
    reply = say(daemon, "tty:alice", "save " + "/".join(["d" * 100] * 11))
    assert "the flow name is 1,110 bytes long; the limit is 1,000" in reply
    assert daemon.runs["toast"].name == "toast"
