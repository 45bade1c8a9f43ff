"""Configuration parsing: the original's layout, defaults and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from thehat.config import load_config, parse_config
from thehat.errors import ConfigError

ORIGINAL_LAYOUT = """\
wfengine: {
 datadir: 'flows',
 webdir: 'www',
 bindaddr: '0.0.0.0',
 bindport: '8808',
 baseurl: "http://localhost",
 svnroot: "file:///srv/svn",
 debuglevel: 1,
 renderers: [
  WorkflowDigraph
 ],
 allowExec: false,
 vcs: {
   class: 'Subversion',
   root: 'file:///srv/svn'
 }
}

thehat-irc: {
 nic: mybot,
 name: MyBot,
 channel: mychannel,
 server: irc.example.net,
 port: 6667
}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "thehat.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_original_layout_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ORIGINAL_LAYOUT))
    engine = config.engine
    assert engine.datadir == tmp_path / "flows"
    assert engine.webdir == tmp_path / "www"
    assert engine.bindport == 8808
    assert engine.baseurl == "http://localhost:8808"
    assert engine.allow_exec is False
    assert engine.renderers == ("digraph",)
    assert engine.vcs is not None and engine.vcs.kind == "Subversion"
    assert config.sections["thehat-irc"]["nic"] == "mybot"


def test_no_file_gives_defaults() -> None:
    config = load_config(None)
    assert config.engine.bindaddr == "127.0.0.1"
    assert config.engine.datadir.name == "thehat"
    assert config.engine.allow_exec is False


@pytest.mark.parametrize("value, expected", [("'true'", True), ("true", True), ("yes", True),
                                             ("'off'", False), ("false", False)])
def test_allow_exec_forms(tmp_path: Path, value: str, expected: bool) -> None:
    config = load_config(write(tmp_path, f"wfengine:\n  allowExec: {value}\n"))
    assert config.engine.allow_exec is expected


@pytest.mark.parametrize("text, message", [
    ("wfengine:\n  allowexec: true\n", "unknown key wfengine.allowexec (did you mean 'allowExec'?)"),
    ("wfengine:\n  bindport: http\n", "wfengine.bindport is 'http'; use a port number"),
    ("wfengine:\n  allowExec: maybe\n", "wfengine.allowExec is 'maybe'; use true or false"),
    ("wfengine:\n  renderers: [WorkflowDigrap]\n",
     "unknown renderer 'WorkflowDigrap' (did you mean 'WorkflowDigraph'"),
    ("wfengine:\n  vcs: {class: Cvs}\n", "wfengine.vcs.class is 'Cvs'; accepted: Git, Subversion"),
    ("wfengine:\n  timezone: Mars/Olympus\n", "wfengine.timezone 'Mars/Olympus' is not a known"),
    ("- a\n- b\n", "the top level must be a mapping"),
    ("wfengine: [1]\n", "wfengine must be a mapping"),
    ("wfengine: {datadir: [a]}\n", "wfengine.datadir must be a single value"),
])
def test_errors_name_key_and_value(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_missing_file_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration file .*nosuch.yaml"):
        load_config(tmp_path / "nosuch.yaml")


def test_invalid_yaml_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"thehat.yaml:2: invalid YAML: expected the node"):
        load_config(write(tmp_path, "wfengine: {datadir: [\n"))


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert parse_config(None).engine.bindport is None
    engine = load_config(write(tmp_path, "# nothing yet\n")).engine
    assert engine.bindport is None
    assert engine.renderers is None
    assert engine.views == ("digraph", "text", "ical")
    assert not engine.renders


def test_web_site_and_renderers_switch_rendering_on() -> None:
    assert parse_config({"wfengine": {"bindport": 0}}).engine.renders
    assert parse_config({"wfengine": {"renderers": ["text"]}}).engine.renders
    assert parse_config({"wfengine": {"renderers": []}}).engine.views == ()


def test_baseurl_gets_no_port_zero() -> None:
    engine = parse_config({"wfengine": {"baseurl": "http://localhost", "bindport": 0}}).engine
    assert engine.baseurl == "http://localhost"


def test_registered_renderer_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from thehat import config as config_module

    monkeypatch.setattr(config_module, "_registered_renderers", lambda: ("mermaid",))
    config = load_config(write(tmp_path, "wfengine:\n  renderers: [WorkflowDigraph, mermaid]\n"))
    assert config.engine.renderers == ("digraph", "mermaid")


