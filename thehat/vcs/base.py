"""The version-control interface, and the path checks and client runner its kinds share.

Clients run only with argument lists (never through a shell), with a timeout and with stdin
closed (only Subversion reads a URL's password from it). Their environment is built here:
PATH, TMPDIR, a private empty HOME, a UTF-8 C locale and the client's own settings. Nothing
else is inherited from the daemon, so no token or agent socket of the operator reaches them.
Replies never contain the password of a repository URL: `mask` replaces it with `***`.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Final
from urllib.parse import unquote, urlsplit

from thehat.datadir import FLOW_SUFFIX, DataDirectory, flow_name_problem
from thehat.errors import CommandError

log = logging.getLogger(__name__)

# Seconds one client command may take; network operations of a large repository fit well in it.
# NOTE: commands run in the daemon's command worker thread, so a slow server blocks other
# commands and the tick until the client ends or this timeout kills it.
DEFAULT_TIMEOUT: Final = 120.0
WHOLE_DIRECTORY: Final = "."
# The run store and the lock of the daemon: never added, committed or listed as changes.
STORE_FILES: Final = ("thehat.db", "thehat.db-wal", "thehat.db-shm", "thehat.db-journal",
                      "thehat.lock")
# Ignored as well: the default web directory, whose renderings are rebuilt from the runs.
IGNORED_NAMES: Final = (*STORE_FILES, "www")
# Error output lines quoted in a reply, and the characters kept of each.
QUOTED_LINES: Final = 4
QUOTED_CHARACTERS: Final = 300

_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@:\s]*):"
                       r"(?P<password>[^/\s]+)@")
_BRANCH = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,99}")


class VcsError(CommandError):
    """A version-control command failed; the message gives the reason and the next step."""


class NotWorkingCopy(VcsError):
    """The data directory is not a working copy of the configured kind."""


class Conflict(VcsError):
    """Files changed both in the data directory and in the repository."""


class ClientMissing(VcsError):
    """The version-control client program is not installed."""


def mask_secrets(text: str) -> str:
    """Replace the password part of every URL in `text` with `***`.

    >>> mask_secrets("cannot reach https://bob:s3cret@example.org/repo")
    'cannot reach https://bob:***@example.org/repo'
    >>> mask_secrets("svn://bob:p@ss@example.org/repo")
    'svn://bob:***@example.org/repo'
    """
    return _USERINFO.sub(r"\g<scheme>\g<user>:***@", text)


def url_credentials(url: str) -> tuple[str, str | None, str | None]:
    """Split `user:password@` out of a URL; return the URL without it, the user and password.

    >>> url_credentials("https://bob:p%40ss@svn.example.org/repo")
    ('https://svn.example.org/repo', 'bob', 'p@ss')
    >>> url_credentials("file:///srv/svn")
    ('file:///srv/svn', None, None)
    """
    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url, None, None
    host = parts.netloc.rpartition("@")[2]
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return parts._replace(netloc=host).geturl(), user, password


def branch_problem(branch: str) -> str | None:
    """Return why `branch` cannot name a branch, or None.

    >>> branch_problem("release/2.1") is None, branch_problem("-x")
    (True, "'-x' is not a branch name: use letters, digits, '.', '_', '-' and '/'")
    """
    if (not _BRANCH.fullmatch(branch) or ".." in branch or "//" in branch
            or branch.endswith(("/", ".", ".lock"))):
        return (f"{branch!r} is not a branch name: use letters, digits, '.', '_', '-' and '/'")
    return None


def check_path(root: Path, path: str) -> str:
    """Return `path` as a checked path relative to the data directory `root`.

    `.` is the whole directory. A path follows the rules of flow names (no absolute path, no
    `..`, no hidden part) and may not lead out of `root` through a symbolic link. A name
    without `.flow` that names no file or directory means the flow file of that name. Raises
    VcsError saying which rule `path` breaks.
    """
    path = path.strip()
    if path in (WHOLE_DIRECTORY, "./"):
        return WHOLE_DIRECTORY
    trimmed = path.removesuffix("/")
    problem = flow_name_problem(trimmed)
    if problem is not None:
        raise VcsError(f"Invalid path {path!r}: {problem}.")
    if trimmed.split("/")[0] in STORE_FILES:
        raise VcsError(f"{trimmed} belongs to thehat's run store, which is never put under "
                       "version control.")
    candidate = root / trimmed
    if not candidate.exists() and not trimmed.endswith(FLOW_SUFFIX) \
            and (root / (trimmed + FLOW_SUFFIX)).is_file():
        trimmed += FLOW_SUFFIX
        candidate = root / trimmed
    resolved_root = root.resolve()
    resolved = candidate.resolve()
    if resolved != resolved_root and resolved_root not in resolved.parents:
        raise VcsError(f"{trimmed} leads outside the data directory (through a symbolic link); "
                       "it cannot be used.")
    return trimmed


def committable_files(root: Path, path: str) -> list[str]:
    """Return the flow files under `path` that a commit may add, relative to `root`.

    Only regular `.flow` files count: no symbolic link (it could point out of the data
    directory), no hidden file or directory, no other file. Sorted, with `/` separators.
    """
    start = root / path
    if start.is_symlink():
        return []
    if start.is_file():
        candidates = [start]
    else:
        candidates = [Path(folder) / name for folder, directories, names in os.walk(start)
                      for name in names]
    files = []
    for candidate in candidates:
        relative = candidate.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if candidate.suffix != FLOW_SUFFIX or candidate.is_symlink() or not candidate.is_file():
            continue
        # os.walk does not follow linked directories, but a path typed in chat may pass
        # through one, so every directory on the way is checked too.
        if any((root / Path(*relative.parts[:index])).is_symlink()
               for index in range(1, len(relative.parts))):
            continue
        files.append(relative.as_posix())
    return sorted(files)


def store_problem(tracked: list[str], root: str) -> str | None:
    """Return why a repository that tracks thehat's store files cannot be used, or None."""
    found = sorted(name for name in tracked if name in STORE_FILES)
    if not found:
        return None
    return (f"The repository {root} contains {', '.join(found)}, thehat's own run store, which "
            "a checkout or commit would overwrite; nothing was changed. Remove it from the "
            "repository (for git: git rm --cached thehat.db; for Subversion: svn delete), "
            "commit that, then try again.")


