"""Flows kept in Subversion: the data directory is a working copy of `root` or of a branch.

Branch layout: without a branch, the working copy is of `root` as configured. The branch `b`
is `<base>/branches/b`, where `<base>` is `root` without a trailing `/trunk`. So the usual
trunk/branches layout works both with a root that ends in `/trunk` and with a root that is
the repository's top directory.

The store files are kept out through the client's global-ignores option on every command, so
no versioned `svn:ignore` property is changed. Credentials in the root URL
(`https://user:password@host/...`) are taken out of the URL; the password reaches svn on its
standard input, never on the command line, and is not cached.
"""

from __future__ import annotations

import logging
import re
import shutil
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import ClassVar, Final

from thehat.vcs.base import (DEFAULT_TIMEOUT, IGNORED_NAMES, WHOLE_DIRECTORY, Conflict, Result,
                             VcsError, VersionControl, clean_author, committable_files,
                             conflict_message, is_under, store_problem, url_credentials)

log = logging.getLogger(__name__)

# `svn status --xml` item values that have a different word in `VersionControl.status`.
_ITEM_WORDS: Final = {"normal": "unchanged", "unversioned": "untracked",
                      "conflicted": "conflict", "none": "unchanged"}
_REVISION = re.compile(r"(?:Checked out|Updated to|At|Committed) revision (\d+)\.")
# Error codes of Subversion 1.14 for a commit based on an old revision, or on a conflict.
_OUT_OF_DATE: Final = ("e155011", "e160028", "e160024", "e170004", "e155015", "out of date",
                       "remains in conflict")
_QUOTED = re.compile(r"'([^']+)' (?:is out of date|remains in conflict)")


