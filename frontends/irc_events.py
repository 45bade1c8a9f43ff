"""The IRC frontend's handlers of server events: registration, messages, joins, nicks, accounts.

`ServerEvents` registers one handler per library event type on the reactor and works on the
state of its `IrcFrontend`: the bot's nick, user and host, its channels, what the server
supports, the accounts it reports, and the queue of commands. Handlers see only the events of
the frontend's current connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

from frontends.irc_conversations import IrcChannel, Request, Session
from frontends.irc_protocol import addressed_command, irc_lower

if TYPE_CHECKING:
    from frontends.irc import IrcFrontend

log = logging.getLogger(__name__)

# Seconds before the bot tries to rejoin a channel it was kicked from.
REJOIN_DELAY: Final = 10.0
# The query type the bot puts in its WHOX requests, to match the replies to them.
WHOX_TOKEN: Final = "117"
# The channel status marks that NAMES replies put before nicks (owner, admin, op, halfop,
# voice), all of them with multi-prefix.
NAMES_PREFIXES: Final = "~&@%+"

# Library event names of the numerics that reject a JOIN (RFC 2812 section 5.2). Most current
# servers use 477 for "you need a registered nick", which the library calls nochanmodes.
JOIN_FAILURES: Final = frozenset({"nosuchchannel", "toomanychannels", "channelisfull",
                                  "inviteonlychan", "bannedfromchan", "badchannelkey",
                                  "nochanmodes", "unavailresource"})
NICK_FAILURES: Final = frozenset({"nicknameinuse", "erroneusnickname", "unavailresource",
                                  "nickcollision"})


class ServerEvents:
    """The handlers of one frontend's server events; `register` adds them to the reactor."""

    def __init__(self, frontend: IrcFrontend, library: ModuleType) -> None:
        self.frontend = frontend
        # frontends.irc_connection, passed in because it imports the optional irc library.
        self.library = library

    def register(self, reactor: Any) -> None:
        handlers: dict[str, Callable[[Any, Any], None]] = {
            "welcome": self._on_welcome,
            "featurelist": self._on_featurelist,
            "cap": self._on_cap,
            "authenticate": self._on_authenticate,
            "pubmsg": self._on_pubmsg,
            "privmsg": self._on_privmsg,
            "join": self._on_join,
            "part": self._on_part,
            "kick": self._on_kick,
            "nick": self._on_nick,
            "quit": self._on_quit,
            "account": self._on_account,
            "whospcrpl": self._on_whox,
            "namreply": self._on_names,
            "396": self._on_host_hidden,
            "disconnect": self._on_disconnect,
            "error": self._on_error,
            "passwdmismatch": self._on_password_mismatch,
        }
        for kind in NICK_FAILURES:
            handlers[kind] = self._on_nick_unavailable
        for kind in JOIN_FAILURES - NICK_FAILURES:
            handlers[kind] = self._on_join_failed
        for kind in ("loggedin", "saslsuccess", "nicklocked", "saslfail", "sasltoolong",
                     "saslaborted", "saslalready"):
            handlers[kind] = self._on_sasl_numeric
        for kind, handler in handlers.items():
            reactor.add_global_handler(kind, self._current_only(handler))

    def _current_only(self, handler: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
        """Wrap a handler so that it receives only events of the current connection."""
        def handle(connection: Any, event: Any) -> None:
            session = self.frontend.session
            if session is not None and connection is session.connection:
                handler(session, event)
        return handle

    def _channel(self, name: str | None) -> IrcChannel | None:
        if not name:
            return None
        return next((channel for channel in self.frontend.channels
                     if self.frontend.same_nick(channel.name, name)), None)

    def _on_welcome(self, session: Session, event: Any) -> None:
        self.frontend.nick = event.target
        # Many servers end the welcome text with the client's full nick!user@host.
        text = (self.library.arguments_of(event) or [""])[-1]
        mask = text.rsplit(" ", 1)[-1]
        if "!" in mask and "@" in mask:
            self.frontend.user, self.frontend.host = mask.split("!", 1)[1].split("@", 1)
        session.registered.set()

    def _on_featurelist(self, session: Session, event: Any) -> None:
        # The last argument is the trailing "are supported by this server".
        self.frontend.support.update(self.library.arguments_of(event)[:-1])
        self.frontend.accounts.casemapping = self.frontend.support.casemapping

    def _on_cap(self, session: Session, event: Any) -> None:
        session.negotiation.on_cap(self.library.arguments_of(event))

    def _on_authenticate(self, session: Session, event: Any) -> None:
        session.negotiation.on_authenticate(event.target or "")

    def _on_sasl_numeric(self, session: Session, event: Any) -> None:
        session.negotiation.on_numeric(event.type, self.library.arguments_of(event))

    def _on_password_mismatch(self, session: Session, event: Any) -> None:
        log.error("the server rejected the password; check thehat-irc.password")

    def _on_nick_unavailable(self, session: Session, event: Any) -> None:
        arguments = self.library.arguments_of(event)
        if event.type == "unavailresource" and arguments and self._channel(arguments[0]):
            self._on_join_failed(session, event)
            return
        if session.registered.is_set():
            # A rejected attempt to take the configured nick back; the next one comes later.
            log.debug("nick %s is still taken", arguments[0] if arguments else "?")
            return
        unavailable = arguments[0] if arguments else self.frontend.nick
        candidate = next(session.candidates, None)
        if candidate is None:
            log.error("every nick the bot may use is taken; dropping the connection")
            session.connection.disconnect("No nick available")
            return
        log.warning("nick %s is not available (%s); trying %s", unavailable, event.type,
                    candidate)
        self.frontend.nick = candidate
        session.connection.nick(candidate)

    def _on_pubmsg(self, session: Session, event: Any) -> None:
        nick, user, host = self.library.event_source(event)
        if not nick or self.frontend.same_nick(nick, self.frontend.nick):
            return
        channel = self._channel(event.target)
        text = (self.library.arguments_of(event) or [""])[0]
        if channel is None:
            return
        command = addressed_command(text, [self.frontend.nick, *self.frontend.settings.aliases],
                                    self.frontend.support.casemapping)
        if command is None:
            return
        tags = self.library.message_tags(event)
        identity = self.frontend.accounts.identity(nick, user, host, tags)
        self.frontend.commands.put_nowait(Request(channel, identity, command or "status",
                                           channel.name))

    def _on_privmsg(self, session: Session, event: Any) -> None:
        nick, user, host = self.library.event_source(event)
        if not nick or self.frontend.same_nick(nick, self.frontend.nick) or "." in nick:
            # "." marks a server name: servers send no commands.
            return
        text = (self.library.arguments_of(event) or [""])[0]
        command = addressed_command(text, [self.frontend.nick, *self.frontend.settings.aliases],
                                    self.frontend.support.casemapping)
        if command is None:
            command = text.strip()
        tags = self.library.message_tags(event)
        identity = self.frontend.accounts.identity(nick, user, host, tags)
        query = self.frontend.query(nick)
        self.frontend.commands.put_nowait(Request(query, identity, command or "status", nick))

    def _on_join(self, session: Session, event: Any) -> None:
        nick, user, host = self.library.event_source(event)
        arguments = self.library.arguments_of(event)
        if arguments and "extended-join" in session.negotiation.enabled:
            self.frontend.accounts.set(nick, arguments[0])
        if not self.frontend.same_nick(nick, self.frontend.nick):
            self.frontend.accounts.joined(nick, event.target)
            return
        self.frontend.user = user or self.frontend.user
        self.frontend.host = host or self.frontend.host
        channel = self._channel(event.target)
        if channel is None:
            log.warning("joined %s, which is not configured; leaving it", event.target)
            session.connection.part(event.target)
            return
        channel.joined = True
        log.info("joined %s as %s", channel.name, nick)
        if self.frontend.support.whox:
            # Sent raw: the library's who() replaces any second argument with "o".
            session.connection.send_items("WHO", channel.name, f"%tcuhna,{WHOX_TOKEN}")
        self._join_settled(session, channel.name)
        if session.ready:
            self.frontend.channel_ready(channel)

    def _join_settled(self, session: Session, name: str) -> None:
        session.pending_joins.discard(irc_lower(name, self.frontend.support.casemapping))
        if not session.pending_joins:
            session.joins_settled.set()

    def _on_join_failed(self, session: Session, event: Any) -> None:
        arguments = self.library.arguments_of(event)
        channel = self._channel(arguments[0] if arguments else None)
        if channel is None:
            return
        reason = arguments[-1] if len(arguments) > 1 else event.type
        log.error("cannot join %s: %s; trying again every %.0f s", channel.name, reason,
                  self.frontend.settings.reclaim_interval)
        channel.away.start()
        self._join_settled(session, channel.name)

    def _on_part(self, session: Session, event: Any) -> None:
        nick, _, _ = self.library.event_source(event)
        if not self.frontend.same_nick(nick, self.frontend.nick):
            self.frontend.accounts.left(nick, event.target)
            return
        self.frontend.accounts.bot_left(event.target)
        channel = self._channel(event.target)
        if channel is not None:
            channel.joined = False
            channel.away.start()

    def _on_kick(self, session: Session, event: Any) -> None:
        arguments = self.library.arguments_of(event)
        channel = self._channel(event.target)
        if not arguments:
            return
        if not self.frontend.same_nick(arguments[0], self.frontend.nick):
            self.frontend.accounts.left(arguments[0], event.target)
            return
        self.frontend.accounts.bot_left(event.target)
        if channel is None:
            return
        nick, _, _ = self.library.event_source(event)
        reason = arguments[1] if len(arguments) > 1 else ""
        log.warning("%s kicked the bot from %s (%s); rejoining in %.0f s", nick, channel.name,
                    reason, REJOIN_DELAY)
        channel.joined = False
        channel.away.start()
        self.frontend.spawn(self._rejoin_later(session, channel), f"irc rejoin {channel.name}",
                    session.tasks)

    async def _rejoin_later(self, session: Session, channel: IrcChannel) -> None:
        await asyncio.sleep(REJOIN_DELAY)
        if session.connection.is_open() and not channel.joined:
            session.connection.join(channel.name)
            self.frontend.outbox.charge()

    def _on_nick(self, session: Session, event: Any) -> None:
        old, _, _ = self.library.event_source(event)
        new = event.target
        self.frontend.accounts.rename(old, new)
        if self.frontend.same_nick(old, self.frontend.nick):
            self.frontend.nick = new
            if self.frontend.same_nick(new, self.frontend.settings.nick):
                log.info("took nick %s back", new)
            else:
                log.info("nick changed from %s to %s", old, new)
        elif self.frontend.same_nick(old, self.frontend.settings.nick):
            self.frontend.reclaim_nick(session)

    def _on_quit(self, session: Session, event: Any) -> None:
        nick, _, _ = self.library.event_source(event)
        self.frontend.accounts.forget(nick)
        if self.frontend.same_nick(nick, self.frontend.settings.nick):
            self.frontend.reclaim_nick(session)

    def _on_account(self, session: Session, event: Any) -> None:
        nick, _, _ = self.library.event_source(event)
        self.frontend.accounts.set(nick, event.target)

    def _on_whox(self, session: Session, event: Any) -> None:
        # WHO <channel> %tcuhna,<token> replies: token, channel, user, host, nick, account
        # ("0": none).
        arguments = self.library.arguments_of(event)
        if len(arguments) == 6 and arguments[0] == WHOX_TOKEN:
            self.frontend.accounts.joined(arguments[4], arguments[1])
            self.frontend.accounts.set(arguments[4], arguments[5])

    def _on_names(self, session: Session, event: Any) -> None:
        # RPL_NAMREPLY (353): channel type, channel, then nicks with their status prefixes.
        arguments = self.library.arguments_of(event)
        if len(arguments) < 3:
            return
        for entry in arguments[2].split():
            nick = entry.lstrip(NAMES_PREFIXES)
            if nick and not self.frontend.same_nick(nick, self.frontend.nick):
                self.frontend.accounts.joined(nick, arguments[1])

    def _on_host_hidden(self, session: Session, event: Any) -> None:
        # RPL_HOSTHIDDEN (396): the host others now see for the bot.
        arguments = self.library.arguments_of(event)
        if arguments:
            self.frontend.host = arguments[0]

    def _on_disconnect(self, session: Session, event: Any) -> None:
        reason = (self.library.arguments_of(event) or [""])[0]
        if self.frontend.stopping:
            log.info("disconnected from %s", self.frontend.settings.server)
        else:
            log.warning("lost the connection to %s:%d%s", self.frontend.settings.server,
                        self.frontend.settings.port, f" ({reason})" if reason else "")
        session.lost.set()

    def _on_error(self, session: Session, event: Any) -> None:
        log.warning("the server is closing the connection: %s", event.target)
