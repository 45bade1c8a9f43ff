"""Fixtures for the XMPP frontend: prosody on 127.0.0.1, people as slixmpp clients, the bot.

Test modules import the fixtures they use by name. `prosody` is one server shared by the tests
of a module (each test uses rooms of its own), with prosody's default room locking, so the
first occupant of a new room must unlock it. `new_prosody` makes servers a test may stop and
restart. `start_xmpp_bot` runs the real `XmppFrontend` inside a real daemon from
`open_daemon`, on a temporary data directory that holds the toast flow.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from frontends.reconnect import ReconnectStrategy
from frontends.xmpp import XmppFrontend
from frontends.xmpp_config import parse_xmpp_config
from thehat.access import AccessPolicy
from thehat.config import Config, EngineConfig
from thehat.daemon import Daemon, open_daemon
from thehat.limits import Limits

from tests.prosody import DOMAIN, MUC_DOMAIN, ProsodyServer, password_for
from tests.servers import HOST, find_program, started_servers
from tests.tls import CertificateFiles

TIMEOUT = 10.0
STOP_TIMEOUT = 15.0
BOT = "thehat"


@pytest.fixture(scope="session")
def prosody_program() -> str:
    program = find_program("prosody")
    if program is None or find_program("prosodyctl") is None:
        pytest.skip("prosody is not installed (scripts/test installs it)")
    return program


@pytest.fixture(scope="module")
def prosody(prosody_program: str) -> Iterator[ProsodyServer]:
    server = ProsodyServer()
    server.start()
    yield server
    server.remove()


@pytest.fixture(scope="module")
def tls_prosody(prosody_program: str, certificates: CertificateFiles
                ) -> Iterator[ProsodyServer]:
    """A server that requires STARTTLS, with the server certificate from `certificates`."""
    server = ProsodyServer(certificate=certificates.certificate, key=certificates.key)
    server.start()
    yield server
    server.remove()


@pytest.fixture
def new_prosody(prosody_program: str) -> Iterator[Callable[..., ProsodyServer]]:
    """Return a factory of started servers; each one is stopped after the test."""
    with started_servers(ProsodyServer) as make:
        yield make


@pytest.fixture
def room(request: pytest.FixtureRequest) -> str:
    """A room JID of this test's own, so tests sharing a server never meet."""
    name = re.sub(r"[^a-z0-9]", "", request.node.name.lower())[-40:]
    return f"{name}@{MUC_DOMAIN}"


@dataclass
class Received:
    """One message a person received: where from, who spoke, the text, and whether the room
    marked it as history."""

    room: str
    nick: str
    body: str
    delayed: bool


class XmppPerson:
    """A person in the rooms, as a slixmpp client of the test server: without TLS, or with
    STARTTLS and certificates checked against `cafile` when that is given."""

    def __init__(self, user: str, port: int, cafile: Path | None = None) -> None:
        import slixmpp

        self.user = user
        self.port = port
        plain = cafile is None
        self.client = slixmpp.ClientXMPP(
            f"{user}@{DOMAIN}/test", password_for(user),
            plugin_config={"feature_mechanisms": {"unencrypted_scram": plain,
                                                  "unencrypted_plain": plain}})
        self.client.enable_direct_tls = False
        self.client.enable_starttls = not plain
        self.client.enable_plaintext = plain
        if cafile is not None:
            self.client.ca_certs = cafile
        for plugin in ("xep_0030", "xep_0004", "xep_0045", "xep_0203", "xep_0359"):
            self.client.register_plugin(plugin)
        self.received: list[Received] = []
        self.direct: list[str] = []
        self._changed = asyncio.Event()
        self._started = asyncio.Event()
        self.client.add_event_handler("session_start", self._on_start)
        self.client.add_event_handler("groupchat_message", self._on_groupchat)
        self.client.add_event_handler("message", self._on_message)

    def _on_start(self, _: Any) -> None:
        self.client.send_presence()
        self._started.set()

    def _on_groupchat(self, message: Any) -> None:
        delayed = message.get_plugin("delay", check=True) is not None
        self.received.append(Received(message["from"].bare, message["mucnick"],
                                      message["body"], delayed))
        self._changed.set()

    def _on_message(self, message: Any) -> None:
        if message["type"] in ("chat", "normal") and message["body"]:
            self.direct.append(message["body"])
            self._changed.set()

    async def connect(self) -> XmppPerson:
        self.client.connect(host=HOST, port=self.port)
        await asyncio.wait_for(self._started.wait(), TIMEOUT)
        return self

    async def join(self, room: str, history: int = 0) -> None:
        """Join `room` and unlock it when this person created it."""
        muc = self.client.plugin["xep_0045"]
        presence, _, _, _ = await muc.join_muc_wait(room, self.user, maxstanzas=history,
                                                    timeout=TIMEOUT)
        if 201 in presence["muc"]["status_codes"]:
            form = self.client.plugin["xep_0004"].make_form(ftype="submit")
            await muc.set_room_config(room, form)

    def say(self, room: str, text: str) -> None:
        self.client.send_message(mto=room, mbody=text, mtype="groupchat")

    def tell(self, jid: str, text: str) -> None:
        self.client.send_message(mto=jid, mbody=text, mtype="chat")

    def mark(self) -> int:
        return len(self.received)

    async def wait_for(self, text: str, *, room: str | None = None, since: int = 0,
                       nick: str = BOT, timeout: float = TIMEOUT) -> str:
        """Return the first live message from `nick` after index `since` containing `text`."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.received[since:]:
                if (message.nick == nick and not message.delayed and text in message.body
                        and (room is None or message.room == room)):
                    return message.body
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = "\n".join(f"  {m.nick}: {m.body[:200]!r}" for m in self.received[since:])
                raise AssertionError(f"{self.user} saw no message from {nick} with {text!r} "
                                     f"in {timeout:.0f} s; saw:\n{seen}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def ask(self, room: str, line: str, expect: str) -> str:
        """Say `line` in `room` and return the bot's next message there containing `expect`."""
        since = self.mark()
        self.say(room, line)
        return await self.wait_for(expect, room=room, since=since)

    async def wait_direct(self, text: str, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for body in self.direct:
                if text in body:
                    return body
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.user} got no direct message with {text!r}; "
                                     f"got {self.direct!r}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), 0.2)
            except asyncio.TimeoutError:
                pass

    async def close(self) -> None:
        if self.client.is_connected():
            self.client.disconnect(wait=1.0)
            try:
                await asyncio.wait_for(self.client.disconnected, 5)
            except asyncio.TimeoutError:
                self.client.abort()


