"""A real prosody XMPP server for the tests, on 127.0.0.1 only, stopped by its PID.

`ProsodyServer` writes a configuration into a temporary directory of its own: client
connections on one free port of 127.0.0.1, no server-to-server port, no HTTP ports, and a
multi-user chat component. Without `certificate` and `key` it offers no TLS (so the clients use
`tls: off`); with them it requires STARTTLS before login and allows plain authentication only
over TLS. It registers its accounts with prosodyctl and is ready once a client has received a
real stream header with `<stream:features>`.

`prosody --version`, like any unknown flag, starts a server with the system configuration, so
this module only ever runs prosody with `--config` and prosodyctl with `--config FILE register`.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from tests.servers import HOST, find_program, free_port, stop_process

DOMAIN: Final = "localhost"
MUC_DOMAIN: Final = "conference.localhost"
START_TIMEOUT: Final = 15.0
START_ATTEMPTS: Final = 3
PEOPLE: Final = ("alice", "bob", "carol", "thehat")


def password_for(user: str) -> str:
    return f"secret-{user}"


def stream_ready(port: int, timeout: float = 2.0) -> bool:
    """Open a client stream on 127.0.0.1:`port` and tell whether stream features came back."""
    header = (f"<?xml version='1.0'?><stream:stream to='{DOMAIN}' version='1.0' "
              "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as client:
            client.sendall(header.encode())
            received = b""
            while time.monotonic() < deadline:
                client.settimeout(max(0.05, deadline - time.monotonic()))
                data = client.recv(4096)
                if not data:
                    return False
                received += data
                if b"<stream:features" in received:
                    client.sendall(b"</stream:stream>")
                    return True
    except OSError:
        return False
    return False


@dataclass
class ProsodyServer:
    """One prosody process on 127.0.0.1; `start` and `stop` it, as often as needed.

    `room_locking` keeps prosody's default: a new room refuses other occupants until its
    creator configures it (XEP-0045 section 10.1.2).
    """

    port: int = field(default_factory=free_port)
    room_locking: bool = True
    # False sets TCP_NODELAY on prosody's sockets (network_settings.nagle, prosody 0.12).
    nagle: bool = True
    history_length: int = 20
    # PEM files for STARTTLS on the client port (see tests.tls); both or neither.
    certificate: Path | None = None
    key: Path | None = None
    users: tuple[str, ...] = PEOPLE
    # Passwords of chosen users in place of password_for(user).
    passwords: dict[str, str] = field(default_factory=dict)
    # SASL mechanisms not to offer, such as SCRAM-SHA-1 so that clients must use PLAIN.
    disabled_mechanisms: tuple[str, ...] = ()
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="prosody-")))
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    registered: bool = False

    @property
    def config_path(self) -> Path:
        return self.directory / "prosody.cfg.lua"

    @property
    def log_path(self) -> Path:
        return self.directory / "prosody.log"

    @property
    def output_path(self) -> Path:
        return self.directory / f"output-{self.starts}.log"

    def write_config(self) -> None:
        data = self.directory / "data"
        certificates = self.directory / "certs"
        data.mkdir(exist_ok=True)
        # prosodyctl prints an error on every run when this directory is missing.
        certificates.mkdir(exist_ok=True)
        locking = "true" if self.room_locking else "false"
        # DIGEST-MD5 is disabled by prosody's own default, which this setting replaces.
        disabled = "; ".join(f'"{name}"' for name in ("DIGEST-MD5", *self.disabled_mechanisms))
        nagle = "true" if self.nagle else "false"
        modules = '"roster"; "saslauth"; "disco"; "ping"; "posix";'
        if self.certificate is not None and self.key is not None:
            # mod_tls offers STARTTLS; the modules_enabled list below replaces the defaults.
            modules += ' "tls";'
            encryption = f"""\
c2s_require_encryption = true
allow_unencrypted_plain_auth = false
ssl = {{ certificate = "{self.certificate}"; key = "{self.key}"; }}"""
        else:
            encryption = """\
c2s_require_encryption = false
allow_unencrypted_plain_auth = true"""
        text = f"""\
run_as_root = true
data_path = "{data}"
certificates = "{certificates}"
pidfile = "{self.directory / 'prosody.pid'}"
interfaces = {{ "{HOST}" }}
local_interfaces = {{ "{HOST}" }}
c2s_ports = {{ {self.port} }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
admins = {{ }}
modules_enabled = {{ {modules} }}
modules_disabled = {{ "s2s"; "offline" }}
{encryption}
authentication = "internal_hashed"
disable_sasl_mechanisms = {{ {disabled} }}
storage = "internal"
network_settings = {{ nagle = {nagle} }}
log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = "{self.log_path}" }} }}

VirtualHost "{DOMAIN}"

Component "{MUC_DOMAIN}" "muc"
  restrict_room_creation = false
  muc_room_locking = {locking}
  muc_room_default_history_length = {self.history_length}
"""
        self.config_path.write_text(text, encoding="utf-8")

    def password_of(self, user: str) -> str:
        return self.passwords.get(user, password_for(user))

    def register_users(self) -> None:
        program = find_program("prosodyctl")
        if program is None:
            raise RuntimeError("prosodyctl is not installed; scripts/test installs prosody")
        for user in self.users:
            subprocess.run([program, "--config", str(self.config_path), "register", user,
                            DOMAIN, self.password_of(user)], check=True,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, timeout=30)
        self.registered = True

    def start(self) -> None:
        """Start prosody and wait for a real stream; raise RuntimeError if none comes."""
        program = find_program("prosody")
        if program is None:
            raise RuntimeError("prosody is not installed; scripts/test installs it")
        self.write_config()
        if not self.registered:
            self.register_users()
        for _ in range(START_ATTEMPTS):
            self.starts += 1
            with self.output_path.open("wb") as output:
                self.process = subprocess.Popen(
                    [program, "--config", str(self.config_path), "-F"],
                    stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
            if self._wait_ready():
                return
            self.stop()
            if not self._port_was_taken():
                break
            # Another process took the port between free_port and the start: pick another.
            self.port = free_port()
            self.write_config()
        raise RuntimeError(f"prosody did not become ready on {HOST}:{self.port}; its log is "
                           f"{self.log_path}:\n{self.log_text()}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            if stream_ready(self.port):
                return True
            time.sleep(0.05)
        return False

    def _port_was_taken(self) -> bool:
        return "Address already in use" in self.log_text()

    def log_text(self) -> str:
        texts = []
        for path in (self.log_path, self.output_path):
            try:
                texts.append(path.read_text(encoding="utf-8", errors="replace"))
            except OSError:
                continue
        return "\n".join(texts)

    def stop(self) -> None:
        """Stop the process by its PID (see `stop_process`)."""
        process, self.process = self.process, None
        if process is not None:
            stop_process(process)

    def remove(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
