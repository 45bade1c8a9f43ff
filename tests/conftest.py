"""Session-wide test settings.

A CI run stops at once when a program that the tests run for real is missing. Outside CI,
tests may skip when a program they need is missing. In CI that would turn a missing install
step into a green run, so the session ends with an error instead. scripts/test installs these
programs.

Every test runs with its own XDG data and state directories, so no test can write to the
real home directory through a default path.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping

import pytest

# Programs that the test suite runs for real, looked up on PATH.
REQUIRED_EXECUTABLES: list[str] = ["dot", "chromium", "ngircd", "inspircd", "atheme-services",
                                   "prosody", "git", "svn", "svnadmin"]
# Searched after PATH: Debian installs server programs such as ngircd in sbin.
SBIN_DIRECTORIES = ["/usr/local/sbin", "/usr/sbin", "/sbin"]


def running_in_ci(environ: Mapping[str, str] = os.environ) -> bool:
    """Return whether the CI environment variable is set to a true value.

    >>> running_in_ci({"CI": "true"}), running_in_ci({"CI": "false"}), running_in_ci({})
    (True, False, False)
    """
    return environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_sessionstart(session: pytest.Session) -> None:
    """End the session before collection when CI is set and a required program is missing."""
    if not running_in_ci():
        return
    search = os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRECTORIES])
    missing = [name for name in REQUIRED_EXECUTABLES if shutil.which(name, path=search) is None]
    if missing:
        pytest.exit(
            f"CI is set but these required programs are not on PATH: {', '.join(missing)}; "
            "scripts/test installs them (run it as root or with sudo)",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


@pytest.fixture(autouse=True)
def private_xdg_directories(tmp_path_factory: pytest.TempPathFactory,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Point XDG_DATA_HOME and XDG_STATE_HOME at a fresh temporary directory."""
    base = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_DATA_HOME", str(base / "data"))
    monkeypatch.setenv("XDG_STATE_HOME", str(base / "state"))
