"""The run store: every change committed, runs restored at start-up, history and reports."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from thehat import cli
from thehat.config import Config, EngineConfig
from thehat.daemon import Daemon, open_daemon
from thehat.errors import TheHatError
from thehat.flowfile import save_flow
from thehat.lock import DirectoryInUse
from thehat.model import StepState
from thehat.store import DATABASE_NAME, SCHEMA_VERSION, SqliteStore, StoreError

from tests.helpers import FakeClock, toast_flow

TTY = "tty:alice"
IRC = "irc:#ops"


@pytest.fixture
def datadir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    save_flow(toast_flow(), path / "toast.flow")
    return path


@pytest.fixture
def config(datadir: Path) -> Config:
    return Config(engine=EngineConfig(datadir=datadir, timezone="UTC"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def say(daemon: Daemon, text: str, conversation: str = TTY, user: str = "alice") -> str:
    return "\n".join(daemon.execute(conversation, user, text).lines)


def restart(daemon: Daemon, config: Config, clock: FakeClock) -> Daemon:
    """Close a daemon the way a stopped process would and open a new one on its directory."""
    daemon.store.close()
    daemon.lock.release()
    return open_daemon(config, clock)


def snapshot(daemon: Daemon) -> dict:
    """Everything about the runs that must survive a restart."""
    return {
        name: {
            "failed": run.failed_step,
            "source": run.source,
            "steps": [(s.name, s.definition, s.state, s.owner, s.started_at, s.finished_at,
                       s.failed_at, s.reverted_at) for s in run.steps.values()],
        }
        for name, run in daemon.runs.items()
    }


def test_restart_restores_runs(config: Config, clock: FakeClock) -> None:
    daemon = open_daemon(config, clock)
    say(daemon, "load toast")
    say(daemon, "load toast", IRC, "bob")
    say(daemon, "gimmeall")
    clock.advance(minutes=3)
    say(daemon, "finish openbread gettoaster selectslice")
    say(daemon, "start insertslice")
    clock.advance(minutes=5)
    say(daemon, "fail insertslice")
    say(daemon, "reverting selectslice")
    before = snapshot(daemon)

    daemon = restart(daemon, config, clock)

    assert snapshot(daemon) == before
    run = daemon.runs["toast"]
    assert run.reverting
    assert run.failed_step == "insertslice"
    assert [s.name for s in run.actionable()] == ["selectslice", "gettoaster"]
    assert run.step("selectslice").state is StepState.REVERTING
    assert daemon.attachments == {TTY: "toast", IRC: "toast"}
    say(daemon, "reverted selectslice")
    assert run.step("selectslice").state is StepState.REVERTED


def test_edits_survive_restart(config: Config, clock: FakeClock, datadir: Path) -> None:
    daemon = open_daemon(config, clock)
    say(daemon, "load toast")
    say(daemon, "addsequence butter,serve removetoast")
    say(daemon, "set openbread description Open the bag; twist the tie")
    say(daemon, "set selectslice name pickslice")
    say(daemon, "delstep preptoaster force")
    before = snapshot(daemon)

    daemon = restart(daemon, config, clock)

    assert snapshot(daemon) == before
    run = daemon.runs["toast"]
    assert list(run.steps)[-2:] == ["butter", "serve"]
    assert run.step("insertslice").definition.gates == ("gettoaster", "pickslice")
    assert "preptoaster" not in run.steps
    # The file on disk is unchanged: the edits live in the run.
    assert "butter" not in (datadir / "toast.flow").read_text(encoding="utf-8")


def test_unload_ends_run_and_restore_brings_it_back(config: Config, clock: FakeClock) -> None:
    daemon = open_daemon(config, clock)
    say(daemon, "load toast")
    say(daemon, "gimme openbread")
    say(daemon, "finish openbread")
    say(daemon, "unload")

    daemon = restart(daemon, config, clock)
    assert daemon.runs == {}
    assert [e.command for e in daemon.store.history("toast")][-2:] == ["finish openbread",
                                                                       "unload"]

    reply = say(daemon, "restore toast")
    assert "Brought back run 1 of flow toast" in reply
    assert daemon.runs["toast"].step("openbread").state is StepState.FINISHED

    daemon = restart(daemon, config, clock)
    assert daemon.runs["toast"].step("openbread").state is StepState.FINISHED
    assert daemon.attachments[TTY] == "toast"


def test_reload_keeps_every_attachment(config: Config, clock: FakeClock) -> None:
    daemon = open_daemon(config, clock)
    say(daemon, "load toast")
    say(daemon, "restore toast", IRC, "bob")
    say(daemon, "reload")
    daemon = restart(daemon, config, clock)
    assert daemon.attachments == {TTY: "toast", IRC: "toast"}


def test_reload_starts_new_run_keeps_old_history(config: Config, clock: FakeClock) -> None:
    daemon = open_daemon(config, clock)
    say(daemon, "load toast")
    say(daemon, "gimme openbread")
    say(daemon, "reload")
    daemon = restart(daemon, config, clock)
    assert daemon.runs["toast"].step("openbread").owner is None
    commands = [e.command for e in daemon.store.history("toast")]
    assert commands == ["load toast", "gimme openbread", "reload"]


def test_history_lists_commands_and_refusals(config: Config, clock: FakeClock) -> None:
    daemon = open_daemon(config, clock)
    say(daemon, "load toast")
    say(daemon, "gimme openbread")
    say(daemon, "start openbread", user="bob")
    say(daemon, "status")
    say(daemon, "finish openbread")

    entries = daemon.store.history("toast")
    assert [(e.actor, e.command, e.outcome) for e in entries] == [
        ("alice", "load toast", "accepted"),
        ("alice", "gimme openbread", "accepted"),
        ("bob", "start openbread", "refused"),
        ("alice", "finish openbread", "accepted"),
    ]
    assert entries[2].conversation == TTY
    assert "owned by alice" in entries[2].result
    assert [e["kind"] for e in entries[3].events] == ["step_finished", "step_ready"]

    lines = say(daemon, "history openbread").splitlines()
    assert lines[0].split() == ["TIME", "WHO", "COMMAND", "OUTCOME", "RESULT"]
    assert len(lines) == 4
    assert "refused" in lines[2]
    only_select = say(daemon, "history selectslice").splitlines()
    assert len(only_select) == 2
    assert "finish openbread" in only_select[1]


def test_report_gives_change_record(config: Config, clock: FakeClock) -> None:
    daemon = open_daemon(config, clock)
    say(daemon, "load toast")
    say(daemon, "gimmeall")
    say(daemon, "start openbread")
    clock.advance(minutes=12)
    say(daemon, "finish openbread")
    say(daemon, "fail gettoaster")

    lines = say(daemon, "report").splitlines()
    assert lines[0].startswith("Change record of flow toast, run 1: started 2026-12-05 02:00:00")
    assert lines[0].endswith(", still in progress.")
    assert lines[1] == "Step gettoaster failed; 0 of 1 started steps are reverted."
    rows = {line.split()[1]: line for line in lines[3:]}
    assert "2026-12-05 02:12:00 UTC" in rows["openbread"]
    assert rows["openbread"].split()[0] == "6"
    assert "12" in rows["openbread"].split()
    assert "failed" in rows["gettoaster"]

    say(daemon, "reverted openbread")
    lines = say(daemon, "report").splitlines()
    assert lines[0].endswith(", the flow has ended.")
    assert lines[1] == "Step gettoaster failed; 1 of 1 started steps are reverted."
    say(daemon, "unload")
    assert ", unloaded 2026-12-05 02:12:00 UTC." in "\n".join(daemon.report("toast"))


def test_cli_history_and_report_exports(config: Config, clock: FakeClock, datadir: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    daemon = open_daemon(config, clock)
    say(daemon, "load toast")
    say(daemon, "gimme openbread")
    say(daemon, "finish openbread")
    config_file = datadir.parent / "thehat.yaml"
    config_file.write_text(f"wfengine: {{datadir: '{datadir}'}}\n", encoding="utf-8")

    assert cli.main(["history", "-c", str(config_file), "toast", "--format", "json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert [e["command"] for e in exported] == ["load toast", "gimme openbread",
                                                "finish openbread"]
    assert exported[2]["events"][0]["kind"] == "step_finished"

    assert cli.main(["history", "-c", str(config_file), "toast", "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["time", "flow", "actor", "conversation", "command", "outcome", "result"]
    assert rows[3][4] == "finish openbread"

    assert cli.main(["history", "-c", str(config_file), "toast"]) == 0
    assert "alice in tty:alice: finish openbread  [accepted]" in capsys.readouterr().out

    assert cli.main(["report", "-c", str(config_file), "toast", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["step"] for r in rows][:2] == ["adjusttoasting", "insertslice"]
    openbread = next(r for r in rows if r["step"] == "openbread")
    assert openbread["owner"] == "alice"
    assert openbread["state"] == "finished"
    assert openbread["order"] == "6"

    assert cli.main(["report", "-c", str(config_file), "nosuch"]) == 2
    assert "No run of flow 'nosuch'" in capsys.readouterr().err


def test_second_daemon_refused(config: Config, datadir: Path) -> None:
    first = open_daemon(config)
    with pytest.raises(DirectoryInUse) as caught:
        open_daemon(config)
    message = str(caught.value)
    assert str(datadir) in message
    assert f"PID {os.getpid()}" in message
    first.store.close()
    first.lock.release()
    open_daemon(config).lock.release()


def test_corrupt_store_reported_not_overwritten(config: Config, datadir: Path) -> None:
    path = datadir / DATABASE_NAME
    garbage = b"this is not a database, but someone's notes\n" * 200
    path.write_bytes(garbage)
    with pytest.raises(StoreError) as caught:
        open_daemon(config)
    assert str(path) in str(caught.value)
    assert path.read_bytes() == garbage
    # The lock was released, so a fixed directory can be used at once.
    path.unlink()
    open_daemon(config).lock.release()


def test_foreign_database_refused(config: Config, datadir: Path) -> None:
    path = datadir / DATABASE_NAME
    foreign = sqlite3.connect(path)
    foreign.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
    foreign.execute("INSERT INTO invoices (amount) VALUES (12.5)")
    foreign.commit()
    foreign.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="is not a thehat run store"):
        open_daemon(config)
    assert path.read_bytes() == before


def test_newer_schema_refused(datadir: Path) -> None:
    path = datadir / DATABASE_NAME
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer than this thehat understands"):
        SqliteStore(path)


def test_store_settings(datadir: Path) -> None:
    store = SqliteStore(datadir / DATABASE_NAME)
    db = store._db
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # 2 is FULL: every commit waits for the disk.
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    store.close()


def test_store_error_is_user_error() -> None:
    assert issubclass(StoreError, TheHatError)


def test_second_process_refused(config: Config, datadir: Path) -> None:
    from tests.frontends.test_tty import thehat_program

    config_file = datadir.parent / "thehat.yaml"
    config_file.write_text(f"wfengine: {{datadir: '{datadir}'}}\n", encoding="utf-8")
    command = [str(thehat_program()), "tty", "--user", "alice", "-c", str(config_file)]
    first = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        # The first process holds the lock once it answers a command.
        assert first.stdin is not None and first.stdout is not None
        first.stdin.write("version\n")
        first.stdin.flush()
        assert first.stdout.readline().startswith("thehat version")

        second = subprocess.run(command, input="version\n", capture_output=True, text=True,
                                timeout=30)

        assert second.returncode == 2
        assert str(datadir) in second.stderr
        assert f"PID {first.pid}" in second.stderr
        assert second.stdout == ""
    finally:
        first.communicate("quit\n", timeout=30)
    assert first.returncode == 0


def test_version_one_store_migrated(datadir: Path) -> None:
    from thehat.store import APPLICATION_ID, SCHEMA_V1

    path = datadir / DATABASE_NAME
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_V1)
    db.execute(f"PRAGMA application_id={APPLICATION_ID}")
    db.execute("PRAGMA user_version=1")
    db.execute("INSERT INTO runs (id, name, active, started_at) VALUES "
               "(1, 'old', 1, '2026-12-05T02:00:00+00:00')")
    definition = json.dumps({"name": "a", "description": None, "owner": None,
                             "start_command": None, "notify_at_start": [],
                             "finish_command": None, "notify_at_finish": [], "url": None,
                             "note": None, "groups": [], "gates": []})
    db.execute("INSERT INTO steps (run_id, name, position, definition, state) "
               "VALUES (1, 'a', 0, ?, 'in prog')", (definition,))
    db.commit()
    db.close()

    store = SqliteStore(path)
    try:
        (record,), _ = store.load_active()
        version = store._db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        store.close()

    assert version == SCHEMA_VERSION == 2
    assert record.name == "old"
    assert record.modes is None
    assert record.steps[0].state is StepState.IN_PROGRESS
    assert record.steps[0].definition.revert_command is None


@pytest.mark.parametrize("text", ["null", "[1]", "{\"clocks\": \"yes\"}", "{\"idle_minutes\": -1}",
                                  "not json"])
def test_unreadable_modes_use_defaults(text: str) -> None:
    from thehat.store import decode_modes

    assert decode_modes(text) is None


def test_modes_round_trip() -> None:
    from thehat.engine import Modes
    from thehat.store import decode_modes, encode_modes

    modes = Modes(clocks=True, notifications=False, idle_minutes=0)

    assert decode_modes(encode_modes(modes)) == modes
    assert decode_modes('{"clocks": true, "future": 1}') == Modes(clocks=True)


def test_lone_surrogate_user_journalled(config: Config, clock: FakeClock) -> None:
    daemon = open_daemon(config, clock)
    say(daemon, "load toast")
    assert "lone surrogate" in say(daemon, "gimme openbread", user="al\udc80ice")
    entry = daemon.store.history("toast")[-1]
    assert entry.command == "gimme openbread"
    assert entry.actor == "al\ufffdice"
    assert "al\\udc80ice" in entry.result
