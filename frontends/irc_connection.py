"""The frontend's use of the `irc` library (jaraco/irc, asyncio flavour), kept in one module.

`frontends.irc` imports this module only when it starts, so that `thehat` runs without the
library when no IRC section is configured. What it adds to `irc.client_aio.AioConnection`:

- input that is not valid UTF-8 is decoded with U+FFFD in place of the bad bytes;
- a line that fails to parse, or whose handler raises, is logged and skipped, because asyncio
  would close the transport if `data_received` raised;
- `CAP LS 302` is sent before NICK and USER, so that a server that knows IRCv3 capability
  negotiation waits for `CAP END` before it completes registration;
- outgoing lines are logged at DEBUG with passwords replaced by `***` (the library's own
  send logging would show PASS and AUTHENTICATE arguments), and writing to a closed
  connection drops the line instead of raising;
- the time of the last input, for the keepalive.

`CapNegotiation` asks for the capabilities that tell services accounts and, when configured,
logs in with SASL PLAIN.
"""

from __future__ import annotations

import base64
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any, Final

import irc.client
import irc.client_aio
import irc.connection
from jaraco.stream import buffer

from frontends.irc_config import SaslConfig
from frontends.irc_protocol import IDENTITY_CAPABILITIES, SASL_CAPABILITY, parse_capabilities

log = logging.getLogger(__name__)

# IRCv3 SASL: AUTHENTICATE arguments are sent in chunks of at most 400 bytes, and a payload
# whose last chunk is exactly 400 bytes long is ended by "AUTHENTICATE +".
SASL_CHUNK: Final = 400
# Numerics (RFC 2812 and IRCv3 SASL) that end SASL without a login.
SASL_FAILURES: Final = frozenset({"nicklocked", "saslfail", "sasltoolong", "saslaborted",
                                  "saslalready"})


class ReplacingLineBuffer(buffer.DecodingLineBuffer):  # type: ignore[misc]
    """Decode each line as UTF-8, with U+FFFD for bytes that are not valid UTF-8."""

    errors = "replace"


def redact(line: str) -> str:
    """Hide the password in an outgoing line, for the log.

    >>> redact("PASS hunter2"), redact("PRIVMSG NickServ :IDENTIFY hat hunter2")
    ('PASS ***', 'PRIVMSG NickServ :IDENTIFY ***')
    >>> redact("AUTHENTICATE PLAIN"), redact("AUTHENTICATE AGFsaWNl")
    ('AUTHENTICATE PLAIN', 'AUTHENTICATE ***')
    """
    command, _, rest = line.partition(" ")
    command = command.upper()
    if command == "PASS":
        return "PASS ***"
    if command == "AUTHENTICATE" and rest not in ("PLAIN", "+", "*"):
        return "AUTHENTICATE ***"
    if command in ("PRIVMSG", "NOTICE"):
        target, _, text = rest.partition(" :")
        if text.upper().startswith(("IDENTIFY ", "IDENTIFY\t")):
            return f"{command} {target} :IDENTIFY ***"
    return line


def message_tags(event: Any) -> dict[str, str | None]:
    """Return the IRCv3 message tags of a library event as a mapping."""
    return {tag["key"]: tag["value"] for tag in (event.tags or [])}


class BotConnection(irc.client_aio.AioConnection):  # type: ignore[misc]
    """One connection to the server; see the module docstring for what it changes."""

    buffer_class = ReplacingLineBuffer

    def __init__(self, reactor: Any) -> None:
        super().__init__(reactor)
        self.last_received = time.monotonic()

    async def open(self, server: str, port: int, nickname: str, *, password: str | None,
                   username: str, realname: str,
                   ssl_context: ssl.SSLContext | None) -> None:
        """Connect, then send CAP LS, PASS (with a password), NICK and USER.

        Raises OSError (ssl.SSLError included) when the connection cannot be made.
        """
        factory = (irc.connection.AioFactory(ssl=ssl_context) if ssl_context is not None
                   else irc.connection.AioFactory())

        async def connect_then_ask_capabilities(protocol: Any, address: Any) -> Any:
            transport, protocol = await factory(protocol, address)
            # Written before the library sends PASS, NICK and USER.
            log.debug(">> CAP LS 302")
            transport.write(b"CAP LS 302\r\n")
            return transport, protocol

        self.last_received = time.monotonic()
        await self.connect(server, port, nickname, password=password, username=username,
                           ircname=realname, connect_factory=connect_then_ask_capabilities)

    def is_open(self) -> bool:
        transport = getattr(self, "transport", None)
        return bool(self.connected) and transport is not None and not transport.is_closing()

    def process_data(self, new_data: bytes) -> None:
        self.last_received = time.monotonic()
        self.buffer.feed(new_data)
        for line in self.buffer:
            if not line:
                continue
            log.debug("<< %s", line)
            try:
                self._process_line(line)
            except Exception:
                log.exception("failed to handle the line %r from %s; skipped it", line,
                              self.server)

    def send_raw(self, string: str) -> None:
        transport = getattr(self, "transport", None)
        if transport is None or transport.is_closing():
            log.debug("not connected, dropped: %s", redact(string))
            return
        data = self._prep_message(string)
        log.debug(">> %s", redact(string))
        transport.write(data)


