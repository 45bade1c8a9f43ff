"""Notification mail for steps that started or finished, sent through an SMTP server.

`parse_smtp_section` turns the configuration file's `smtp` section into `SmtpSettings`.
`build_message` is pure: it turns a `StepMail` into an `EmailMessage`. `send_message` blocks
on the network, so callers on the event loop use `send_step_mail`, which runs it in a worker
thread. Every failure becomes a `MailError` whose message names the server and the cause.

This module does not queue or retry: a mail that failed is logged and reported to the caller
once, and is then dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import smtplib
import socket
import ssl
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid
from pathlib import Path
from typing import Any, Final, Literal, get_args

from frontends.config_values import (SECRET_KEYS, Secret, mapping_value, seconds_value,
                                     secret_value, text_value)
from thehat.addresses import address_problem
from thehat.errors import ConfigError, TheHatError

log = logging.getLogger(__name__)

Security = Literal["none", "starttls", "tls"]
MailKind = Literal["start", "finish"]

SECTION: Final = "smtp"
KEYS: Final = frozenset({"host", "port", "security", "sender", "username", "timeout",
                         "cafile", *SECRET_KEYS})
SECURITY_MODES: Final[tuple[Security, ...]] = get_args(Security)
DEFAULT_HOST: Final = "localhost"
DEFAULT_SECURITY: Final[Security] = "starttls"
DEFAULT_TIMEOUT: Final = 30.0
# Port 25 is SMTP relay (RFC 5321), 587 is message submission (RFC 6409) and 465 is message
# submission over implicit TLS (RFC 8314).
DEFAULT_PORTS: Final[Mapping[Security, int]] = {"none": 25, "starttls": 587, "tls": 465}

FINISH_NOTICE: Final = ("NOTE: This message was sent as the step *finished*; it is just a "
                        "notification and it is likely you need do nothing.")


class MailError(TheHatError):
    """A notification mail could not be built or sent. The message gives the cause and the fix."""


@dataclass(frozen=True)
class SmtpSettings:
    """The validated `smtp` section: where and how to send notification mail.

    `timeout` is in seconds and applies to the connection and to each reply from the server.
    `cafile` is a PEM bundle of the CAs that may sign the server's certificate; None means the
    system's default trust store.
    """

    host: str
    port: int
    security: Security
    sender: str
    username: str | None = None
    password: Secret | None = None
    timeout: float = DEFAULT_TIMEOUT
    cafile: Path | None = None


@dataclass(frozen=True)
class StepMail:
    """The content and the recipients of one "step started" or "step finished" mail.

    `actor` is the user who started or finished the step and `status_url` is the link to the
    flow's status page.
    """

    kind: MailKind
    flow: str
    step: str
    description: str | None
    owner: str | None
    actor: str
    url: str | None
    note: str | None
    status_url: str | None
    recipients: tuple[str, ...]


# Configuration


def parse_smtp_section(section: Any, source: str, base: Path) -> SmtpSettings:
    """Validate the configuration file's `smtp` mapping; relative paths are taken from `base`.

    Raises ConfigError naming `source`, the key path, the bad value and the accepted values.
    """
    mapping = mapping_value(section, SECTION, KEYS, source)
    security = _security(mapping.get("security"), source)
    host = _host(mapping.get("host"), source)
    port = _port(mapping.get("port"), security, source)
    sender = _sender(mapping.get("sender"), source)
    username, password = _credentials(mapping, source, base)

    timeout = DEFAULT_TIMEOUT
    if mapping.get("timeout") is not None:
        timeout = seconds_value(mapping["timeout"], f"{SECTION}.timeout", source)
        if timeout == 0:
            raise ConfigError(f"{source}: {SECTION}.timeout is {mapping['timeout']!r}; use a "
                              "number of seconds greater than 0")

    cafile = None
    if mapping.get("cafile") is not None:
        cafile = _cafile(mapping["cafile"], security, source, base)

    if password is not None and security == "none":
        log.warning("%s: %s.security is none, so the SMTP password is sent to %s without "
                    "encryption", source, SECTION, _server_name(host, port))
    return SmtpSettings(host=host, port=port, security=security, sender=sender,
                        username=username, password=password, timeout=timeout, cafile=cafile)


def _security(value: Any, source: str) -> Security:
    if value is None:
        return DEFAULT_SECURITY
    text = text_value(value, f"{SECTION}.security", source).lower()
    for mode in SECURITY_MODES:
        if text == mode:
            return mode
    raise ConfigError(f"{source}: {SECTION}.security is {value!r}; use none, starttls or tls "
                      f"(default {DEFAULT_SECURITY})")


def _host(value: Any, source: str) -> str:
    if value is None:
        return DEFAULT_HOST
    host = text_value(value, f"{SECTION}.host", source)
    if not host or any(char.isspace() or not char.isprintable() for char in host):
        raise ConfigError(f"{source}: {SECTION}.host is {value!r}; give a host name or an IP "
                          f"address (default {DEFAULT_HOST})")
    return host


def _port(value: Any, security: Security, source: str) -> int:
    if value is None:
        return DEFAULT_PORTS[security]
    try:
        port = int(str(value).strip())
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        defaults = ", ".join(f"{port} for {mode}" for mode, port in DEFAULT_PORTS.items())
        raise ConfigError(f"{source}: {SECTION}.port is {value!r}; use a port number from 1 to "
                          f"65535 (default {defaults})")
    return port


def _sender(value: Any, source: str) -> str:
    if value is None:
        raise ConfigError(f"{source}: {SECTION}.sender is missing; give the address that "
                          "notification mail comes from, such as thehat@example.com")
    sender = text_value(value, f"{SECTION}.sender", source)
    problem = address_problem(sender)
    if problem is not None:
        raise ConfigError(f"{source}: {SECTION}.sender: {problem}")
    return sender


def _credentials(mapping: Mapping[str, Any], source: str,
                 base: Path) -> tuple[str | None, Secret | None]:
    username = None
    if mapping.get("username") is not None:
        username = text_value(mapping["username"], f"{SECTION}.username", source)
        if not username:
            raise ConfigError(f"{source}: {SECTION}.username is empty; give the account name "
                              "or remove the key")
    has_password = any(mapping.get(key) is not None for key in SECRET_KEYS)
    if username is not None and not has_password:
        raise ConfigError(f"{source}: {SECTION}.username is set but no password is given; add "
                          f"{SECTION}.password, password_env (an environment variable) or "
                          "password_file")
    if username is None and has_password:
        raise ConfigError(f"{source}: {SECTION} has a password but no username; add "
                          f"{SECTION}.username, the account that the password belongs to")
    return username, secret_value(mapping, SECTION, source, base, required=False)


def _cafile(value: Any, security: Security, source: str, base: Path) -> Path:
    key = f"{SECTION}.cafile"
    if security == "none":
        raise ConfigError(f"{source}: {key} is set but {SECTION}.security is none, so no "
                          "certificate is checked; use starttls or tls, or remove the key")
    path = base / os.path.expanduser(text_value(value, key, source))
    # Loading the bundle now reports a missing or malformed file at start-up, not at the
    # first mail.
    try:
        ssl.create_default_context(cafile=str(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{source}: {key}: cannot load CA certificates from {path}: "
                          f"{exc}; give a PEM file of CA certificates") from exc
    return path


# Building the message


def build_message(mail: StepMail, sender: str, now: datetime | None = None) -> EmailMessage:
    """Build the plain-text UTF-8 message for `mail`, dated `now` (default: the current time).

    Control characters in header values are replaced by spaces, so no text from a flow can
    add a header. Raises MailError when the sender or a recipient is not a plain address,
    and ValueError when `mail.recipients` is empty.
    """
    if not mail.recipients:
        raise ValueError(f"the {mail.kind} mail of step {mail.step!r} has no recipients")
    problems = [problem for address in (sender, *mail.recipients)
                if (problem := address_problem(address)) is not None]
    if problems:
        raise MailError(f"cannot send the {mail.kind} mail of step {mail.step!r}: "
                        f"{'; '.join(problems)}")

    message = EmailMessage()
    message["Subject"] = _subject(mail)
    message["From"] = sender
    message["To"] = ", ".join(mail.recipients)
    moment = now if now is not None else datetime.now(timezone.utc)
    message["Date"] = format_datetime(moment.astimezone())
    # An explicit domain keeps make_msgid from looking up this host's name in the DNS.
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
    message["X-TheHat-Flow"] = _one_line(mail.flow)
    message["X-TheHat-Step"] = _one_line(mail.step)

    body = _body(mail)
    # RFC 6152 allows 8-bit bodies only to servers that offer 8BITMIME, and smtplib does not
    # check that, so non-ASCII text goes out as quoted-printable, which is 7-bit.
    message.set_content(body, charset="utf-8",
                        cte=None if body.isascii() else "quoted-printable")
    return message


def _subject(mail: StepMail) -> str:
    verb = "has started" if mail.kind == "start" else "has finished"
    description = _one_line(mail.description or "")
    step = _one_line(mail.step)
    title = f"{step} ({description})" if description else step
    return f"[{_one_line(mail.flow)}]: {title} {verb}"


def _body(mail: StepMail) -> str:
    title = _one_line(mail.description or "") or _one_line(mail.step)
    actor = _one_line(mail.actor)
    if mail.kind == "start":
        opening = f"The workflow step entitled '{title}' has begun."
    else:
        opening = f"The workflow step entitled '{title}' was finished by {actor}."
    facts = [f"Flow: {_one_line(mail.flow)}",
             f"Step: {_one_line(mail.step)}",
             f"Owner: {_one_line(mail.owner or '') or 'unassigned'}"]
    if mail.kind == "start":
        facts.append(f"Started by: {actor}")

    paragraphs = [opening, "\n".join(facts)]
    url = _one_line(mail.url or "")
    if url:
        paragraphs.append(f"Documentation for this step is available at {url}")
    note = _text(mail.note or "")
    if note:
        paragraphs.append(f"This note is attached to the step: {note}")
    if mail.kind == "finish":
        paragraphs.append(FINISH_NOTICE)
    status_url = _one_line(mail.status_url or "")
    if status_url:
        paragraphs.append(f"For workflow status see {status_url}")
    return "\n\n".join(paragraphs) + "\n"


def _is_control(char: str) -> bool:
    # Cc covers CR, LF and tab; Cf, Zl and Zp are invisible format characters and the
    # Unicode line and paragraph separators, which some mail readers also break lines at.
    return unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp")


def _one_line(text: str) -> str:
    """Replace control characters by spaces and collapse runs of whitespace.

    >>> _one_line("Toast\\r\\nBcc: evil@example.com\\t ")
    'Toast Bcc: evil@example.com'
    """
    return " ".join("".join(" " if _is_control(char) else char for char in text).split())


def _text(text: str) -> str:
    """Keep line breaks of a multi-line text but replace other control characters by spaces.

    >>> _text("line one\\r\\nline\\x00two\\n")
    'line one\\nline two'
    """
    lines = text.splitlines()
    return "\n".join(_one_line(line) for line in lines).strip("\n")


# Sending


def send_message(settings: SmtpSettings, message: EmailMessage) -> None:
    """Send `message` to the addresses in its To header through the server in `settings`.

    Blocks until the server has accepted the message or failed, so run it in a worker
    thread. Raises MailError on any failure, including a server that accepted the message
    for some recipients but rejected others. With security "starttls", a server that does not
    offer STARTTLS is an error: the message is never sent unencrypted instead.
    """
    server = _server_name(settings.host, settings.port)
    subject = str(message.get("Subject", ""))
    count = len(getaddresses([str(value) for value in message.get_all("To", [])]))
    try:
        _deliver(settings, message, server)
    except MailError as error:
        log.warning("mail %r to %d recipient(s) through %s failed: %s", subject, count, server,
                    error)
        raise
    log.info("sent mail %r to %d recipient(s) through %s", subject, count, server)


async def send_step_mail(settings: SmtpSettings, mail: StepMail,
                         now: datetime | None = None) -> None:
    """Build and send `mail` without blocking the event loop; raises MailError on failure.

    NOTE: cancelling the awaiting task does not stop the worker thread, which runs until the
    server has replied or `settings.timeout` has passed.
    """
    message = build_message(mail, settings.sender, now)
    await asyncio.to_thread(send_message, settings, message)


def _server_name(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _deliver(settings: SmtpSettings, message: EmailMessage, server: str) -> None:
    context = _tls_context(settings.cafile, server)
    try:
        client = _connect(settings, context)
        try:
            if settings.security == "starttls":
                _start_tls(client, context, server)
            if settings.username is not None and settings.password is not None:
                _log_in(client, settings.username, settings.password, server)
            refused = client.send_message(message)
        finally:
            _close(client)
    except (OSError, smtplib.SMTPException) as exc:
        raise _mail_error(exc, settings, server) from None
    if refused:
        raise MailError(f"{_prefix(server)}: {_rejected_recipients(refused)}; the server "
                        "accepted the mail for the other recipients. Check those addresses in "
                        "notifyAtStart or notifyAtFinish")


def _tls_context(cafile: Path | None, server: str) -> ssl.SSLContext:
    """Build a context that verifies the server's certificate and host name."""
    try:
        return ssl.create_default_context(cafile=str(cafile) if cafile is not None else None)
    except (OSError, ValueError) as exc:
        raise MailError(f"{_prefix(server)}: cannot load CA certificates from {cafile}: {exc}; "
                        "check smtp.cafile") from exc


