"""Step notification mail, sent through real aiosmtpd servers on 127.0.0.1.

Each test starts the servers it needs through the `smtp_server` fixture, which stops them
all when the test ends. TLS tests use throwaway certificates from tests/tls.py: the server
certificate names 127.0.0.1, and `wrong_ca` is a CA that did not sign it.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SmtpServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from frontends.config_values import Secret
from thehat.addresses import address_problem
from thehat.errors import ConfigError
from thehat.mail import (FINISH_NOTICE, MailError, MailKind, SmtpSettings, StepMail, build_message,
                         parse_smtp_section, send_message, send_step_mail)

from tests.servers import HOST, free_port
from tests.tls import CertificateFiles, make_certificates

SENDER = "thehat@example.com"
USERNAME = "hat"
PASSWORD = "s3cret-Pa55word"
SOURCE = "thehat.yaml"
# How long a held server waits for the test to release it. A sender that blocked the event
# loop would keep the test from releasing it, so the server gives up and the test fails.
HOLD_LIMIT = 10.0
REJECT_RECIPIENT_REPLY = "550 5.1.1 mailbox unavailable"


@dataclass
class Collector:
    """An aiosmtpd handler that stores every accepted envelope and rejects chosen addresses.

    `hold` makes DATA wait until `release` is set, and `order` records that in the order
    it happened, shared with the test.
    """

    rejected_senders: set[str] = field(default_factory=set)
    rejected_recipients: set[str] = field(default_factory=set)
    hold: bool = False
    envelopes: list[Envelope] = field(default_factory=list)
    data_arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    order: list[str] = field(default_factory=list)

    async def handle_MAIL(self, server: SmtpServer, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        if address in self.rejected_senders:
            return "553 5.7.1 sender not allowed"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: SmtpServer, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if address in self.rejected_recipients:
            return REJECT_RECIPIENT_REPLY
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SmtpServer, session: Session,
                          envelope: Envelope) -> str:
        if self.hold:
            self.order.append("server received DATA")
            self.data_arrived.set()
            released = await asyncio.to_thread(self.release.wait, HOLD_LIMIT)
            self.order.append("server released" if released else "server gave up")
            if not released:
                return "451 4.3.0 the test never released the message"
        self.envelopes.append(envelope)
        return "250 Message accepted"

    def messages(self) -> list[EmailMessage]:
        parsed = []
        for envelope in self.envelopes:
            assert isinstance(envelope.content, bytes)
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            parsed.append(message)
        return parsed


@dataclass(frozen=True)
class Server:
    """A running aiosmtpd server and the handler that collects what it accepted."""

    port: int
    handler: Collector

    def settings(self, **changes: Any) -> SmtpSettings:
        settings = SmtpSettings(host=HOST, port=self.port, security="none", sender=SENDER)
        return replace(settings, **changes)


StartServer = Callable[..., Server]


@pytest.fixture
def smtp_server() -> Iterator[StartServer]:
    """Start aiosmtpd servers on 127.0.0.1; every one is stopped when the test ends.

    Keyword arguments go to aiosmtpd's Controller: `tls_context` offers STARTTLS,
    `ssl_context` makes the port implicit TLS, `authenticator` turns on AUTH.
    """
    controllers: list[Controller] = []

    def start(handler: Collector | None = None, **options: Any) -> Server:
        handler = handler or Collector()
        port = free_port()
        controller = Controller(handler, hostname=HOST, port=port, **options)
        controller.start()
        controllers.append(controller)
        return Server(port, handler)

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture(scope="module")
def certificates() -> Iterator[CertificateFiles]:
    files = make_certificates("thehat-mail-tls-")
    yield files
    files.remove()


@pytest.fixture(scope="module")
def wrong_ca() -> Iterator[Path]:
    files = make_certificates("thehat-mail-wrong-ca-")
    yield files.ca_certificate
    files.remove()


@pytest.fixture
def server_tls(certificates: CertificateFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates.certificate, certificates.key)
    return context


def check_login(server: SmtpServer, session: Session, envelope: Envelope, mechanism: str,
                auth_data: Any) -> AuthResult:
    """aiosmtpd authenticator that accepts USERNAME with PASSWORD only."""
    assert isinstance(auth_data, LoginPassword)
    accepted = auth_data.login == USERNAME.encode() and auth_data.password == PASSWORD.encode()
    # handled=False makes aiosmtpd send its "535 credentials invalid" reply on failure.
    return AuthResult(success=accepted, handled=False)


def step_mail(kind: MailKind = "start", **changes: Any) -> StepMail:
    mail = StepMail(kind="start", flow="toast", step="openbread",
                    description="Open the bread bag", owner="alice", actor="bob",
                    url="https://wiki.example.com/toast", note="Use the blue knife.",
                    status_url="https://hat.example.com/flows/toast",
                    recipients=("cook@example.org",))
    return replace(mail, kind=kind, **changes)


def body_of(message: EmailMessage) -> str:
    part = message.get_body()
    assert isinstance(part, EmailMessage)
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def unused_port() -> int:
    """Return a port on 127.0.0.1 where nothing listens: bound once, then closed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


