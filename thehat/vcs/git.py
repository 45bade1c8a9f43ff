"""Flows kept in git: the data directory is a working copy whose remote `origin` is the root.

The first checkout runs `git init`, adds the root as `origin`, fetches and checks out a branch
in place, so the run store and lock file already in the directory stay where they are
(`.git/info/exclude` keeps them out of every commit). A commit is pushed at once. When the
push or the rebase onto newer commits fails, the commit is undone, so the local branch never
contains commits that the repository lacks.

NOTE: `root` is used only by the first checkout. Changing wfengine.vcs.root later does not
change the `origin` of an existing working copy.
"""

from __future__ import annotations

import logging
import shutil
from typing import ClassVar, Final

from thehat.vcs.base import (IGNORED_NAMES, STORE_FILES, WHOLE_DIRECTORY, Conflict, Result,
                             VcsError, VersionControl, clean_author, committable_files,
                             conflict_message, is_under, store_problem)

log = logging.getLogger(__name__)

REMOTE: Final = "origin"
DEFAULT_BRANCH: Final = "main"
COMMITTER: Final = ("thehat", "thehat@localhost")
# porcelain v1 status letters, from the most to the least important.
_STATUS_WORDS: Final = (("A", "added"), ("D", "deleted"), ("R", "renamed"), ("C", "added"),
                        ("M", "modified"), ("T", "modified"))