class Subversion(VersionControl):
    """The data directory as a Subversion working copy; `root` is the repository URL."""

    label: ClassVar[str] = "Subversion"
    client: ClassVar[str] = "svn"
    package: ClassVar[str] = "subversion"
    cleanup_hint: ClassVar[str] = "svn cleanup in the data directory"

    def __init__(self, datadir: Path, root: str | None, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__(datadir, root, timeout)
        self.url: str | None = None
        self._user: str | None = None
        self._secret: str | None = None
        if root:
            url, self._user, self._secret = url_credentials(root)
            self.url = url.rstrip("/")

    def svn(self, arguments: list[str], action: str | None = None, check: bool = True,
            cwd: Path | None = None) -> Result:
        """Run `svn <subcommand> <options> <arguments...>`; raise on failure unless `check`.

        The first argument is the subcommand; the global options follow it.
        """
        options = ["--non-interactive", "--no-auth-cache",
                   "--config-dir", str(self.home / "subversion"),
                   "--config-option",
                   "config:miscellany:global-ignores=" + " ".join(IGNORED_NAMES)]
        stdin_text = None
        if self._user:
            options += ["--username", self._user]
        if self._secret is not None:
            options.append("--password-from-stdin")
            stdin_text = self._secret
        result = self.run([arguments[0], *options, *arguments[1:]], arguments[0], cwd=cwd,
                          stdin_text=stdin_text)
        if check and result.returncode != 0:
            raise self.failure(action or arguments[0], result)
        return result

    def is_working_copy(self) -> bool:
        return (self.datadir / ".svn").is_dir()

    def branch_url(self, branch: str | None) -> str:
        """Return the URL of `branch`, or the root's URL when `branch` is None."""
        self.require_root()
        assert self.url is not None
        if branch is None:
            return self.url
        return f"{self.url.removesuffix('/trunk')}/branches/{branch}"

    # -- checkout ---------------------------------------------------------------------------

    def _checkout_in_copy(self, path: str, branch: str | None) -> list[str]:
        if branch is not None:
            if path != WHOLE_DIRECTORY:
                raise VcsError(f"In a Subversion working copy a branch applies to the whole "
                               f"data directory: say checkout . {branch}.")
            return self._switch(branch)
        return self._update(path)

    def _first_checkout(self, branch: str | None) -> list[str]:
        url = self.branch_url(branch)
        try:
            self.datadir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VcsError(f"Cannot create the data directory {self.datadir}: "
                           f"{exc.strerror}.") from exc
        # --force lets files already in the directory (the store, local flows) stay. A local
        # flow that the repository also has becomes a modified file of the working copy.
        self._refuse_store(url)
        # The client runs in the data directory, so "." is the data directory itself however
        # wfengine.datadir was written. Externals would fetch URLs the repository names.
        result = self.svn(["checkout", "--force", "--ignore-externals", "--", url, "."],
                          check=False)
        if result.returncode != 0:
            shutil.rmtree(self.datadir / ".svn", ignore_errors=True)
            raise self._missing_branch(branch, url, result) or self.failure("checkout", result)
        obstructed = [self._relative(line[1:].strip()) for line in result.stdout.splitlines()
                      if line.startswith("E ")]
        changes = self.changes()
        kept = [name for name in obstructed if changes.get(name) == "modified"]
        log.info("checked out %s into %s", self.mask(url), self.datadir)
        lines = [f"Checked out {self.mask(url)} at revision {revision(result)} into "
                 f"{self.datadir}."]
        if kept:
            lines.append(f"Kept the local versions of {', '.join(kept)}, which differ from the "
                         "repository's: commit them, or check them out to take the "
                         "repository's versions.")
        return lines

    def _switch(self, branch: str) -> list[str]:
        local = sorted(name for name, word in self.changes().items()
                       if word not in ("untracked", "ignored"))
        if local:
            raise Conflict(f"Local changes of {', '.join(local)} would be carried into branch "
                           f"{branch}: commit them, or say checkout <path> to drop them, then "
                           "switch again.")
        url = self.branch_url(branch)
        self._refuse_store(url)
        result = self.svn(["switch", "--ignore-externals", "--", url, "."], check=False)
        if result.returncode != 0:
            raise self._missing_branch(branch, url, result) or self.failure("switch", result)
        log.info("switched %s to %s", self.datadir, self.mask(url))
        return [f"Switched the data directory to branch {branch} ({self.mask(url)}) at revision "
                f"{revision(result)}."]

    def _update(self, path: str) -> list[str]:
        replaced = sorted(name for name, word in self.changes().items()
                          if is_under(name, path) and word in ("modified", "conflict"))
        # Update first (an unversioned file in the way becomes a local change), then revert,
        # so every versioned file under `path` ends up as the repository has it.
        self._refuse_store(self._working_url())
        result = self.svn(["update", "--force", "--ignore-externals", "--", path],
                          action="update")
        self.svn(["revert", "-R", "-q", "--", path], action="revert")
        if path != WHOLE_DIRECTORY and not (self.datadir / path).exists():
            raise VcsError(f"{path} is not in the repository {self.mask(self.branch_url(None))}; "
                           "nothing was checked out.")
        log.info("updated %s in %s", path, self.datadir)
        lines = [f"Checked out {path} at revision {revision(result)} from "
                 f"{self.mask(self._working_url())}."]
        if replaced:
            lines.append(f"The repository's version replaced the local changes of "
                         f"{', '.join(replaced)}.")
        return lines

    def _refuse_store(self, url: str) -> None:
        """Raise VcsError when the repository at `url` contains a store file at its top."""
        result = self.svn(["list", "--", url], check=False)
        if result.returncode != 0:
            # A missing URL is reported by the command that follows, in its own words.
            return
        problem = store_problem([line.strip() for line in result.stdout.splitlines()],
                                self.mask(url))
        if problem is not None:
            raise VcsError(problem)

    def _missing_branch(self, branch: str | None, url: str, result: Result) -> VcsError | None:
        text = result.output.lower()
        if branch is not None and ("e160013" in text or "e170000" in text):
            return VcsError(f"Branch {branch} is not in the repository: "
                            f"{self.mask(url)} does not exist.")
        return None

    # -- commit -----------------------------------------------------------------------------

    def commit(self, path: str, message: str, author: str) -> list[str]:
        path = self.checked_path(path)
        self.require_working_copy()
        if not (self.datadir / path).exists():
            raise VcsError(f"{path} does not exist in the data directory; ls lists the flow "
                           "files.")
        self._refuse_store(self._working_url())
        # New flow files are added; deleted ones are never scheduled for deletion. Symbolic
        # links, hidden files and other files are never added.
        files = committable_files(self.datadir, path)
        if files:
            self.svn(["add", "--force", "--parents", "-q", "--", *files], action="add")
        pending = sorted(name for name, word in self.changes().items()
                         if is_under(name, path) and word not in ("untracked", "ignored"))
        if not pending:
            return [f"Nothing to commit: {path} has no changes since the last commit."]
        text = f"{message} (by {clean_author(author)} via thehat)"
        result = self.svn(["commit", "--force-log", "-m", text, "--", path], check=False)
        if result.returncode != 0:
            lowered = result.output.lower()
            if any(marker in lowered for marker in _OUT_OF_DATE):
                files = self._conflicting(result, pending)
                raise Conflict(conflict_message(files, self.mask(self._working_url())))
            raise self.failure("commit", result)
        number = revision(result)
        log.info("committed %s as revision %s of %s", path, number, self.shown_root)
        return [f"Committed {path} as revision {number} to {self.mask(self._working_url())}."]

    def _conflicting(self, result: Result, pending: list[str]) -> list[str]:
        """Return the pending files that the commit error names, or all of them."""
        named = _QUOTED.findall(result.output)
        files = [name for name in pending
                 if any(quoted == name or quoted.endswith("/" + name) for quoted in named)]
        return files or pending

    # -- status -----------------------------------------------------------------------------

    def changes(self) -> dict[str, str]:
        result = self.svn(["status", "--xml", "--no-ignore", "--", "."], action="status")
        try:
            document = ElementTree.fromstring(result.stdout)
        except ElementTree.ParseError as exc:
            raise VcsError(f"svn status gave output that is not XML: {exc}.") from exc
        words: dict[str, str] = {}
        for entry in document.iter("entry"):
            name = entry.get("path", "")
            status = entry.find("wc-status")
            if status is None or name in ("", "."):
                continue
            item = status.get("item", "none")
            if status.get("tree-conflicted") == "true" or status.get("props") == "conflicted":
                word = "conflict"
            elif item in ("normal", "none") and status.get("props") == "modified":
                word = "modified"
            else:
                word = _ITEM_WORDS.get(item, item)
            if word != "unchanged":
                words[name] = word
        return words

    # -- small helpers ----------------------------------------------------------------------

    def _working_url(self) -> str:
        result = self.svn(["info", "--show-item", "url", "--", "."], check=False)
        return result.stdout.strip() or self.shown_root

    def _relative(self, name: str) -> str:
        prefix = str(self.datadir) + "/"
        return name.removeprefix(prefix)


def revision(result: Result) -> str:
    """Return the revision number that svn reported, or '?' when it reported none.

    >>> revision(Result(0, "Updating '.':\\nAt revision 7.\\n", ""))
    '7'
    """
    numbers = _REVISION.findall(result.stdout)
    return numbers[-1] if numbers else "?"
