"""The `thehat-xmpp` section of the configuration file, parsed once into an `XmppConfig`.

The original TheHat's keys keep their meaning: `host` (the account's domain), `account`,
`password`, `resource` (also the room nick), `room` and `respondTo`, so its files load
unchanged. The account may be given as one full JID instead (`jid: bot@example.org/thehat`).
The other keys are this frontend's own; README.md lists them all. Every error names the key
path, such as `thehat-xmpp.port`. The password is kept in a `Secret`, whose repr hides it.

This module does not import slixmpp, so a configuration can be checked without it. JIDs are
checked for their shape only (`local@domain/resource`); the server applies the full rules.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from frontends.config_values import (Secret, mapping_value, seconds_value, secret_value,
                                     text_value)
from frontends.outbox import Rate
from frontends.reconnect import DEFAULT_INITIAL_DELAY, DEFAULT_MAX_DELAY
from thehat.config import Config
from thehat.errors import ConfigError
from thehat.names import did_you_mean

SECTION: Final = "thehat-xmpp"

# RFC 6120 section 14.7: 5222 for STARTTLS; XEP-0368: 5223 is the usual direct TLS port.
STARTTLS_PORT: Final = 5222
DIRECT_TLS_PORT: Final = 5223

KEYS: Final = frozenset({
    "jid", "host", "account", "resource", "password", "password_env", "password_file",
    "server", "port", "tls", "tls_cafile", "room", "rooms", "nick", "respondTo", "history",
    "rate", "max_message_bytes", "reconnect", "ping_interval", "ping_timeout",
})
RATE_KEYS: Final = frozenset({"burst", "interval"})
RECONNECT_KEYS: Final = frozenset({"initial", "max"})

DEFAULT_RESOURCE: Final = "thehat"
# One message carries at most this many bytes of UTF-8 text; longer replies are split at line
# breaks. Servers accept much larger stanzas (prosody 0.12: 256 KiB by default), but clients
# show a long message as a wall of text.
DEFAULT_MESSAGE_BYTES: Final = 3000
MIN_MESSAGE_BYTES: Final = 64
DEFAULT_RATE: Final = Rate(burst=5, interval=1.0)
DEFAULT_PING_INTERVAL: Final = 120.0
DEFAULT_PING_TIMEOUT: Final = 30.0
# RFC 7622 section 3: each part of a JID is at most 1023 bytes.
MAX_JID_PART_BYTES: Final = 1023
FORBIDDEN_IN_NAMES: Final = frozenset(" \t\r\n\x00\"&'/:<>@")


class TlsPolicy(enum.Enum):
    """How the connection is encrypted (`thehat-xmpp.tls`)."""

    REQUIRED = "required"
    DIRECT = "direct"
    OFF = "off"


@dataclass(frozen=True)
class XmppConfig:
    """The validated `thehat-xmpp` section. Durations are in seconds."""

    jid: str
    password: Secret
    rooms: tuple[str, ...]
    nick: str
    resource: str = DEFAULT_RESOURCE
    server: str | None = None
    port: int | None = None
    tls: TlsPolicy = TlsPolicy.REQUIRED
    tls_cafile: Path | None = None
    aliases: tuple[str, ...] = ()
    history: int = 0
    rate: Rate = field(default_factory=lambda: DEFAULT_RATE)
    max_message_bytes: int = DEFAULT_MESSAGE_BYTES
    reconnect_initial: float = DEFAULT_INITIAL_DELAY
    reconnect_max: float = DEFAULT_MAX_DELAY
    ping_interval: float = DEFAULT_PING_INTERVAL
    ping_timeout: float = DEFAULT_PING_TIMEOUT

    @property
    def bare_jid(self) -> str:
        return self.jid.split("/", 1)[0]

    @property
    def full_jid(self) -> str:
        return f"{self.bare_jid}/{self.resource}"

    @property
    def domain(self) -> str:
        return self.bare_jid.split("@", 1)[1]

    @property
    def connect_port(self) -> int:
        """Return the port to connect to: the configured one or the policy's usual one."""
        if self.port is not None:
            return self.port
        return DIRECT_TLS_PORT if self.tls is TlsPolicy.DIRECT else STARTTLS_PORT


def xmpp_config_from(config: Config) -> XmppConfig:
    """Parse the `thehat-xmpp` section of `config`; raises ConfigError when it is missing."""
    source = str(config.path) if config.path is not None else "configuration"
    section = config.sections.get(SECTION)
    if section is None:
        raise ConfigError(f"{source}: the XMPP frontend needs a {SECTION} section with at "
                          "least jid (or account and host), password and room")
    base = config.path.parent if config.path is not None else Path.cwd()
    return parse_xmpp_config(section, source, base)


