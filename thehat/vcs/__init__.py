"""Version control of the data directory: flow files kept in a git or Subversion repository.

`make_vcs` builds the implementation that `wfengine.vcs` names. Every operation runs the
client program and blocks until it ends or times out, so the daemon calls them in its
command worker thread.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from thehat.config import VcsConfig
from thehat.vcs.base import (DEFAULT_TIMEOUT, ClientMissing, Conflict, NotWorkingCopy, VcsError,
                             VersionControl, mask_secrets)
from thehat.vcs.git import Git
from thehat.vcs.subversion import Subversion

log = logging.getLogger(__name__)

IMPLEMENTATIONS: dict[str, type[VersionControl]] = {"Git": Git, "Subversion": Subversion}

__all__ = ["ClientMissing", "Conflict", "Git", "NotWorkingCopy", "Subversion", "VcsError",
           "VersionControl", "make_vcs"]


def make_vcs(config: VcsConfig | None, datadir: Path,
             timeout: float = DEFAULT_TIMEOUT) -> VersionControl | None:
    """Build the version control that `config` names for `datadir`; None when not configured.

    Raises VcsError for a root that no client could use (blank, or containing a line break).
    A missing client program is only logged here, because installing it later fixes it.
    """
    if config is None:
        return None
    implementation = IMPLEMENTATIONS.get(config.kind)
    if implementation is None:
        raise VcsError(f"wfengine.vcs.class is {config.kind!r}; accepted: "
                       f"{', '.join(IMPLEMENTATIONS)}.")
    root = config.root
    if root is not None and (not root.strip() or any(ch in root for ch in "\r\n\0")):
        raise VcsError(f"wfengine.vcs.root {mask_secrets(root)!r} is not a repository URL.")
    vcs = implementation(datadir, root, timeout)
    if shutil.which(vcs.client) is None:
        log.warning("the %s program is not installed, so %s version control will fail until "
                    "the Debian package %s is installed", vcs.client, vcs.label, vcs.package)
    return vcs
