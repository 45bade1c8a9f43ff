"""Fixtures for the chat frontends: ngircd servers on 127.0.0.1, people, and the real bot.

`ircd` is one ngircd with flood throttling off, shared by the tests of a module, so each test
uses channels of its own. `throttled_ircd` keeps ngircd's default throttling. `new_ircd`
makes servers a test may stop and restart. `start_bot` runs the real `IrcFrontend` inside a
real daemon from `open_daemon`, on a temporary data directory that holds the toast flow.

`irc_services` is InspIRCd linked to Atheme (tests/ircservices.py), shared by the whole
session, for tests of services accounts; `services_people` connects clients to it that may log
in with SASL and ask for IRCv3 capabilities.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from frontends.irc import IrcFrontend
from frontends.irc_config import parse_irc_config
from frontends.reconnect import ReconnectStrategy
from thehat.access import AccessPolicy
from thehat.config import Config, EngineConfig
from thehat.daemon import Daemon, open_daemon
from thehat.flowfile import save_flow
from thehat.limits import Limits

from tests.frontends.irc_client import TIMEOUT, ChatClient
from tests.helpers import toast_flow
from tests.ircservices import AccountClient, ServicesNetwork
from tests.servers import HOST, NgircdServer, find_program, started_servers
from tests.tls import CertificateFiles, make_certificates

STOP_TIMEOUT = 15.0


@pytest.fixture(scope="session")
def ngircd_program() -> str:
    program = find_program("ngircd")
    if program is None:
        pytest.skip("ngircd is not installed (scripts/test installs it)")
    return program


@pytest.fixture(scope="session")
def certificates() -> Iterator[CertificateFiles]:
    """A throwaway CA and the `localhost`/127.0.0.1 server certificate that it signed."""
    files = make_certificates()
    yield files
    files.remove()


@pytest.fixture(scope="session")
def wrong_ca() -> Iterator[Path]:
    """The certificate of a CA that did not sign the `certificates` server certificate."""
    files = make_certificates()
    yield files.ca_certificate
    files.remove()


@pytest.fixture(scope="module")
def ircd(ngircd_program: str) -> Iterator[NgircdServer]:
    server = NgircdServer(max_penalty=0)
    server.start()
    yield server
    server.remove()


@pytest.fixture(scope="module")
def throttled_ircd(ngircd_program: str) -> Iterator[NgircdServer]:
    server = NgircdServer(max_penalty=None)
    server.start()
    yield server
    server.remove()


@pytest.fixture
def new_ircd(ngircd_program: str) -> Iterator[Callable[..., NgircdServer]]:
    """Return a factory of started servers; each one is stopped after the test."""
    with started_servers(NgircdServer) as make:
        yield make


@pytest.fixture(scope="session")
def irc_services() -> Iterator[ServicesNetwork]:
    """InspIRCd with Atheme's NickServ and SaslServ on 127.0.0.1, for the whole session.

    `port` is the client port and `register(account, password)` creates a NickServ account.
    A missing program fails the tests that use it, with the Debian package to install.
    """
    network = ServicesNetwork()
    try:
        network.start()
    except RuntimeError:
        network.remove()
        raise
    yield network
    network.remove()


@pytest.fixture
async def services_people(irc_services: ServicesNetwork
                          ) -> AsyncIterator[Callable[..., Awaitable[AccountClient]]]:
    """Return `connect(nick, channels=(), *, capabilities=(), account=None, password=None)`,
    which registers a client on `irc_services`; every client quits after the test."""
    clients: list[AccountClient] = []

    async def connect(nick: str, channels: list[str] | tuple[str, ...] = (), *,
                      capabilities: tuple[str, ...] = (), account: str | None = None,
                      password: str | None = None) -> AccountClient:
        client = AccountClient(nick, irc_services.port, capabilities=capabilities,
                               account=account, password=password)
        clients.append(client)
        return await client.connect(channels)

    yield connect
    for client in clients:
        await client.close()


@pytest.fixture
def channel(request: pytest.FixtureRequest) -> str:
    """A channel name of this test's own, so tests sharing a server never meet."""
    name = re.sub(r"[^a-z0-9]", "", request.node.name.lower())[-40:]
    return f"#{name}"


@pytest.fixture
def datadir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    save_flow(toast_flow(), path / "toast.flow")
    return path


@dataclass
class Bot:
    """The bot under test: the daemon, the frontend and the task that serves it."""

    daemon: Daemon
    frontend: IrcFrontend
    task: asyncio.Task[None]
    clients: list[ChatClient] = field(default_factory=list)

    closed: bool = False

    async def stopped(self, timeout: float = STOP_TIMEOUT) -> None:
        """Wait for `serve` to return by itself (after an admin's quit)."""
        await asyncio.wait_for(asyncio.shield(self.task), timeout)

    async def close(self) -> None:
        """Stop the frontend, wait for `serve` to return and close the daemon; once only."""
        if self.closed:
            return
        self.closed = True
        if not self.task.done():
            await self.frontend.stop()
            try:
                await asyncio.wait_for(asyncio.shield(self.task), STOP_TIMEOUT)
            except asyncio.TimeoutError:
                self.task.cancel()
                await asyncio.gather(self.task, return_exceptions=True)
                raise
        await self.daemon.close()


@pytest.fixture
async def start_bot(datadir: Path) -> AsyncIterator[Callable[..., Awaitable[Bot]]]:
    """Return `start(port, channels, **settings)`, which starts the bot and waits until it is
    in its channels. `admins` sets wfengine.admins; `access` and `limits` the sections of
    those names (by default no command rate limit, so tests may talk fast); `strategy` is a
    ReconnectStrategy; `wait` False returns at once. The other keywords are thehat-irc keys."""
    bots: list[Bot] = []

    async def start(port: int, channels: list[str], *, admins: tuple[str, ...] = ("alice",),
                    access: AccessPolicy | None = None, limits: Limits | None = None,
                    strategy: ReconnectStrategy | None = None, wait: bool = True,
                    **settings: Any) -> Bot:
        section = {"nic": "thehat", "server": HOST, "port": port, "channels": channels,
                   "rate": {"burst": 50, "interval": 0.02}, **settings}
        config = Config(engine=EngineConfig(datadir=datadir, timezone="UTC", admins=admins),
                        sections={"thehat-irc": section}, access=access or AccessPolicy(),
                        limits=limits or Limits(commands_per_minute=0))
        daemon = await asyncio.to_thread(open_daemon, config)
        frontend = IrcFrontend(daemon, config, settings=parse_irc_config(section),
                               reconnect=strategy)
        task = asyncio.create_task(frontend.serve(), name="irc frontend under test")
        bot = Bot(daemon, frontend, task)
        bots.append(bot)
        if wait:
            await asyncio.wait_for(frontend.ready.wait(), TIMEOUT)
        return bot

    yield start
    for bot in bots:
        await bot.close()


@pytest.fixture
async def people() -> AsyncIterator[Callable[..., Awaitable[ChatClient]]]:
    """Return `connect(nick, port, channels)`; every client quits after the test."""
    clients: list[ChatClient] = []

    async def connect(nick: str, port: int, channels: list[str] | tuple[str, ...] = ()
                      ) -> ChatClient:
        client = ChatClient(nick, port)
        clients.append(client)
        return await client.connect(channels)

    yield connect
    for client in clients:
        await client.close()