def is_under(name: str, path: str) -> bool:
    """Tell whether the relative file `name` is `path` or lies in directory `path`.

    >>> is_under("ops/a.flow", "ops"), is_under("opsx/a.flow", "ops"), is_under("a.flow", ".")
    (True, False, True)
    """
    return path == WHOLE_DIRECTORY or name == path or name.startswith(path + "/")


def word_for(name: str, changes: dict[str, str]) -> str:
    """Return the status word of file `name`, from its own entry or its nearest directory's.

    >>> word_for("new/a.flow", {"new": "untracked"}), word_for("b.flow", {})
    ('untracked', 'unchanged')
    """
    path = name
    while path:
        if path in changes:
            return changes[path]
        path = path.rpartition("/")[0]
    return "unchanged"


def clean_author(user: str) -> str:
    """Make a chat user name fit for an author line: printable, one line, no angle brackets.

    >>> clean_author(" bob <evil>\\nx ")
    'bob evil x'
    """
    text = "".join(ch if ch.isprintable() else " " for ch in user)
    text = " ".join(text.replace("<", " ").replace(">", " ").split())
    return text[:100] or "thehat"


def conflict_message(files: list[str], root: str) -> str:
    """Describe a commit that conflicts with newer commits of the same files."""
    return (f"Conflict: the repository {root} has changes of {', '.join(files)} that the data "
            "directory lacks, so nothing was committed. The data directory keeps your "
            f"version: save it under another name, say checkout {files[0]} to take the "
            "repository's version, then merge the two and commit.")


