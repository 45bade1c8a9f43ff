"""A read-only or full data directory: the command fails clearly, memory and disk agree.

These tests change real file systems: `chattr +i` makes the data directory and the database
files immutable (writes fail even through descriptors that are already open), and a small tmpfs
mounted for the test fills up. Both need root, as the test script runs.
"""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from thehat.config import Config, EngineConfig
from thehat.daemon import Daemon, open_daemon
from thehat.flowfile import save_flow
from thehat.model import StepState
from thehat.store import DATABASE_NAME, SqliteStore

from tests.helpers import FakeClock, toast_flow

TTY = "tty:alice"


def say(daemon: Daemon, text: str) -> str:
    return "\n".join(daemon.execute(TTY, "alice", text).lines)


def memory_state(daemon: Daemon) -> dict:
    return {name: [(s.name, s.state, s.owner) for s in run.steps.values()]
            for name, run in daemon.runs.items()}


def stored_state(datadir: Path) -> dict:
    """Read the runs back through a second, independent connection to the database."""
    store = SqliteStore(datadir / DATABASE_NAME)
    try:
        records, _ = store.load_active()
    finally:
        store.close()
    return {r.name: [(s.name, s.state, s.owner) for s in r.steps] for r in records}


def run_root_command(*arguments: str) -> None:
    subprocess.run(arguments, check=True, capture_output=True, text=True, timeout=30)


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[list[Path]]:
    """Paths that the test makes immutable; they are made mutable again afterwards."""
    paths: list[Path] = []
    yield paths
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        run_root_command("chattr", "-i", *existing)


def open_with_toast(datadir: Path) -> Daemon:
    save_flow(toast_flow(), datadir / "toast.flow")
    daemon = open_daemon(Config(engine=EngineConfig(datadir=datadir)), FakeClock())
    say(daemon, "load toast")
    say(daemon, "gimme openbread")
    return daemon


def test_read_only_directory_fails_clearly(tmp_path: Path, immutable: list[Path]) -> None:
    datadir = tmp_path / "data"
    datadir.mkdir()
    daemon = open_with_toast(datadir)
    # The database, its write-ahead log and the directory refuse writes. SQLite's shared
    # memory index (thehat.db-shm) stays writable: see the NOTE in thehat/store.py.
    immutable.extend([datadir / DATABASE_NAME, datadir / f"{DATABASE_NAME}-wal", datadir])
    run_root_command("chattr", "+i", *map(str, immutable))

    reply = say(daemon, "finish openbread")

    assert f"Could not record the change in {datadir / DATABASE_NAME}" in reply
    assert "Nothing was changed" in reply
    assert ">>> alice changed state" not in reply
    run = daemon.runs["toast"]
    assert run.step("openbread").state is StepState.PENDING
    assert run.step("openbread").owner == "alice"
    assert memory_state(daemon) == stored_state(datadir)

    run_root_command("chattr", "-i", *map(str, immutable))
    immutable.clear()
    reply = say(daemon, "finish openbread")
    assert ">>> alice changed state of step openbread to done" in reply
    assert memory_state(daemon) == stored_state(datadir)


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for the test."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    run_root_command("mount", "-t", "tmpfs", "-o", "size=2m", "thehat-test", str(mount_point))
    try:
        yield mount_point
    finally:
        run_root_command("umount", "-l", str(mount_point))


def fill(directory: Path) -> Path:
    """Write a file until the file system is full; return it."""
    filler = directory / "filler"
    with open(filler, "wb") as file:
        try:
            while True:
                file.write(b"\0" * 65536)
                file.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_full_disk_fails_clearly(small_filesystem: Path) -> None:
    datadir = small_filesystem / "data"
    datadir.mkdir()
    daemon = open_with_toast(datadir)
    save_flow(toast_flow(), datadir / "second.flow")
    filler = fill(small_filesystem)

    try:
        reply = say(daemon, "finish openbread")
        assert "Could not record the change" in reply
        assert "full" in reply
        assert daemon.runs["toast"].step("openbread").state is StepState.PENDING

        reply = say(daemon, "load second")
        assert "Could not record the change" in reply
        assert "second" not in daemon.runs
        assert daemon.attachments[TTY] == "toast"
        assert memory_state(daemon) == stored_state(datadir)
    finally:
        filler.unlink()

    reply = say(daemon, "finish openbread")
    assert ">>> alice changed state of step openbread to done" in reply
    assert memory_state(daemon) == stored_state(datadir)
    daemon.store.close()
    daemon.lock.release()
