"""No password or token from the configuration reaches a reply, log, history, page or mail.

Each test runs `thehat run` as a real process against servers that the module starts on
127.0.0.1. They are ngircd with a server password, prosody with the bot's account and only
SASL PLAIN, an aiosmtpd server that requires a login, and the status web site with a
`webauth` token and basic password. The configuration gives every secret inline, through an
environment variable or in a file. The three tests rotate the ways, so each secret comes each
way once. People on IRC and XMPP drive a session. Then the test collects what the daemon
produced and looks for every secret in it, raw and in the encodings that carry passwords on
the wire (base64, SASL PLAIN, HTTP basic).

The DEBUG log comes from the daemon's own `--log-file`, so it contains every record of every
logger of the daemon (slixmpp and irc included) and none of the test's own clients, which
send the server password too.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import secrets
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SmtpServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from frontends.irc_config import irc_config_from
from frontends.xmpp_config import xmpp_config_from
from thehat.config import load_config

from tests.frontends.irc_client import ChatClient
from tests.frontends.xmpp_support import XmppPerson
from tests.prosody import DOMAIN, MUC_DOMAIN, ProsodyServer
from tests.servers import HOST, NgircdServer, free_port

BOT: Final = "thehat"
FLOW: Final = "secrets"
SMTP_USER: Final = "hat"
WEB_USER: Final = "viewer"
WAYS: Final = ("inline", "env", "file")
# The rotation in which the SMTP server has a new password that the configuration lacks.
STALE_SMTP_ROTATION: Final = 2
# Seconds to wait at most for the daemon. The test waits for conditions, so it times nothing.
START_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 30.0
RENDER_TIMEOUT: Final = 30.0
# The collection must be at least this large, so the scan cannot pass on too little.
MIN_BOT_IRC_LINES: Final = 60
MIN_BOT_XMPP_MESSAGES: Final = 10
MIN_LOG_RECORDS: Final = 300
MIN_WEB_RESPONSES: Final = 20
# The start of a record in the daemon's log file (thehat.cli.LOG_FORMAT).
LOG_RECORD_START: Final = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")

FLOW_TEXT: Final = """\
- step: openbread
  description: Open bread bag
  notifyAtStart: cook@example.org
- step: gettoaster
  description: Get toaster out of storage
  notifyAtFinish: cook@example.org
- step: toastbread
  description: Activate toaster
  startCommand: env
  gates: [openbread, gettoaster]
