"""The IRC frontend: the bot joins channels, takes commands there and in private, and posts events.

Each configured channel is a conversation of its own (`irc:#ops`), attached to its own run. A
channel line is a command when it starts with the bot's nick or one of its `respondTo` aliases,
followed by `:`, `,`, whitespace or nothing. The bare name is the `status` command. Nicks are
compared with the server's CASEMAPPING. Every private message is a command, answered in
private in the conversation `irc:query:<nick>`. The daemon receives each speaker as the identities
`irc:<nick>` (never verified) and, when the server reports a services account,
`irc-account:<account>` (verified when the server vouched for it at the time of the message);
the fuller `IrcIdentity` is kept in `last_identity`. The access section decides what each may do.

`quit` and `shutdown` from chat stop the bot only for an admin; then the bot quits IRC and
`serve` returns.

Output goes through one `Outbox` per connection, paced by `thehat-irc.rate` and split to fit
the 512-byte line limit. When the connection drops, the bot reconnects with the given
`ReconnectStrategy`, rejoins, sends what was still queued, and posts in each channel one line
that sums up the events it missed (see `frontends.away`). When its nick is taken it uses an
alternative and takes the nick back when the holder leaves or changes nick, or at the next
`reclaim_interval`.

NOTE: without an access section, admins are matched by nick, and nicks are not authenticated
on servers without services, so anyone who takes an admin's nick while that admin is away can
act as that admin. `access.requireVerified` closes that gap (see docs/access.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

from frontends.base import Frontend
from frontends.irc_config import IrcConfig, irc_config_from
from frontends.irc_conversations import IrcChannel, IrcQuery, Request, Session, clean_lines
from frontends.irc_events import ServerEvents
from frontends.irc_protocol import (
    AccountBook,
    IrcIdentity,
    ServerSupport,
    irc_lower,
    nick_candidates,
    text_limit,
)
from frontends.outbox import Outbox, TransmitError, private_reply
from frontends.reconnect import ExponentialBackoff, ReconnectStrategy
from frontends.tasks import Waker, cancel_all, spawn
from thehat.access import Identity, Speaker
from thehat.errors import TheHatError

if TYPE_CHECKING:
    from thehat.config import Config
    from thehat.daemon import Daemon

log = logging.getLogger(__name__)

INTERNAL_ERROR_LINE: Final = "internal error: see the log"

# Seconds to wait for each phase of a connection before giving up on it and reconnecting.
CONNECT_TIMEOUT: Final = 30.0
REGISTER_TIMEOUT: Final = 60.0
JOIN_TIMEOUT: Final = 30.0
# Seconds that quitting waits for queued lines to be sent first.
QUIT_DRAIN_TIMEOUT: Final = 5.0
# Minimum seconds between two attempts to take the configured nick back.
RECLAIM_MIN_INTERVAL: Final = 5.0


def _load_library() -> ModuleType:
    """Import the `irc` library glue, or raise TheHatError naming the extra to install."""
    try:
        from frontends import irc_connection
    except ImportError as exc:
        missing = exc.name or ""
        if not (missing == "irc" or missing.startswith(("irc.", "jaraco"))):
            raise
        raise TheHatError("the IRC frontend needs the irc package, which is not installed: "
                          "pip install 'thehat[irc]'") from exc
    return irc_connection


class IrcFrontend(Frontend):
    """The IRC bot; see the module docstring.

    `settings` replaces the `thehat-irc` section of `config` and `reconnect` the default
    ExponentialBackoff built from it (tests pass both). `ready` is set while the bot is in its
    channels and sending.
    """

    name = "irc"
    config_section = "thehat-irc"

    def __init__(self, daemon: Daemon, config: Config, *, settings: IrcConfig | None = None,
                 reconnect: ReconnectStrategy | None = None) -> None:
        super().__init__(daemon, config)
        self.settings = settings if settings is not None else irc_config_from(config)
        self.reconnect: ReconnectStrategy = reconnect or ExponentialBackoff(
            self.settings.reconnect_initial, self.settings.reconnect_max)
        self.channels = [IrcChannel(self, name) for name in self.settings.channels]
        self.queries: dict[str, IrcQuery] = {}
        self.support = ServerSupport()
        self.accounts = AccountBook()
        self.last_identity: IrcIdentity | None = None
        self.nick = self.settings.nick
        self.user: str | None = None
        self.host: str | None = None
        self.outbox = Outbox(self._transmit, self._text_limit, self.settings.rate)
        self.outbox.pause()
        self.ready = asyncio.Event()
        self._admins = [irc_lower(admin) for admin in config.engine.admins]
        self._library: ModuleType | None = None
        self._reactor: Any = None
        self.session: Session | None = None
        self.stopping = False
        self._waker = Waker()
        self.commands: asyncio.Queue[Request] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ----------------------------------------------------------------------------

    async def serve(self) -> None:
        """Connect and stay connected until `stop` or an admin's quit; then quit IRC.

        Raises TheHatError when the irc package is not installed.
        """
        self._library = _load_library()
        self._reactor = self._library.BotReactor(loop=asyncio.get_running_loop())
        ServerEvents(self, self._library).register(self._reactor)
        for channel in self.channels:
            self.daemon.register(channel)
        self.spawn(self.outbox.run(), "irc outbox")
        self.spawn(self._handle_requests(), "irc commands")
        log.info("IRC frontend starting as %s on %s:%d%s, channels %s",
                 self.settings.nick, self.settings.server, self.settings.port,
                 " with TLS" if self.settings.tls else "", ", ".join(self.settings.channels))
        try:
            while not self.stopping:
                await self._run_session()
                if self.stopping:
                    break
                delay = self.reconnect.next_delay()
                log.warning("reconnecting to %s:%d in %.1f s", self.settings.server,
                            self.settings.port, delay)
                await self._sleep(delay)
        finally:
            for conversation in [*self.channels, *self.queries.values()]:
                self.daemon.unregister(conversation)
            await self._cancel(self._tasks)
            log.info("IRC frontend stopped")

    async def stop(self) -> None:
        """Quit IRC after sending what is queued (for at most QUIT_DRAIN_TIMEOUT seconds)."""
        await self._quit("thehat is stopping")

    async def _quit(self, message: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        self._waker.wake()
        session = self.session
        if session is None or not session.connection.is_open():
            return
        if session.ready and not await self.outbox.drain(QUIT_DRAIN_TIMEOUT):
            log.warning("quitting with %d lines not sent", self.outbox.pending)
        log.info("quitting IRC: %s", message)
        # Sends QUIT, then closes the transport once what is buffered is written.
        session.connection.disconnect(message)

    async def _sleep(self, seconds: float) -> None:
        await self._waker.sleep(seconds)

    def spawn(self, coroutine: Coroutine[Any, Any, None], name: str,
               tasks: set[asyncio.Task[None]] | None = None) -> asyncio.Task[None]:
        """Start a task and keep a reference to it until it ends, in `tasks` (default: all)."""
        return spawn(self._tasks if tasks is None else tasks, coroutine, name)

    @staticmethod
    async def _cancel(tasks: set[asyncio.Task[None]]) -> None:
        await cancel_all(tasks)

    # -- one connection -----------------------------------------------------------------------

    async def _run_session(self) -> None:
        """Connect, register, join, and return once the connection is lost or fails."""
        session = self._new_session()
        nick = next(session.candidates)
        if not await self._open(session, nick):
            self._forget(session)
            return
        if self.stopping:
            session.connection.disconnect("thehat is stopping")
            self._forget(session)
            return

        log.info("connected to %s:%d, registering as %s", self.settings.server,
                 self.settings.port, nick)
        try:
            await self._stay_connected(session)
        finally:
            await self._cancel(session.tasks)
            self._connection_lost(session)
            self._forget(session)

    def _new_session(self) -> Session:
        assert self._library is not None
        connection = self._reactor.server()
        negotiation = self._library.CapNegotiation(connection, self.settings.sasl,
                                                   self.capabilities_enabled)
        candidates = iter(nick_candidates(self.settings.nick, self.settings.altnicks))
        session = Session(connection, negotiation, candidates)
        self.session = session
        self.support = ServerSupport()
        self.accounts = AccountBook()
        return session

    async def _open(self, session: Session, nick: str) -> bool:
        """Open the connection and send the registration; return False when that failed."""
        assert self._library is not None
        settings = self.settings
        context = None
        if settings.tls:
            cafile = str(settings.tls_cafile) if settings.tls_cafile is not None else None
            context = self._library.tls_context(settings.tls_verify, cafile)
            if not settings.tls_verify:
                log.warning("TLS certificate checks are off (thehat-irc.tls_verify: false)")

        password = settings.password.reveal() if settings.password is not None else None
        try:
            await asyncio.wait_for(session.connection.open(
                settings.server, settings.port, nick, password=password,
                username=settings.nick, realname=settings.realname, ssl_context=context),
                CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            log.warning("connecting to %s:%d failed: %s", settings.server, settings.port,
                        exc or "timed out")
            return False
        return True

    async def _stay_connected(self, session: Session) -> None:
        if not await self._wait(session, session.registered, REGISTER_TIMEOUT):
            if not session.lost.is_set():
                log.warning("the server did not complete registration in %.0f s",
                            REGISTER_TIMEOUT)
            return
        self.reconnect.connected()
        log.info("registered on %s as %s", self.settings.server, self.nick)
        self.spawn(self._keepalive(session), "irc keepalive", session.tasks)
        self._identify(session)

        session.pending_joins = {irc_lower(c.name, self.support.casemapping)
                                 for c in self.channels}
        for channel in self.channels:
            session.connection.join(channel.name)
            self.outbox.charge()
        if not await self._wait(session, session.joins_settled, JOIN_TIMEOUT):
            if session.lost.is_set():
                return
            log.warning("joining %s took more than %.0f s; going on",
                        ", ".join(sorted(session.pending_joins)), JOIN_TIMEOUT)

        session.ready = True
        for channel in self.channels:
            if not channel.joined:
                # Events for it are summed up once the bot gets in.
                channel.away.start()
        self.outbox.resume()
        self.ready.set()
        for channel in self.channels:
            if channel.joined:
                self.channel_ready(channel)
        self.spawn(self._maintain(session), "irc maintenance", session.tasks)
        await session.lost.wait()

    async def _wait(self, session: Session, event: asyncio.Event, timeout: float) -> bool:
        """Wait for `event` until the connection is lost or `timeout` seconds pass."""
        waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(session.lost.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        return event.is_set() and not session.lost.is_set()

    def _connection_lost(self, session: Session) -> None:
        self.ready.clear()
        self.outbox.pause()
        self.reconnect.disconnected()
        for channel in self.channels:
            if channel.joined:
                channel.joined = False
                channel.away.start()
        if session.connection.is_open():
            session.connection.disconnect("Reconnecting")

    def _forget(self, session: Session) -> None:
        try:
            session.connection.close()
        except Exception:
            # Closing is best effort: the connection is being dropped anyway.
            log.debug("closing the old connection failed", exc_info=True)
        if self.session is session:
            self.session = None

    def _identify(self, session: Session) -> None:
        nickserv = self.settings.nickserv
        if nickserv is None:
            return
        log.info("identifying to %s as %s", nickserv.service, self.settings.nick)
        session.connection.privmsg(nickserv.service, f"IDENTIFY {self.settings.nick} "
                                                     f"{nickserv.password.reveal()}")
        self.outbox.charge()

    async def _keepalive(self, session: Session) -> None:
        """Ping a silent server, and drop the connection when it stays silent."""
        interval, timeout = self.settings.ping_interval, self.settings.ping_timeout
        connection = session.connection
        pinged = False
        while connection.is_open():
            await asyncio.sleep(min(interval, timeout) / 4)
            silent = time.monotonic() - connection.last_received
            if silent >= interval + timeout:
                log.warning("no data from %s for %.0f s; dropping the connection",
                            self.settings.server, silent)
                connection.disconnect("Ping timeout")
                return
            if silent >= interval and not pinged:
                connection.ping(self.settings.server)
                pinged = True
            elif silent < interval:
                pinged = False

    async def _maintain(self, session: Session) -> None:
        """Request the configured nick and rejoin missing channels every reclaim_interval."""
        while session.connection.is_open():
            await asyncio.sleep(self.settings.reclaim_interval)
            self.reclaim_nick(session)
            for channel in self.channels:
                if not channel.joined:
                    log.info("trying to join %s again", channel.name)
                    session.connection.join(channel.name)
                    self.outbox.charge()

    def reclaim_nick(self, session: Session) -> None:
        if self.same_nick(self.nick, self.settings.nick) or not session.ready:
            return
        now = time.monotonic()
        if now - session.last_reclaim < RECLAIM_MIN_INTERVAL:
            return
        session.last_reclaim = now
        log.info("asking for nick %s back (now %s)", self.settings.nick, self.nick)
        session.connection.nick(self.settings.nick)
        self.outbox.charge()

    def channel_ready(self, channel: IrcChannel) -> None:
        """Post the summary of what a channel missed, or the greeting, once the bot is in it."""
        if channel.away.away:
            summary = channel.away.finish()
            log.info("back in %s: %s", channel.name, summary)
            self.outbox.put(channel.name, [summary], joinable=False)
        elif not channel.greeted:
            self.outbox.put(channel.name, [self._greeting(channel)], joinable=False)
        channel.greeted = True

    def _greeting(self, channel: IrcChannel) -> str:
        names = " or ".join(dict.fromkeys([self.nick, *self.settings.aliases]))
        flow = self.daemon.flow_name(channel)
        attached = f"; this channel follows flow {flow}" if flow else ""
        return f"I answer to {names} (try '{self.nick}: help'){attached}."

    # -- commands -----------------------------------------------------------------------------

    async def _handle_requests(self) -> None:
        """Run the commands one at a time, in the order they arrived."""
        while True:
            request = await self.commands.get()
            try:
                await self._execute(request)
            except Exception:
                log.exception("command %r from %s failed", request.text, request.identity.nick)
                self.outbox.put(request.reply_to, [INTERNAL_ERROR_LINE])

    async def _execute(self, request: Request) -> None:
        identity = request.identity
        conversation = request.conversation
        conversation.last_identity = identity
        self.last_identity = identity
        log.debug("command from %s in %s: %r (%s)", identity.nick, conversation.id,
                  request.text, identity)
        if isinstance(conversation, IrcQuery):
            queued = self.outbox.hold_private(request.reply_to)
            if queued:
                log.info("not running a command from %s: %d lines of earlier replies still "
                         "queued", identity.nick, queued)
                return
        try:
            reply = await self.daemon.handle(conversation, self.speaker(identity), request.text)
        except TheHatError as exc:
            # The daemon normally turns these into reply lines itself; the message is
            # written for the user.
            self.outbox.put(request.reply_to, clean_lines(str(exc).splitlines()))
            return
        if not reply.quit:
            lines = clean_lines(reply.lines)
            if isinstance(conversation, IrcQuery):
                lines = private_reply(lines)
            self.outbox.put(request.reply_to, lines)
            return
        # The daemon lets only admins quit from chat.
        log.info("%s asked the bot to quit in %s", identity.nick, conversation.id)
        self.outbox.put(request.reply_to, clean_lines(reply.lines) or ["Bye."])
        await self._quit(f"stopped by {identity.nick}")

    def speaker(self, identity: IrcIdentity) -> Speaker:
        """Describe the sender for the daemon: the nick, never verified, and the services
        account when the server reported one."""
        identities = [Identity("irc", identity.nick)]
        if identity.account is not None:
            identities.append(Identity("irc-account", identity.account, identity.verified))
        origin = f"{identity.user}@{identity.host}" if identity.host else None
        return Speaker(identity.nick, tuple(identities),
                       listed_admin=self.is_admin(identity.nick), origin=origin)

    def is_admin(self, nick: str) -> bool:
        """Tell whether `nick` is listed in `wfengine.admins`, compared as the server does."""
        folded = irc_lower(nick, self.support.casemapping)
        return any(irc_lower(admin, self.support.casemapping) == folded
                   for admin in self._admins)

    def query(self, nick: str) -> IrcQuery:
        key = irc_lower(nick)
        query = self.queries.get(key)
        if query is None:
            query = IrcQuery(self, nick)
            self.queries[key] = query
            self.daemon.register(query)
        query.nick = nick
        return query

    def same_nick(self, first: str, second: str) -> bool:
        """Tell whether two nicks (or channel names) are equal under the server's casemapping."""
        casemapping = self.support.casemapping
        return irc_lower(first, casemapping) == irc_lower(second, casemapping)

    def capabilities_enabled(self, enabled: set[str]) -> None:
        """Record which account capabilities the server enabled (called when CAP ends)."""
        self.accounts.notify = "account-notify" in enabled
        self.accounts.tagged = "account-tag" in enabled
        if (self.config.access.configured and self.config.access.require_verified
                and not (self.accounts.notify or self.accounts.tagged)):
            log.warning("access.requireVerified is true, but %s confirms no services accounts "
                        "(no account-tag or account-notify), so every speaker on it is an "
                        "observer", self.settings.server)

    # -- output -------------------------------------------------------------------------------

    def _transmit(self, target: str, text: str) -> None:
        # NOTE: IRC has no acknowledgements, so lines written just before a connection dies
        # unnoticed are lost; only lines still in the outbox survive a reconnection.
        session = self.session
        if session is None or not session.connection.is_open():
            raise TransmitError("not connected")
        session.connection.privmsg(target, text)

    def _text_limit(self, target: str) -> int:
        return text_limit(self.nick, self.user, self.host, target)