def _connect(settings: SmtpSettings, context: ssl.SSLContext) -> smtplib.SMTP:
    # Passing the host to the constructor matters: smtplib checks the server's certificate
    # against the host given there, for SMTP_SSL and for a later starttls() alike.
    if settings.security == "tls":
        return smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout,
                                context=context)
    return smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)


def _start_tls(client: smtplib.SMTP, context: ssl.SSLContext, server: str) -> None:
    client.ehlo()
    if not client.has_extn("starttls"):
        raise MailError(f"{_prefix(server)}: the server does not offer STARTTLS, so the mail "
                        "was not sent. Use smtp.security: tls if the server expects TLS from "
                        "the start, or none only for a server on a trusted network")
    client.starttls(context=context)
    # RFC 3207 makes the client discard what it learned before STARTTLS, so EHLO is sent again.
    client.ehlo()


def _log_in(client: smtplib.SMTP, username: str, password: Secret, server: str) -> None:
    client.ehlo_or_helo_if_needed()
    if not client.has_extn("auth"):
        raise MailError(f"{_prefix(server)}: the server offers no authentication (AUTH) on "
                        "this connection, but smtp.username is set. Remove smtp.username if "
                        "the server needs no login, or use smtp.security starttls or tls")
    client.login(username, password.reveal())