"""


@dataclass(frozen=True)
class SecretSpec:
    """One secret of the configuration: a label for messages and where it goes."""

    label: str
    # The environment variable and file name used when it is given those ways.
    variable: str
    # The user names that travel with it in an encoding (SASL PLAIN, HTTP basic).
    users: tuple[str, ...] = ()


SPECS: Final = (
    SecretSpec("IRC server password", "THEHAT_TEST_IRC_PASSWORD"),
    SecretSpec("IRC NickServ password", "THEHAT_TEST_NICKSERV_PASSWORD", (BOT,)),
    SecretSpec("XMPP password", "THEHAT_TEST_XMPP_PASSWORD", (BOT, f"{BOT}@{DOMAIN}")),
    SecretSpec("SMTP password", "THEHAT_TEST_SMTP_PASSWORD", (SMTP_USER,)),
    SecretSpec("web token", "THEHAT_TEST_WEB_TOKEN"),
    SecretSpec("web password", "THEHAT_TEST_WEB_PASSWORD", (WEB_USER,)),
)


@pytest.fixture(scope="module")
def values() -> dict[str, str]:
    """A fresh random value for every secret, by label."""
    return {spec.label: secrets.token_hex(16) for spec in SPECS}


@pytest.fixture(scope="module")
def ircd(values: dict[str, str]) -> Iterator[NgircdServer]:
    server = NgircdServer(password=values["IRC server password"])
    server.start()
    yield server
    server.remove()


@pytest.fixture(scope="module")
def prosody(values: dict[str, str]) -> Iterator[ProsodyServer]:
    # SCRAM never sends the password, so the server offers only PLAIN, whose base64 does.
    server = ProsodyServer(passwords={BOT: values["XMPP password"]},
                           disabled_mechanisms=("SCRAM-SHA-1",))
    server.start()
    yield server
    server.remove()


@dataclass
class MailServer:
    """An aiosmtpd server that accepts one login, records every attempt and every mail."""

    password: str
    port: int = field(default_factory=free_port)
    attempts: list[tuple[bytes, bytes]] = field(default_factory=list)
    envelopes: list[Envelope] = field(default_factory=list)

    def authenticate(self, server: SmtpServer, session: Session, envelope: Envelope,
                     mechanism: str, auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.attempts.append((auth_data.login, auth_data.password))
        accepted = (auth_data.login == SMTP_USER.encode()
                    and auth_data.password == self.password.encode())
        # handled=False makes aiosmtpd send its "535 credentials invalid" reply on failure.
        return AuthResult(success=accepted, handled=False)

    async def handle_DATA(self, server: SmtpServer, session: Session,
                          envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted"


@pytest.fixture(params=range(len(WAYS)))
def rotation(request: pytest.FixtureRequest) -> int:
    """Which way each secret comes in this test: secret i comes WAYS[(i + rotation) % 3]."""
    return int(request.param)


@pytest.fixture
def mail_server(rotation: int, values: dict[str, str]) -> Iterator[MailServer]:
    # In the stale rotation the server's password changed and the configuration's did not.
    password = (secrets.token_hex(16) if rotation == STALE_SMTP_ROTATION
                else values["SMTP password"])
    server = MailServer(password)
    controller = Controller(server, hostname=HOST, port=server.port,
                            authenticator=server.authenticate, auth_require_tls=False)
    controller.start()
    yield server
    controller.stop()


# -- the configuration ---------------------------------------------------------------------


def give_secret(section: dict[str, Any], kind: str, spec: SecretSpec, value: str, way: str,
                directory: Path, environment: dict[str, str]) -> None:
    """Put the secret into `section` as `<kind>`, `<kind>_env` or `<kind>_file`."""
    if way == "inline":
        section[kind] = value
    elif way == "env":
        section[f"{kind}_env"] = spec.variable
        environment[spec.variable] = value
    else:
        folder = directory / "secrets"
        folder.mkdir(exist_ok=True)
        path = folder / spec.variable.lower()
        path.write_text(value + "\n", encoding="utf-8")
        path.chmod(0o600)
        section[f"{kind}_file"] = f"secrets/{path.name}"


@dataclass(frozen=True)
class Setup:
    """A configuration file, the environment it needs, and the names the session uses."""

    path: Path
    environment: dict[str, str]
    ways: dict[str, str]
    channel: str
    room: str
    web_port: int

    @property
    def datadir(self) -> Path:
        return self.path.parent / "data"


def write_setup(directory: Path, rotation: int, values: Mapping[str, str], ircd: NgircdServer,
                prosody: ProsodyServer, mail: MailServer) -> Setup:
    """Write the configuration of one rotation: secret i comes the way WAYS[(i + rotation) % 3]."""
    channel = f"#secrets{rotation}"
    room = f"secrets{rotation}@{MUC_DOMAIN}"
    web_port = free_port()
    nickserv: dict[str, Any] = {}
    irc: dict[str, Any] = {"nic": BOT, "server": HOST, "port": ircd.port, "channels": [channel],
                           "rate": {"burst": 50, "interval": 0.02}, "nickserv": nickserv}
    xmpp: dict[str, Any] = {"jid": f"{BOT}@{DOMAIN}/bot", "server": HOST, "port": prosody.port,
                            "tls": "off", "rooms": [room], "nick": BOT,
                            "rate": {"burst": 50, "interval": 0.02}}
    smtp: dict[str, Any] = {"host": HOST, "port": mail.port, "security": "none",
                            "sender": "thehat@example.com", "username": SMTP_USER}
    webauth: dict[str, Any] = {"user": WEB_USER}
    places = {"IRC server password": (irc, "password"),
              "IRC NickServ password": (nickserv, "password"),
              "XMPP password": (xmpp, "password"),
              "SMTP password": (smtp, "password"),
              "web token": (webauth, "token"),
              "web password": (webauth, "password")}
    environment: dict[str, str] = {}
    ways = {}
    for index, spec in enumerate(SPECS):
        way = WAYS[(index + rotation) % len(WAYS)]
        section, kind = places[spec.label]
        give_secret(section, kind, spec, values[spec.label], way, directory, environment)
        ways[spec.label] = way
    document = {
        "wfengine": {"datadir": "data", "bindaddr": HOST, "bindport": web_port,
                     "timezone": "UTC", "allowExec": True, "admins": ["alice", "carol"]},
        "limits": {"commandsPerMinute": 0},
        "thehat-irc": irc,
        "thehat-xmpp": xmpp,
        "smtp": smtp,
        "webauth": webauth,
    }
    path = directory / "thehat.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    datadir = directory / "data"
    datadir.mkdir()
    (datadir / f"{FLOW}.flow").write_text(FLOW_TEXT, encoding="utf-8")
    return Setup(path, environment, ways, channel, room, web_port)


# -- the daemon process --------------------------------------------------------------------


@dataclass
class DaemonProcess:
    """`thehat run` as a child process, with its log, stdout and stderr in files."""

    process: asyncio.subprocess.Process
    log_path: Path
    stdout_path: Path
    stderr_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    async def wait_for_log(self, text: str, timeout: float = START_TIMEOUT) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while text not in self.log_text():
            if self.process.returncode is not None:
                raise AssertionError(f"thehat run exited with {self.process.returncode} "
                                     f"before logging {text!r}; see {self.log_path}")
            if loop.time() > deadline:
                raise AssertionError(f"thehat run did not log {text!r} in {timeout:.0f} s; "
                                     f"see {self.log_path}")
            await asyncio.sleep(0.05)


def program_environment(setup: Setup) -> dict[str, str]:
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith("THEHAT_TEST_")}
    environment.update(setup.environment)
    return environment


@pytest.fixture
async def daemon_processes() -> AsyncIterator[list[DaemonProcess]]:
    """Processes the test starts; any still running at the end is stopped by its PID."""
    processes: list[DaemonProcess] = []
    yield processes
    for running in processes:
        if running.process.returncode is None:
            running.process.terminate()
            try:
                await asyncio.wait_for(running.process.wait(), STOP_TIMEOUT)
            except asyncio.TimeoutError:
                running.process.kill()
                await running.process.wait()


async def start_daemon(setup: Setup, processes: list[DaemonProcess]) -> DaemonProcess:
    program = Path(sys.executable).with_name("thehat")
    directory = setup.path.parent
    log_path = directory / "thehat.log"
    stdout_path = directory / "stdout.txt"
    stderr_path = directory / "stderr.txt"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            str(program), "run", "-c", str(setup.path), "--log-level", "DEBUG",
            "--log-file", str(log_path), stdin=asyncio.subprocess.DEVNULL, stdout=stdout,
            stderr=stderr, env=program_environment(setup), cwd=directory)
    running = DaemonProcess(process, log_path, stdout_path, stderr_path)
    processes.append(running)
    return running


async def run_cli(setup: Setup, *arguments: str) -> bytes:
    """Run a `thehat` subcommand with the configuration; return its stdout and stderr."""
    program = Path(sys.executable).with_name("thehat")
    process = await asyncio.create_subprocess_exec(
        str(program), *arguments, "-c", str(setup.path), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=program_environment(setup))
    stdout, stderr = await asyncio.wait_for(process.communicate(), STOP_TIMEOUT)
    assert process.returncode == 0, f"thehat {arguments[0]} failed: {stderr!r}"
    return stdout + stderr


# -- the session ---------------------------------------------------------------------------


async def irc_ask(person: ChatClient, channel: str, line: str, expect: str) -> str:
    """Say `line` to the bot in `channel` and return its next line there containing `expect`."""
    person.say(channel, f"{BOT}: {line}")
    return await person.next_message(BOT, channel, f"a reply to {line!r} with {expect!r}",
                                     text=lambda text: expect in text)


async def drive_session(setup: Setup, alice: ChatClient, carol: XmppPerson,
                        stale_smtp: bool) -> None:
    """Send commands from IRC and XMPP that reach every part of the daemon near a secret."""
    channel, room = setup.channel, setup.room
    await irc_ask(alice, channel, f"load {FLOW}", FLOW)
    await carol.ask(room, f"{BOT}: load {FLOW}", "already running")
    await irc_ask(alice, channel, "notificationProcessing on", "otification")
    await irc_ask(alice, channel, "status", "openbread")

    # A step with notifyAtStart: the mail is sent, or in the stale rotation it fails.
    await irc_ask(alice, channel, "gimme openbread", "now alice")
    await irc_ask(alice, channel, "start openbread", "openbread")
    if stale_smtp:
        await alice.next_message(BOT, channel, "the failed start mail",
                                 text=lambda text: "authentication as 'hat' failed" in text)
    await irc_ask(alice, channel, "finish openbread", "openbread to done")

    # Refused, failing and unknown commands, and commands with bad input.
    await irc_ask(alice, channel, "start toastbread", "toastbread")
    await irc_ask(alice, channel, "frobnicate", "frobnicate")
    await irc_ask(alice, channel, "gimme nosuchstep", "nosuchstep")
    await irc_ask(alice, channel, "set openbread", "set")
    await irc_ask(alice, channel, "load ../../etc/passwd", "passwd")

    # The command environment: no variable of the daemon's that could hold a secret.
    await irc_ask(alice, channel, "exec env", "exited with status 0")
    await irc_ask(alice, channel, "exec set", "exited with status 0")

    # From XMPP: a step with notifyAtFinish, then the step whose startCommand prints env.
    await carol.ask(room, f"{BOT}: gimme gettoaster", "now carol")
    await carol.ask(room, f"{BOT}: finish gettoaster", "gettoaster to done")
    await carol.ask(room, f"{BOT}: gimme toastbread", "now carol")
    await carol.ask(room, f"{BOT}: start toastbread", "toastbread")
    await carol.wait_for("exited with status 0", room=room)
    await carol.ask(room, f"{BOT}: exec env", "exited with status 0")
    await carol.ask(room, f"{BOT}: history", "gimme")
    await carol.ask(room, f"{BOT}: frobnicate", "frobnicate")
    carol.tell(f"{BOT}@{DOMAIN}", "status")
    await carol.wait_direct("load")

    # Reports of the run, in chat.
    await irc_ask(alice, channel, "dump", "toastbread")
    await irc_ask(alice, channel, "history", "gimme")
    await irc_ask(alice, channel, "report", "toastbread")
    await irc_ask(alice, channel, "list", "toastbread")
    await irc_ask(alice, channel, "ls", FLOW)
    await irc_ask(alice, channel, "help", "exec")
    await irc_ask(alice, channel, "fail toastbread", "toastbread")
    # The bot replies in each conversation in order, so this reply comes after all others.
    await irc_ask(alice, channel, "version", "thehat")


# -- the web site --------------------------------------------------------------------------


@dataclass
class WebResponse:
    """One response of the status web site, as a request label and the bytes received."""

    label: str
    status: int
    data: bytes


async def fetch(session: aiohttp.ClientSession, label: str, url: str,
                **options: Any) -> WebResponse:
    async with session.get(url, allow_redirects=False, **options) as response:
        body = await response.read()
        head = "".join(f"{name}: {value}\n" for name, value in response.headers.items())
        return WebResponse(label, response.status, head.encode() + b"\n" + body)


def basic_header(user: str, password: str) -> dict[str, str]:
    credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {credentials}"}


async def collect_web(base: str, token: str, user: str, password: str) -> list[WebResponse]:
    """Fetch every route of the site with each kind of credential, and without."""
    page = f"{base}/flows/{FLOW}"
    paths = ["/", f"/flows/{FLOW}/", f"/flows/{FLOW}/fragment", f"/flows/{FLOW}/map",
             f"/flows/{FLOW}/dump.txt", f"/flows/{FLOW}/calendar.ics",
             f"/flows/{FLOW}/digraph.svg", f"/flows/{FLOW}/digraph.dot",
             f"/flows/{FLOW}/digraph.png"]
    responses = []
    async with aiohttp.ClientSession() as session:
        # The views are written after the last change, off the command path.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RENDER_TIMEOUT
        bearer = {"Authorization": f"Bearer {token}"}
        while (await fetch(session, "wait", f"{page}/dump.txt", headers=bearer)).status != 200:
            assert loop.time() < deadline, "the site never served dump.txt"
            await asyncio.sleep(0.1)
        for path in paths:
            responses.append(await fetch(session, f"{path} (bearer)", base + path,
                                         headers=bearer))
            responses.append(await fetch(session, f"{path} (basic)", base + path,
                                         headers=basic_header(user, password)))
            responses.append(await fetch(session, f"{path} (?token=)", base + path,
                                         params={"token": token}))
        responses.append(await fetch(session, "/ (no credentials)", f"{base}/"))
        responses.append(await fetch(session, "/ (wrong token)", f"{base}/",
                                     params={"token": secrets.token_hex(16)}))
        responses.append(await fetch(session, "/ (wrong password)", f"{base}/",
                                     headers=basic_header(user, "wrong-password")))
    # The redirect of a page opened with ?token= sets the session cookie; it opens the page.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        responses.append(await fetch(session, "live page with the cookie", f"{page}/",
                                     params={"token": token}))
        responses.append(await fetch(session, "live page with the cookie", f"{page}/"))
    return responses


# -- the scan ------------------------------------------------------------------------------


def encodings(spec: SecretSpec, value: str) -> dict[str, bytes]:
    """Return the forms in which `value` could leak, by a label that never shows the value."""
    raw = value.encode()
    forms = {spec.label: raw, f"{spec.label} (base64)": base64.b64encode(raw)}
    for user in spec.users:
        name = user.encode()
        forms[f"{spec.label} (SASL PLAIN of {user})"] = base64.b64encode(
            b"\0" + name + b"\0" + raw)
        forms[f"{spec.label} (HTTP basic of {user})"] = base64.b64encode(name + b":" + raw)
    return forms


def leaks(needles: Mapping[str, bytes], haystacks: Mapping[str, bytes]) -> list[str]:
    """Return 'secret in place' for each needle found, without the needle's value."""
    return [f"{label} in {place}" for place, data in haystacks.items()
            for label, needle in needles.items() if needle in data]


