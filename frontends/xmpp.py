"""The XMPP frontend: the bot joins multi-user chat rooms, takes commands there and directly.

Each configured room is a conversation of its own (`xmpp:<room JID>`), attached to its own
run. A room message is a command when it starts with the bot's room nick or one of its
`respondTo` aliases, followed by `:`, `,`, whitespace or nothing (the bare name asks for the
status). Every direct message with a body is a command, answered directly in the conversation
`xmpp:direct:<bare JID>` (`xmpp:direct:<room JID>/<nick>` for a private message through a
room). Two kinds of room message are never executed: history the room replays on join (it
carries a XEP-0203 `delay` element) and the room's echo of the bot's own messages.

The speaker's room nick is the user name the daemon receives, as on IRC. When the room
discloses the occupant's real bare JID (or the message came straight from an account), the
daemon also receives the verified identity `xmpp:<bare JID>`, which the access section
matches. In an anonymous room the nick is all there is. The fuller `XmppIdentity` is kept in `last_identity`
and in each room's `occupants`. `quit` and `shutdown` stop the bot only for an admin. Without
an access section the admins are those in `wfengine.admins`: an entry with `@` must equal the
speaker's verified bare JID, an entry without `@` the room nick (like IRC, so anyone may take
a free admin nick).

Output goes through one `Outbox`, paced by `thehat-xmpp.rate`. A reply's lines are packed into
multi-line messages of at most `max_message_bytes`, broken between lines. When the connection
drops, the bot reconnects with the given `ReconnectStrategy`, rejoins its rooms, sends what was
queued, and posts in each room one line that sums up the events it missed (see
`frontends.away`). After a kick it rejoins with backoff; after a ban it gives up on that room.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from frontends.away import AwayLog
from frontends.base import Conversation, Frontend
from frontends.outbox import Outbox, TransmitError, private_reply
from frontends.reconnect import ExponentialBackoff, ReconnectStrategy
from frontends.tasks import Waker, cancel_all, spawn
from frontends.xmpp_config import TlsPolicy, XmppConfig, xmpp_config_from
from frontends.xmpp_protocol import (
    SentIds,
    XmppIdentity,
    addressed_command,
    clean_text,
    pack_lines,
    redact_credentials,
)
from thehat.access import Identity, Speaker
from thehat.errors import TheHatError

if TYPE_CHECKING:
    from thehat.config import Config
    from thehat.daemon import Daemon

log = logging.getLogger(__name__)

INTERNAL_ERROR_LINE: Final = "internal error: see the log"

# Seconds to wait for each phase of a connection before giving up on it and reconnecting.
CONNECT_TIMEOUT: Final = 30.0
JOIN_TIMEOUT: Final = 30.0
# Seconds that quitting waits for queued lines to be sent first.
QUIT_DRAIN_TIMEOUT: Final = 10.0
# Backoff of the rejoin attempts of one room after a kick or a refused join.
REJOIN_INITIAL_DELAY: Final = 5.0
REJOIN_MAX_DELAY: Final = 300.0

# XEP-0045 section 15.6.2 status codes of a presence stanza.
STATUS_SELF: Final = 110
STATUS_ROOM_CREATED: Final = 201
STATUS_NICK_CHANGED: Final = 303
STATUS_BANNED: Final = 301
STATUS_KICKED: Final = 307
STATUS_AFFILIATION_CHANGE: Final = 321
STATUS_MEMBERS_ONLY: Final = 322
STATUS_SHUTDOWN: Final = 332
# Join errors after which trying again cannot help (XEP-0045 section 7.2): banned, wrong
# password, not a member, or the room does not exist and may not be created.
FINAL_JOIN_ERRORS: Final = frozenset({"forbidden", "not-authorized", "registration-required"})


class CredentialFilter(logging.Filter):
    """Hide credentials in the stanzas that slixmpp logs at DEBUG as it sends them.

    slixmpp 1.17 logs every stanza it sends and receives in full ("SEND: %s", "RECV: %s") on
    the logger `slixmpp.xmlstream.xmlstream`, the SASL PLAIN login included.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_credentials(record.getMessage())
        record.args = ()
        return True


