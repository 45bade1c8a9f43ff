"""The contract of a renderer: a run in, the bytes of one view out.

Renderers are pure: they read the run they are given and never touch files, sockets or
subprocesses. The daemon decides when to render and where the bytes go. Third-party renderers
register a `Renderer` subclass under the `thehat.renderers` entry point group.
"""

from __future__ import annotations

import abc
from datetime import tzinfo
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from thehat.engine import Run


class Renderer(abc.ABC):
    """One view of a run, such as a text dump, a graph or a calendar.

    `suffix` is appended to the flow's base name to name the output file; `media_type` is
    what the web site sends it as.
    """

    name: ClassVar[str]
    suffix: ClassVar[str]
    media_type: ClassVar[str]

    @abc.abstractmethod
    def render(self, run: Run, zone: tzinfo | None = None) -> bytes:
        """Return the view of `run`; times are shown in `zone` (None: the local zone)."""