class BotReactor(irc.client_aio.AioReactor):  # type: ignore[misc]
    connection_class = BotConnection


class CapNegotiation:
    """IRCv3 capability negotiation and SASL PLAIN during registration.

    Asks for those of IDENTITY_CAPABILITIES the server offers, plus `sasl` when `sasl` is
    configured, then logs in and sends CAP END. A server without CAP replies to CAP LS with
    "unknown command" and registers the client as usual, so nothing is needed for it.
    `enabled` holds the capabilities the server acknowledged; `account` the account that SASL
    logged in to.
    """

    def __init__(self, connection: BotConnection, sasl: SaslConfig | None,
                 on_done: Callable[[set[str]], None] | None = None) -> None:
        self.connection = connection
        self.sasl = sasl
        self.enabled: set[str] = set()
        self.account: str | None = None
        self.done = False
        self._offered: dict[str, str] = {}
        self._on_done = on_done

    def on_cap(self, arguments: list[str]) -> None:
        """Handle a CAP message; `arguments` follow the target (`LS`, `ACK`, `NAK`, ...)."""
        if not arguments or self.done:
            return
        subcommand = arguments[0].upper()
        if subcommand == "LS":
            # CAP LS 302 continues over several lines, each but the last with a "*" before
            # the list.
            more = len(arguments) > 2 and arguments[1] == "*"
            self._offered.update(parse_capabilities(arguments[-1]))
            if not more:
                self._request()
        elif subcommand == "ACK":
            self.enabled.update(arguments[-1].split())
            log.info("server enabled capabilities: %s", " ".join(sorted(self.enabled)))
            if SASL_CAPABILITY in self.enabled and self.sasl is not None:
                self.connection.send_items("AUTHENTICATE", "PLAIN")
            else:
                self.finish()
        elif subcommand == "NAK":
            log.warning("the server rejected the capabilities %s (CAP NAK); going on "
                        "without them", arguments[-1])
            self.finish()

    def _request(self) -> None:
        wanted: list[str] = [name for name in IDENTITY_CAPABILITIES if name in self._offered]
        if self.sasl is not None:
            mechanisms = self._offered.get(SASL_CAPABILITY)
            if mechanisms is None:
                log.error("the server does not offer SASL, so the bot does not log in to "
                          "account %s", self.sasl.account)
            elif mechanisms and "PLAIN" not in mechanisms.upper().split(","):
                log.error("the server offers SASL mechanisms %s but not PLAIN, so the bot "
                          "does not log in to account %s", mechanisms, self.sasl.account)
            else:
                wanted.append(SASL_CAPABILITY)
        if wanted:
            self.connection.cap("REQ", *wanted)
        else:
            self.finish()

    def on_authenticate(self, argument: str) -> None:
        """Send the PLAIN credentials in reply to the server's `AUTHENTICATE +`."""
        if self.sasl is None or argument != "+" or self.done:
            return
        account = self.sasl.account
        payload = f"{account}\0{account}\0{self.sasl.password.reveal()}".encode()
        encoded = base64.b64encode(payload).decode("ascii")
        chunks = [encoded[i:i + SASL_CHUNK] for i in range(0, len(encoded), SASL_CHUNK)]
        if len(chunks[-1]) == SASL_CHUNK:
            chunks.append("+")
        for chunk in chunks:
            self.connection.send_items("AUTHENTICATE", chunk)

    def on_numeric(self, kind: str, arguments: list[str]) -> None:
        """Handle the SASL numerics (900 and 902-907) by their library event names."""
        if kind == "loggedin" and len(arguments) >= 2:
            self.account = arguments[1]
            log.info("logged in to services account %s", self.account)
        elif kind == "saslsuccess":
            self.finish()
        elif kind in SASL_FAILURES:
            reason = arguments[-1] if arguments else kind
            account = self.sasl.account if self.sasl is not None else "?"
            log.error("SASL login to account %s failed: %s; going on without it", account,
                      reason)
            self.finish()

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        self.connection.cap("END")
        if self._on_done is not None:
            self._on_done(self.enabled)


def tls_context(verify: bool, cafile: str | None) -> ssl.SSLContext:
    """Build the TLS context: the system's trusted CAs (or `cafile`), host name checked."""
    context = ssl.create_default_context(cafile=cafile)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def event_source(event: Any) -> tuple[str, str | None, str | None]:
    """Return the nick, user and host of the sender of a library event ("" for none)."""
    if not event.source:
        return "", None, None
    source = irc.client.NickMask(event.source)
    return source.nick, source.user, source.host


def arguments_of(event: Any) -> list[str]:
    return [str(argument) for argument in (event.arguments or [])]
