"""An IRC network with services accounts for the tests: InspIRCd 3 linked to Atheme 7.2.

`ServicesNetwork` runs Debian's `inspircd` and `atheme-services` on 127.0.0.1 only, with their
configuration, logs and database in a temporary directory of its own. InspIRCd takes clients on
one free port and the services' server link on another, and it loads the modules for services
accounts, SASL and the IRCv3 capabilities account-tag, account-notify and extended-join. WHOX
is part of InspIRCd 3's core. Atheme connects to InspIRCd as the U-lined server
`services.localhost` and provides NickServ and SaslServ, with SASL PLAIN. The network is ready
once NickServ has replied to a client, which needs the server link to be up.

InspIRCd 3.15 completes a client's registration once a second, so every new client waits
about one second for its 001 welcome, with or without capability negotiation.

`AccountClient` is an asyncio client for the tests: it may log in with SASL PLAIN while it
registers, requests the capabilities it is given, and records every line as received, message
tags included.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from tests.servers import HOST, SERVER_NAME, find_program, free_port, stop_process

SERVICES_NAME: Final = "services.localhost"
NETWORK_NAME: Final = "ThehatTest"
START_TIMEOUT: Final = 15.0
START_ATTEMPTS: Final = 3
# Seconds to wait for one client's registration and for one reply of the services.
CLIENT_TIMEOUT: Final = 10.0
# Seconds between NickServ requests while the services are not linked yet.
PROBE_INTERVAL: Final = 0.1
# The Debian package that installs each program.
PACKAGES: Final = {"inspircd": "inspircd", "atheme-services": "atheme-services"}
# Printed by InspIRCd 3.15 once it has opened its ports and loaded its modules, and before
# that, when a <bind> port is taken. The server keeps running without that port.
STARTED: Final = "InspIRCd is now running"
BIND_FAILED: Final = "listeners failed to bind"

# Modules beyond InspIRCd's core: the server link, services accounts (which also provides
# account-notify and extended-join through the ircv3 module), SASL, the account tag, and
# svshold, without which Atheme logs that its nick enforcers will not work.
INSPIRCD_MODULES: Final = ("spanningtree", "services_account", "sasl", "cap", "ircv3",
                           "ircv3_accounttag", "svshold")
ATHEME_MODULES: Final = ("protocol/inspircd", "backend/opensex", "crypto/pbkdf2v2",
                         "nickserv/main", "nickserv/help", "nickserv/register",
                         "nickserv/identify", "nickserv/logout", "saslserv/main",
                         "saslserv/plain")


def missing_program(name: str) -> RuntimeError:
    package = PACKAGES[name]
    return RuntimeError(f"{name} is not installed: install the Debian package {package} "
                        f"(scripts/test installs it)")


class LineSocket:
    """A blocking IRC client connection to 127.0.0.1 that replies to PING itself."""

    def __init__(self, port: int, nick: str, deadline: float) -> None:
        self.nick = nick
        self.deadline = deadline
        self._buffer = b""
        self.socket = socket.create_connection((HOST, port), timeout=CLIENT_TIMEOUT)
        self.send(f"NICK {nick}")
        self.send(f"USER {nick} 0 * :{nick}")

    def send(self, line: str) -> None:
        self.socket.sendall(line.encode() + b"\r\n")

    def read_line(self) -> str:
        """Return the next line. Raises TimeoutError after the deadline and EOFError when the
        server closes the connection."""
        while b"\r\n" not in self._buffer:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.nick}: timed out waiting for a line from the IRC "
                                   "server")
            self.socket.settimeout(remaining)
            try:
                data = self.socket.recv(4096)
            except socket.timeout as exc:
                raise TimeoutError(f"{self.nick}: timed out waiting for a line from the IRC "
                                   "server") from exc
            if not data:
                raise EOFError(f"the IRC server closed the connection of {self.nick}")
            self._buffer += data
        raw, self._buffer = self._buffer.split(b"\r\n", 1)
        line = raw.decode("utf-8", "replace")
        if line.startswith("PING "):
            self.send("PONG " + line[5:])
        return line

    def wait_for(self, predicate: Callable[[list[str]], bool]) -> list[str]:
        """Read lines until one passes `predicate`, which gets the line's words, and return
        that line's words."""
        while True:
            words = self.read_line().split(" ")
            if predicate(words):
                return words

    def wait_welcome(self) -> None:
        words = self.wait_for(lambda words: len(words) > 1 and words[1] in ("001", "433"))
        if words[1] == "433":
            raise RuntimeError(f"nick {self.nick} is in use on the test network")

    def close(self) -> None:
        try:
            self.send("QUIT :done")
        except OSError:
            pass
        self.socket.close()