CREDENTIAL_FILTER: Final = CredentialFilter()
STANZA_LOGGER: Final = "slixmpp.xmlstream.xmlstream"


def _load_library() -> Any:
    """Import slixmpp, or raise TheHatError naming the extra to install.

    Also puts CREDENTIAL_FILTER on slixmpp's stanza logger, once.
    """
    try:
        import slixmpp
    except ImportError as exc:
        raise TheHatError("the XMPP frontend needs the slixmpp package, which is not "
                          "installed: pip install 'thehat[xmpp]'") from exc
    logging.getLogger(STANZA_LOGGER).addFilter(CREDENTIAL_FILTER)
    return slixmpp


class XmppRoom(Conversation):
    """One configured room: a conversation of its own, `xmpp:<room JID>`."""

    medium = "xmpp"

    def __init__(self, frontend: XmppFrontend, jid: str) -> None:
        self.jid = jid
        self.id = f"xmpp:{jid}"
        self.nick = frontend.settings.nick
        self.joined = False
        self.greeted = False
        # Set after a ban or another final refusal; the bot stops trying to join.
        self.given_up = False
        self.away = AwayLog()
        self.occupants: dict[str, XmppIdentity] = {}
        self.last_identity: XmppIdentity | None = None
        self.rejoin = ExponentialBackoff(REJOIN_INITIAL_DELAY, REJOIN_MAX_DELAY)
        self._frontend = frontend

    async def send(self, lines: Sequence[str]) -> None:
        if self.given_up:
            log.debug("dropping %d lines for room %s, which the bot gave up on", len(lines),
                      self.jid)
            return
        if not self.joined:
            # Not in the room (connection down, kicked, or joining): sum it up on return.
            self.away.start()
            self.away.add(list(lines))
            return
        self._frontend.put(self.jid, lines)


class XmppDirect(Conversation):
    """The direct conversation with one account (or one room occupant), `xmpp:direct:<JID>`."""

    medium = "xmpp"

    def __init__(self, frontend: XmppFrontend, key: str, address: str) -> None:
        self.key = key
        self.id = f"xmpp:direct:{key}"
        self.address = address
        self.last_identity: XmppIdentity | None = None
        self._frontend = frontend

    async def send(self, lines: Sequence[str]) -> None:
        # Held in the outbox while the connection is down, and sent once it is back.
        self._frontend.put(self.address, lines)


@dataclass
class _Request:
    conversation: XmppRoom | XmppDirect
    identity: XmppIdentity
    text: str
    reply_to: str


