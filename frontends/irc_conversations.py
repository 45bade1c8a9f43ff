"""The conversations of the IRC frontend and the records of its connection state.

A channel the bot is configured for is an `IrcChannel`, `irc:<channel in lower case>`; the
private conversation with one person is an `IrcQuery`, `irc:query:<nick in lower case>`.
Lines the daemon sends to a channel while the bot is not in it go to the channel's `AwayLog`,
and the frontend posts their summary when the bot is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from frontends.away import AwayLog
from frontends.base import Conversation
from frontends.irc_protocol import IrcIdentity, irc_lower

if TYPE_CHECKING:
    from frontends.irc import IrcFrontend


def clean_lines(lines: Sequence[str]) -> list[str]:
    """Split lines at line breaks and drop NUL, which IRC cannot carry inside a message.

    >>> clean_lines(["a\\nb", "c\\x00d", ""])
    ['a', 'b', 'cd', '']
    """
    cleaned: list[str] = []
    for line in lines:
        parts = line.replace("\x00", "").splitlines() or [""]
        cleaned.extend(parts)
    return cleaned


class IrcChannel(Conversation):
    """One configured channel: a conversation of its own, `irc:<channel in lower case>`."""

    medium = "irc"

    def __init__(self, frontend: IrcFrontend, name: str) -> None:
        self.name = name
        self.id = f"irc:{irc_lower(name)}"
        self.joined = False
        self.greeted = False
        self.away = AwayLog()
        self.last_identity: IrcIdentity | None = None
        self._frontend = frontend

    async def send(self, lines: Sequence[str]) -> None:
        if self.away.away:
            self.away.add(clean_lines(lines))
            return
        self._frontend.outbox.put(self.name, clean_lines(lines))


class IrcQuery(Conversation):
    """The private conversation with one person, `irc:query:<nick in lower case>`."""

    medium = "irc"

    def __init__(self, frontend: IrcFrontend, nick: str) -> None:
        self.nick = nick
        self.id = f"irc:query:{irc_lower(nick)}"
        self.last_identity: IrcIdentity | None = None
        self._frontend = frontend

    async def send(self, lines: Sequence[str]) -> None:
        # Held in the outbox while the connection is down, and sent once it is back.
        self._frontend.outbox.put(self.nick, clean_lines(lines))


@dataclass
class Request:
    """A command from a person, waiting for its turn."""

    conversation: IrcChannel | IrcQuery
    identity: IrcIdentity
    text: str
    reply_to: str


@dataclass
class Session:
    """The state of one connection, from connecting until it is lost."""

    connection: Any
    negotiation: Any
    candidates: Iterator[str]
    registered: asyncio.Event = field(default_factory=asyncio.Event)
    joins_settled: asyncio.Event = field(default_factory=asyncio.Event)
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    ready: bool = False
    pending_joins: set[str] = field(default_factory=set)
    last_reclaim: float = 0.0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