@pytest.fixture
async def xmpp_people() -> AsyncIterator[Callable[..., Awaitable[XmppPerson]]]:
    """Return `connect(user, port, cafile=None)`; every client disconnects after the test."""
    people: list[XmppPerson] = []

    async def connect(user: str, port: int, cafile: Path | None = None) -> XmppPerson:
        person = XmppPerson(user, port, cafile)
        people.append(person)
        return await person.connect()

    yield connect
    for person in people:
        await person.close()


@pytest.fixture
def xmpp_datadir(tmp_path: Path) -> Path:
    from thehat.flowfile import save_flow

    from tests.helpers import toast_flow

    path = tmp_path / "xmpp-data"
    path.mkdir()
    save_flow(toast_flow(), path / "toast.flow")
    return path


@dataclass
class XmppBot:
    """The bot under test: the daemon, the frontend and the task that serves it."""

    daemon: Daemon
    frontend: XmppFrontend
    task: asyncio.Task[None]

    async def stopped(self, timeout: float = STOP_TIMEOUT) -> None:
        """Wait for `serve` to return by itself (after an admin's quit)."""
        await asyncio.wait_for(asyncio.shield(self.task), timeout)


def bot_section(port: int, rooms: list[str], **settings: Any) -> dict[str, Any]:
    return {"jid": f"{BOT}@{DOMAIN}/bot", "password": password_for(BOT), "server": HOST,
            "port": port, "tls": "off", "rooms": rooms, "nick": BOT,
            "rate": {"burst": 50, "interval": 0.02}, **settings}


@pytest.fixture
async def start_xmpp_bot(xmpp_datadir: Path) -> AsyncIterator[Callable[..., Awaitable[XmppBot]]]:
    """Return `start(port, rooms, **settings)`, which starts the bot and waits until it is
    in its rooms. `daemon` shares a daemon; `access` and `limits` set the sections of those
    names (by default no command rate limit, so tests may talk fast); `reconnect` is a
    ReconnectStrategy; `wait` False returns at once. The other keywords are thehat-xmpp
    keys."""
    bots: list[XmppBot] = []
    own_daemons: list[Daemon] = []

    async def start(port: int, rooms: list[str], *, daemon: Daemon | None = None,
                    admins: tuple[str, ...] = ("alice",),
                    access: AccessPolicy | None = None, limits: Limits | None = None,
                    reconnect: ReconnectStrategy | None = None, wait: bool = True,
                    **settings: Any) -> XmppBot:
        section = bot_section(port, rooms, **settings)
        config = Config(engine=EngineConfig(datadir=xmpp_datadir, timezone="UTC",
                                            admins=admins),
                        sections={"thehat-xmpp": section}, access=access or AccessPolicy(),
                        limits=limits or Limits(commands_per_minute=0))
        if daemon is None:
            daemon = await asyncio.to_thread(open_daemon, config)
            own_daemons.append(daemon)
        frontend = XmppFrontend(daemon, config, settings=parse_xmpp_config(section),
                                reconnect=reconnect)
        task = asyncio.create_task(frontend.serve(), name="xmpp frontend under test")
        bot = XmppBot(daemon, frontend, task)
        bots.append(bot)
        if wait:
            await asyncio.wait_for(frontend.ready.wait(), TIMEOUT)
        return bot

    yield start
    for bot in bots:
        if not bot.task.done():
            await bot.frontend.stop()
            try:
                await asyncio.wait_for(bot.task, STOP_TIMEOUT)
            except asyncio.TimeoutError:
                bot.task.cancel()
    for daemon in own_daemons:
        await daemon.close()