@dataclass
class _Session:
    """The state of one connection, from connecting until it is lost."""

    client: Any
    started: asyncio.Event = field(default_factory=asyncio.Event)
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    failure: str | None = None
    ready: bool = False
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class XmppFrontend(Frontend):
    """The XMPP bot; see the module docstring.

    `settings` replaces the `thehat-xmpp` section of `config` and `reconnect` the default
    ExponentialBackoff built from it (tests pass both). `ready` is set while the bot is
    connected, has tried to join its rooms and is sending.
    """

    name = "xmpp"
    config_section = "thehat-xmpp"

    def __init__(self, daemon: Daemon, config: Config, *, settings: XmppConfig | None = None,
                 reconnect: ReconnectStrategy | None = None) -> None:
        super().__init__(daemon, config)
        self.settings = settings if settings is not None else xmpp_config_from(config)
        self.reconnect: ReconnectStrategy = reconnect or ExponentialBackoff(
            self.settings.reconnect_initial, self.settings.reconnect_max)
        self.rooms = {jid: XmppRoom(self, jid) for jid in self.settings.rooms}
        self.directs: dict[str, XmppDirect] = {}
        self.last_identity: XmppIdentity | None = None
        self.sent_ids = SentIds()
        # Counts of room messages that were not executed, by reason, for logs and tests.
        self.skipped = {"history": 0, "echo": 0}
        self.outbox = Outbox(self._transmit, lambda target: self.settings.max_message_bytes,
                             self.settings.rate, joiner="\n")
        self.outbox.pause()
        self.ready = asyncio.Event()
        self._library: Any = None
        self._session: _Session | None = None
        self._stopping = False
        self._waker = Waker()
        self._requests: asyncio.Queue[_Request] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ----------------------------------------------------------------------------

    async def serve(self) -> None:
        """Connect and stay connected until `stop` or an admin's quit; then disconnect.

        Raises TheHatError when slixmpp is not installed.
        """
        self._library = _load_library()
        for room in self.rooms.values():
            self.daemon.register(room)
        self._spawn(self.outbox.run(), "xmpp outbox")
        self._spawn(self._handle_requests(), "xmpp commands")
        settings = self.settings
        log.info("XMPP frontend starting as %s via %s:%d (tls: %s), rooms %s",
                 settings.full_jid, settings.server or settings.domain, settings.connect_port,
                 settings.tls.value, ", ".join(self.rooms))
        if settings.tls is TlsPolicy.OFF:
            log.warning("TLS is off (thehat-xmpp.tls: off): the password and every message "
                        "cross the network unencrypted")
        try:
            while not self._stopping:
                await self._run_session()
                if self._stopping:
                    break
                delay = self.reconnect.next_delay()
                log.warning("reconnecting to %s:%d in %.1f s",
                            settings.server or settings.domain, settings.connect_port, delay)
                await self._sleep(delay)
        finally:
            for conversation in [*self.rooms.values(), *self.directs.values()]:
                self.daemon.unregister(conversation)
            await self._cancel(self._tasks)
            log.info("XMPP frontend stopped")

    async def stop(self) -> None:
        """Disconnect after sending what is queued (for at most QUIT_DRAIN_TIMEOUT seconds)."""
        await self._quit("thehat is stopping")

    async def _quit(self, reason: str) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._waker.wake()
        session = self._session
        if session is None:
            return
        if session.ready and not await self.outbox.drain(QUIT_DRAIN_TIMEOUT):
            log.warning("disconnecting with %d messages not sent", self.outbox.pending)
        log.info("disconnecting from XMPP: %s", reason)
        client = session.client
        if client.is_connected():
            for room in self.rooms.values():
                if room.joined:
                    client.plugin["xep_0045"].leave_muc(room.jid, room.nick, reason)
            client.disconnect(reason=reason)
        else:
            session.lost.set()

    async def _sleep(self, seconds: float) -> None:
        await self._waker.sleep(seconds)

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str,
               tasks: set[asyncio.Task[None]] | None = None) -> asyncio.Task[None]:
        """Start a task and keep a reference to it until it ends, in `tasks` (default: all)."""
        return spawn(self._tasks if tasks is None else tasks, coroutine, name)

    @staticmethod
    async def _cancel(tasks: set[asyncio.Task[None]]) -> None:
        await cancel_all(tasks)

    # -- one connection -----------------------------------------------------------------------

    def _new_client(self) -> Any:
        """Build a slixmpp client for one connection, configured by the TLS policy."""
        settings = self.settings
        plain = settings.tls is TlsPolicy.OFF
        client = self._library.ClientXMPP(
            settings.full_jid, settings.password.reveal(),
            plugin_config={"feature_mechanisms": {"unencrypted_plain": plain,
                                                  "unencrypted_scram": plain}})
        client.enable_direct_tls = settings.tls is TlsPolicy.DIRECT
        client.enable_starttls = settings.tls is TlsPolicy.REQUIRED
        client.enable_plaintext = plain
        if settings.tls_cafile is not None:
            client.ca_certs = settings.tls_cafile
        for plugin in ("xep_0030", "xep_0004", "xep_0045", "xep_0199", "xep_0203", "xep_0359"):
            client.register_plugin(plugin)
        # This frontend reconnects by itself, with its own backoff and a fresh client.
        client.auto_reconnect = False
        return client

    async def _run_session(self) -> None:
        """Connect, join the rooms, and return once the connection is lost or fails."""
        settings = self.settings
        client = self._new_client()
        session = _Session(client)
        self._session = session
        self._add_handlers(session)
        address = settings.server or settings.domain
        if settings.server is not None or settings.port is not None:
            client.connect(host=address, port=settings.connect_port)
        else:
            client.connect()
        try:
            if not await self._wait(session, session.started, CONNECT_TIMEOUT):
                reason = session.failure or ("connection lost" if session.lost.is_set()
                                             else f"no session after {CONNECT_TIMEOUT:.0f} s")
                log.warning("connecting to %s:%d as %s failed: %s", address,
                            settings.connect_port, settings.full_jid, reason)
                return
            await self._stay_connected(session)
        finally:
            await self._cancel(session.tasks)
            self._connection_lost(session)
            if self._session is session:
                self._session = None
            await self._close_client(client)

    @staticmethod
    async def _close_client(client: Any) -> None:
        """Stop the output filter task that slixmpp 1.17 starts in `connect`.

        slixmpp keeps it for the client's lifetime and this frontend drops the client, so
        without this the task would be destroyed while pending.
        """
        filters = getattr(client, "_run_out_filters", None)
        if filters is not None and not filters.done():
            filters.cancel()
            await asyncio.gather(filters, return_exceptions=True)

    async def _stay_connected(self, session: _Session) -> None:
        client = session.client
        if self.settings.tls is not TlsPolicy.OFF and not self._encrypted(client):
            log.error("the server %s did not encrypt the connection, but thehat-xmpp.tls "
                      "requires it; disconnecting", self.settings.domain)
            client.abort()
            return
        self.reconnect.connected()
        log.info("connected to %s as %s", self.settings.domain, client.boundjid.full)
        client.send_presence()
        await asyncio.gather(*(self._join(session, room) for room in self.rooms.values()
                               if not room.given_up))
        if session.lost.is_set():
            return
        session.ready = True
        self.outbox.resume()
        self.ready.set()
        for room in self.rooms.values():
            if room.joined:
                self._room_ready(room)
        self._spawn(self._keepalive(session), "xmpp keepalive", session.tasks)
        await session.lost.wait()

    @staticmethod
    def _encrypted(client: Any) -> bool:
        transport = client.transport
        return transport is not None and transport.get_extra_info("sslcontext") is not None

    async def _wait(self, session: _Session, event: asyncio.Event, timeout: float) -> bool:
        """Wait for `event` until the connection is lost or `timeout` seconds pass."""
        waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(session.lost.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        return event.is_set() and not session.lost.is_set()

    def _connection_lost(self, session: _Session) -> None:
        self.ready.clear()
        self.outbox.pause()
        self.reconnect.disconnected()
        for room in self.rooms.values():
            if room.joined:
                room.joined = False
                room.away.start()
        client = session.client
        # Stop slixmpp's own retries of a failed connection attempt, then drop the socket.
        client.cancel_connection_attempt()
        if client.is_connected():
            client.abort()

    async def _keepalive(self, session: _Session) -> None:
        """Ping the server every ping_interval; drop the connection when a ping times out."""
        client = session.client
        settings = self.settings
        while client.is_connected():
            await asyncio.sleep(settings.ping_interval)
            try:
                await client.plugin["xep_0199"].ping(jid=settings.domain,
                                                     timeout=settings.ping_timeout)
            except self._library.exceptions.IqTimeout:
                log.warning("no answer to a ping from %s in %.0f s; dropping the connection",
                            settings.domain, settings.ping_timeout)
                client.abort()
                return
            except self._library.exceptions.IqError as exc:
                # An error reply still proves the connection is alive.
                log.debug("ping of %s returned an error: %s", settings.domain, exc)

    # -- rooms --------------------------------------------------------------------------------

    async def _join(self, session: _Session, room: XmppRoom) -> None:
        """Join `room`; submit an instant-room form when the bot created the room.

        A refused join is logged; the room is tried again with its own backoff, unless the
        refusal is final (FINAL_JOIN_ERRORS), after which the bot gives up on the room.
        """
        client = session.client
        muc = client.plugin["xep_0045"]
        log.debug("joining %s as %s", room.jid, room.nick)
        try:
            presence, _, occupants, history = await muc.join_muc_wait(
                room.jid, room.nick, maxstanzas=self.settings.history, timeout=JOIN_TIMEOUT)
        except self._library.exceptions.PresenceError as exc:
            self._join_refused(session, room, exc.condition, exc.text)
            return
        except asyncio.TimeoutError:
            if not session.lost.is_set():
                log.warning("joining %s got no answer in %.0f s; trying again later", room.jid,
                            JOIN_TIMEOUT)
                self._schedule_rejoin(session, room)
            return
        room.nick = presence["from"].resource or room.nick
        codes = set(presence["muc"]["status_codes"])
        if STATUS_ROOM_CREATED in codes:
            await self._configure_new_room(client, room)
        room.joined = True
        room.occupants = {}
        for occupant in occupants:
            if occupant["from"].resource != room.nick:
                self._remember_occupant(room, occupant)
        log.info("joined %s as %s (%d other occupants, %d history messages skipped)",
                 room.jid, room.nick, len(room.occupants), len(history))
        if session.ready:
            self._room_ready(room)

    async def _configure_new_room(self, client: Any, room: XmppRoom) -> None:
        """Unlock a room the bot has just created by accepting the default configuration.

        XEP-0045 section 10.1.2: a new room refuses other occupants until its owner submits
        a configuration; an empty submitted form asks for an instant room.
        """
        form = client.plugin["xep_0004"].make_form(ftype="submit")
        try:
            await client.plugin["xep_0045"].set_room_config(room.jid, form)
        except (self._library.exceptions.IqError, self._library.exceptions.IqTimeout) as exc:
            log.error("created room %s but could not unlock it (%s); others cannot join until "
                      "its owner configures it", room.jid, exc)
            return
        log.info("created room %s and unlocked it with the default configuration", room.jid)

    def _join_refused(self, session: _Session, room: XmppRoom, condition: str,
                      text: str) -> None:
        detail = f"{condition}: {text}" if text else condition
        if condition in FINAL_JOIN_ERRORS:
            room.given_up = True
            log.error("the server refused the bot in room %s (%s); not trying again until "
                      "thehat restarts", room.jid, detail)
            return
        if condition == "conflict":
            room.nick = room.nick + "_"
            log.warning("nick in room %s is taken; trying as %s", room.jid, room.nick)
        else:
            log.warning("joining %s failed (%s); trying again later", room.jid, detail)
        self._schedule_rejoin(session, room)

    def _schedule_rejoin(self, session: _Session, room: XmppRoom) -> None:
        delay = room.rejoin.next_delay()
        log.info("rejoining %s in %.1f s (attempt %d)", room.jid, delay, room.rejoin.attempts)
        self._spawn(self._rejoin_later(session, room, delay), f"xmpp rejoin {room.jid}",
                    session.tasks)

    async def _rejoin_later(self, session: _Session, room: XmppRoom, delay: float) -> None:
        await asyncio.sleep(delay)
        if not session.lost.is_set() and not room.joined and not room.given_up:
            await self._join(session, room)

    def _room_ready(self, room: XmppRoom) -> None:
        """Tell a room the bot has just (re)joined what it missed, or say hello."""
        room.rejoin.connected()
        if room.away.away:
            summary = room.away.finish()
            log.info("back in %s: %s", room.jid, summary)
            self.outbox.put(room.jid, [summary], joinable=False)
        elif not room.greeted:
            self.outbox.put(room.jid, [self._greeting(room)], joinable=False)
        room.greeted = True

    def _greeting(self, room: XmppRoom) -> str:
        names = " or ".join(dict.fromkeys([room.nick, *self.settings.aliases]))
        flow = self.daemon.flow_name(room)
        attached = f"; this room follows flow {flow}" if flow else ""
        return f"I answer to {names} (try '{room.nick}: help'){attached}."

    def _remember_occupant(self, room: XmppRoom, presence: Any) -> XmppIdentity:
        nick = presence["from"].resource
        real = presence["muc"]["jid"]
        jid = real.bare if real and real.bare else None
        identity = XmppIdentity(nick, jid, verified=jid is not None)
        room.occupants[nick] = identity
        return identity

    # -- commands -----------------------------------------------------------------------------

    async def _handle_requests(self) -> None:
        """Run the commands one at a time, in the order they arrived."""
        while True:
            request = await self._requests.get()
            try:
                await self._execute(request)
            except Exception:
                log.exception("command %r from %s failed", request.text, request.identity.nick)
                self.outbox.put(request.reply_to, [INTERNAL_ERROR_LINE])

    async def _execute(self, request: _Request) -> None:
        identity = request.identity
        conversation = request.conversation
        conversation.last_identity = identity
        self.last_identity = identity
        log.debug("command from %s in %s: %r (%s)", identity.nick, conversation.id,
                  request.text, identity)
        if isinstance(conversation, XmppDirect):
            queued = self.outbox.hold_private(request.reply_to)
            if queued:
                log.info("not running a command from %s: %d lines of earlier replies still "
                         "queued", identity.nick, queued)
                return
        try:
            reply = await self.daemon.handle(conversation, self.speaker(identity, conversation.id),
                                             request.text)
        except TheHatError as exc:
            # The daemon normally turns these into reply lines itself; the message is
            # written for the user.
            self.put(request.reply_to, str(exc).splitlines())
            return
        if not reply.quit:
            lines = reply.lines
            if isinstance(conversation, XmppDirect):
                lines = private_reply(lines)
            self.put(request.reply_to, lines)
            return
        # The daemon lets only admins quit from chat.
        log.info("%s asked the bot to quit in %s", identity.nick, conversation.id)
        self.put(request.reply_to, reply.lines or ["Bye."])
        await self._quit(f"stopped by {identity.nick}")

    def speaker(self, identity: XmppIdentity, conversation_id: str) -> Speaker:
        """Describe the sender for the daemon: the nick, and the real JID when it is known.

        Without a JID the speaker is known by room and nick only, which is also what their
        command rate is kept by, so a flood in one room does not silence another's nick.
        """
        if identity.jid is not None:
            return Speaker(identity.nick, (Identity("xmpp", identity.jid, identity.verified),),
                           listed_admin=self.is_admin(identity))
        return Speaker(identity.nick, listed_admin=self.is_admin(identity),
                       origin=f"{conversation_id}/{identity.nick}")

    def is_admin(self, identity: XmppIdentity) -> bool:
        """Tell whether `identity` matches an entry of `wfengine.admins`.

        An entry with `@` is a bare JID, matched only by a verified JID; another entry is a
        room nick.
        """
        for admin in self.config.engine.admins:
            if "@" in admin:
                if identity.verified and identity.jid is not None \
                        and identity.jid.casefold() == admin.casefold():
                    return True
            elif identity.nick == admin:
                return True
        return False

    # -- output -------------------------------------------------------------------------------

    def put(self, target: str, lines: Sequence[str]) -> None:
        """Queue `lines` for `target` (a room or a JID), packed into messages."""
        cleaned = [clean_text(line) for text in lines for line in text.splitlines()]
        self.outbox.put(target, pack_lines(cleaned, self.settings.max_message_bytes))

    def _transmit(self, target: str, text: str) -> None:
        session = self._session
        if session is None or not session.client.is_connected():
            raise TransmitError("not connected")
        room = self.rooms.get(target)
        if room is not None and not room.joined:
            raise TransmitError(f"not in room {target}")
        client = session.client
        kind = "groupchat" if room is not None else "chat"
        message = client.make_message(mto=target, mbody=text, mtype=kind)
        stanza_id = client.new_id()
        message["id"] = stanza_id
        # XEP-0359 origin-id: kept by the room in its echo even where it rewrites `id`.
        message["origin_id"]["id"] = stanza_id
        self.sent_ids.add(stanza_id)
        log.debug("-> %s: %d bytes", target, len(text.encode("utf-8")))
        message.send()

    # -- server events ------------------------------------------------------------------------

    def _add_handlers(self, session: _Session) -> None:
        client = session.client
        handlers = {
            "session_start": self._on_session_start,
            "disconnected": self._on_disconnected,
            "connection_failed": self._on_connection_failed,
            "failed_all_auth": self._on_failed_auth,
            "ssl_invalid_chain": self._on_invalid_certificate,
            "stream_error": self._on_stream_error,
            "groupchat_message": self._on_groupchat_message,
            "groupchat_message_error": self._on_message_error,
            "groupchat_presence": self._on_groupchat_presence,
            "message": self._on_message,
        }
        for event, handler in handlers.items():
            client.add_event_handler(event, self._current_only(session, handler))

    def _current_only(self, session: _Session, handler: Any) -> Any:
        """Wrap a handler so that it sees only events of its own, current connection."""
        def handle(data: Any = None) -> None:
            if self._session is session:
                handler(session, data)
        return handle

    def _on_session_start(self, session: _Session, data: Any) -> None:
        session.started.set()

    def _on_disconnected(self, session: _Session, reason: Any) -> None:
        if self._stopping:
            log.info("disconnected from %s", self.settings.domain)
        elif session.started.is_set():
            log.warning("lost the connection to %s%s", self.settings.domain,
                        f" ({reason})" if reason else "")
        session.lost.set()

    def _on_connection_failed(self, session: _Session, error: Any) -> None:
        session.failure = str(error)
        # slixmpp would try again by itself; this frontend's backoff decides instead.
        session.client.cancel_connection_attempt()
        session.lost.set()

    def _on_failed_auth(self, session: _Session, data: Any) -> None:
        if self.settings.tls is not TlsPolicy.OFF and not self._encrypted(session.client):
            # slixmpp 1.17 also fires failed_all_auth when no SASL mechanism is usable. With
            # TLS required it allows none over an unencrypted stream, so it sent no password.
            session.failure = (f"the server does not offer STARTTLS, and thehat-xmpp.tls: "
                               f"{self.settings.tls.value} forbids logging in without TLS")
            log.error("the server %s does not offer STARTTLS; not logging in as %s without "
                      "TLS", self.settings.domain, self.settings.bare_jid)
            session.client.abort()
            return
        session.failure = ("authentication failed: check thehat-xmpp.password (and tls: "
                           "with tls off the server must allow unencrypted login)")
        log.error("the server %s rejected the login of %s", self.settings.domain,
                  self.settings.bare_jid)
        session.client.abort()

    def _on_invalid_certificate(self, session: _Session, error: Any) -> None:
        # slixmpp 1.17 fires this for every ssl.SSLError of the STARTTLS handshake, and leaves
        # the connection open once a handler is registered.
        session.failure = f"TLS handshake failed: {error}"
        log.error("TLS handshake with %s failed: %s (the server certificate must be signed "
                  "by a CA in thehat-xmpp.tls_cafile, or the system's CAs when it is unset)",
                  self.settings.domain, error)
        session.client.abort()

    def _on_stream_error(self, session: _Session, error: Any) -> None:
        log.warning("the server %s closes the stream: %s %s", self.settings.domain,
                    error["condition"], error["text"])

    def _on_message_error(self, session: _Session, message: Any) -> None:
        error = message["error"]
        log.warning("room %s returned an error for a message: %s %s",
                    message["from"].bare, error["condition"], error["text"])

    def _on_groupchat_message(self, session: _Session, message: Any) -> None:
        room = self.rooms.get(message["from"].bare)
        if room is None:
            return
        nick = message["mucnick"] or message["from"].resource
        if message.get_plugin("delay", check=True) is not None:
            # Room history replayed on join: old commands are never executed.
            self.skipped["history"] += 1
            return
        if nick == room.nick:
            if message["id"] in self.sent_ids or message["origin_id"]["id"] in self.sent_ids:
                self.skipped["echo"] += 1
            else:
                log.debug("ignoring a message in %s from the bot's nick that the bot did not "
                          "send (another session of its account?)", room.jid)
            return
        if not nick:
            return
        command = addressed_command(message["body"], [room.nick, *self.settings.aliases])
        if command is None:
            return
        identity = self._occupant(session, room, nick)
        self._requests.put_nowait(_Request(room, identity, command or "status", room.jid))

    def _occupant(self, session: _Session, room: XmppRoom, nick: str) -> XmppIdentity:
        """Return the identity of occupant `nick`, with the real JID the room disclosed."""
        real = session.client.plugin["xep_0045"].get_jid_property(room.jid, nick, "jid")
        jid = str(real).split("/", 1)[0] if real else None
        identity = XmppIdentity(nick, jid or None, verified=bool(jid))
        room.occupants[nick] = identity
        return identity

    def _on_message(self, session: _Session, message: Any) -> None:
        """Handle a direct message: every one with a body is a command."""
        if message["type"] not in ("chat", "normal") or not message["body"].strip():
            return
        if message.get_plugin("delay", check=True) is not None:
            # Stored while the bot was offline: an old command is never executed.
            log.info("ignoring a delayed direct message from %s", message["from"])
            return
        sender = message["from"]
        room = self.rooms.get(sender.bare)
        if room is not None:
            if not sender.resource or sender.resource == room.nick:
                return
            identity = self._occupant(session, room, sender.resource)
            key = f"{room.jid}/{sender.resource}"
        else:
            if sender.bare == self.settings.bare_jid or not sender.bare:
                return
            identity = XmppIdentity(self._nick_of(sender.bare), sender.bare, verified=True)
            key = sender.bare
        text = message["body"]
        names = [room.nick if room is not None else self.settings.nick, *self.settings.aliases]
        command = addressed_command(text, names)
        if command is None:
            command = text.strip()
        direct = self._direct(key, str(sender))
        self._requests.put_nowait(_Request(direct, identity, command or "status",
                                           direct.address))

    def _nick_of(self, jid: str) -> str:
        """Return the room nick of account `jid` in a joined room, else the bare JID itself."""
        for room in self.rooms.values():
            for identity in room.occupants.values():
                if identity.jid == jid:
                    return identity.nick
        return jid

    def _direct(self, key: str, address: str) -> XmppDirect:
        direct = self.directs.get(key)
        if direct is None:
            direct = XmppDirect(self, key, address)
            self.directs[key] = direct
            self.daemon.register(direct)
        direct.address = address
        return direct

    def _on_groupchat_presence(self, session: _Session, presence: Any) -> None:
        room = self.rooms.get(presence["from"].bare)
        if room is None or presence["type"] == "error":
            return
        nick = presence["from"].resource
        codes = set(presence["muc"]["status_codes"])
        if presence["type"] != "unavailable":
            if nick != room.nick:
                self._remember_occupant(room, presence)
            return
        if STATUS_SELF not in codes and nick != room.nick:
            room.occupants.pop(nick, None)
            return
        if STATUS_NICK_CHANGED in codes or not room.joined or self._stopping:
            return
        self._left_room(session, room, codes, presence)

    def _left_room(self, session: _Session, room: XmppRoom, codes: set[int],
                   presence: Any) -> None:
        """React to the room removing the bot: rejoin with backoff, or give up after a ban."""
        room.joined = False
        room.away.start()
        room.rejoin.disconnected()
        item = presence["muc"]["item"]
        actor, reason = item["actor"]["nick"], item["reason"]
        detail = ", ".join(part for part in (f"by {actor}" if actor else "", reason) if part)
        detail = f" ({detail})" if detail else ""
        if STATUS_BANNED in codes:
            room.given_up = True
            log.error("the bot was banned from room %s%s; not trying to join it again until "
                      "thehat restarts", room.jid, detail)
            return
        if STATUS_KICKED in codes:
            log.warning("the bot was kicked from room %s%s", room.jid, detail)
        elif STATUS_SHUTDOWN in codes:
            log.warning("room %s closed because its service shuts down", room.jid)
        elif codes & {STATUS_AFFILIATION_CHANGE, STATUS_MEMBERS_ONLY}:
            log.warning("room %s removed the bot because it is no longer a member%s",
                        room.jid, detail)
        else:
            log.warning("the bot left room %s%s", room.jid, detail)
        self._schedule_rejoin(session, room)
