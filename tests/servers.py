"""Real servers for the tests, started on 127.0.0.1 only and stopped by their PID.

`NgircdServer` runs ngircd (Debian's package, in /usr/sbin) in the foreground with a config
file, log and PID directory of its own. It is ready once a client has completed a real IRC
registration (the 001 welcome). `max_penalty` None keeps ngircd's default flood throttling
(MaxPenaltyTime -1: after a burst of about 4 lines, about 3 lines a second are read from each
client); 0 turns throttling off.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any, Final, Protocol, TypeVar

HOST: Final = "127.0.0.1"
SERVER_NAME: Final = "irc.localhost"
# Debian installs ngircd in /usr/sbin, which is not on every user's PATH.
SBIN_DIRECTORIES: Final = ("/usr/local/sbin", "/usr/sbin", "/sbin")
START_TIMEOUT: Final = 15.0
STOP_TIMEOUT: Final = 5.0
START_ATTEMPTS: Final = 3


class Server(Protocol):
    """A test server that a fixture starts and removes."""

    def start(self) -> None: ...

    def remove(self) -> None: ...


ServerType = TypeVar("ServerType", bound=Server)


@contextlib.contextmanager
def started_servers(server_class: Callable[..., ServerType]
                    ) -> Iterator[Callable[..., ServerType]]:
    """Yield a factory of started servers, and remove every one it made on exit."""
    servers: list[ServerType] = []

    def make(**options: Any) -> ServerType:
        server = server_class(**options)
        servers.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.remove()


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Stop a server process by its PID: SIGTERM, then SIGKILL after STOP_TIMEOUT seconds."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT)


def find_program(name: str) -> str | None:
    """Return the path of program `name` on PATH or in the sbin directories, or None."""
    search = os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRECTORIES])
    return shutil.which(name, path=search)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def register_once(port: int, nick: str = "probe", timeout: float = 2.0,
                  password: str | None = None) -> bool:
    """Register a client on 127.0.0.1:`port`, quit, and tell whether the 001 welcome came."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as client:
            if password is not None:
                client.sendall(f"PASS {password}\r\n".encode())
            client.sendall(f"NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n".encode())
            received = b""
            while time.monotonic() < deadline:
                client.settimeout(max(0.05, deadline - time.monotonic()))
                data = client.recv(4096)
                if not data:
                    return False
                received += data
                if f" 001 {nick} ".encode() in received:
                    client.sendall(b"QUIT :ready check\r\n")
                    return True
    except OSError:
        return False
    return False


@dataclass
class NgircdServer:
    """One ngircd process on 127.0.0.1; `start` and `stop` it, as often as needed."""

    port: int = field(default_factory=free_port)
    max_penalty: int | None = 0
    password: str | None = None
    tls_port: int | None = None
    certificate: Path | None = None
    key: Path | None = None
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ngircd-")))
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def config_path(self) -> Path:
        return self.directory / "ngircd.conf"

    @property
    def log_path(self) -> Path:
        return self.directory / f"ngircd-{self.starts}.log"

    def write_config(self) -> None:
        # As root, ngircd drops to "nobody", which must be able to write the PID file.
        self.directory.chmod(0o755)
        run = self.directory / "run"
        run.mkdir(exist_ok=True)
        run.chmod(0o1777)

        lines = [
            "[Global]",
            f"\tName = {SERVER_NAME}",
            "\tInfo = thehat test server (loopback only)",
            "\tAdminInfo1 = thehat tests",
            "\tAdminInfo2 = thehat tests",
            "\tAdminEMail = tests@localhost",
            f"\tListen = {HOST}",
            f"\tPorts = {self.port}",
            '\tMotdPhrase = "thehat test server"',
            f"\tPidFile = {run / 'ngircd.pid'}",
        ]
        if self.password is not None:
            lines.append(f"\tPassword = {self.password}")

        lines += [
            "[Limits]",
            "\tMaxConnections = 0",
            "\tMaxConnectionsIP = 0",
            "\tMaxJoins = 0",
            "\tMaxNickLength = 30",
        ]
        if self.max_penalty is not None:
            lines.append(f"\tMaxPenaltyTime = {self.max_penalty}")

        lines += ["[Options]", "\tIdent = no", "\tPAM = no", "\tDNS = no"]
        if self.tls_port is not None:
            lines += ["[SSL]", f"\tCertFile = {self.certificate}", f"\tKeyFile = {self.key}",
                      f"\tPorts = {self.tls_port}"]

        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def start(self) -> None:
        """Start ngircd and wait for a real registration; raise RuntimeError if none comes."""
        program = find_program("ngircd")
        if program is None:
            raise RuntimeError("ngircd is not installed; scripts/test installs it")
        self.write_config()
        for _ in range(START_ATTEMPTS):
            self.starts += 1
            with self.log_path.open("wb") as log_file:
                self.process = subprocess.Popen(
                    [program, "-n", "-f", str(self.config_path)], stdin=subprocess.DEVNULL,
                    stdout=log_file, stderr=subprocess.STDOUT)
            if self._wait_ready():
                return
            self.stop()
            if not self._port_was_taken():
                break
            # Another process took the port between free_port and the start: pick another.
            self.port = free_port()
            self.write_config()
        raise RuntimeError(f"ngircd did not become ready on {HOST}:{self.port}; its log "
                           f"is {self.log_path}:\n{self.log_text()}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            if register_once(self.port, password=self.password):
                return True
            time.sleep(0.05)
        return False

    def _port_was_taken(self) -> bool:
        text = self.log_text()
        return "Can't bind socket" in text or "Address already in use" in text

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the process by its PID (see `stop_process`)."""
        process, self.process = self.process, None
        if process is not None:
            stop_process(process)

    def remove(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