def sender_nick(words: list[str]) -> str:
    """Return the nick of a line's `:nick!user@host` prefix ("" without one)."""
    if not words or not words[0].startswith(":"):
        return ""
    return words[0][1:].split("!", 1)[0]


def trailing(words: list[str]) -> str:
    """Return the text after the first ` :` argument of a line split into words."""
    for index, word in enumerate(words[1:], start=1):
        if word.startswith(":"):
            return " ".join([word[1:], *words[index + 1:]])
    return ""


@dataclass
class ServicesNetwork:
    """InspIRCd and Atheme on 127.0.0.1; `start` them, `register` accounts, `remove` both."""

    port: int = field(default_factory=free_port)
    link_port: int = field(default_factory=free_port)
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ircservices-")))
    link_password: str = field(default_factory=lambda: secrets.token_hex(16))
    ircd: subprocess.Popen[bytes] | None = None
    services: subprocess.Popen[bytes] | None = None
    # Registered account names and their passwords.
    accounts: dict[str, str] = field(default_factory=dict)
    starts: int = 0
    # The InspIRCd modules to load; leaving one out imitates a server without that feature.
    modules: tuple[str, ...] = INSPIRCD_MODULES

    host: str = HOST

    @property
    def inspircd_config(self) -> Path:
        return self.directory / "inspircd.conf"

    @property
    def atheme_config(self) -> Path:
        return self.directory / "atheme.conf"

    @property
    def inspircd_output(self) -> Path:
        return self.directory / f"inspircd-{self.starts}.out"

    @property
    def atheme_output(self) -> Path:
        return self.directory / f"atheme-{self.starts}.out"

    def write_inspircd_config(self) -> None:
        directory = self.directory
        modules = "\n".join(f'<module name="{name}">' for name in self.modules)
        # The connect class turns flood control off, and resolvehostnames/useident "no" keep
        # InspIRCd from making DNS or ident queries for clients.
        text = f"""\
<path configdir="{directory}" datadir="{directory}" logdir="{directory}" \
runtimedir="{directory}">
<server name="{SERVER_NAME}" description="thehat test server (loopback only)" \
network="{NETWORK_NAME}">
<admin name="thehat tests" nick="tests" email="tests@localhost">
<bind address="{HOST}" port="{self.port}" type="clients">
<bind address="{HOST}" port="{self.link_port}" type="servers">
<power diepass="" restartpass="">
<connect allow="{HOST}" timeout="60" pingfreq="120" localmax="100" globalmax="100"
         useident="no" resolvehostnames="no" threshold="100000" commandrate="100000000"
         fakelag="no" hardsendq="1M" softsendq="1M" recvq="1M">
<dns server="{HOST}" timeout="1">
<options prefixquit="Quit: " syntaxhints="no">
<security hideserver="" userstats="Pu" customversion="" flatlinks="no" hidesplits="no"
          hideulines="no" hidebans="no" maxtargets="20">
<performance quietbursts="yes" softlimit="1024" somaxconn="128" netbuffersize="10240">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" \
target="{directory / 'inspircd.log'}">
{modules}
<sasl target="{SERVICES_NAME}" requiressl="no">
<link name="{SERVICES_NAME}" ipaddr="{HOST}" port="{self.link_port}" allowmask="{HOST}/32"
      sendpass="{self.link_password}" recvpass="{self.link_password}">
<uline server="{SERVICES_NAME}" silent="yes">
"""
        self.inspircd_config.write_text(text, encoding="utf-8")

    def write_atheme_config(self) -> None:
        modules = "\n".join(f'loadmodule "modules/{name}";' for name in ATHEME_MODULES)
        # Leaving out general.ratelimit_uses turns off the limit on REGISTER commands, and
        # flood_msgs 0 turns off flood protection. auth none needs no email verification.
        text = f"""\
{modules}
serverinfo {{
  name = "{SERVICES_NAME}";
  desc = "thehat test services";
  numeric = "00A";
  recontime = 1;
  netname = "{NETWORK_NAME}";
  hidehostsuffix = "users.localhost";
  adminname = "thehat tests";
  adminemail = "tests@localhost";
  registeremail = "tests@localhost";
  mta = "/bin/false";
  loglevel = {{ error; info; admin; network; }};
  maxlogins = 10;
  maxusers = 1000;
  mdlimit = 30;
  emaillimit = 10;
  emailtime = 300;
  auth = none;
  casemapping = rfc1459;
}};
uplink "{SERVER_NAME}" {{
  host = "{HOST}";
  port = {self.link_port};
  password = "{self.link_password}";
}};
nickserv {{
  nick = "NickServ";
  user = "NickServ";
  host = "{SERVICES_NAME}";
  real = "Nickname Services";
}};
saslserv {{
  nick = "SaslServ";
  user = "SaslServ";
  host = "{SERVICES_NAME}";
  real = "SASL Authentication Agent";
}};
general {{
  flood_msgs = 0;
  flood_time = 10;
  kline_time = 7;
  commit_interval = 5;
  default_clone_allowed = 100;
  default_clone_warn = 90;
  uplink_sendq_limit = 1048576;
  language = "en";
}};
"""
        self.atheme_config.write_text(text, encoding="utf-8")

    def start(self) -> None:
        """Start InspIRCd, then Atheme, and wait until NickServ replies to a client.

        Raises RuntimeError, with the logs, when a program is missing or the network does
        not become ready within START_TIMEOUT seconds.
        """
        inspircd = find_program("inspircd")
        if inspircd is None:
            raise missing_program("inspircd")
        atheme = find_program("atheme-services")
        if atheme is None:
            raise missing_program("atheme-services")

        for _ in range(START_ATTEMPTS):
            self.starts += 1
            self.write_inspircd_config()
            self.write_atheme_config()
            with self.inspircd_output.open("wb") as output:
                # As root, InspIRCd refuses to start without --runasroot.
                self.ircd = subprocess.Popen(
                    [inspircd, "--config", str(self.inspircd_config), "--nofork", "--nopid",
                     "--runasroot"], stdin=subprocess.DEVNULL, stdout=output,
                    stderr=subprocess.STDOUT)
            deadline = time.monotonic() + START_TIMEOUT
            if not self._wait_running(deadline):
                self.stop()
                if self._port_was_taken():
                    # Another process took a port between free_port and the start.
                    self.port, self.link_port = free_port(), free_port()
                    continue
                break
            with self.atheme_output.open("wb") as output:
                # -n keeps Atheme in the foreground, -D sets the database directory and -l
                # the log file.
                self.services = subprocess.Popen(
                    [atheme, "-n", "-c", str(self.atheme_config), "-D", str(self.directory),
                     "-l", str(self.directory / "atheme.log"),
                     "-p", str(self.directory / "atheme.pid")],
                    stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
            if self._wait_nickserv(deadline):
                return
            break
        logs = self.log_text()
        self.stop()
        raise RuntimeError(f"InspIRCd and Atheme did not become ready on {HOST}:{self.port} "
                           f"(server link port {self.link_port}); their logs in "
                           f"{self.directory}:\n{logs}")

    def _wait_running(self, deadline: float) -> bool:
        """Wait until InspIRCd has started with both of its ports open."""
        while time.monotonic() < deadline:
            if self.ircd is None or self.ircd.poll() is not None:
                return False
            if STARTED in self._read(self.inspircd_output):
                return not self._port_was_taken()
            time.sleep(0.02)
        return False

    def _wait_nickserv(self, deadline: float) -> bool:
        """Register one client and send NickServ HELP until NickServ replies."""
        try:
            client = LineSocket(self.port, "readyprobe", deadline)
        except OSError:
            return False
        try:
            client.wait_welcome()
            while time.monotonic() < deadline:
                for process in (self.ircd, self.services):
                    if process is None or process.poll() is not None:
                        return False
                client.send("PRIVMSG NickServ :HELP")
                # 401 (no such nick) comes back while the services are not linked yet.
                words = client.wait_for(
                    lambda words: len(words) > 1 and (words[1] == "401" or (
                        words[1] == "NOTICE" and sender_nick(words) == "NickServ")))
                if words[1] == "NOTICE":
                    return True
                time.sleep(PROBE_INTERVAL)
        except (OSError, EOFError, RuntimeError):
            return False
        finally:
            client.close()
        return False

    def _port_was_taken(self) -> bool:
        return BIND_FAILED in self._read(self.inspircd_output)

    def register(self, account: str, password: str, email: str | None = None) -> None:
        """Register the NickServ account `account` by a client that takes it as its nick.

        Blocks for about a second (one client registration), so an async test should call it
        before it starts its clients or through `asyncio.to_thread`. Registering an account
        again with the same password does nothing. Raises RuntimeError with NickServ's reply
        when NickServ rejects the request (a taken name, a password that is too short or
        equal to the name) and when `account` is in use as a nick on the network.
        """
        known = self.accounts.get(account)
        if known is not None:
            if known != password:
                raise RuntimeError(f"account {account} is already registered with another "
                                   "password")
            return
        deadline = time.monotonic() + CLIENT_TIMEOUT
        client = LineSocket(self.port, account, deadline)
        try:
            client.wait_welcome()
            client.send(f"PRIVMSG NickServ :REGISTER {password} "
                        f"{email or account + '@example.com'}")
            # Once Atheme has created the account and logged the client in, InspIRCd sends
            # 900 (RPL_LOGGEDIN), before NickServ's notice.
            words = client.wait_for(
                lambda words: len(words) > 1 and (words[1] == "900" or (
                    words[1] == "NOTICE" and sender_nick(words) == "NickServ")))
        finally:
            client.close()
        if words[1] != "900":
            raise RuntimeError(f"NickServ did not register account {account}: "
                               f"{trailing(words)}")
        self.accounts[account] = password

    def log_text(self) -> str:
        parts = []
        # Atheme's output file has its log too (-n), and any error from before it opened it.
        for path in (self.inspircd_output, self.directory / "inspircd.log",
                     self.atheme_output):
            parts.append(f"--- {path.name}\n{self._read(path)}")
        return "\n".join(parts)

    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop Atheme and InspIRCd by their PIDs, both at once (see `stop_process`)."""
        processes = [process for process in (self.services, self.ircd)
                     if process is not None and process.poll() is None]
        self.services = self.ircd = None
        # Both get SIGTERM first, so that they shut down at the same time.
        for process in processes:
            process.terminate()
        for process in processes:
            stop_process(process)

    def remove(self) -> None:
        """Stop both programs and delete their directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class Line:
    """One line a client received: its IRCv3 message tags, prefix nick, command and
    arguments, the trailing one included."""

    tags: dict[str, str]
    nick: str
    command: str
    arguments: list[str]
    raw: str


def parse_line(raw: str) -> Line:
    """Split a received line into tags, sender, command and arguments.

    Tag values stay escaped, as sent (IRCv3 message-tags); the tests use plain values only.

    >>> line = parse_line("@account=alice :alice!a@h PRIVMSG #t :hi there")
    >>> line.tags, line.nick, line.command, line.arguments
    ({'account': 'alice'}, 'alice', 'PRIVMSG', ['#t', 'hi there'])
    """
    rest = raw
    tags: dict[str, str] = {}
    if rest.startswith("@"):
        tag_text, _, rest = rest[1:].partition(" ")
        for item in tag_text.split(";"):
            key, _, value = item.partition("=")
            tags[key] = value
    nick = ""
    if rest.startswith(":"):
        prefix, _, rest = rest[1:].partition(" ")
        nick = prefix.split("!", 1)[0]
    head, separator, text = rest.partition(" :")
    words = head.split()
    arguments = words[1:] + ([text] if separator else [])
    return Line(tags, nick, words[0].upper() if words else "", arguments, raw)


class AccountClient:
    """A test participant on the services network, reading and writing raw IRC lines.

    `capabilities` are requested with CAP REQ; with `account` and `password` the client
    logs in with SASL PLAIN before its registration ends. `logged_in` is the account that
    the server last reported with 900 (RPL_LOGGEDIN), or None.
    """

    def __init__(self, nick: str, port: int, *, capabilities: Sequence[str] = (),
                 account: str | None = None, password: str | None = None) -> None:
        self.nick = nick
        self.port = port
        self.capabilities = tuple(capabilities)
        self.account = account
        self.password = password
        self.lines: list[Line] = []
        self.enabled: set[str] = set()
        self.logged_in: str | None = None
        self.cursor = 0
        self._changed = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None

    async def connect(self, channels: Sequence[str] = ()) -> AccountClient:
        """Connect, negotiate, register, and join `channels`; return self."""
        reader, self._writer = await asyncio.open_connection(HOST, self.port)
        self._reader_task = asyncio.create_task(self._read(reader),
                                                name=f"irc test client {self.nick}")
        negotiate = bool(self.capabilities) or self.account is not None
        if negotiate:
            self.send("CAP LS 302")
        self.send(f"NICK {self.nick}")
        self.send(f"USER {self.nick} 0 * :{self.nick}")
        if negotiate:
            await self._negotiate()
        welcome = await self.next_line(lambda line: line.command in ("001", "433"),
                                       "the 001 welcome")
        if welcome.command == "433":
            raise AssertionError(f"{self.nick}: the nick is in use")
        for channel in channels:
            await self.join(channel)
        return self

    async def _negotiate(self) -> None:
        await self.next_line(lambda line: line.command == "CAP" and len(line.arguments) > 1
                             and line.arguments[1] == "LS", "the CAP LS reply")
        requested = list(self.capabilities)
        if self.account is not None:
            requested.append("sasl")
        self.send(f"CAP REQ :{' '.join(requested)}")
        reply = await self.next_line(lambda line: line.command == "CAP" and len(
            line.arguments) > 1 and line.arguments[1] in ("ACK", "NAK"), "the CAP ACK")
        if reply.arguments[1] == "NAK":
            raise AssertionError(f"{self.nick}: the server rejected {reply.arguments[-1]}")
        self.enabled = set(reply.arguments[-1].split())
        if self.account is not None:
            await self._log_in(self.account, self.password or "")
        self.send("CAP END")

    async def _log_in(self, account: str, password: str) -> None:
        self.send("AUTHENTICATE PLAIN")
        await self.next_line(lambda line: line.command == "AUTHENTICATE", "AUTHENTICATE +")
        payload = base64.b64encode(f"{account}\0{account}\0{password}".encode()).decode()
        self.send(f"AUTHENTICATE {payload}")
        result = await self.next_line(lambda line: line.command in ("903", "904", "905",
                                                                    "906", "907"),
                                      "the SASL result")
        if result.command != "903":
            raise AssertionError(f"{self.nick}: SASL login to {account} failed: {result.raw}")

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            data = await reader.readline()
            if not data:
                break
            raw = data.decode("utf-8", "replace").rstrip("\r\n")
            line = parse_line(raw)
            if line.command == "PING" and self._writer is not None:
                self.send(f"PONG :{line.arguments[-1] if line.arguments else ''}")
            elif line.command == "900" and len(line.arguments) > 2:
                self.logged_in = line.arguments[2]
            elif line.command == "901":
                self.logged_in = None
            self.lines.append(line)
            self._changed.set()
        self._changed.set()

    @property
    def connected(self) -> bool:
        return self._reader_task is not None and not self._reader_task.done()

    def send(self, line: str) -> None:
        assert self._writer is not None, "connect first"
        self._writer.write(line.encode() + b"\r\n")

    def say(self, target: str, text: str) -> None:
        self.send(f"PRIVMSG {target} :{text}")

    async def join(self, channel: str) -> None:
        self.send(f"JOIN {channel}")
        await self.next_line(lambda line: line.command == "366" and len(line.arguments) > 1
                             and line.arguments[1].lower() == channel.lower(),
                             f"the end of the names of {channel}")

    async def next_line(self, predicate: Callable[[Line], bool], description: str,
                        timeout: float = CLIENT_TIMEOUT) -> Line:
        """Return the first line after the cursor that passes `predicate`, and move the
        cursor past it; raise AssertionError after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for index in range(self.cursor, len(self.lines)):
                if predicate(self.lines[index]):
                    self.cursor = index + 1
                    return self.lines[index]
            self.cursor = len(self.lines)
            remaining = deadline - loop.time()
            if remaining <= 0 or not self.connected:
                state = "waiting" if self.connected else "disconnected while waiting"
                raise AssertionError(f"{self.nick}: timed out {state} for {description}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def next_message(self, sender: str, target: str,
                           text: Callable[[str], bool] = lambda _: True) -> Line:
        """Return the next PRIVMSG from `sender` to `target` whose text passes `text`."""
        return await self.next_line(
            lambda line: line.command == "PRIVMSG" and line.nick.lower() == sender.lower()
            and len(line.arguments) == 2 and line.arguments[0].lower() == target.lower()
            and text(line.arguments[1]), f"a message from {sender} to {target}")

    async def close(self) -> None:
        """Quit and wait until the server closed the connection, so that the nick is free."""
        writer, self._writer = self._writer, None
        task = self._reader_task
        if writer is None or task is None:
            return
        if not task.done():
            writer.write(b"QUIT :test done\r\n")
            await asyncio.wait([task], timeout=5.0)
        writer.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
