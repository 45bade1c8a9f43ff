"""Parsing of the thehat-xmpp configuration section and the XMPP text rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from frontends.xmpp_config import DIRECT_TLS_PORT, STARTTLS_PORT, TlsPolicy, parse_xmpp_config
from frontends.xmpp_protocol import addressed_command, pack_lines
from thehat.errors import ConfigError

BASE: dict[str, Any] = {"jid": "bot@example.org/hat", "password": "pw",
                        "room": "ops@conference.example.org"}


def parse(**changes: Any) -> Any:
    section = {**BASE, **changes}
    return parse_xmpp_config({k: v for k, v in section.items() if v is not None})


def test_original_keys_load() -> None:
    settings = parse_xmpp_config({"host": "example.org", "account": "bot", "password": "pw",
                                  "resource": "hat", "room": "Ops@conference.example.org",
                                  "respondTo": "flow"})
    assert settings.full_jid == "bot@example.org/hat"
    assert settings.nick == "hat"
    assert settings.rooms == ("ops@conference.example.org",)
    assert settings.aliases == ("flow",)


def test_full_jid_and_rooms() -> None:
    settings = parse(room=None, rooms=["a@muc.example.org", "b@muc.example.org"], nick="bot")
    assert settings.resource == "hat"
    assert settings.nick == "bot"
    assert settings.rooms == ("a@muc.example.org", "b@muc.example.org")


@pytest.mark.parametrize(("value", "policy", "port"), [
    (None, TlsPolicy.REQUIRED, STARTTLS_PORT),
    ("required", TlsPolicy.REQUIRED, STARTTLS_PORT),
    ("direct", TlsPolicy.DIRECT, DIRECT_TLS_PORT),
    ("off", TlsPolicy.OFF, STARTTLS_PORT),
    (False, TlsPolicy.OFF, STARTTLS_PORT),
])
def test_tls_policy(value: Any, policy: TlsPolicy, port: int) -> None:
    settings = parse(tls=value)
    assert settings.tls is policy
    assert settings.connect_port == port


@pytest.mark.parametrize(("changes", "message"), [
    ({"tls": "maybe"}, "thehat-xmpp.tls is 'maybe'"),
    ({"room": None}, "thehat-xmpp.room is missing"),
    ({"room": "ops@conference.example.org/bot"}, "without /nick"),
    ({"jid": "no-at-sign"}, "thehat-xmpp.jid has invalid JID"),
    ({"port": 70000}, "thehat-xmpp.port is 70000"),
    ({"password": None}, "thehat-xmpp.password is missing"),
    ({"account": "bot"}, "give jid alone"),
    ({"rate": {"burst": 0}}, "thehat-xmpp.rate.burst is 0"),
    ({"colour": "red"}, "unknown key thehat-xmpp.colour"),
])
def test_errors_name_key(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse(**changes)
    assert message in str(raised.value)


def test_password_from_file_and_environment(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text("from-file\n", encoding="utf-8")
    settings = parse_xmpp_config({**BASE, "password": None, "password_file": "pw"},
                                 base=tmp_path)
    assert settings.password.reveal() == "from-file"
    monkeypatch.setenv("BOT_PASSWORD", "from-env")
    settings = parse(password=None, password_env="BOT_PASSWORD")
    assert settings.password.reveal() == "from-env"


def test_password_never_in_repr() -> None:
    settings = parse(password="hunter2")
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings)


@pytest.mark.parametrize(("text", "command"), [
    ("thehat: gimme a", "gimme a"),
    ("thehat, gimme a", "gimme a"),
    ("thehat gimme a", "gimme a"),
    ("TheHat:status", "status"),
    ("thehat", ""),
    ("hello thehat: gimme a", None),
    ("thehatter: gimme a", None),
])
def test_addressing_is_anchored(text: str, command: str | None) -> None:
    assert addressed_command(text, ["thehat"]) == command


def test_pack_lines_keeps_lines_whole() -> None:
    lines = [f"row {number} " + "x" * 20 for number in range(20)]
    messages = pack_lines(lines, 100)
    assert all(len(message.encode("utf-8")) <= 100 for message in messages)
    assert [line for message in messages for line in message.split("\n")] == lines