# -- webauth ----------------------------------------------------------------------------------

# A test credential only; no assertion prints it.
WEB_TOKEN = "config-test-token-0123456789"


def test_webauth_absent_leaves_site_open() -> None:
    assert parse_config({"wfengine": {"bindport": 0}}).webauth is None


def test_webauth_token_and_basic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "web.password").write_text("s3cret pass\n", encoding="utf-8")
    monkeypatch.setenv("THEHAT_TEST_WEB_TOKEN", WEB_TOKEN)
    path = write(tmp_path, "webauth:\n  token_env: THEHAT_TEST_WEB_TOKEN\n  user: ops\n"
                           "  password_file: web.password\n")

    auth = load_config(path).webauth

    # Each check is computed first, so that a failure never prints a credential.
    assert auth is not None
    token_read = auth.token_matches(WEB_TOKEN)
    assert token_read
    assert auth.user == "ops"
    assert auth.basic
    password_read = auth.password is not None and auth.password.reveal() == "s3cret pass"
    assert password_read
    leaked = "s3cret" in repr(auth) or WEB_TOKEN in repr(auth)
    assert not leaked


def test_webauth_basic_only(tmp_path: Path) -> None:
    auth = load_config(write(tmp_path, "webauth: {user: ops, password: pw}\n")).webauth

    assert auth is not None
    assert auth.token is None
    assert auth.basic


@pytest.mark.parametrize(("text", "message"), [
    ("webauth:\n", "webauth gives no credentials; set webauth.token (or token_env, "
                   "token_file), or webauth.user with a password, or remove the webauth"),
    ("webauth: {tokn: x}\n", "unknown key webauth.tokn (did you mean 'token'"),
    ("webauth: {token: short}\n", "webauth.token is invalid: use at least 16 characters"),
    ("webauth: {token: 'has spaces in the token text'}\n", "webauth.token is invalid"),
    ("webauth: {token: abcdefghijklmnopq, token_env: X}\n",
     "webauth has token and token_env; give the token one way only"),
    ("webauth: {token_env: THEHAT_TEST_UNSET_VARIABLE}\n",
     "webauth.token_env names the environment variable 'THEHAT_TEST_UNSET_VARIABLE', which "
     "is not set; set it or give the token another way"),
    ("webauth: {token_file: missing.txt}\n", "webauth.token_file: cannot read the token file"),
    ("webauth: {user: ops}\n", "webauth.password is missing; give password, password_env"),
    ("webauth: {password: pw}\n", "webauth has a password but no user; add webauth.user"),
    ("webauth: {user: 'a:b', password: pw}\n", "webauth.user is 'a:b'; give a non-empty name "
                                               "without ':'"),
    ("webauth: [token]\n", "webauth must be a mapping of keys, not list"),
])
def test_webauth_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_webauth_error_hides_token(tmp_path: Path) -> None:
    path = write(tmp_path, "webauth: {token: 'almost a token but spaced'}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    leaked = "almost a token" in str(caught.value)
    assert not leaked


def test_config_repr_hides_inline_passwords() -> None:
    config = parse_config({
        "thehat-irc": {"nic": "hat", "server": "irc.example.net", "channel": "ops",
                       "password": "irc-inline-secret",
                       "nickserv": {"password": "nickserv-inline-secret"}},
        "thehat-xmpp": {"jid": "hat@example.org", "password": "xmpp-inline-secret"},
        "smtp": {"sender": "hat@example.org", "username": "hat",
                 "password": "smtp-inline-secret"},
    })

    assert config.sections["thehat-irc"]["password"] == "irc-inline-secret"
    for text in (repr(config), str(config)):
        # Computed first, so that a failure does not print the section's passwords.
        leaked = "inline-secret" in text
        assert not leaked
        assert "EngineConfig(" in text


def test_key_given_twice_rejected(tmp_path: Path) -> None:
    path = tmp_path / "thehat.yaml"
    path.write_text("wfengine:\n  datadir: flows\naccess:\n  admin: [tty:a]\n"
                    "access:\n  operator: [tty:b]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (f"{path}:5: invalid YAML: 'access' is given twice in one "
                                 "mapping; keep one")