def _close(client: smtplib.SMTP) -> None:
    try:
        client.quit()
    except (OSError, smtplib.SMTPException):
        client.close()


def _prefix(server: str) -> str:
    return f"cannot send mail through the SMTP server {server}"


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return f"{code} {_one_line(text)}"


def _rejected_recipients(refused: Mapping[str, tuple[int, bytes]]) -> str:
    listed = ", ".join(f"{address!r} ({_reply(code, text)})"
                       for address, (code, text) in refused.items())
    return f"it rejected the recipients {listed}"


def _mail_error(exc: BaseException, settings: SmtpSettings, server: str) -> MailError:
    """Translate an exception from smtplib or the socket into a MailError for a user."""
    reason = _reason(exc, settings)
    if settings.password is not None:
        reason = reason.replace(settings.password.reveal(), str(settings.password))
    return MailError(f"{_prefix(server)}: {reason}")


def _timed_out(exc: BaseException) -> bool:
    # smtplib turns a reply that timed out into SMTPServerDisconnected, raised while it
    # handles the TimeoutError, so the timeout is the exception's context.
    return isinstance(exc, TimeoutError) or (
        isinstance(exc, smtplib.SMTPServerDisconnected)
        and isinstance(exc.__context__, TimeoutError))


def _reason(exc: BaseException, settings: SmtpSettings) -> str:
    # The exceptions of smtplib and ssl derive from OSError, so the specific classes come first.
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return f"{_rejected_recipients(exc.recipients)}; nobody received the mail"
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return (f"it rejected the sender {exc.sender!r} ({_reply(exc.smtp_code, exc.smtp_error)})"
                "; check smtp.sender")
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return (f"authentication as {settings.username!r} failed "
                f"({_reply(exc.smtp_code, exc.smtp_error)}); check smtp.username and the "
                "password")

    if _timed_out(exc):
        return (f"the server did not respond within {settings.timeout:g} seconds; check "
                "smtp.host and smtp.port, or raise smtp.timeout")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return f"the server closed the connection unexpectedly ({str(exc) or 'no reason given'})"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"the server returned an error ({_reply(exc.smtp_code, exc.smtp_error)})"
    if isinstance(exc, smtplib.SMTPException):
        return f"the SMTP conversation failed ({exc})"

    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS certificate verification failed ({exc.verify_message}); set "
                "smtp.cafile to the CA that signed the server's certificate, or check "
                "smtp.host")
    if isinstance(exc, ssl.SSLError):
        return (f"the TLS handshake failed ({exc.reason or exc}); check smtp.security. Use "
                "tls for a port that expects TLS from the start (usually 465) and starttls "
                "for one that offers STARTTLS (usually 587)")

    if isinstance(exc, ConnectionRefusedError):
        return ("the connection was refused; check smtp.host and smtp.port and that the "
                "server is running")
    if isinstance(exc, socket.gaierror):
        return f"the host name could not be resolved ({exc.strerror}); check smtp.host"
    if isinstance(exc, OSError):
        return (f"the connection failed ({exc.strerror or exc}); check smtp.host and "
                "smtp.port and the network")
    return str(exc)