# Messages delivered


async def test_start_mail_delivered(smtp_server: StartServer) -> None:
    server = smtp_server()
    await send_step_mail(server.settings(), step_mail("start"))

    [envelope] = server.handler.envelopes
    assert envelope.mail_from == SENDER
    assert envelope.rcpt_tos == ["cook@example.org"]
    [message] = server.handler.messages()
    assert message["From"] == SENDER
    assert message["To"] == "cook@example.org"
    assert message["Subject"] == "[toast]: openbread (Open the bread bag) has started"
    assert message["X-TheHat-Flow"] == "toast"
    assert message["X-TheHat-Step"] == "openbread"
    assert message["Message-ID"].endswith("@example.com>")
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"
    assert body_of(message) == (
        "The workflow step entitled 'Open the bread bag' has begun.\n"
        "\n"
        "Flow: toast\n"
        "Step: openbread\n"
        "Owner: alice\n"
        "Started by: bob\n"
        "\n"
        "Documentation for this step is available at https://wiki.example.com/toast\n"
        "\n"
        "This note is attached to the step: Use the blue knife.\n"
        "\n"
        "For workflow status see https://hat.example.com/flows/toast\n")


async def test_finish_mail_delivered(smtp_server: StartServer) -> None:
    server = smtp_server()
    await send_step_mail(server.settings(), step_mail("finish", actor="carol"))

    [message] = server.handler.messages()
    assert message["Subject"] == "[toast]: openbread (Open the bread bag) has finished"
    assert body_of(message) == (
        "The workflow step entitled 'Open the bread bag' was finished by carol.\n"
        "\n"
        "Flow: toast\n"
        "Step: openbread\n"
        "Owner: alice\n"
        "\n"
        "Documentation for this step is available at https://wiki.example.com/toast\n"
        "\n"
        "This note is attached to the step: Use the blue knife.\n"
        "\n"
        f"{FINISH_NOTICE}\n"
        "\n"
        "For workflow status see https://hat.example.com/flows/toast\n")
    assert FINISH_NOTICE.startswith("NOTE: This message was sent as the step *finished*;")


@pytest.mark.parametrize("kind", ["start", "finish"])
async def test_optional_parts_left_out(smtp_server: StartServer, kind: MailKind) -> None:
    server = smtp_server()
    mail = step_mail(kind, description=None, owner=None, url=None, note=None, status_url=None)
    await send_step_mail(server.settings(), mail)

    [message] = server.handler.messages()
    verb = "started" if kind == "start" else "finished"
    assert message["Subject"] == f"[toast]: openbread has {verb}"
    body = body_of(message)
    assert body.startswith("The workflow step entitled 'openbread' ")
    assert "Owner: unassigned\n" in body
    assert "Documentation" not in body
    assert "note is attached" not in body
    assert "For workflow status" not in body
    assert body.endswith((FINISH_NOTICE if kind == "finish" else "Started by: bob") + "\n")