@dataclass(frozen=True)
class Result:
    """The exit status and decoded output of one client command."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stderr + "\n" + self.stdout


class VersionControl(ABC):
    """Version control of one data directory, driven by the client program `client`.

    Implementations keep flow files in a repository at `root` (a URL or, for git, a path).
    Every method runs the client synchronously, so callers run it off the event loop. Methods
    raise VcsError (or a subclass) with a reply for the user; nothing is raised for a command
    that had nothing to do.
    """

    label: ClassVar[str]
    client: ClassVar[str]
    package: ClassVar[str]
    # The operator's remedy for a stale lock of the working copy.
    cleanup_hint: ClassVar[str]

    def __init__(self, datadir: Path, root: str | None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.datadir = datadir
        self.root = root
        self.timeout = timeout
        # A private, empty HOME keeps the operator's client configuration and cached
        # credentials out; it is removed when this object is garbage collected.
        self._home = tempfile.TemporaryDirectory(prefix="thehat-vcs-")
        self._password = url_credentials(root)[2] if root else None

    @property
    def home(self) -> Path:
        return Path(self._home.name)

    @property
    def shown_root(self) -> str:
        """The configured root for replies and logs, with any password masked."""
        return self.mask(self.root) if self.root else "(not set)"

    # -- the interface ----------------------------------------------------------------------

    @abstractmethod
    def is_working_copy(self) -> bool:
        """Tell whether the data directory is a working copy of this kind."""

    def checkout(self, path: str, branch: str | None) -> list[str]:
        """Bring `path` to the repository's version and return the reply lines.

        When the data directory is not a working copy yet, make it one (the whole directory,
        whatever `path` is). Otherwise the repository's latest version of `path` replaces the
        local one, local changes included; with a `branch` and path `.`, switch to that branch.
        """
        if branch is not None and (problem := branch_problem(branch)) is not None:
            raise VcsError(problem + ".")
        path = self.checked_path(path)
        if not self.is_working_copy():
            return self._first_checkout(branch)
        return self._checkout_in_copy(path, branch)

    @abstractmethod
    def _first_checkout(self, branch: str | None) -> list[str]:
        """Make the data directory a working copy of `branch` (None: the default)."""

    @abstractmethod
    def _checkout_in_copy(self, path: str, branch: str | None) -> list[str]:
        """Update a checked `path` of the working copy, or switch it to `branch`."""

    @abstractmethod
    def commit(self, path: str, message: str, author: str) -> list[str]:
        """Add new files under `path`, commit the changes of `path` and return the reply lines.

        Files deleted from the data directory are never deleted from the repository. Raises
        Conflict, naming the files, when the repository changed them since the last checkout.
        """

    @abstractmethod
    def changes(self) -> dict[str, str]:
        """Map each path with a status other than unchanged to its status word.

        A directory stands for the files in it, as when a whole directory is untracked.
        """

    def status(self) -> dict[str, str]:
        """Map each flow file in the data directory (relative path) to a status word.

        The words: unchanged, modified, added, untracked, conflict, ignored, deleted, and a
        few client-specific ones. Raises NotWorkingCopy when there is no working copy.
        """
        self.require_working_copy()
        changes = self.changes()
        words = {}
        for info in DataDirectory(self.datadir).list_flows():
            name = info.name + FLOW_SUFFIX
            words[name] = word_for(name, changes)
        return words

    # -- shared helpers ---------------------------------------------------------------------

    def checked_path(self, path: str) -> str:
        """Check a path typed in chat; see `check_path`."""
        return check_path(self.datadir, path)

    def require_working_copy(self) -> None:
        if not self.is_working_copy():
            raise NotWorkingCopy(self.not_working_copy_message())

    def require_root(self) -> str:
        if not self.root:
            raise VcsError(f"wfengine.vcs.root is not set, so there is no repository to check "
                           f"out from: set it to the {self.label} repository URL in the "
                           "configuration and restart thehat.")
        return self.root

    def not_working_copy_message(self) -> str:
        first = (f"say checkout . to fill it from {self.shown_root}" if self.root else
                 "set wfengine.vcs.root to the repository URL, restart, then say checkout .")
        return (f"The data directory {self.datadir} is not a {self.label} working copy yet: "
                f"{first}.")

    def environment(self) -> dict[str, str]:
        """Build the whole environment of a client command."""
        return {
            "PATH": os.environ.get("PATH") or os.defpath,
            "HOME": str(self.home),
            "LC_ALL": "C.UTF-8",
            "TMPDIR": tempfile.gettempdir(),
        }

    def mask(self, text: str) -> str:
        """Remove the root's password from client output, in URLs and on its own."""
        text = mask_secrets(text)
        # A very short password would also hide ordinary letters, so only longer ones are
        # replaced outside URLs.
        if self._password and len(self._password) >= 4:
            text = text.replace(self._password, "***")
        return text

    def run(self, arguments: list[str], subcommand: str, cwd: Path | None = None,
            stdin_text: str | None = None) -> Result:
        """Run the client with `arguments` and return its result, whatever the exit status.

        `subcommand` names the command in messages. Raises ClientMissing when the client is not
        installed, and VcsError when it runs longer than `timeout` seconds, after killing its
        whole process group.
        """
        environment = self.environment()
        program = shutil.which(self.client, path=environment["PATH"])
        if program is None:
            raise ClientMissing(f"The {self.client} program is not installed, so {self.label} "
                                f"version control cannot work: install the Debian package "
                                f"{self.package} (apt-get install {self.package}).")
        directory = cwd or self.datadir
        log.debug("running %s %s in %s", self.client, self.mask(" ".join(arguments)), directory)
        try:
            process = subprocess.Popen(
                [program, *arguments], cwd=directory, env=environment,
                stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise VcsError(f"Cannot run {self.client} in {directory}: {exc.strerror}.") from exc
        data = stdin_text.encode("utf-8") if stdin_text is not None else None
        try:
            stdout, stderr = process.communicate(data, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            # The client may have started helpers (ssh, a remote helper) in its session.
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            log.warning("%s %s in %s timed out after %g s and was killed", self.client,
                        subcommand, directory, self.timeout)
            raise VcsError(f"{self.client} {subcommand} timed out after {self.timeout:g} s and "
                           f"was stopped; is the repository {self.shown_root} reachable? "
                           "Try again later.") from None
        result = Result(process.returncode, stdout.decode("utf-8", "replace"),
                        stderr.decode("utf-8", "replace"))
        if result.returncode != 0:
            log.debug("%s %s exited with status %d: %s", self.client, subcommand,
                      result.returncode, self.mask(result.stderr.strip()))
        return result

    def quote_output(self, result: Result) -> str:
        """Return the first meaningful lines of a failed command's output, masked."""
        lines = [line.strip() for line in self.mask(result.output).splitlines()]
        lines = [line for line in lines if line and not line.startswith("hint:")]
        quoted = [line[:QUOTED_CHARACTERS] for line in lines[:QUOTED_LINES]]
        return " / ".join(quoted) or f"exit status {result.returncode}, no output"

    def failure(self, action: str, result: Result) -> VcsError:
        """Translate a failed client command into an error a chat user can act on."""
        text = result.output.lower()
        quoted = self.quote_output(result)
        if any(marker in text for marker in AUTH_MARKERS):
            return VcsError(f"{self.client} {action} failed: the repository {self.shown_root} "
                            f"requires authentication, or rejected it ({quoted}). Give "
                            "thehat's host credentials that work without a prompt, such as "
                            "an SSH key or user:password in wfengine.vcs.root (replies show "
                            "the password masked).")
        if any(marker in text for marker in UNREACHABLE_MARKERS):
            return VcsError(f"{self.client} {action} failed: cannot reach the repository "
                            f"{self.shown_root} ({quoted}). Check wfengine.vcs.root and the "
                            "network.")
        if any(marker in text for marker in NOT_WORKING_COPY_MARKERS):
            return NotWorkingCopy(self.not_working_copy_message())
        if any(marker in text for marker in LOCKED_MARKERS):
            return VcsError(f"{self.client} {action} failed: the working copy is locked "
                            f"({quoted}), probably by a client command that was stopped. If "
                            f"none is running, clean it up on the host ({self.cleanup_hint}).")
        return VcsError(f"{self.client} {action} failed: {quoted}")


# Lower-case fragments of client error output, from git 2.39 and Subversion 1.14.
AUTH_MARKERS: Final = (
    "authentication failed", "authentication required", "could not read username",
    "could not read password", "terminal prompts disabled", "permission denied (publickey",
    "e170001", "e215004", "authorization failed", "e175013",
)
UNREACHABLE_MARKERS: Final = (
    "does not appear to be a git repository", "repository not found", "could not resolve host",
    "failed to connect", "connection refused", "unable to access", "could not read from remote",
    "e170000", "e170013", "e180001", "e175002", "e000111", "e670002", "e731001",
    "unable to connect to a repository",
)
NOT_WORKING_COPY_MARKERS: Final = ("not a git repository", "e155007", "is not a working copy")
LOCKED_MARKERS: Final = ("index.lock", "e155004", "e155037", "is already locked")