class Git(VersionControl):
    """The data directory as a git working copy; `root` is the URL or path of the remote."""

    label: ClassVar[str] = "Git"
    client: ClassVar[str] = "git"
    package: ClassVar[str] = "git"
    cleanup_hint: ClassVar[str] = "delete .git/index.lock in the data directory"

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env.update({
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            # Never use a repository above the data directory.
            "GIT_CEILING_DIRECTORIES": str(self.datadir.resolve().parent),
            "GIT_SSH_COMMAND": "ssh -o BatchMode=yes",
        })
        return env

    def git(self, arguments: list[str], action: str | None = None, check: bool = True) -> Result:
        """Run git in the data directory; unless `check` is false, raise on failure."""
        settings = ["-c", "core.quotePath=false", "-c", f"user.name={COMMITTER[0]}",
                    "-c", f"user.email={COMMITTER[1]}", "-c", "advice.detachedHead=false",
                    "-c", f"init.defaultBranch={DEFAULT_BRANCH}"]
        result = self.run(settings + arguments, arguments[0])
        if check and result.returncode != 0:
            raise self.failure(action or arguments[0], result)
        return result

    def is_working_copy(self) -> bool:
        return (self.datadir / ".git").is_dir()

    # -- checkout ---------------------------------------------------------------------------

    def _checkout_in_copy(self, path: str, branch: str | None) -> list[str]:
        if branch is not None and path == WHOLE_DIRECTORY:
            return self._switch(branch)
        return self._update(path, branch)

    def _first_checkout(self, branch: str | None) -> list[str]:
        root = self.require_root()
        try:
            self.datadir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VcsError(f"Cannot create the data directory {self.datadir}: "
                           f"{exc.strerror}.") from exc
        self.git(["init", "-q"])
        try:
            self._write_exclude()
            self.git(["remote", "add", "--", REMOTE, root])
            self._fetch()
            branches = self._remote_branches()
            if not branches:
                name = branch or DEFAULT_BRANCH
                self.git(["symbolic-ref", "HEAD", f"refs/heads/{name}"])
                log.info("made %s a git working copy of the empty repository %s",
                         self.datadir, self.shown_root)
                return [f"The repository {self.shown_root} is empty. The data directory is now "
                        f"a git working copy on branch {name}; commit <path> puts flows into "
                        "it."]
            name = branch or self._remote_default(branches)
            if name not in branches:
                raise VcsError(f"The repository {self.shown_root} has no branch {name}; its "
                               f"branches: {', '.join(branches)}.")
            self._refuse_store(f"{REMOTE}/{name}")
            self._checkout_branch(name)
        except BaseException:
            # Only the .git directory made above goes, so a later checkout starts afresh.
            shutil.rmtree(self.datadir / ".git", ignore_errors=True)
            raise
        log.info("checked out branch %s of %s into %s", name, self.shown_root, self.datadir)
        return [f"Checked out branch {name} of {self.shown_root} (commit {self._short('HEAD')}) "
                f"into {self.datadir}."]

    def _write_exclude(self) -> None:
        exclude = self.datadir / ".git" / "info" / "exclude"
        exclude.parent.mkdir(parents=True, exist_ok=True)
        with exclude.open("a", encoding="utf-8") as file:
            file.write("# thehat's run store, lock and renderings are never committed.\n")
            file.writelines(f"/{name}\n" for name in IGNORED_NAMES)

    def _switch(self, branch: str) -> list[str]:
        self._fetch()
        local = self._ref_exists(f"refs/heads/{branch}")
        if not local and not self._ref_exists(f"refs/remotes/{REMOTE}/{branch}"):
            raise VcsError(f"The repository {self.shown_root} has no branch {branch}; its "
                           f"branches: {', '.join(self._remote_branches()) or 'none'}.")
        # The local branch is checked out, then fast-forwarded to the repository's.
        if local:
            self._refuse_store(branch)
        if self._ref_exists(f"refs/remotes/{REMOTE}/{branch}"):
            self._refuse_store(f"{REMOTE}/{branch}")
        if local:
            result = self.git(["checkout", "-q", branch, "--"], check=False)
            if result.returncode != 0:
                raise self._checkout_failure(branch, result)
        else:
            self._checkout_branch(branch)
        lines = [f"Switched the data directory to branch {branch} "
                 f"(commit {self._short('HEAD')})."]
        return lines + self._fast_forward(branch)

    def _update(self, path: str, branch: str | None) -> list[str]:
        self._fetch()
        current = self._current_branch()
        target = branch or current
        remote = f"{REMOTE}/{target}"
        if not self._ref_exists(f"refs/remotes/{remote}"):
            known = ", ".join(self._remote_branches()) or "none yet; commit creates one"
            raise VcsError(f"The repository {self.shown_root} has no branch {target}; its "
                           f"branches: {known}.")
        self._refuse_store(remote)
        if path != WHOLE_DIRECTORY and self.git(["cat-file", "-e", f"{remote}:{path}"],
                                                check=False).returncode != 0:
            raise VcsError(f"{path} is not in branch {target} of the repository "
                           f"{self.shown_root}; nothing was checked out.")
        replaced = sorted(name for name, word in self.changes().items()
                          if is_under(name, path) and word in ("modified", "conflict"))
        self.git(["checkout", "-q", remote, "--", path])
        log.info("checked out %s from %s into %s", path, remote, self.datadir)
        lines = [f"Checked out {path} from branch {target} of {self.shown_root} "
                 f"(commit {self._short(remote)})."]
        if replaced:
            lines.append(f"The repository's version replaced the local changes of "
                         f"{', '.join(replaced)}.")
        if target == current:
            lines += self._fast_forward(current)
        return lines

    def _refuse_store(self, ref: str) -> None:
        """Raise VcsError when `ref` tracks a store file, which git would write over ours."""
        listed = self.git(["ls-tree", "--name-only", ref, "--", *STORE_FILES], "ls-tree")
        problem = store_problem(listed.stdout.split(), self.shown_root)
        if problem is not None:
            raise VcsError(problem)

    def _checkout_branch(self, name: str) -> None:
        result = self.git(["checkout", "-q", "-B", name, "--track", f"{REMOTE}/{name}", "--"],
                          check=False)
        if result.returncode != 0:
            raise self._checkout_failure(name, result)

    def _checkout_failure(self, branch: str, result: Result) -> VcsError:
        files = listed_files(result)
        if "untracked working tree files would be overwritten" in result.stderr:
            return Conflict(f"These files are in the data directory but not in version control, "
                            f"and branch {branch} of the repository has its own version of "
                            f"them: {', '.join(files)}. Nothing was checked out. Move or rename "
                            "them (for a flow: load it and save it under another name), then "
                            "check out again.")
        if "local changes to the following files would be overwritten" in result.stderr:
            return Conflict(f"Local changes of {', '.join(files)} would be lost by switching to "
                            f"branch {branch}: commit them, or say checkout <path> to drop "
                            "them, then switch again.")
        return self.failure("checkout", result)

    def _fast_forward(self, branch: str) -> list[str]:
        """Fast-forward the branch to the repository's newest commit when no local change blocks it."""
        remote = f"{REMOTE}/{branch}"
        if not self._ref_exists("HEAD"):
            self._checkout_branch(branch)
            return [f"The working copy is now at commit {self._short('HEAD')}."]
        if self._rev("HEAD") == self._rev(remote):
            return []
        if self.git(["merge-base", "--is-ancestor", "HEAD", remote],
                    check=False).returncode != 0:
            return [f"Note: branch {branch} has commits that are not in the repository, so the "
                    f"working copy stays at commit {self._short('HEAD')}."]
        result = self.git(["merge", "-q", "--ff-only", remote], check=False)
        if result.returncode != 0:
            files = ", ".join(listed_files(result)) or "some files"
            return [f"Note: the working copy stays at commit {self._short('HEAD')}, because "
                    f"newer versions of {files} would replace their local changes. Commit "
                    "them, or check them out to take the repository's versions."]
        return [f"Updated the working copy to commit {self._short('HEAD')}."]

    # -- commit -----------------------------------------------------------------------------

    def commit(self, path: str, message: str, author: str) -> list[str]:
        path = self.checked_path(path)
        self.require_working_copy()
        if not (self.datadir / path).exists():
            raise VcsError(f"{path} does not exist in the data directory; ls lists the flow "
                           "files.")
        branch = self._current_branch()
        if self._ref_exists("HEAD"):
            self._refuse_store("HEAD")
        # New and changed flow files are staged; deleted ones are not, so commits never
        # delete. Symbolic links, hidden files and other files are never added.
        files = committable_files(self.datadir, path)
        if files:
            self.git(["add", "--ignore-removal", "--", *files], action="add")
        staged = self._staged()
        outside = [name for name in staged if not is_under(name, path)]
        if outside:
            self._unstage(outside)
        if len(outside) == len(staged):
            return [f"Nothing to commit: {path} has no changes since the last commit."]
        self.git(["commit", "-q", "-m", message,
                  f"--author={clean_author(author)} <{COMMITTER[1]}>"], action="commit")
        if REMOTE not in self.git(["remote"]).stdout.split():
            return [f"Committed {path} as {self._short('HEAD')} on branch {branch}. The working "
                    "copy has no remote, so the commit stays in the data directory."]
        try:
            self._publish(branch)
        except VcsError:
            self._undo_commit()
            raise
        log.info("committed %s as %s on branch %s and pushed it to %s", path,
                 self._short("HEAD"), branch, self.shown_root)
        return [f"Committed {path} as {self._short('HEAD')} on branch {branch} and pushed it to "
                f"{self.shown_root}."]

    def _publish(self, branch: str) -> None:
        """Rebase the new commit onto the repository's newest one if needed, then push it."""
        self._fetch()
        remote = f"{REMOTE}/{branch}"
        if self._ref_exists(f"refs/remotes/{remote}"):
            self._refuse_store(remote)
        if self._ref_exists(f"refs/remotes/{remote}") and self.git(
                ["merge-base", "--is-ancestor", remote, "HEAD"], check=False).returncode != 0:
            result = self.git(["rebase", "-q", "--autostash", remote], check=False)
            if result.returncode != 0:
                conflicted = self._unmerged() or ["the committed files"]
                self.git(["rebase", "--abort"], check=False)
                raise Conflict(conflict_message(conflicted, self.shown_root))
        result = self.git(["push", "-q", "--set-upstream", REMOTE, f"HEAD:refs/heads/{branch}"],
                          check=False)
        if result.returncode == 0:
            return
        if "rejected" in result.stderr or "fetch first" in result.stderr:
            raise Conflict(f"The repository {self.shown_root} changed while committing, so "
                           "nothing was committed; say commit again.")
        error = self.failure("push", result)
        raise type(error)(f"{error} Nothing was committed; the changes stay in the data "
                          "directory.")

    def _undo_commit(self) -> None:
        if self._ref_exists("HEAD~1"):
            self.git(["reset", "-q", "--soft", "HEAD~1"])
        else:
            self.git(["update-ref", "-d", "HEAD"])
        log.info("undid the unpublished commit in %s", self.datadir)

    # -- status -----------------------------------------------------------------------------

    def changes(self) -> dict[str, str]:
        result = self.git(["status", "--porcelain=v1", "-z", "--untracked-files=all",
                           "--ignored=matching"], action="status")
        words: dict[str, str] = {}
        fields = iter(result.stdout.split("\0"))
        for field in fields:
            if len(field) < 4:
                continue
            code, name = field[:2], field[3:].rstrip("/")
            if code[0] in "RC":
                next(fields, None)
            words[name] = status_word(code)
        return words

    # -- small queries ----------------------------------------------------------------------

    def _fetch(self) -> None:
        self.git(["fetch", "-q", "--prune", REMOTE], action="fetch")

    def _remote_branches(self) -> list[str]:
        result = self.git(["for-each-ref", "--format=%(refname:strip=3)",
                           f"refs/remotes/{REMOTE}/"])
        return sorted(name for name in result.stdout.split() if name != "HEAD")

    def _remote_default(self, branches: list[str]) -> str:
        """Return the branch the remote's HEAD names, else main, master or the first one."""
        if self.git(["remote", "set-head", REMOTE, "--auto"], check=False).returncode == 0:
            result = self.git(["symbolic-ref", "--short", f"refs/remotes/{REMOTE}/HEAD"],
                              check=False)
            name = result.stdout.strip().removeprefix(f"{REMOTE}/")
            if name in branches:
                return name
        return next((name for name in ("main", "master") if name in branches), branches[0])

    def _current_branch(self) -> str:
        result = self.git(["symbolic-ref", "--short", "-q", "HEAD"], check=False)
        if result.returncode != 0:
            raise VcsError("The data directory's git working copy is on no branch (detached "
                           "HEAD); say checkout . <branch> to pick one.")
        return result.stdout.strip()

    def _ref_exists(self, ref: str) -> bool:
        return self.git(["rev-parse", "-q", "--verify", ref + "^{commit}"],
                        check=False).returncode == 0

    def _rev(self, ref: str) -> str:
        return self.git(["rev-parse", "--verify", ref + "^{commit}"]).stdout.strip()

    def _short(self, ref: str) -> str:
        return self.git(["rev-parse", "--short", "--verify", ref + "^{commit}"]).stdout.strip()

    def _staged(self) -> list[str]:
        result = self.git(["diff", "--cached", "--name-only", "-z"], action="diff")
        return [name for name in result.stdout.split("\0") if name]

    def _unstage(self, names: list[str]) -> None:
        if self._ref_exists("HEAD"):
            self.git(["reset", "-q", "--", *names])
        else:
            self.git(["rm", "-q", "--cached", "--", *names])

    def _unmerged(self) -> list[str]:
        result = self.git(["diff", "--name-only", "--diff-filter=U", "-z"], check=False)
        return sorted(name for name in result.stdout.split("\0") if name)


def status_word(code: str) -> str:
    """Translate a porcelain v1 status code (two letters) into a status word.

    >>> status_word("??"), status_word("AM"), status_word(" M"), status_word("UU")
    ('untracked', 'added', 'modified', 'conflict')
    """
    if code == "??":
        return "untracked"
    if code == "!!":
        return "ignored"
    if "U" in code or code in ("AA", "DD"):
        return "conflict"
    for letter, word in _STATUS_WORDS:
        if letter in code:
            return word
    return "unchanged"


def listed_files(result: Result) -> list[str]:
    """Return the file names git lists, one per tab-indented line, in an error message."""
    return [line.strip() for line in result.stderr.splitlines() if line.startswith("\t")]