async def test_several_recipients_all_receive(smtp_server: StartServer) -> None:
    server = smtp_server()
    recipients = ("cook@example.org", "host@example.org", "root@localhost")
    await send_step_mail(server.settings(), step_mail(recipients=recipients))

    [envelope] = server.handler.envelopes
    assert envelope.rcpt_tos == list(recipients)
    [message] = server.handler.messages()
    assert message["To"] == "cook@example.org, host@example.org, root@localhost"


async def test_non_ascii_text_round_trips(smtp_server: StartServer) -> None:
    server = smtp_server()
    mail = step_mail(description="Brötchen aufschneiden", note="Vorsicht: heiß ✓")
    await send_step_mail(server.settings(), mail)

    [message] = server.handler.messages()
    assert message["Subject"] == "[toast]: openbread (Brötchen aufschneiden) has started"
    assert "This note is attached to the step: Vorsicht: heiß ✓\n" in body_of(message)
    assert isinstance(server.handler.envelopes[0].content, bytes)
    assert server.handler.envelopes[0].content.isascii()


def test_message_dated_now_argument() -> None:
    moment = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2)))
    message = build_message(step_mail(), SENDER, now=moment)

    assert email.utils.parsedate_to_datetime(message["Date"]) == moment


def test_multi_line_note_keeps_its_lines() -> None:
    message = build_message(step_mail(note="first line\r\nsecond\x00line"), SENDER)

    assert "This note is attached to the step: first line\nsecond line\n" in body_of(message)


# Header injection


def test_header_injection_neutralised() -> None:
    mail = step_mail(flow="toast\r\nBcc: evil@example.net",
                     step="open\nX-Injected: yes",
                     description="Bread\r\n\r\nforged body",
                     recipients=("cook@example.org",))
    message = build_message(mail, SENDER)

    assert message["Bcc"] is None
    assert message["X-Injected"] is None
    assert message["Subject"] == ("[toast Bcc: evil@example.net]: open X-Injected: yes "
                                  "(Bread forged body) has started")
    assert message["X-TheHat-Flow"] == "toast Bcc: evil@example.net"
    assert message["X-TheHat-Step"] == "open X-Injected: yes"


async def test_header_injection_not_delivered(smtp_server: StartServer) -> None:
    server = smtp_server()
    mail = step_mail(description="Bread\r\nBcc: evil@example.net\r\nX-Injected: yes")
    await send_step_mail(server.settings(), mail)

    [envelope] = server.handler.envelopes
    assert envelope.rcpt_tos == ["cook@example.org"]
    [message] = server.handler.messages()
    assert message["Bcc"] is None
    assert message["X-Injected"] is None
    assert "\n" not in message["Subject"]


# Addresses


def test_bad_recipient_rejected_before_sending() -> None:
    with pytest.raises(MailError) as caught:
        build_message(step_mail(recipients=("cook@example.org", "bob")), SENDER)

    assert "start mail of step 'openbread'" in str(caught.value)
    assert "'bob' is not an e-mail address: it has no '@'" in str(caught.value)


def test_no_recipients_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="has no recipients"):
        build_message(step_mail(recipients=()), SENDER)


@pytest.mark.parametrize("address", [
    "someone@example.com", "cook@example.org", "a@x.org", "o'brien@example.com",
    "ops.team+mop@mail.example.org", "root@localhost", "Root@LOCALHOST", "x@123.example",
    "jörg@bäckerei.example", "first_last@sub-domain.example.co.uk",
    "a" * 64 + "@" + "b" * 63 + ".example",
])
def test_address_accepted(address: str) -> None:
    assert address_problem(address) is None


