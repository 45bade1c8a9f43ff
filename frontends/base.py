"""The contract between the daemon and a chat medium (terminal, IRC, XMPP, ...).

A frontend connects to its medium, turns each message addressed to the bot into
`(conversation, user identity, text)` and hands it to `Daemon.handle`, then sends the reply lines
back where the message came from. Events caused elsewhere reach a conversation through its
`send` method. The daemon does the rest: parsing, the engine, storing, prompting.

Third-party frontends register a subclass of `Frontend` under the `thehat.frontends` entry point
group; `thehat run` starts every frontend whose config section is present.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from thehat.config import Config
    from thehat.daemon import Daemon


class Conversation(abc.ABC):
    """One place where people talk to the bot: the terminal, an IRC channel, an XMPP room.

    `id` is unique in the daemon and stable across restarts (for example `irc:#ops`), because
    the daemon remembers which run each conversation is attached to by this id.
    """

    id: str
    medium: str

    @abc.abstractmethod
    async def send(self, lines: Sequence[str]) -> None:
        """Deliver lines the daemon sends on its own (prompts, announcements), in order.

        Must not raise for a lost connection: queue or drop the lines and log instead.
        """


class Frontend(abc.ABC):
    """A chat medium adapter.

    The daemon constructs it with itself and the parsed configuration, then awaits `serve`,
    which runs until the medium is closed or `stop` is called. A frontend must never block the
    event loop and must never exit the process itself.
    """

    name: ClassVar[str]
    config_section: ClassVar[str | None] = None

    def __init__(self, daemon: Daemon, config: Config) -> None:
        self.daemon = daemon
        self.config = config

    @abc.abstractmethod
    async def serve(self) -> None:
        """Connect, handle messages until stopped, then disconnect cleanly."""

    async def stop(self) -> None:
        """Ask `serve` to return soon. The default does nothing."""
