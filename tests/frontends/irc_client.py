"""A person on IRC, for the tests: an `irc.client_aio` client that records what it receives.

Every line the client receives is kept as raw bytes too, so a test can check that each line
the bot sent is valid UTF-8 and within the 512-byte limit. Waiting is by a cursor over the
recorded events: `next_event` returns the first event after the cursor that matches, and
moves the cursor past it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import irc.client
import irc.client_aio
from jaraco.stream import buffer

from tests.servers import HOST

TIMEOUT = 20.0


@dataclass(frozen=True)
class Seen:
    """One event the client saw: kind (pubmsg, privmsg, join, nick, quit, ...), the sender's
    nick, the target and the text or first argument."""

    kind: str
    nick: str
    target: str
    text: str


class RecordingLineBuffer(buffer.LineBuffer):  # type: ignore[misc]
    """Split lines, record each one's bytes in `sink`, and decode it with replacement."""

    sink: ClassVar[list[bytes]] = []

    def lines(self) -> Any:
        for line in super().lines():
            self.sink.append(line)
            yield line.decode("utf-8", "replace")


class ChatClient:
    """A test participant named `nick` on the ngircd at 127.0.0.1:`port`; `password` is the
    server password (PASS), for a server that requires one."""

    def __init__(self, nick: str, port: int, password: str | None = None) -> None:
        self.nick = nick
        self.port = port
        self.password = password
        self.seen: list[Seen] = []
        self.raw_lines: list[bytes] = []
        self.cursor = 0
        # Per channel: how many of the bot's lines a test has read (see test_irc.next_line).
        self.line_cursors: dict[str, int] = {}
        self._changed = asyncio.Event()
        self.connection: Any = None
        self._welcomed = asyncio.Event()
        self._names_done: set[str] = set()

    async def connect(self, channels: Sequence[str] = ()) -> ChatClient:
        """Connect, register and join `channels`; return self."""
        reactor = irc.client_aio.AioReactor(loop=asyncio.get_running_loop())
        for kind in ("pubmsg", "privmsg", "pubnotice", "privnotice", "join", "part", "quit",
                     "nick", "kick", "welcome", "endofnames", "nicknameinuse", "error",
                     "disconnect"):
            reactor.add_global_handler(kind, self._record)
        self.connection = reactor.server()
        self.connection.buffer_class = type("Recording", (RecordingLineBuffer,),
                                            {"sink": self.raw_lines})
        await self.connection.connect(HOST, self.port, self.nick, password=self.password,
                                      username=self.nick, ircname=self.nick)
        await asyncio.wait_for(self._welcomed.wait(), TIMEOUT)
        for channel in channels:
            await self.join(channel)
        return self

    async def join(self, channel: str) -> None:
        self.connection.join(channel)
        await self.wait_until(lambda: channel.lower() in self._names_done, f"joined {channel}")

    def _record(self, connection: Any, event: Any) -> None:
        nick = irc.client.NickMask(event.source).nick if event.source else ""
        arguments = [str(argument) for argument in (event.arguments or [])]
        if event.type == "welcome":
            self._welcomed.set()
        if event.type == "endofnames" and arguments:
            self._names_done.add(arguments[0].lower())
        text = arguments[0] if arguments else ""
        self.seen.append(Seen(event.type, nick, str(event.target or ""), text))
        self._changed.set()

    def say(self, target: str, text: str) -> None:
        self.connection.privmsg(target, text)

    def send_bytes(self, data: bytes) -> None:
        """Write raw bytes to the server, bypassing the library's encoding."""
        self.connection.transport.write(data)

    async def wait_until(self, condition: Callable[[], object], description: str,
                         timeout: float = TIMEOUT) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"{self.nick}: timed out after {timeout:.0f} s waiting "
                                     f"until {description}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def next_event(self, predicate: Callable[[Seen], bool], description: str,
                         timeout: float = TIMEOUT) -> Seen:
        """Return the first event after the cursor that matches, and move the cursor past it."""
        found: list[Seen] = []

        def matched() -> bool:
            for index in range(self.cursor, len(self.seen)):
                if predicate(self.seen[index]):
                    found.append(self.seen[index])
                    self.cursor = index + 1
                    return True
            return False

        await self.wait_until(matched, description, timeout)
        return found[0]

    async def next_message(self, sender: str, target: str, description: str = "",
                           timeout: float = TIMEOUT,
                           text: Callable[[str], bool] = lambda _: True) -> str:
        """Return the text of the next message from `sender` to `target` that passes `text`."""
        event = await self.next_event(
            lambda seen: seen.kind in ("pubmsg", "privmsg") and seen.nick.lower() ==
            sender.lower() and seen.target.lower() == target.lower() and text(seen.text),
            description or f"a message from {sender} to {target}", timeout)
        return event.text

    async def collect(self, sender: str, target: str, until: Callable[[str], bool],
                      description: str, timeout: float = TIMEOUT) -> list[str]:
        """Return the texts of messages from `sender` to `target`, up to the one that passes
        `until` (which is not included)."""
        texts: list[str] = []
        while True:
            text = await self.next_message(sender, target, description, timeout)
            if until(text):
                return texts
            texts.append(text)

    def messages(self, sender: str, target: str) -> list[str]:
        """Every message text seen so far from `sender` to `target`."""
        return [seen.text for seen in self.seen if seen.kind in ("pubmsg", "privmsg")
                and seen.nick.lower() == sender.lower()
                and seen.target.lower() == target.lower()]

    async def close(self) -> None:
        """Quit and wait until the server closed the connection, so that the nick is free."""
        connection = self.connection
        if connection is None or not connection.connected:
            return
        connection.quit("test done")
        try:
            await self.wait_until(lambda: not connection.connected, "the server hung up", 5.0)
        except AssertionError:
            connection.disconnect("test done")