def parse_xmpp_config(section: Mapping[str, Any], source: str = "configuration",
                      base: Path | None = None) -> XmppConfig:
    """Validate the raw `thehat-xmpp` mapping. Relative file paths are taken from `base`.

    Raises ConfigError naming the key path and the accepted values.

    >>> settings = parse_xmpp_config({"account": "bot", "host": "example.org",
    ...     "password": "secret", "resource": "hat", "room": "ops@conference.example.org"})
    >>> settings.full_jid, settings.nick, settings.rooms, settings.tls.value
    ('bot@example.org/hat', 'hat', ('ops@conference.example.org',), 'required')
    >>> settings.password
    Secret()
    """
    if not isinstance(section, Mapping):
        raise ConfigError(f"{source}: {SECTION} must be a mapping of keys such as jid, "
                          "password and room")
    base = base or Path.cwd()
    for key in section:
        if key not in KEYS:
            raise ConfigError(f"{source}: unknown key {SECTION}.{key}"
                              f"{did_you_mean(str(key), KEYS)}")

    bare, resource = _account(section, source)
    password = secret_value(section, SECTION, source, base, required=True)
    values: dict[str, Any] = {"jid": bare, "resource": resource, "password": password,
                              "rooms": _rooms(section, source)}
    values["nick"] = (_name(section["nick"], f"{SECTION}.nick", source)
                      if section.get("nick") is not None else resource)
    if section.get("respondTo") is not None:
        values["aliases"] = tuple(_name(name, f"{SECTION}.respondTo", source)
                                  for name in _names(section["respondTo"],
                                                     f"{SECTION}.respondTo", source))
    values["tls"] = _tls(section.get("tls"), source)
    if section.get("server") is not None:
        server = text_value(section["server"], f"{SECTION}.server", source)
        if not server or any(char.isspace() for char in server):
            raise ConfigError(f"{source}: {SECTION}.server is {section['server']!r}; give a "
                              "host name or an IP address")
        values["server"] = server
    if section.get("port") is not None:
        values["port"] = _integer(section["port"], f"{SECTION}.port", source, 1, 65535)
    if section.get("tls_cafile") is not None:
        values["tls_cafile"] = base / os.path.expanduser(
            text_value(section["tls_cafile"], f"{SECTION}.tls_cafile", source))
    if section.get("history") is not None:
        values["history"] = _integer(section["history"], f"{SECTION}.history", source, 0, 1000)
    if section.get("max_message_bytes") is not None:
        values["max_message_bytes"] = _integer(section["max_message_bytes"],
                                               f"{SECTION}.max_message_bytes", source,
                                               MIN_MESSAGE_BYTES, 262144)
    if section.get("rate") is not None:
        values["rate"] = _rate(section["rate"], source)
    if section.get("reconnect") is not None:
        values["reconnect_initial"], values["reconnect_max"] = _reconnect(section["reconnect"],
                                                                          source)
    for key in ("ping_interval", "ping_timeout"):
        if section.get(key) is not None:
            values[key] = seconds_value(section[key], f"{SECTION}.{key}", source, minimum=1.0)
    return XmppConfig(**values)


def _account(section: Mapping[str, Any], source: str) -> tuple[str, str]:
    """Return the bare JID and the resource, from `jid` or from `account`, `host`, `resource`."""
    resource_given = section.get("resource") is not None
    resource = (_name(section["resource"], f"{SECTION}.resource", source)
                if resource_given else None)
    if section.get("jid") is not None:
        for key in ("account", "host"):
            if section.get(key) is not None:
                raise ConfigError(f"{source}: {SECTION}.jid and {SECTION}.{key} both name the "
                                  "account; give jid alone, or account and host")
        text = text_value(section["jid"], f"{SECTION}.jid", source)
        bare, _, jid_resource = text.partition("/")
        local, domain = _split_bare(bare, f"{SECTION}.jid", source)
        if jid_resource and resource is not None and jid_resource != resource:
            raise ConfigError(f"{source}: {SECTION}.jid has resource {jid_resource!r} but "
                              f"{SECTION}.resource is {resource!r}; give the resource once")
        if jid_resource:
            resource = _name(jid_resource, f"{SECTION}.jid", source)
    else:
        if section.get("account") is None or section.get("host") is None:
            raise ConfigError(f"{source}: {SECTION}.jid is missing; give the bot's account as "
                              "jid (bot@example.org/thehat), or as account and host")
        local = text_value(section["account"], f"{SECTION}.account", source)
        domain = text_value(section["host"], f"{SECTION}.host", source)
        if "@" in local:
            raise ConfigError(f"{source}: {SECTION}.account is {local!r}; give the part before "
                              f"the @ only, and the domain in {SECTION}.host")
        local, domain = _split_bare(f"{local}@{domain}", f"{SECTION}.account and host", source)
    return f"{local}@{domain}", resource or DEFAULT_RESOURCE


def _split_bare(bare: str, key: str, source: str) -> tuple[str, str]:
    local, at, domain = bare.partition("@")
    if not at or not _valid_part(local) or not _valid_domain(domain):
        raise ConfigError(f"{source}: {key} has invalid JID {bare!r}; use the form "
                          "name@domain, such as bot@example.org")
    return local, domain.lower()


