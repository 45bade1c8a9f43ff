"""Discovery of frontends and renderers through entry points.

Installed packages register classes under the `thehat.frontends` and `thehat.renderers` entry
point groups, and this module loads every class of a group by its entry point name. The built-in
adapters are registered the same way (in pyproject.toml), so a third-party Matrix frontend or
Mermaid renderer needs no change here.
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points
from typing import Final, cast

from frontends.base import Frontend
from renderers.base import Renderer
from thehat.errors import TheHatError

log = logging.getLogger(__name__)

FRONTEND_GROUP: Final = "thehat.frontends"
RENDERER_GROUP: Final = "thehat.renderers"


class PluginError(TheHatError):
    """An entry point failed to import or does not name a usable class."""


def load_frontends() -> dict[str, type[Frontend]]:
    """Import every class registered under `thehat.frontends`, keyed by entry point name.

    Raises PluginError naming the entry point when one fails to import or is not a subclass
    of `frontends.base.Frontend`.
    """
    return {entry_point.name: cast("type[Frontend]", _load_subclass(entry_point, Frontend))
            for entry_point in _sorted_entry_points(FRONTEND_GROUP)}


def load_renderers() -> dict[str, type[Renderer]]:
    """Import every class registered under `thehat.renderers`, keyed by entry point name.

    Raises PluginError naming the entry point when one fails to import or is not a subclass
    of `renderers.base.Renderer`.
    """
    return {entry_point.name: cast("type[Renderer]", _load_subclass(entry_point, Renderer))
            for entry_point in _sorted_entry_points(RENDERER_GROUP)}


def _sorted_entry_points(group: str) -> list[EntryPoint]:
    # Sorted so that start-up order and error messages do not depend on installation order.
    return sorted(entry_points(group=group), key=lambda entry_point: entry_point.name)


def _load_subclass(entry_point: EntryPoint, base: type) -> type:
    try:
        loaded = entry_point.load()
    except Exception as exc:
        # Any exception can escape the import of a third-party module. Each one means that
        # this plugin is unusable, so the message names the entry point.
        raise PluginError(f"entry point {entry_point.name!r} in group {entry_point.group} "
                          f"({entry_point.value}) failed to import: {exc}; install the extra "
                          "it needs (for example pip install 'thehat[irc]') or uninstall the "
                          "package that provides it") from exc
    if not isinstance(loaded, type) or not issubclass(loaded, base):
        raise PluginError(f"entry point {entry_point.name!r} in group {entry_point.group} "
                          f"({entry_point.value}) is not a subclass of {base.__module__}."
                          f"{base.__qualname__}; fix or uninstall the package that provides it")
    log.debug("loaded %s entry point %s = %s", entry_point.group, entry_point.name,
              entry_point.value)
    return loaded
