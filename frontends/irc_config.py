"""The `thehat-irc` section of the configuration file, parsed once into an `IrcConfig`.

The original TheHat's keys keep their meaning (`nic`, `name`, `channel` without `#`,
`server`, `port`, `respondTo`), so its files load unchanged. The other keys are this
frontend's own; README.md lists them all. Every error names the key path, such as
`thehat-irc.port`, and the values it accepts. Passwords are kept in `Secret`, whose repr hides
them, so that no log line or traceback shows one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from frontends.config_values import (SECRET_KEYS, Secret, mapping_value, seconds_value,
                                     secret_value, text_value)
from frontends.irc_protocol import irc_lower
from frontends.outbox import Rate
from frontends.reconnect import DEFAULT_INITIAL_DELAY, DEFAULT_MAX_DELAY
from thehat.config import Config, parse_bool
from thehat.errors import ConfigError
from thehat.names import did_you_mean

SECTION: Final = "thehat-irc"

PLAIN_PORT: Final = 6667
TLS_PORT: Final = 6697

KEYS: Final = frozenset({
    "nic", "nick", "name", "channel", "channels", "server", "port", "respondTo", "altnicks",
    "password", "password_env", "password_file", "tls", "tls_verify", "tls_cafile", "sasl",
    "nickserv", "rate", "reconnect", "ping_interval", "ping_timeout", "reclaim_interval",
})
SASL_KEYS: Final = frozenset({"account", *SECRET_KEYS})
NICKSERV_KEYS: Final = frozenset({"service", *SECRET_KEYS})
RATE_KEYS: Final = frozenset({"burst", "interval"})
RECONNECT_KEYS: Final = frozenset({"initial", "max"})

# RFC 2812 section 2.3.1: a nickname starts with a letter or one of []\`_^{|} and goes on
# with letters, digits, those characters and "-". Servers set their own maximum length.
NICK_PATTERN: Final = re.compile(r"[A-Za-z\[\]\\`_^{|}][A-Za-z0-9\[\]\\`_^{|}-]*")
# RFC 2812 sections 1.3 and 2.3.1: channel names start with one of #&+! and may not contain
# NUL, BEL, CR, LF, space, comma or colon; at most 50 characters.
CHANNEL_PREFIXES: Final = "#&+!"
CHANNEL_FORBIDDEN: Final = frozenset("\x00\x07\r\n ,:")
MAX_CHANNEL_LENGTH: Final = 50

DEFAULT_REALNAME: Final = "thehat workflow bot"
DEFAULT_PING_INTERVAL: Final = 120.0
DEFAULT_PING_TIMEOUT: Final = 60.0
DEFAULT_RECLAIM_INTERVAL: Final = 60.0


@dataclass(frozen=True)
class SaslConfig:
    """SASL PLAIN credentials (`thehat-irc.sasl`)."""

    account: str
    password: Secret


@dataclass(frozen=True)
class NickServConfig:
    """Identification to a nickname service after connecting (`thehat-irc.nickserv`)."""

    password: Secret
    service: str = "NickServ"


@dataclass(frozen=True)
class IrcConfig:
    """The validated `thehat-irc` section. Durations are in seconds."""

    nick: str
    server: str
    channels: tuple[str, ...]
    port: int = PLAIN_PORT
    realname: str = DEFAULT_REALNAME
    aliases: tuple[str, ...] = ()
    altnicks: tuple[str, ...] = ()
    password: Secret | None = None
    tls: bool = False
    tls_verify: bool = True
    tls_cafile: Path | None = None
    sasl: SaslConfig | None = None
    nickserv: NickServConfig | None = None
    rate: Rate = field(default_factory=Rate)
    reconnect_initial: float = DEFAULT_INITIAL_DELAY
    reconnect_max: float = DEFAULT_MAX_DELAY
    ping_interval: float = DEFAULT_PING_INTERVAL
    ping_timeout: float = DEFAULT_PING_TIMEOUT
    reclaim_interval: float = DEFAULT_RECLAIM_INTERVAL


def normalize_channel(name: str) -> str:
    """Return the channel name with `#` added when it has no channel prefix.

    >>> normalize_channel("ops"), normalize_channel("#ops"), normalize_channel("&local")
    ('#ops', '#ops', '&local')
    """
    name = name.strip()
    if name and name[0] not in CHANNEL_PREFIXES:
        return "#" + name
    return name


def irc_config_from(config: Config) -> IrcConfig:
    """Parse the `thehat-irc` section of `config`; raises ConfigError when it is missing."""
    source = str(config.path) if config.path is not None else "configuration"
    section = config.sections.get(SECTION)
    if section is None:
        raise ConfigError(f"{source}: the IRC frontend needs a {SECTION} section with at "
                          "least nic, server and channel")
    base = config.path.parent if config.path is not None else Path.cwd()
    return parse_irc_config(section, source, base)


def parse_irc_config(section: Mapping[str, Any], source: str = "configuration",
                     base: Path | None = None) -> IrcConfig:
    """Validate the raw `thehat-irc` mapping. Relative file paths are taken from `base`.

    Raises ConfigError naming the key path and the accepted values.
    """
    base = base or Path.cwd()
    for key in section:
        if key not in KEYS:
            raise ConfigError(f"{source}: unknown key {SECTION}.{key}"
                              f"{did_you_mean(str(key), KEYS)}")
    if "nic" in section and "nick" in section:
        raise ConfigError(f"{source}: {SECTION}.nic and {SECTION}.nick are the same setting; "
                          "keep one of them")
    nick_key = "nick" if "nick" in section else "nic"
    nick = _nick(_required(section, nick_key, source), f"{SECTION}.{nick_key}", source)
    server = text_value(_required(section, "server", source), f"{SECTION}.server", source)
    if not server:
        raise ConfigError(f"{source}: {SECTION}.server is empty; give a host name or address")

    values: dict[str, Any] = {"nick": nick, "server": server,
                              "channels": _channels(section, source)}
    tls = parse_bool(section.get("tls", False), f"{SECTION}.tls", source)
    values["tls"] = tls
    values["port"] = (_port(section["port"], source) if section.get("port") is not None
                      else TLS_PORT if tls else PLAIN_PORT)
    if section.get("name") is not None:
        values["realname"] = text_value(section["name"], f"{SECTION}.name", source) or nick
    if section.get("respondTo") is not None:
        values["aliases"] = tuple(_nick(name, f"{SECTION}.respondTo", source)
                                  for name in _names(section["respondTo"],
                                                     f"{SECTION}.respondTo", source))
    if section.get("altnicks") is not None:
        values["altnicks"] = tuple(_nick(name, f"{SECTION}.altnicks", source)
                                   for name in _names(section["altnicks"],
                                                      f"{SECTION}.altnicks", source))
    values["password"] = secret_value(section, SECTION, source, base, required=False)
    if section.get("tls_verify") is not None:
        values["tls_verify"] = parse_bool(section["tls_verify"], f"{SECTION}.tls_verify",
                                          source)
    if section.get("tls_cafile") is not None:
        values["tls_cafile"] = base / os.path.expanduser(
            text_value(section["tls_cafile"], f"{SECTION}.tls_cafile", source))
    if section.get("sasl") is not None:
        values["sasl"] = _sasl(section["sasl"], source, base)
    if section.get("nickserv") is not None:
        values["nickserv"] = _nickserv(section["nickserv"], source, base)
    if section.get("rate") is not None:
        values["rate"] = _rate(section["rate"], source)
    if section.get("reconnect") is not None:
        values["reconnect_initial"], values["reconnect_max"] = _reconnect(section["reconnect"],
                                                                          source)
    for key in ("ping_interval", "ping_timeout", "reclaim_interval"):
        if section.get(key) is not None:
            values[key] = seconds_value(section[key], f"{SECTION}.{key}", source, minimum=1.0)
    return IrcConfig(**values)


def _required(section: Mapping[str, Any], key: str, source: str) -> Any:
    if section.get(key) is None:
        raise ConfigError(f"{source}: {SECTION}.{key} is missing; the IRC frontend needs "
                          "nic, server and channel (or channels)")
    return section[key]


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


def _nick(value: Any, key: str, source: str) -> str:
    nick = text_value(value, key, source)
    if not NICK_PATTERN.fullmatch(nick):
        raise ConfigError(f"{source}: {key} has invalid nickname {nick!r}; a nickname starts "
                          "with a letter or one of []\\`_^{|} and goes on with letters, "
                          "digits, those characters and '-'")
    return nick


def _channels(section: Mapping[str, Any], source: str) -> tuple[str, ...]:
    given: list[tuple[str, str]] = []
    if section.get("channel") is not None:
        given.extend((f"{SECTION}.channel", name)
                     for name in _names(section["channel"], f"{SECTION}.channel", source))
    if section.get("channels") is not None:
        given.extend((f"{SECTION}.channels", name)
                     for name in _names(section["channels"], f"{SECTION}.channels", source))
    if not given:
        raise ConfigError(f"{source}: {SECTION}.channel is missing; name the channel to join "
                          "(with or without '#'), or list several in channels")
    channels: list[str] = []
    seen: set[str] = set()
    for key, name in given:
        channel = normalize_channel(name)
        bad = sorted(CHANNEL_FORBIDDEN.intersection(channel))
        if len(channel) < 2 or bad or len(channel) > MAX_CHANNEL_LENGTH:
            raise ConfigError(f"{source}: {key} has invalid channel name {name!r}; use up to "
                              f"{MAX_CHANNEL_LENGTH} characters without spaces, commas, "
                              "colons or control characters")
        folded = irc_lower(channel)
        if folded not in seen:
            seen.add(folded)
            channels.append(channel)
    return tuple(channels)


def _port(value: Any, source: str) -> int:
    try:
        port = int(str(value).strip())
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise ConfigError(f"{source}: {SECTION}.port is {value!r}; use a port number from 1 to "
                          f"65535 (default {PLAIN_PORT}, or {TLS_PORT} with tls: true)")
    return port


def _sasl(value: Any, source: str, base: Path) -> SaslConfig:
    key = f"{SECTION}.sasl"
    mapping = mapping_value(value, key, SASL_KEYS, source)
    account = text_value(_required_in(mapping, "account", key, source), f"{key}.account", source)
    password = secret_value(mapping, key, source, base, required=True)
    assert password is not None
    return SaslConfig(account, password)


def _nickserv(value: Any, source: str, base: Path) -> NickServConfig:
    key = f"{SECTION}.nickserv"
    mapping = mapping_value(value, key, NICKSERV_KEYS, source)
    password = secret_value(mapping, key, source, base, required=True)
    assert password is not None
    if mapping.get("service") is not None:
        service = _nick(mapping["service"], f"{key}.service", source)
        return NickServConfig(password, service)
    return NickServConfig(password)


def _required_in(mapping: Mapping[str, Any], name: str, key: str, source: str) -> Any:
    if mapping.get(name) is None:
        raise ConfigError(f"{source}: {key}.{name} is missing")
    return mapping[name]


def _rate(value: Any, source: str) -> Rate:
    key = f"{SECTION}.rate"
    mapping = mapping_value(value, key, RATE_KEYS, source)
    default = Rate()
    burst = default.burst
    if mapping.get("burst") is not None:
        try:
            burst = int(str(mapping["burst"]).strip())
        except ValueError:
            burst = 0
        if burst < 1:
            raise ConfigError(f"{source}: {key}.burst is {mapping['burst']!r}; use a whole "
                              f"number of messages, 1 or more (default {default.burst})")
    interval = default.interval
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