@pytest.mark.parametrize(("address", "reason"), [
    ("a" * 65 + "@example.com", "the local part before '@' is 65 characters long"),
    ("a@" + "b" * 64 + ".example", "is 64 characters long; the maximum is 63"),
    ("a@" + ".".join(["b" * 60] * 5), "characters long; the maximum is 254"),
    (".bob@example.com", "starts or ends with '.'"),
    ("bob.@example.com", "starts or ends with '.'"),
    ("bo..b@example.com", "has two dots in a row"),
    ("bob@example.com.", "the domain 'example.com.' has an empty label"),
    ("bob@example-.com", "the domain label 'example-' starts or ends with '-'"),
    ("bob@ex_ample.com", "contains '_'; a domain has only letters, digits, '-' and '.'"),
    ("bob\t@example.com", "the control character U+0009"),
    ("bob\x00@example.com", "the control character U+0000"),
    ("bob\u2028@example.com", "the control character U+2028"),
    ("bob\u00a0@example.com", "the space character U+00A0"),
    ("<bob@example.com>", "it contains '<'"),
    ('"bob"@example.com', "it contains '\"'"),
    ("bob@[192.0.2.1]", "it contains '['"),
])
def test_address_rejected(address: str, reason: str) -> None:
    problem = address_problem(address)

    assert problem is not None
    assert problem.startswith(f"{address!r} is not an e-mail address: ")
    assert reason in problem


# Server rejections


async def test_one_recipient_rejected(smtp_server: StartServer) -> None:
    handler = Collector(rejected_recipients={"gone@example.org"})
    server = smtp_server(handler)
    mail = step_mail(recipients=("cook@example.org", "gone@example.org"))

    with pytest.raises(MailError) as caught:
        await send_step_mail(server.settings(), mail)

    message = str(caught.value)
    assert f"SMTP server {HOST}:{server.port}" in message
    assert f"'gone@example.org' ({REJECT_RECIPIENT_REPLY})" in message
    assert "accepted the mail for the other recipients" in message
    assert "cook@example.org" not in message
    [envelope] = handler.envelopes
    assert envelope.rcpt_tos == ["cook@example.org"]


async def test_all_recipients_rejected(smtp_server: StartServer) -> None:
    handler = Collector(rejected_recipients={"gone@example.org", "left@example.org"})
    server = smtp_server(handler)
    mail = step_mail(recipients=("gone@example.org", "left@example.org"))

    with pytest.raises(MailError) as caught:
        await send_step_mail(server.settings(), mail)

    message = str(caught.value)
    assert "'gone@example.org' (550" in message
    assert "'left@example.org' (550" in message
    assert "nobody received the mail" in message
    assert handler.envelopes == []


async def test_sender_rejected(smtp_server: StartServer) -> None:
    server = smtp_server(Collector(rejected_senders={SENDER}))

    with pytest.raises(MailError) as caught:
        await send_step_mail(server.settings(), step_mail())

    message = str(caught.value)
    assert f"rejected the sender {SENDER!r} (553 5.7.1 sender not allowed)" in message
    assert "smtp.sender" in message
    assert server.handler.envelopes == []


# Connection failures


def test_connection_refused() -> None:
    settings = SmtpSettings(host=HOST, port=unused_port(), security="none", sender=SENDER)
    message = build_message(step_mail(), SENDER)

    with pytest.raises(MailError) as caught:
        send_message(settings, message)

    assert f"SMTP server {HOST}:{settings.port}" in str(caught.value)
    assert "the connection was refused" in str(caught.value)


