"""One daemon per data directory: an exclusive lock on `<datadir>/thehat.lock`.

The lock is an advisory `flock` on an open file. The kernel releases it when the process ends,
however it ends, so a lock file left by a killed daemon never blocks the next start.
The file holds the PID of the holder, for the message a second daemon prints.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import Final

from thehat.errors import TheHatError

log = logging.getLogger(__name__)

LOCK_NAME: Final = "thehat.lock"


class DirectoryInUse(TheHatError):
    """Another process has locked the data directory."""


class DirectoryLock:
    """The exclusive lock of one data directory, held from `acquire` to `release`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; raise DirectoryInUse naming the holder's PID if another has it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DirectoryInUse(f"Cannot create the lock file {self.path}: "
                                 f"{exc.strerror}.") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise DirectoryInUse(f"The data directory {self.directory} is in use by another "
                                 f"thehat process (PID {holder}). Stop that process, or give "
                                 "this one another wfengine.datadir.") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd
        log.info("locked data directory %s", self.directory)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