def _valid_part(text: str) -> bool:
    return (bool(text) and len(text.encode("utf-8")) <= MAX_JID_PART_BYTES
            and not FORBIDDEN_IN_NAMES.intersection(text))


def _valid_domain(text: str) -> bool:
    return (bool(text) and len(text.encode("utf-8")) <= MAX_JID_PART_BYTES
            and not FORBIDDEN_IN_NAMES.intersection(text) and not text.startswith(".")
            and ".." not in text)


def _rooms(section: Mapping[str, Any], source: str) -> tuple[str, ...]:
    given: list[tuple[str, str]] = []
    for key in ("room", "rooms"):
        if section.get(key) is not None:
            given.extend((f"{SECTION}.{key}", name)
                         for name in _names(section[key], f"{SECTION}.{key}", source))
    if not given:
        raise ConfigError(f"{source}: {SECTION}.room is missing; name the room to join, such "
                          "as ops@conference.example.org, or list several in rooms")
    rooms: list[str] = []
    for key, name in given:
        if "/" in name:
            raise ConfigError(f"{source}: {key} has {name!r}; give the room's bare JID without "
                              f"/nick, and the bot's nick in {SECTION}.nick")
        local, domain = _split_bare(name, key, source)
        # Prosody and most servers compare room names without case (nodeprep, RFC 6122).
        room = f"{local.lower()}@{domain}"
        if room not in rooms:
            rooms.append(room)
    return tuple(rooms)


def _tls(value: Any, source: str) -> TlsPolicy:
    if value is None or value is True:
        return TlsPolicy.REQUIRED
    # YAML 1.1 reads an unquoted off, no or false as the boolean false.
    if value is False:
        return TlsPolicy.OFF
    word = str(value).strip().lower()
    for policy in TlsPolicy:
        if word == policy.value:
            return policy
    raise ConfigError(f"{source}: {SECTION}.tls is {value!r}; use required (STARTTLS, the "
                      "default), direct (TLS from the first byte) or off (no encryption)")


def _name(value: Any, key: str, source: str) -> str:
    """Check a nick or resource: not empty, no line breaks or NUL, at most 1023 bytes."""
    name = text_value(value, key, source)
    if (not name or len(name.encode("utf-8")) > MAX_JID_PART_BYTES
            or any(char in name for char in "\r\n\x00/")):
        raise ConfigError(f"{source}: {key} has invalid name {name!r}; use 1 to "
                          f"{MAX_JID_PART_BYTES} bytes without '/', line breaks or NUL")
    return name


def _names(value: Any, key: str, source: str) -> list[str]:
    """Accept one name, a comma-separated text or a YAML list of names."""
    if isinstance(value, dict) or (isinstance(value, list) and any(
            isinstance(item, (dict, list)) for item in value)):
        raise ConfigError(f"{source}: {key} must be a name or a list of names such as [a, b]")
    if isinstance(value, list):
        names = [str(item).strip() for item in value]
    else:
        names = [part.strip() for part in text_value(value, key, source).split(",")]
    names = [name for name in names if name]
    if not names:
        raise ConfigError(f"{source}: {key} is empty; give at least one name")
    return names


def _integer(value: Any, key: str, source: str, minimum: int, maximum: int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = minimum - 1
    if isinstance(value, bool) or not minimum <= number <= maximum:
        raise ConfigError(f"{source}: {key} is {value!r}; use a whole number from {minimum} "
                          f"to {maximum}")
    return number


def _rate(value: Any, source: str) -> Rate:
    key = f"{SECTION}.rate"
    mapping = mapping_value(value, key, RATE_KEYS, source)
    burst = DEFAULT_RATE.burst
    if mapping.get("burst") is not None:
        burst = _integer(mapping["burst"], f"{key}.burst", source, 1, 10000)
    interval = DEFAULT_RATE.interval
    if mapping.get("interval") is not None:
        interval = seconds_value(mapping["interval"], f"{key}.interval", source)
    return Rate(burst, interval)


def _reconnect(value: Any, source: str) -> tuple[float, float]:
    key = f"{SECTION}.reconnect"
    mapping = mapping_value(value, key, RECONNECT_KEYS, source)
    initial = DEFAULT_INITIAL_DELAY
    if mapping.get("initial") is not None:
        initial = seconds_value(mapping["initial"], f"{key}.initial", source, minimum=0.1)
    maximum = max(DEFAULT_MAX_DELAY, initial)
    if mapping.get("max") is not None:
        maximum = seconds_value(mapping["max"], f"{key}.max", source, minimum=0.1)
    if maximum < initial:
        raise ConfigError(f"{source}: {key}.max ({maximum:g} s) is less than {key}.initial "
                          f"({initial:g} s); make max at least initial")
    return initial, maximum
