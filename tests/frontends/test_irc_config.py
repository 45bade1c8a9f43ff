"""The thehat-irc section: the original's keys, the new ones, defaults, and every error message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from frontends.irc_config import (
    PLAIN_PORT,
    TLS_PORT,
    IrcConfig,
    Secret,
    irc_config_from,
    parse_irc_config,
)
from frontends.outbox import Rate
from thehat.config import Config, load_config
from thehat.errors import ConfigError

ORIGINAL = {"nic": "thehat", "name": "TheHat bot", "channel": "changes",
            "server": "irc.example.com", "port": 6667, "respondTo": "hat"}


def parse(**changes: Any) -> IrcConfig:
    section = {**ORIGINAL, **changes}
    return parse_irc_config({k: v for k, v in section.items() if v is not None},
                            "thehat.yaml")


def error_of(**changes: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(**changes)
    return str(caught.value)


def test_original_section_loads() -> None:
    config = parse()

    assert config.nick == "thehat"
    assert config.realname == "TheHat bot"
    assert config.channels == ("#changes",)
    assert config.server == "irc.example.com"
    assert config.port == 6667
    assert config.aliases == ("hat",)
    assert config.tls is False
    assert config.rate == Rate()


def test_channels_with_and_without_hash() -> None:
    config = parse(channel=None, channels=["ops", "#Release", "&local", "#ops"])

    assert config.channels == ("#ops", "#Release", "&local")


def test_channel_and_channels_merge() -> None:
    config = parse(channel="ops", channels="release, ops")

    assert config.channels == ("#ops", "#release")


def test_port_defaults_follow_tls() -> None:
    assert parse(port=None).port == PLAIN_PORT
    assert parse(port=None, tls=True).port == TLS_PORT
    assert parse(port=7000, tls="yes").port == 7000


def test_new_keys_parse() -> None:
    config = parse(altnicks="hatbot, hat2", password="pw", tls=True, tls_verify=False,
                   sasl={"account": "hatacct", "password": "sasl-pw"},
                   nickserv={"password": "ns-pw", "service": "NickServ"},
                   rate={"burst": 5, "interval": 1.5}, reconnect={"initial": 1, "max": 60},
                   ping_interval=30, ping_timeout=10, reclaim_interval=20)

    assert config.altnicks == ("hatbot", "hat2")
    assert config.password == Secret("pw")
    assert config.tls_verify is False
    assert config.sasl is not None and config.sasl.account == "hatacct"
    assert config.sasl.password.reveal() == "sasl-pw"
    assert config.nickserv is not None and config.nickserv.password.reveal() == "ns-pw"
    assert config.rate == Rate(5, 1.5)
    assert (config.reconnect_initial, config.reconnect_max) == (1, 60)
    assert (config.ping_interval, config.ping_timeout, config.reclaim_interval) == (30, 10, 20)


def test_password_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAT_IRC_PASSWORD", "from-env")

    assert parse(password_env="HAT_IRC_PASSWORD").password == Secret("from-env")


def test_password_from_file_relative_to_config(tmp_path: Path) -> None:
    (tmp_path / "irc.secret").write_text("from-file\n", encoding="utf-8")
    section = {**ORIGINAL, "password_file": "irc.secret"}

    config = parse_irc_config(section, "thehat.yaml", tmp_path)

    assert config.password == Secret("from-file")


def test_passwords_never_in_repr() -> None:
    config = parse(password="server-secret", sasl={"account": "a", "password": "sasl-secret"},
                   nickserv={"password": "nickserv-secret"})

    text = repr(config) + str(config)

    for secret in ("server-secret", "sasl-secret", "nickserv-secret"):
        assert secret not in text


def test_section_read_from_config_file(tmp_path: Path) -> None:
    path = tmp_path / "thehat.yaml"
    path.write_text("thehat-irc:\n  nic: thehat\n  server: 127.0.0.1\n  channel: ops\n",
                    encoding="utf-8")

    config = irc_config_from(load_config(path))

    assert config.channels == ("#ops",)


def test_missing_section_names_it() -> None:
    with pytest.raises(ConfigError, match="thehat-irc section"):
        irc_config_from(Config())


@pytest.mark.parametrize("changes, expected", [
    ({"port": "x"}, "thehat-irc.port is 'x'; use a port number from 1 to 65535"),
    ({"port": 70000}, "thehat-irc.port is 70000"),
    ({"server": None}, "thehat-irc.server is missing"),
    ({"nic": None}, "thehat-irc.nic is missing"),
    ({"nic": "1bad"}, "thehat-irc.nic has invalid nickname '1bad'"),
    ({"nick": "other"}, "thehat-irc.nic and thehat-irc.nick are the same setting"),
    ({"channel": None}, "thehat-irc.channel is missing"),
    ({"channel": "bad channel"}, "thehat-irc.channel has invalid channel name 'bad channel'"),
    ({"channels": {"a": 1}}, "thehat-irc.channels must be a name or a list of names"),
    ({"altnicks": ["ok", "no way"]}, "thehat-irc.altnicks has invalid nickname 'no way'"),
    ({"respondTo": ""}, "thehat-irc.respondTo is empty"),
    ({"chanel": "x"}, "unknown key thehat-irc.chanel (did you mean 'channel'"),
    ({"tls": "maybe"}, "thehat-irc.tls is 'maybe'; use true or false"),
    ({"password": "a", "password_env": "B"}, "has password and password_env"),
    ({"password_env": "THEHAT_NO_SUCH_VARIABLE"}, "thehat-irc.password_env names the "
                                                  "environment variable"),
    ({"password_file": "/nonexistent/secret"}, "thehat-irc.password_file: cannot read"),
    ({"sasl": {"password": "x"}}, "thehat-irc.sasl.account is missing"),
    ({"sasl": {"account": "a"}}, "thehat-irc.sasl.password is missing"),
    ({"sasl": "yes"}, "thehat-irc.sasl must be a mapping with the keys account, password"),
    ({"nickserv": {"pasword": "x"}}, "unknown key thehat-irc.nickserv.pasword"),
    ({"rate": {"burst": 0}}, "thehat-irc.rate.burst is 0; use a whole number of messages"),
    ({"rate": {"interval": -1}}, "thehat-irc.rate.interval is -1; use a number of seconds"),
    ({"reconnect": {"initial": 10, "max": 5}}, "thehat-irc.reconnect.max (5 s) is less than"),
    ({"ping_interval": 0}, "thehat-irc.ping_interval is 0; use a number of seconds, 1 or more"),
])
def test_invalid_values_name_key_path(changes: dict[str, Any], expected: str) -> None:
    assert expected in error_of(**changes)


def test_password_under_env_key_not_echoed() -> None:
    # A password written by mistake where the variable's name belongs must not be shown.
    section = {"nic": "thehat", "server": "127.0.0.1", "channel": "ops",
               "password_env": "s3cret!pass word"}
    with pytest.raises(ConfigError) as caught:
        parse_irc_config(section)
    message = str(caught.value)
    assert "thehat-irc.password_env is not an environment variable name" in message
    assert "s3cret" not in message