def files_under(directory: Path) -> dict[str, bytes]:
    return {f"file {path.relative_to(directory)}": path.read_bytes()
            for path in sorted(directory.rglob("*")) if path.is_file()}


def config_views(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Load the configuration in this process and return the repr and str of its parts."""
    for name, value in setup.environment.items():
        monkeypatch.setenv(name, value)
    config = load_config(setup.path)
    parts = {"Config": config, "IRC settings": irc_config_from(config),
             "XMPP settings": xmpp_config_from(config), "SMTP settings": config.smtp,
             "webauth": config.webauth}
    views = {}
    for name, part in parts.items():
        views[f"repr of {name}"] = repr(part).encode()
        views[f"str of {name}"] = str(part).encode()
    return views


async def test_no_secret_in_any_output(
        rotation: int, tmp_path: Path, values: dict[str, str], ircd: NgircdServer,
        prosody: ProsodyServer, mail_server: MailServer,
        daemon_processes: list[DaemonProcess], monkeypatch: pytest.MonkeyPatch) -> None:
    setup = write_setup(tmp_path, rotation, values, ircd, prosody, mail_server)
    stale_smtp = rotation == STALE_SMTP_ROTATION
    alice = ChatClient("alice", ircd.port, password=values["IRC server password"])
    carol = XmppPerson("carol", prosody.port)
    try:
        await alice.connect([setup.channel])
        daemon = await start_daemon(setup, daemon_processes)
        await alice.next_event(lambda seen: seen.kind == "join" and seen.nick == BOT,
                               "the bot joined", START_TIMEOUT)
        await daemon.wait_for_log(f"joined {setup.room} as")
        await carol.connect()
        await carol.join(setup.room)

        await drive_session(setup, alice, carol, stale_smtp)
        web = await collect_web(f"http://{HOST}:{setup.web_port}", values["web token"],
                                WEB_USER, values["web password"])

        alice.say(setup.channel, f"{BOT}: quit")
        await asyncio.wait_for(daemon.process.wait(), STOP_TIMEOUT)
    finally:
        await alice.close()
        await carol.close()
    assert daemon.process.returncode == 0

    history = await run_cli(setup, "history", FLOW, "--format", "json")
    report = await run_cli(setup, "report", FLOW)

    # Every secret was read and used: the bot got past the logins of ngircd and prosody, the
    # SMTP server saw the configured password, and the site accepted the token and password.
    assert {password for _, password in mail_server.attempts} == {
        values["SMTP password"].encode()}
    assert "PASS ***" in daemon.log_text()
    assert "IDENTIFY ***" in daemon.log_text()

    bot_irc_lines = alice.messages(BOT, setup.channel)
    bot_xmpp = [message.body for message in carol.received if message.nick == BOT]
    log_records = [line for line in daemon.log_text().splitlines()
                   if LOG_RECORD_START.match(line)]
    assert len(bot_irc_lines) >= MIN_BOT_IRC_LINES
    assert len(bot_xmpp) >= MIN_BOT_XMPP_MESSAGES
    assert len(log_records) >= MIN_LOG_RECORDS
    assert any(" DEBUG slixmpp" in line for line in log_records)
    assert any(" DEBUG frontends.irc_connection: >> " in line for line in log_records)
    assert sum(response.status == 200 for response in web) >= MIN_WEB_RESPONSES
    assert [response.status for response in web[-5:]] == [401, 401, 401, 303, 200]
    if stale_smtp:
        assert mail_server.envelopes == []
    else:
        assert len(mail_server.envelopes) == 2

    haystacks: dict[str, bytes] = {
        "IRC lines alice received": b"\n".join(alice.raw_lines),
        "XMPP room messages": "\n".join(m.body for m in carol.received).encode(),
        "XMPP direct messages": "\n".join(carol.direct).encode(),
        "the log": daemon.log_path.read_bytes(),
        "stdout": daemon.stdout_path.read_bytes(),
        "stderr": daemon.stderr_path.read_bytes(),
        "thehat history": history,
        "thehat report": report,
        **{f"web {response.label}": response.data for response in web},
        **{f"mail {index}": envelope.original_content or b""
           for index, envelope in enumerate(mail_server.envelopes)},
        **files_under(setup.datadir),
        **config_views(setup, monkeypatch),
    }
    needles: dict[str, bytes] = {}
    for spec in SPECS:
        needles.update(encodings(spec, values[spec.label]))
    # The names of the variables show whether the daemon's environment reached a command.
    exec_output = "\n".join(bot_irc_lines + bot_xmpp)
    assert "THEHAT_FLOW=" in exec_output
    assert [spec.variable for spec in SPECS if spec.variable in exec_output] == []
    found = leaks(needles, haystacks)
    assert not found, "secrets leaked: " + "; ".join(found)
