"""The data directory: where flow files live, addressed by flow name.

A flow's name is its path relative to the data directory without the `.flow` suffix
(`toast`, `releases/r1`). Names typed in chat can reach only files inside the directory: no
absolute paths, no `..`, and no symbolic link that leads out of it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Final

from thehat.errors import CommandError
from thehat.flowfile import load_flow, save_flow
from thehat.limits import Limits
from thehat.model import Flow

log = logging.getLogger(__name__)

FLOW_SUFFIX: Final = ".flow"
_NAME_PART = re.compile(r"[\w.-]+")
# Linux file systems take at most 255 bytes per file name (NAME_MAX). `save` writes a
# temporary file named `.<name>.flow.<8 hex digits>.tmp` next to the flow, so a name part
# keeps 200 bytes to leave room for those additions.
MAX_NAME_PART_BYTES: Final = 200
# The whole name stays well inside PATH_MAX (4096 bytes), with room for the data directory.
MAX_NAME_BYTES: Final = 1000


class InvalidFlowName(CommandError):
    """A flow name that could reach outside the data directory or is not a plain name."""


@dataclass(frozen=True)
class FlowFileInfo:
    """One flow file found in the data directory."""

    name: str
    size: int
    modified: datetime


def flow_name_problem(name: str) -> str | None:
    """Return why `name` cannot name a flow in the data directory, or None.

    >>> flow_name_problem("releases/r1") is None
    True
    >>> flow_name_problem("../etc/passwd")
    "'..' is not allowed in a flow name"
    """
    if not name:
        return "the flow name is empty"
    if name.startswith("/") or "\\" in name:
        return "a flow name is relative to the data directory; drop the leading '/'"
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        return f"the flow name is {size:,} bytes long; the limit is {MAX_NAME_BYTES:,}"
    for part in name.split("/"):
        if part in ("", ".", ".."):
            return f"{part or '//'!r} is not allowed in a flow name"
        if part.startswith("."):
            return f"{part!r} starts with '.', which hides it; start names with a letter or digit"
        if not _NAME_PART.fullmatch(part):
            return (f"{part!r} is not allowed in a flow name; use letters, digits, '_', '-', "
                    "'.' and '/' between directories")
        size = len(part.encode("utf-8"))
        if size > MAX_NAME_PART_BYTES:
            return (f"a part of the flow name is {size:,} bytes long; the limit is "
                    f"{MAX_NAME_PART_BYTES} bytes between two '/'")
    return None


class DataDirectory:
    """Flow files under one root directory; `read` rejects files over `limits`."""

    def __init__(self, root: Path, limits: Limits | None = None) -> None:
        self.root = root
        self.limits = limits

    @staticmethod
    def normalize(name: str) -> str:
        """Return the flow name a user means: `toast.flow` is `toast`.

        Raises InvalidFlowName for a name that could leave the data directory.

        >>> DataDirectory.normalize("ops/window.flow")
        'ops/window'
        """
        name = name.removesuffix(FLOW_SUFFIX)
        problem = flow_name_problem(name)
        if problem is not None:
            raise InvalidFlowName(f"Invalid flow name {name!r}: {problem}.")
        return name

    def path_for(self, name: str) -> Path:
        """Return the file of flow `name` (a normalized name); raise InvalidFlowName if it is
        not valid or leads out of the root."""
        problem = flow_name_problem(name)
        if problem is not None:
            raise InvalidFlowName(f"Invalid flow name {name!r}: {problem}.")
        path = self.root / (name + FLOW_SUFFIX)
        root = self.root.resolve()
        resolved = path.resolve()
        if resolved != root and root not in resolved.parents:
            raise InvalidFlowName(f"Flow {name!r} leads outside the data directory "
                                  "(through a symbolic link); it cannot be used.")
        return path

    def read(self, name: str) -> Flow:
        """Load flow `name`; raises FlowError (file, line, cause, or a limit it exceeds) or
        InvalidFlowName."""
        return load_flow(self.path_for(name), self.limits)

    def write(self, name: str, flow: Flow) -> Path:
        """Save `flow` as `name` atomically, creating directories as needed; return the path."""
        path = self.path_for(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CommandError(f"Cannot create directory {path.parent}: {exc.strerror}.") from exc
        save_flow(flow, path)
        log.info("saved flow %s to %s", name, path)
        return path

    def list_flows(self) -> list[FlowFileInfo]:
        """List the flow files below the root, sorted by name; hidden directories are skipped."""
        if not self.root.is_dir():
            return []
        found = []
        root = self.root.resolve()
        for path in self.root.rglob("*" + FLOW_SUFFIX):
            relative = path.relative_to(self.root)
            if any(part.startswith(".") for part in relative.parts) or not path.is_file():
                continue
            if root not in path.resolve().parents:
                continue
            stat = path.stat()
            found.append(FlowFileInfo(
                name=relative.as_posix()[: -len(FLOW_SUFFIX)],
                size=stat.st_size,
                modified=datetime.fromtimestamp(stat.st_mtime, timezone.utc),
            ))
        return sorted(found, key=lambda info: info.name)