def test_silent_server_times_out() -> None:
    """A server that accepts the connection but never greets: the client gives up."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((HOST, 0))
        listener.listen()
        port = int(listener.getsockname()[1])
        settings = SmtpSettings(host=HOST, port=port, security="none", sender=SENDER,
                                timeout=0.5)

        with pytest.raises(MailError) as caught:
            send_message(settings, build_message(step_mail(), SENDER))

    assert "did not respond within 0.5 seconds" in str(caught.value)


def test_cafile_removed_after_start(tmp_path: Path) -> None:
    settings = SmtpSettings(host=HOST, port=unused_port(), security="tls", sender=SENDER,
                            cafile=tmp_path / "removed-ca.pem")

    with pytest.raises(MailError) as caught:
        send_message(settings, build_message(step_mail(), SENDER))

    assert f"cannot load CA certificates from {tmp_path / 'removed-ca.pem'}" in str(
        caught.value)


# Authentication


async def test_login_accepted(smtp_server: StartServer) -> None:
    server = smtp_server(authenticator=check_login, auth_require_tls=False)
    settings = server.settings(username=USERNAME, password=Secret(PASSWORD))

    await send_step_mail(settings, step_mail())

    assert len(server.handler.envelopes) == 1


async def test_login_rejected(smtp_server: StartServer) -> None:
    server = smtp_server(authenticator=check_login, auth_require_tls=False)
    settings = server.settings(username=USERNAME, password=Secret("wrong-password"))

    with pytest.raises(MailError) as caught:
        await send_step_mail(settings, step_mail())

    message = str(caught.value)
    assert f"authentication as {USERNAME!r} failed (535" in message
    assert "check smtp.username and the password" in message
    assert "wrong-password" not in message
    assert server.handler.envelopes == []


async def test_login_without_auth_offered(smtp_server: StartServer) -> None:
    # aiosmtpd offers AUTH only over TLS unless auth_require_tls is false.
    server = smtp_server(authenticator=check_login)
    settings = server.settings(username=USERNAME, password=Secret(PASSWORD))

    with pytest.raises(MailError) as caught:
        await send_step_mail(settings, step_mail())

    assert "offers no authentication (AUTH)" in str(caught.value)
    assert server.handler.envelopes == []


async def test_password_never_shown(smtp_server: StartServer,
                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server = smtp_server(authenticator=check_login, auth_require_tls=False)
    good = server.settings(username=USERNAME, password=Secret(PASSWORD))
    bad = server.settings(username=USERNAME, password=Secret(PASSWORD + "-old"))

    await send_step_mail(good, step_mail())
    with pytest.raises(MailError) as caught:
        await send_step_mail(bad, step_mail())

    assert PASSWORD not in repr(good)
    assert PASSWORD not in str(good)
    assert PASSWORD not in str(caught.value)
    assert caplog.records
    for record in caplog.records:
        assert PASSWORD not in record.getMessage()


async def test_sent_and_failed_mail_logged(smtp_server: StartServer,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="thehat.mail")
    server = smtp_server(Collector(rejected_senders={"other@example.com"}))
    mail = step_mail(recipients=("cook@example.org", "host@example.org"))

    await send_step_mail(server.settings(), mail)
    with pytest.raises(MailError):
        await send_step_mail(server.settings(sender="other@example.com"), mail)

    [sent, failed] = [r for r in caplog.records if r.name == "thehat.mail"]
    assert sent.levelno == logging.INFO
    assert sent.getMessage() == (
        "sent mail '[toast]: openbread (Open the bread bag) has started' to 2 recipient(s) "
        f"through {HOST}:{server.port}")
    assert failed.levelno == logging.WARNING
    assert "rejected the sender 'other@example.com'" in failed.getMessage()


# TLS


async def test_starttls_delivers(smtp_server: StartServer, server_tls: ssl.SSLContext,
                                 certificates: CertificateFiles) -> None:
    server = smtp_server(tls_context=server_tls, require_starttls=True,
                         authenticator=check_login)
    settings = server.settings(security="starttls", cafile=certificates.ca_certificate,
                               username=USERNAME, password=Secret(PASSWORD))

    await send_step_mail(settings, step_mail())

    assert len(server.handler.envelopes) == 1


async def test_starttls_not_offered(smtp_server: StartServer,
                                    certificates: CertificateFiles) -> None:
    server = smtp_server()
    settings = server.settings(security="starttls", cafile=certificates.ca_certificate)

    with pytest.raises(MailError) as caught:
        await send_step_mail(settings, step_mail())

    assert "does not offer STARTTLS, so the mail was not sent" in str(caught.value)
    assert server.handler.envelopes == []


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_wrong_ca_rejected(smtp_server: StartServer, server_tls: ssl.SSLContext,
                                 wrong_ca: Path, security: str) -> None:
    options = {"tls_context": server_tls} if security == "starttls" else {
        "ssl_context": server_tls}
    server = smtp_server(**options)
    settings = server.settings(security=security, cafile=wrong_ca)

    with pytest.raises(MailError) as caught:
        await send_step_mail(settings, step_mail())

    assert "TLS certificate verification failed" in str(caught.value)
    assert "smtp.cafile" in str(caught.value)
    assert server.handler.envelopes == []


async def test_implicit_tls_delivers(smtp_server: StartServer, server_tls: ssl.SSLContext,
                                     certificates: CertificateFiles) -> None:
    # aiosmtpd counts only STARTTLS as TLS when it decides whether to offer AUTH, so the
    # implicit TLS server starts with auth_require_tls=False.
    server = smtp_server(ssl_context=server_tls, authenticator=check_login,
                         auth_require_tls=False)
    settings = server.settings(security="tls", cafile=certificates.ca_certificate,
                               username=USERNAME, password=Secret(PASSWORD))

    await send_step_mail(settings, step_mail())

    [message] = server.handler.messages()
    assert message["Subject"] == "[toast]: openbread (Open the bread bag) has started"


async def test_implicit_tls_to_plain_server(smtp_server: StartServer,
                                            certificates: CertificateFiles) -> None:
    server = smtp_server()
    settings = server.settings(security="tls", cafile=certificates.ca_certificate)

    with pytest.raises(MailError) as caught:
        await send_step_mail(settings, step_mail())

    assert "the TLS handshake failed" in str(caught.value)
    assert server.handler.envelopes == []


# The event loop


async def test_sending_leaves_event_loop_free(smtp_server: StartServer) -> None:
    handler = Collector(hold=True)
    server = smtp_server(handler)

    sending = asyncio.create_task(send_step_mail(server.settings(), step_mail()))
    # This await returns only if the event loop is free while the server delays its reply
    # to DATA.
    arrived = await asyncio.to_thread(handler.data_arrived.wait, HOLD_LIMIT)
    handler.order.append("event loop ran")
    handler.release.set()
    await sending

    assert arrived
    assert handler.order == ["server received DATA", "event loop ran", "server released"]
    assert len(handler.envelopes) == 1


# Configuration


def parse(base: Path | None = None, **section: Any) -> SmtpSettings:
    return parse_smtp_section({"sender": SENDER, **section}, SOURCE, base or Path("/nonexistent"))


def test_config_defaults() -> None:
    settings = parse()

    assert settings == SmtpSettings(host="localhost", port=587, security="starttls",
                                    sender=SENDER, username=None, password=None,
                                    timeout=30.0, cafile=None)


@pytest.mark.parametrize(("security", "port"), [("none", 25), ("starttls", 587), ("tls", 465),
                                                ("TLS", 465)])
def test_config_port_follows_security(security: str, port: int) -> None:
    settings = parse(security=security)

    assert settings.security == security.lower()
    assert settings.port == port


def test_config_all_keys(tmp_path: Path, certificates: CertificateFiles) -> None:
    (tmp_path / "smtp-password").write_text(PASSWORD + "\n", encoding="utf-8")
    settings = parse(tmp_path, host="mail.example.com", port="2525", security="tls",
                     username=USERNAME, password_file="smtp-password", timeout=12.5,
                     cafile=str(certificates.ca_certificate))

    assert settings.host == "mail.example.com"
    assert settings.port == 2525
    assert settings.username == USERNAME
    assert settings.password is not None
    assert settings.password.reveal() == PASSWORD
    assert settings.timeout == 12.5
    assert settings.cafile == certificates.ca_certificate


def test_config_relative_cafile(tmp_path: Path, certificates: CertificateFiles) -> None:
    (tmp_path / "ca.pem").write_bytes(certificates.ca_certificate.read_bytes())

    settings = parse(tmp_path, cafile="ca.pem")

    assert settings.cafile == tmp_path / "ca.pem"


def test_config_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THEHAT_TEST_SMTP_PASSWORD", PASSWORD)

    settings = parse(username=USERNAME, password_env="THEHAT_TEST_SMTP_PASSWORD")

    assert settings.password is not None
    assert settings.password.reveal() == PASSWORD
    assert PASSWORD not in repr(settings)


def test_config_password_without_tls_warns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="thehat.mail")

    parse(security="none", host="mail.example.com", username=USERNAME, password=PASSWORD)

    [record] = caplog.records
    assert "sent to mail.example.com:25 without encryption" in record.getMessage()
    assert PASSWORD not in record.getMessage()


CONFIG_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"port": 0}, "smtp.port is 0; use a port number from 1 to 65535"),
    ({"port": 65536}, "smtp.port is 65536;"),
    ({"port": "smtp"}, "smtp.port is 'smtp';"),
    ({"port": True}, "smtp.port is True;"),
    ({"security": "ssl"}, "smtp.security is 'ssl'; use none, starttls or tls"),
    ({"security": False}, "smtp.security is False;"),
    ({"host": ""}, "smtp.host is ''; give a host name or an IP address"),
    ({"host": "mail example"}, "smtp.host is 'mail example';"),
    ({"host": ["a", "b"]}, "smtp.host must be a single value, not a list"),
    ({"sender": None}, "smtp.sender is missing"),
    ({"sender": "thehat"}, "smtp.sender: 'thehat' is not an e-mail address: it has no '@'"),
    ({"timeout": 0}, "smtp.timeout is 0; use a number of seconds greater than 0"),
    ({"timeout": -1}, "smtp.timeout is -1; use a number of seconds"),
    ({"timeout": "soon"}, "smtp.timeout is 'soon';"),
    ({"username": USERNAME}, "smtp.username is set but no password is given"),
    ({"username": ""}, "smtp.username is empty"),
    ({"password": PASSWORD}, "smtp has a password but no username"),
    ({"username": USERNAME, "password": PASSWORD, "password_env": "X"},
     "smtp has password and password_env; give the password one way only"),
    ({"username": USERNAME, "password_env": "THEHAT_TEST_UNSET_VARIABLE"},
     "smtp.password_env names the environment variable 'THEHAT_TEST_UNSET_VARIABLE', "
     "which is not set"),
    ({"username": USERNAME, "password_file": "missing-file"},
     "smtp.password_file: cannot read the password file"),
    ({"cafile": "missing.pem"}, "smtp.cafile: cannot load CA certificates from"),
    ({"security": "none", "cafile": "ca.pem"}, "smtp.cafile is set but smtp.security is none"),
    ({"hots": "mail.example.com"}, "unknown key smtp.hots (did you mean 'host'?)"),
]


@pytest.mark.parametrize(("section", "expected"), CONFIG_ERRORS,
                         ids=[", ".join(map(str, case[0])) for case in CONFIG_ERRORS])
def test_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      section: dict[str, Any], expected: str) -> None:
    monkeypatch.delenv("THEHAT_TEST_UNSET_VARIABLE", raising=False)

    with pytest.raises(ConfigError) as caught:
        parse(tmp_path, **section)

    assert str(caught.value).startswith(f"{SOURCE}: ")
    assert expected in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_config_cafile_not_pem(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n", encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        parse(tmp_path, cafile="ca.pem")

    assert f"smtp.cafile: cannot load CA certificates from {tmp_path / 'ca.pem'}" in str(
        caught.value)


@pytest.mark.parametrize("section", [None, "smtp.example.com", ["host"]])
def test_config_section_not_mapping(section: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_smtp_section(section, SOURCE, Path("/nonexistent"))

    assert str(caught.value).startswith(f"{SOURCE}: smtp must be a mapping with the keys ")
