"""Version control of the data directory against real git and Subversion repositories.

Each test drives the real daemon (with its SQLite store and lock file in the data directory)
through chat lines, and checks the result in a real repository: a bare git repository, or a
Subversion repository at a file:// URL. The HTTP servers for the authentication and timeout
cases listen on 127.0.0.1 only.
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from thehat.config import Config, EngineConfig, VcsConfig
from thehat.daemon import Daemon, open_daemon
from thehat.flowfile import load_flow, save_flow
from thehat.model import Flow, StepDef

from tests.helpers import FakeClock, toast_flow

# Seconds any helper command of a test may take.
TIMEOUT = 60
SEEDER = ["-c", "user.name=Seeder", "-c", "user.email=seeder@localhost"]
STORE_NAMES = ("thehat.db", "thehat.db-wal", "thehat.db-shm", "thehat.lock")
NOT_CONFIGURED = ("No version control is configured: set wfengine.vcs (class Git or "
                  "Subversion, root) in the configuration.")

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
needs_svn = pytest.mark.skipif(shutil.which("svn") is None or shutil.which("svnadmin") is None,
                               reason="svn and svnadmin (package subversion) are not installed")


def run(*arguments: str | Path, cwd: Path | None = None) -> str:
    """Run a helper command to its end and return its standard output."""
    result = subprocess.run([str(a) for a in arguments], cwd=cwd, capture_output=True,
                            text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{arguments}: {result.stderr}"
    return result.stdout


def second_flow() -> Flow:
    return Flow([StepDef("only", description="A flow with one step")])


# -- repositories -----------------------------------------------------------------------------

@pytest.fixture
def git_remote(tmp_path: Path) -> Path:
    """Return a bare git repository whose main branch contains toast.flow and second.flow."""
    bare = tmp_path / "flows.git"
    run("git", "init", "-q", "--bare", "--initial-branch=main", bare)
    seed = tmp_path / "seed"
    run("git", "clone", "-q", bare, seed)
    save_flow(toast_flow(), seed / "toast.flow")
    save_flow(second_flow(), seed / "second.flow")
    run("git", "add", "toast.flow", "second.flow", cwd=seed)
    run("git", *SEEDER, "commit", "-q", "-m", "Seed the flows", cwd=seed)
    run("git", "push", "-q", "origin", "HEAD:main", cwd=seed)
    return bare


@pytest.fixture
def svn_root(tmp_path: Path) -> str:
    """Return the trunk URL of a Subversion repository holding toast.flow and second.flow."""
    repository = tmp_path / "svnrepo"
    run("svnadmin", "create", repository)
    seed = tmp_path / "svnseed"
    (seed / "trunk").mkdir(parents=True)
    (seed / "branches").mkdir()
    save_flow(toast_flow(), seed / "trunk" / "toast.flow")
    save_flow(second_flow(), seed / "trunk" / "second.flow")
    url = repository.as_uri()
    run("svn", "import", "-q", "--non-interactive", "-m", "Seed the flows", seed, url)
    return url + "/trunk"


def make_svn_branch(trunk: str) -> None:
    """Copy trunk to branches/next (revision 2) and drop toast.flow there (revision 3)."""
    branch = trunk.removesuffix("/trunk") + "/branches/next"
    run("svn", "copy", "-q", "--non-interactive", "-m", "Branch next", trunk, branch)
    run("svn", "delete", "-q", "--non-interactive", "-m", "No toast on next",
        branch + "/toast.flow")


def git_daemon(tmp_path: Path, root: str | Path) -> Daemon:
    return make_daemon(tmp_path, VcsConfig("Git", str(root)))


def make_daemon(tmp_path: Path, vcs: VcsConfig | None) -> Daemon:
    """Open the real daemon (store and lock in the data directory) with version control."""
    datadir = tmp_path / "data"
    config = Config(engine=EngineConfig(datadir=datadir, timezone="UTC", vcs=vcs))
    return open_daemon(config, FakeClock())


@pytest.fixture
async def closing() -> Iterator[list[Daemon]]:
    """Collect daemons that the test opens and close them at its end."""
    daemons: list[Daemon] = []
    yield daemons  # type: ignore[misc]
    for daemon in daemons:
        await daemon.close()


def say(daemon: Daemon, text: str, admin: bool = True, user: str = "alice") -> str:
    return "\n".join(daemon.execute("tty:alice", user, text, admin=admin).lines)


def edit_toast(daemon: Daemon) -> None:
    """Load toast, add step x with a description and save it, all through chat."""
    assert "Loaded workflow 'toast'" in say(daemon, "load toast")
    say(daemon, "addstep x")
    say(daemon, "set x description hello from chat")
    assert "Saved workflow 'toast'" in say(daemon, "save")


def ls_words(daemon: Daemon) -> dict[str, str]:
    """Return the VCS column of ls by flow name."""
    lines = say(daemon, "ls").splitlines()
    assert lines[0].split()[-1] == "VCS", lines
    return {line.split()[0]: line.split()[-1] for line in lines[1:]}


# -- git --------------------------------------------------------------------------------------

@needs_git
async def test_git_edit_and_commit_reach_repository(tmp_path: Path, git_remote: Path,
                                                    closing: list[Daemon]) -> None:
    daemon = git_daemon(tmp_path, git_remote)
    closing.append(daemon)
    datadir = daemon.datadir.root

    reply = say(daemon, "checkout .")
    assert "Checked out branch main of" in reply
    assert list(load_flow(datadir / "toast.flow").steps) == list(toast_flow().steps)

    edit_toast(daemon)
    reply = say(daemon, "commit toast.flow add step x for the night shift")
    assert "Committed toast.flow as" in reply
    assert f"pushed it to {git_remote}" in reply
    assert "changes made in chat" not in reply

    log = run("git", f"--git-dir={git_remote}", "log", "-1", "--format=%s%n%an", "main")
    assert log.splitlines() == ["add step x for the night shift", "alice"]
    committed = run("git", f"--git-dir={git_remote}", "show", "main:toast.flow")
    (tmp_path / "committed.flow").write_text(committed, encoding="utf-8")
    step = load_flow(tmp_path / "committed.flow").steps["x"]
    assert step.description == "hello from chat"
    assert ls_words(daemon)["toast"] == "unchanged"

    say(daemon, "addstep unsaved")
    reply = say(daemon, "commit . nothing new")
    assert "Nothing to commit: . has no changes since the last commit." in reply
    assert "the active runs of toast have changes made in chat since their last save" in reply


@needs_git
async def test_git_commit_message_and_path_options(tmp_path: Path, git_remote: Path,
                                                   closing: list[Daemon]) -> None:
    daemon = git_daemon(tmp_path, git_remote)
    closing.append(daemon)
    say(daemon, "checkout .")
    save_flow(toast_flow(), daemon.datadir.root / "third.flow")
    save_flow(toast_flow(), daemon.datadir.root / "-dash.flow")

    assert "Committed third.flow as" in say(daemon, "commit third")
    log = run("git", f"--git-dir={git_remote}", "log", "-1", "--format=%s", "main")
    assert log.strip() == "Update from thehat"

    # Words that look like options stay a path and a message.
    assert "Committed -dash.flow as" in say(daemon, "commit -dash.flow --amend   is   text")
    log = run("git", f"--git-dir={git_remote}", "log", "-2", "--format=%s", "main")
    assert log.splitlines() == ["--amend   is   text", "Update from thehat"]
    files = run("git", f"--git-dir={git_remote}", "ls-tree", "--name-only", "main")
    assert "-dash.flow" in files.split()


@needs_git
async def test_git_store_files_never_committed(tmp_path: Path, git_remote: Path,
                                               closing: list[Daemon]) -> None:
    daemon = git_daemon(tmp_path, git_remote)
    closing.append(daemon)
    datadir = daemon.datadir.root
    say(daemon, "checkout .")
    edit_toast(daemon)
    (datadir / "ops").mkdir()
    save_flow(second_flow(), datadir / "ops" / "new.flow")
    assert (datadir / "thehat.db").exists()
    assert (datadir / "thehat.lock").exists()

    assert "Committed . as" in say(daemon, "commit . everything")
    files = run("git", f"--git-dir={git_remote}", "ls-tree", "-r", "--name-only", "main")
    assert sorted(files.split()) == ["ops/new.flow", "second.flow", "toast.flow"]
    for name in STORE_NAMES:
        reply = say(daemon, f"commit {name}")
        assert "belongs to thehat's run store" in reply, name


@needs_git
async def test_git_nothing_to_commit(tmp_path: Path, git_remote: Path,
                                     closing: list[Daemon]) -> None:
    daemon = git_daemon(tmp_path, git_remote)
    closing.append(daemon)
    say(daemon, "checkout .")
    before = run("git", f"--git-dir={git_remote}", "rev-parse", "main")

    reply = say(daemon, "commit toast.flow nothing changed")
    assert reply == "Nothing to commit: toast.flow has no changes since the last commit."
    assert run("git", f"--git-dir={git_remote}", "rev-parse", "main") == before


@needs_git
async def test_git_conflict_names_file_and_keeps_version(tmp_path: Path, git_remote: Path,
                                                         closing: list[Daemon]) -> None:
    daemon = git_daemon(tmp_path, git_remote)
    closing.append(daemon)
    datadir = daemon.datadir.root
    say(daemon, "checkout .")
    edit_toast(daemon)

    other = tmp_path / "other"
    run("git", "clone", "-q", git_remote, other)
    with (other / "toast.flow").open("a", encoding="utf-8") as file:
        file.write("- step: y\n  description: from another clone\n")
    run("git", *SEEDER, "commit", "-q", "-am", "Add y elsewhere", cwd=other)
    run("git", "push", "-q", "origin", "HEAD:main", cwd=other)
    theirs = run("git", f"--git-dir={git_remote}", "rev-parse", "main")
    head = run("git", "rev-parse", "HEAD", cwd=datadir)

    reply = say(daemon, "commit toast.flow my edit")
    assert reply.startswith(f"Conflict: the repository {git_remote} has changes of toast.flow")
    assert "nothing was committed" in reply
    assert run("git", f"--git-dir={git_remote}", "rev-parse", "main") == theirs
    assert run("git", "rev-parse", "HEAD", cwd=datadir) == head
    assert "x" in load_flow(datadir / "toast.flow").steps
    assert ls_words(daemon)["toast"] == "modified"

    # Taking the repository's version ends the conflict.
    reply = say(daemon, "checkout toast.flow")
    assert "replaced the local changes of toast.flow" in reply
    assert "y" in load_flow(datadir / "toast.flow").steps
    assert ls_words(daemon)["toast"] == "unchanged"


@needs_git
async def test_git_commit_rebases_onto_other_files(tmp_path: Path, git_remote: Path,
                                                   closing: list[Daemon]) -> None:
    daemon = git_daemon(tmp_path, git_remote)
    closing.append(daemon)
    say(daemon, "checkout .")
    edit_toast(daemon)
    other = tmp_path / "other"
    run("git", "clone", "-q", git_remote, other)
    save_flow(toast_flow(), other / "elsewhere.flow")
    run("git", "add", "elsewhere.flow", cwd=other)
    run("git", *SEEDER, "commit", "-q", "-m", "Add elsewhere", cwd=other)
    run("git", "push", "-q", "origin", "HEAD:main", cwd=other)

    assert "Committed toast.flow as" in say(daemon, "commit toast.flow mine")
    log = run("git", f"--git-dir={git_remote}", "log", "--format=%s", "main")
    assert log.splitlines()[:2] == ["mine", "Add elsewhere"]


@needs_git
async def test_git_ls_shows_statuses(tmp_path: Path, git_remote: Path,
                                     closing: list[Daemon]) -> None:
    daemon = git_daemon(tmp_path, git_remote)
    closing.append(daemon)
    datadir = daemon.datadir.root
    say(daemon, "checkout .")
    edit_toast(daemon)
    save_flow(second_flow(), datadir / "fresh.flow")

    words = ls_words(daemon)
    assert words == {"fresh": "untracked", "second": "unchanged", "toast": "modified"}


@needs_git
async def test_git_checkout_switches_branch(tmp_path: Path, git_remote: Path,
                                            closing: list[Daemon]) -> None:
    other = tmp_path / "other"
    run("git", "clone", "-q", git_remote, other)
    run("git", "checkout", "-q", "-b", "next", cwd=other)
    save_flow(second_flow(), other / "next-only.flow")
    run("git", "add", "next-only.flow", cwd=other)
    run("git", *SEEDER, "commit", "-q", "-m", "Branch next", cwd=other)
    run("git", "push", "-q", "origin", "next", cwd=other)
    daemon = git_daemon(tmp_path, git_remote)
    closing.append(daemon)
    datadir = daemon.datadir.root
    say(daemon, "checkout .")
    assert not (datadir / "next-only.flow").exists()

    assert "Switched the data directory to branch next" in say(daemon, "checkout . next")
    assert (datadir / "next-only.flow").exists()
    reply = say(daemon, "checkout . nosuch")
    assert "has no branch nosuch; its branches: main, next" in reply


@needs_git
async def test_git_first_checkout_keeps_local_flow(tmp_path: Path, git_remote: Path,
                                                   closing: list[Daemon]) -> None:
    daemon = git_daemon(tmp_path, git_remote)
    closing.append(daemon)
    datadir = daemon.datadir.root
    save_flow(second_flow(), datadir / "toast.flow")

    reply = say(daemon, "checkout .")
    assert "These files are in the data directory but not in version control" in reply
    assert "toast.flow" in reply
    assert not (datadir / ".git").exists()
    assert list(load_flow(datadir / "toast.flow").steps) == ["only"]
    assert (datadir / "thehat.db").exists()


@needs_git
async def test_git_not_working_copy(tmp_path: Path, git_remote: Path,
                                    closing: list[Daemon]) -> None:
    daemon = git_daemon(tmp_path, git_remote)
    closing.append(daemon)
    save_flow(toast_flow(), daemon.datadir.root / "toast.flow")

    reply = say(daemon, "commit toast.flow")
    assert "is not a Git working copy yet: say checkout . to fill it from" in reply
    assert "Version control: The data directory" in say(daemon, "ls")


@needs_git
async def test_git_wrong_root(tmp_path: Path, closing: list[Daemon]) -> None:
    daemon = git_daemon(tmp_path, tmp_path / "missing.git")
    closing.append(daemon)

    reply = say(daemon, "checkout .")
    assert "cannot reach the repository" in reply
    assert "Check wfengine.vcs.root" in reply
    assert not (daemon.datadir.root / ".git").exists()
    assert (daemon.datadir.root / "thehat.db").exists()


async def test_vcs_commands_need_admin(tmp_path: Path, git_remote: Path,
                                       closing: list[Daemon]) -> None:
    daemon = git_daemon(tmp_path, git_remote)
    closing.append(daemon)

    for line in ("checkout .", "commit toast.flow a message"):
        reply = say(daemon, line, admin=False, user="mallory")
        word = line.split()[0]
        assert reply == (f"{word} needs the admin role; mallory is an operator. Admins are "
                         "listed in wfengine.admins."), line
    assert not (daemon.datadir.root / ".git").exists()


async def test_vcs_not_configured(tmp_path: Path, closing: list[Daemon]) -> None:
    daemon = make_daemon(tmp_path, None)
    closing.append(daemon)
    save_flow(toast_flow(), daemon.datadir.root / "toast.flow")

    assert say(daemon, "checkout .") == NOT_CONFIGURED
    assert say(daemon, "commit . message") == NOT_CONFIGURED
    assert say(daemon, "ls").splitlines()[0].split() == ["NAME", "SIZE", "MODIFIED", "RUN"]


async def test_broken_vcs_setup_keeps_daemon(tmp_path: Path, closing: list[Daemon]) -> None:
    daemon = make_daemon(tmp_path, VcsConfig("Git", "https://bob:hunter22@host/\nx.git"))
    closing.append(daemon)
    save_flow(toast_flow(), daemon.datadir.root / "toast.flow")

    reply = say(daemon, "checkout .")
    assert reply.startswith("Version control is not available: wfengine.vcs.root")
    assert "bob:***@host" in reply
    assert "hunter22" not in reply
    assert "Loaded workflow 'toast'" in say(daemon, "load toast")
    assert say(daemon, "ls").splitlines()[-1].startswith("Version control: wfengine.vcs.root")


async def test_client_missing_names_package(tmp_path: Path, git_remote: Path,
                                            closing: list[Daemon],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    daemon = git_daemon(tmp_path, git_remote)
    closing.append(daemon)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    reply = say(daemon, "checkout .")
    assert reply == ("The git program is not installed, so Git version control cannot work: "
                     "install the Debian package git (apt-get install git).")


# -- servers for authentication and timeouts ----------------------------------------------------

class _Unauthorized(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="flows"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_GET
    do_OPTIONS = do_GET
    do_PROPFIND = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def unauthorized_port() -> Iterator[int]:
    """Serve HTTP on 127.0.0.1, responding to every request with 401 (Basic)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unauthorized)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """Accept TCP connections on 127.0.0.1 and never respond on them."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield listener.getsockname()[1]
    listener.close()


@needs_git
async def test_git_authentication_masks_password(tmp_path: Path, unauthorized_port: int,
                                                 closing: list[Daemon]) -> None:
    root = f"http://bob:hunter22secret@127.0.0.1:{unauthorized_port}/flows.git"
    daemon = git_daemon(tmp_path, root)
    closing.append(daemon)

    reply = say(daemon, "checkout .")
    assert "requires authentication, or rejected it" in reply
    assert f"http://bob:***@127.0.0.1:{unauthorized_port}/flows.git" in reply
    assert "hunter22secret" not in reply


@needs_git
async def test_git_timeout_stops_client(tmp_path: Path, silent_port: int,
                                        closing: list[Daemon]) -> None:
    daemon = git_daemon(tmp_path, f"http://127.0.0.1:{silent_port}/flows.git")
    closing.append(daemon)
    assert daemon.vcs is not None
    daemon.vcs.timeout = 2

    reply = say(daemon, "checkout .")
    assert "git fetch timed out after 2 s and was stopped" in reply
    assert not (daemon.datadir.root / ".git").exists()


# -- Subversion -------------------------------------------------------------------------------

def svn_daemon(tmp_path: Path, root: str) -> Daemon:
    return make_daemon(tmp_path, VcsConfig("Subversion", root))


@needs_svn
async def test_svn_edit_and_commit_reach_repository(tmp_path: Path, svn_root: str,
                                                    closing: list[Daemon]) -> None:
    daemon = svn_daemon(tmp_path, svn_root)
    closing.append(daemon)
    datadir = daemon.datadir.root

    reply = say(daemon, "checkout .")
    assert f"Checked out {svn_root} at revision 1 into {datadir}." == reply
    edit_toast(daemon)
    assert ls_words(daemon)["toast"] == "modified"

    reply = say(daemon, "commit toast.flow add step x for the night shift")
    assert f"Committed toast.flow as revision 2 to {svn_root}." in reply
    log = run("svn", "log", "--non-interactive", "-l", "1", svn_root)
    assert "add step x for the night shift (by alice via thehat)" in log
    committed = run("svn", "cat", "--non-interactive", f"{svn_root}/toast.flow")
    (tmp_path / "committed.flow").write_text(committed, encoding="utf-8")
    assert load_flow(tmp_path / "committed.flow").steps["x"].description == "hello from chat"


@needs_svn
async def test_svn_store_files_never_committed(tmp_path: Path, svn_root: str,
                                               closing: list[Daemon]) -> None:
    daemon = svn_daemon(tmp_path, svn_root)
    closing.append(daemon)
    datadir = daemon.datadir.root
    say(daemon, "checkout .")
    (datadir / "ops").mkdir()
    save_flow(second_flow(), datadir / "ops" / "new.flow")
    save_flow(second_flow(), datadir / "-dash.flow")
    edit_toast(daemon)

    assert "Committed . as revision 2" in say(daemon, "commit . --everything")
    files = run("svn", "list", "-R", "--non-interactive", svn_root)
    assert sorted(files.split()) == ["-dash.flow", "ops/", "ops/new.flow", "second.flow",
                                     "toast.flow"]
    log = run("svn", "log", "--non-interactive", "-l", "1", svn_root)
    assert "--everything (by alice via thehat)" in log


@needs_svn
async def test_svn_nothing_to_commit(tmp_path: Path, svn_root: str,
                                     closing: list[Daemon]) -> None:
    daemon = svn_daemon(tmp_path, svn_root)
    closing.append(daemon)
    say(daemon, "checkout .")

    reply = say(daemon, "commit toast.flow")
    assert reply == "Nothing to commit: toast.flow has no changes since the last commit."


@needs_svn
async def test_svn_conflict_names_file(tmp_path: Path, svn_root: str,
                                       closing: list[Daemon]) -> None:
    daemon = svn_daemon(tmp_path, svn_root)
    closing.append(daemon)
    datadir = daemon.datadir.root
    say(daemon, "checkout .")
    edit_toast(daemon)
    other = tmp_path / "other"
    run("svn", "checkout", "-q", "--non-interactive", svn_root, other)
    with (other / "toast.flow").open("a", encoding="utf-8") as file:
        file.write("- step: y\n")
    run("svn", "commit", "-q", "--non-interactive", "-m", "Add y elsewhere", other)

    reply = say(daemon, "commit toast.flow mine")
    assert reply.startswith(f"Conflict: the repository {svn_root} has changes of toast.flow")
    assert "x" in load_flow(datadir / "toast.flow").steps

    reply = say(daemon, "checkout toast.flow")
    assert "Checked out toast.flow at revision 2" in reply
    assert "replaced the local changes of toast.flow" in reply
    assert "y" in load_flow(datadir / "toast.flow").steps
    assert sorted(path.name for path in datadir.iterdir()
                  if path.name.startswith("toast")) == ["toast.flow"]


@needs_svn
async def test_svn_ls_shows_statuses(tmp_path: Path, svn_root: str,
                                     closing: list[Daemon]) -> None:
    daemon = svn_daemon(tmp_path, svn_root)
    closing.append(daemon)
    datadir = daemon.datadir.root
    say(daemon, "checkout .")
    edit_toast(daemon)
    save_flow(second_flow(), datadir / "fresh.flow")
    (datadir / "newdir").mkdir()
    save_flow(second_flow(), datadir / "newdir" / "inner.flow")

    words = ls_words(daemon)
    assert words == {"fresh": "untracked", "newdir/inner": "untracked", "second": "unchanged",
                     "toast": "modified"}


@needs_svn
async def test_svn_branch_switch(tmp_path: Path, svn_root: str,
                                 closing: list[Daemon]) -> None:
    make_svn_branch(svn_root)
    daemon = svn_daemon(tmp_path, svn_root)
    closing.append(daemon)
    datadir = daemon.datadir.root
    say(daemon, "checkout .")

    reply = say(daemon, "checkout . next")
    assert "Switched the data directory to branch next" in reply
    assert not (datadir / "toast.flow").exists()
    assert (datadir / "second.flow").exists()
    assert "Branch nosuch is not in the repository" in say(daemon, "checkout . nosuch")


@needs_svn
async def test_svn_not_working_copy_and_wrong_root(tmp_path: Path,
                                                   closing: list[Daemon]) -> None:
    root = (tmp_path / "missing-repository").as_uri()
    daemon = svn_daemon(tmp_path, root)
    closing.append(daemon)
    save_flow(toast_flow(), daemon.datadir.root / "toast.flow")

    assert "is not a Subversion working copy yet" in say(daemon, "commit toast.flow")
    reply = say(daemon, "checkout .")
    assert f"cannot reach the repository {root}" in reply
    assert not (daemon.datadir.root / ".svn").exists()


@needs_svn
async def test_svn_authentication_masks_password(tmp_path: Path, unauthorized_port: int,
                                                 closing: list[Daemon]) -> None:
    root = f"http://bob:hunter22secret@127.0.0.1:{unauthorized_port}/svn/flows"
    daemon = svn_daemon(tmp_path, root)
    closing.append(daemon)

    reply = say(daemon, "checkout .")
    assert "requires authentication, or rejected it" in reply
    assert "hunter22secret" not in reply


# -- paths that lead outside the data directory ------------------------------------------------

@needs_git
async def test_paths_outside_datadir_refused(tmp_path: Path, git_remote: Path,
                                             closing: list[Daemon]) -> None:
    daemon = git_daemon(tmp_path, git_remote)
    closing.append(daemon)
    datadir = daemon.datadir.root
    say(daemon, "checkout .")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    save_flow(toast_flow(), outside / "secret.flow")
    (tmp_path / "x.flow").write_text("- step: untouched\n", encoding="utf-8")
    os.symlink(outside / "secret.flow", datadir / "link.flow")
    os.symlink(outside, datadir / "linkdir")
    watched = [outside / "secret.flow", tmp_path / "x.flow"]
    before = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in watched}

    refusals = {
        "load ../../etc/passwd": "Invalid flow name",
        "load /etc/passwd": "Invalid flow name",
        "save ../x": "Invalid flow name",
        "checkout ../x": "Invalid path '../x'",
        "commit /etc": "Invalid path '/etc'",
        "commit ../x.flow": "Invalid path '../x.flow'",
        "load link": "leads outside the data directory",
        "checkout link.flow": "leads outside the data directory",
        "commit link.flow": "leads outside the data directory",
        "commit link": "leads outside the data directory",
        "commit linkdir/secret.flow": "leads outside the data directory",
        "checkout linkdir": "leads outside the data directory",
    }
    say(daemon, "new scratch")
    for line, expected in refusals.items():
        assert expected in say(daemon, line), line
    assert "outside the data directory" in say(daemon, "save link")

    names = [line.split()[0] for line in say(daemon, "ls").splitlines()[1:]]
    assert names == ["second", "toast"]
    for path, (content, mtime) in before.items():
        assert path.read_bytes() == content, path
        assert path.stat().st_mtime_ns == mtime, path


def test_ls_skips_links_outside(tmp_path: Path) -> None:
    datadir = tmp_path / "data"
    datadir.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    save_flow(toast_flow(), datadir / "toast.flow")
    save_flow(toast_flow(), outside / "secret.flow")
    os.symlink(outside / "secret.flow", datadir / "link.flow")
    os.symlink(outside, datadir / "linkdir")
    daemon = Daemon(Config(engine=EngineConfig(datadir=datadir, timezone="UTC")), FakeClock())

    lines = say(daemon, "ls").splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["toast"]
    assert "secret" not in "\n".join(lines)


# -- the run store and files that must never be published -------------------------------------

@needs_git
async def test_git_repository_tracking_store_refused(tmp_path: Path, git_remote: Path,
                                                     closing: list[Daemon]) -> None:
    seed = tmp_path / "seed"
    (seed / "thehat.db").write_bytes(b"GARBAGE")
    run("git", "add", "-f", "thehat.db", cwd=seed)
    run("git", *SEEDER, "commit", "-q", "-m", "Track a store by mistake", cwd=seed)
    run("git", "push", "-q", "origin", "HEAD:main", cwd=seed)
    daemon = git_daemon(tmp_path, git_remote)
    closing.append(daemon)
    store = daemon.datadir.root / "thehat.db"
    before = store.read_bytes()[:16]

    reply = say(daemon, "checkout .")

    assert "contains thehat.db, thehat's own run store" in reply
    assert store.read_bytes()[:16] == before
    assert not (daemon.datadir.root / ".git").exists()


@needs_svn
async def test_svn_repository_tracking_store_refused(tmp_path: Path, svn_root: str,
                                                     closing: list[Daemon]) -> None:
    (tmp_path / "junk").write_bytes(b"GARBAGE")
    run("svn", "import", "-q", "--non-interactive", "-m", "Track a store by mistake",
        tmp_path / "junk", svn_root + "/thehat.db")
    daemon = make_daemon(tmp_path, VcsConfig("Subversion", svn_root))
    closing.append(daemon)
    store = daemon.datadir.root / "thehat.db"
    before = store.read_bytes()[:16]

    reply = say(daemon, "checkout .")

    assert "contains thehat.db, thehat's own run store" in reply
    assert store.read_bytes()[:16] == before


@needs_git
async def test_git_commit_adds_only_flow_files(tmp_path: Path, git_remote: Path,
                                               closing: list[Daemon]) -> None:
    daemon = git_daemon(tmp_path, git_remote)
    closing.append(daemon)
    datadir = daemon.datadir.root
    say(daemon, "checkout .")
    outside = tmp_path / "outside.flow"
    save_flow(second_flow(), outside)
    (datadir / "linked.flow").symlink_to(outside)
    (datadir / ".env").write_text("PASSWORD=x\n", encoding="utf-8")
    (datadir / "secret.txt").write_text("x\n", encoding="utf-8")
    save_flow(second_flow(), datadir / "new.flow")

    reply = say(daemon, "commit . add the new flow")
    files = run("git", f"--git-dir={git_remote}", "ls-tree", "--name-only", "main").split()

    assert "Committed . as" in reply
    assert "new.flow" in files
    assert not {"linked.flow", ".env", "secret.txt", "thehat.db"} & set(files)


@needs_svn
async def test_svn_relative_datadir(tmp_path: Path, svn_root: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = Config(engine=EngineConfig(datadir=Path("data"), timezone="UTC",
                                        vcs=VcsConfig("Subversion", svn_root)))
    daemon = open_daemon(config, FakeClock())
    try:
        say(daemon, "checkout .")

        assert (tmp_path / "data" / "toast.flow").is_file()
        assert not (tmp_path / "data" / "data").exists()
        assert "Loaded workflow 'toast'" in say(daemon, "load toast")
    finally:
        await daemon.close()
