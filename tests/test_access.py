"""Roles, identities, typed look-alike characters and limits, through the real daemon."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from thehat import commands
from thehat.access import AccessPolicy, Identity, Role, Speaker, parse_access_section
from thehat.config import Config, EngineConfig, parse_config
from thehat.daemon import Daemon
from thehat.engine import Run
from thehat.errors import ConfigError
from thehat.flowfile import save_flow
from thehat.limits import Limits, RateLimiter
from thehat.model import StepDef, StepState

from tests.helpers import FakeClock, MemoryConversation, toast_flow

CHANNEL = "irc:#ops"
ACCESS = {
    "default": "observer",
    "admin": ["tty:root", "irc-account:alice", "xmpp:alice@example.org"],
    "operator": ["irc:bob", "irc-account:bob"],
    "observer": ["irc:carol"],
    "flows": {"toast": {"admin": ["irc:bob"]}, "other": {"observer": ["irc-account:alice"]}},
}


def irc(nick: str, account: str | None = None, verified: bool = True) -> Speaker:
    identities = [Identity("irc", nick)]
    if account is not None:
        identities.append(Identity("irc-account", account, verified))
    return Speaker(nick, tuple(identities))


def xmpp(nick: str, jid: str | None = None) -> Speaker:
    return Speaker(nick, (Identity("xmpp", jid, True),) if jid else ())


def make_daemon(tmp_path: Path, access: dict[str, object] | None = None,
                limits: Limits | None = None) -> Daemon:
    datadir = tmp_path / "data"
    datadir.mkdir(exist_ok=True)
    save_flow(toast_flow(), datadir / "toast.flow")
    save_flow(toast_flow(), datadir / "other.flow")
    policy = AccessPolicy() if access is None else parse_access_section(access, "test")
    config = Config(engine=EngineConfig(datadir=datadir, timezone="UTC"), access=policy,
                    limits=limits or Limits())
    daemon = Daemon(config, FakeClock())
    daemon.runs["toast"] = Run("toast", toast_flow(), daemon.clock)
    daemon.attachments[CHANNEL] = "toast"
    return daemon


def say(daemon: Daemon, speaker: Speaker, text: str, conversation: str = CHANNEL) -> str:
    return "\n".join(daemon.execute(conversation, speaker, text).lines)


# -- the section ------------------------------------------------------------------------------

def test_section_reads_roles_and_flows() -> None:
    policy = parse_config({"access": ACCESS}).access
    assert policy.configured
    assert policy.default is Role.OBSERVER
    assert policy.roles["irc-account:alice"] is Role.ADMIN
    assert policy.roles["irc:bob"] is Role.OPERATOR
    assert policy.flows["toast"]["irc:bob"] is Role.ADMIN
    assert not policy.require_verified


def test_section_absent_keeps_earlier_rules() -> None:
    policy = parse_config({}).access
    assert not policy.configured
    assert policy.role(Speaker.plain("bob")) is Role.OPERATOR
    assert policy.role(Speaker.plain("alice", admin=True)) is Role.ADMIN


@pytest.mark.parametrize(("section", "message"), [
    ({"admins": ["irc:bob"]}, "unknown key access.admins (did you mean 'admin'?)"),
    ({"default": "boss"}, "access.default is 'boss'; use observer, operator, admin"),
    ({"admin": ["bob"]}, "access.admin has 'bob', which is not an identity; write tty:<name>"),
    ({"admin": ["matrix:bob"]}, "access.admin has 'matrix:bob', which is not an identity"),
    ({"admin": ["irc:"]}, "access.admin has 'irc:', which is not an identity"),
    ({"admin": ["xmpp:bob"]}, "an xmpp identity is a bare JID such as xmpp:alice@example.org"),
    ({"admin": ["xmpp:bob@example.org/phone"]}, "without a resource"),
    ({"admin": ["irc:Bob"], "observer": ["irc:bob"]},
     "irc:Bob is listed under both observer and admin in access; keep it in one list"),
    ({"admin": {"irc:bob": True}}, "access.admin must be a list of identities"),
    ({"flows": ["toast"]}, "access.flows must map flow names to role lists"),
    ({"flows": {"toast": {"owner": ["irc:bob"]}}}, "unknown key access.flows.toast.owner"),
    ({"requireVerified": "maybe"}, "access.requireVerified is 'maybe'; use true or false"),
    (["irc:bob"], "access must be a mapping"),
])
def test_section_errors_name_the_key(section: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"access": section}, Path("/etc/thehat.yml"))
    assert message in str(caught.value)
    assert str(caught.value).startswith("/etc/thehat.yml: ")


def test_identities_compare_as_the_medium_does() -> None:
    policy = parse_access_section({"admin": ["irc:Bob[m]", "xmpp:Alice@Example.org"]}, "test")
    assert policy.role(irc("bob{M}")) is Role.ADMIN
    assert policy.role(xmpp("al", "alice@example.ORG")) is Role.ADMIN
    assert policy.role(irc("bob")) is Role.OBSERVER


# -- deciding roles ---------------------------------------------------------------------------

def test_roles_follow_identities_and_default() -> None:
    policy = parse_access_section(ACCESS, "test")
    assert policy.role(irc("alice", "alice")) is Role.ADMIN
    assert policy.role(irc("bob")) is Role.OPERATOR
    assert policy.role(irc("carol")) is Role.OBSERVER
    assert policy.role(irc("dave")) is Role.OBSERVER
    assert policy.role(Speaker.terminal("root")) is Role.ADMIN
    assert policy.role(xmpp("alice", "alice@example.org")) is Role.ADMIN
    # In an anonymous room there is only a nick, which matches no identity.
    assert policy.role(xmpp("alice")) is Role.OBSERVER


def test_flow_roles_override_the_general_ones() -> None:
    policy = parse_access_section(ACCESS, "test")
    assert policy.role(irc("bob"), "toast") is Role.ADMIN
    assert policy.role(irc("bob"), "other") is Role.OPERATOR
    assert policy.role(irc("alice", "alice"), "other") is Role.OBSERVER
    assert policy.role(irc("alice", "alice"), "toast") is Role.ADMIN


def test_unconfirmed_account_does_not_count() -> None:
    policy = parse_access_section(ACCESS, "test")
    assert policy.role(irc("alice", "alice", verified=False)) is Role.OBSERVER


def test_verified_required_ignores_nicks() -> None:
    policy = parse_access_section({**ACCESS, "requireVerified": True, "default": "operator"},
                                  "test")
    # Someone who took the nick bob, listed as irc:bob, has no verified identity.
    assert policy.role(irc("bob")) is Role.OBSERVER
    assert policy.role(irc("alice", "alice", verified=False)) is Role.OBSERVER
    assert policy.role(irc("bob", "bob")) is Role.OPERATOR
    assert policy.role(irc("al", "alice")) is Role.ADMIN
    # A verified speaker listed nowhere gets the default role.
    assert policy.role(irc("dave", "dave")) is Role.OPERATOR


def test_verified_required_names_owner_by_account() -> None:
    policy = parse_access_section({**ACCESS, "requireVerified": True}, "test")
    assert policy.actor(irc("al", "alice")) == "alice"
    assert policy.actor(xmpp("al", "alice@example.org")) == "alice@example.org"
    assert policy.actor(irc("alice")) == "alice"
    open_policy = parse_access_section(ACCESS, "test")
    assert open_policy.actor(irc("al", "alice")) == "al"


# -- commands per role ------------------------------------------------------------------------

OBSERVER_COMMANDS = ["status", "list", "dump", "history", "help", "date", "version", "hello",
                     "report", "ls", "dryrun"]
OPERATOR_COMMANDS = ["gimme openbread", "start openbread", "finish openbread",
                     "giveto bob gettoaster", "gimmegroup food", "reverting openbread",
                     "tictoc", "restore toast"]
ADMIN_COMMANDS = ["load toast", "reload", "unload", "new fresh", "save", "addstep extra",
                  "delstep gettoaster", "set openbread note hello", "clockProcessing on",
                  "notificationProcessing off", "run", "stop", "idleprompt 3",
                  "exec true", "checkout .", "commit . message", "quit"]


@pytest.mark.parametrize("line", OBSERVER_COMMANDS)
def test_observer_may_look(tmp_path: Path, line: str) -> None:
    daemon = make_daemon(tmp_path, ACCESS)
    reply = say(daemon, irc("carol"), line)
    assert "needs the" not in reply


@pytest.mark.parametrize("line", OPERATOR_COMMANDS + ADMIN_COMMANDS)
def test_observer_may_not_act(tmp_path: Path, line: str) -> None:
    daemon = make_daemon(tmp_path, ACCESS)
    before = {name: (s.state, s.owner) for name, s in daemon.runs["toast"].steps.items()}
    outcome = daemon.execute(CHANNEL, irc("carol"), line)
    needed = "operator" if line in OPERATOR_COMMANDS else "admin"
    word = commands.lookup(line.split()[0])
    assert word is not None
    assert outcome.lines[0] == (
        f"{word.name} needs the {needed} role; carol (irc:carol, not verified) is an observer "
        f"for flow toast. Ask an admin to list you under access.{needed} in the configuration.")
    assert outcome.refusals == 1
    assert not outcome.events
    assert not outcome.quit
    assert {name: (s.state, s.owner) for name, s in daemon.runs["toast"].steps.items()} == before


@pytest.mark.parametrize("line", OPERATOR_COMMANDS)
def test_operator_may_drive_steps(tmp_path: Path, line: str) -> None:
    daemon = make_daemon(tmp_path, ACCESS)
    daemon.runs["toast"].set_owner("openbread", "dave", "test")
    daemon.runs["toast"].start("openbread", "dave")
    speaker = irc("dave", "dave")
    policy = parse_access_section({**ACCESS, "operator": ["irc-account:dave"]}, "test")
    daemon.config = Config(engine=daemon.config.engine, access=policy)
    assert "needs the" not in say(daemon, speaker, line)


@pytest.mark.parametrize("line", ADMIN_COMMANDS)
def test_operator_may_not_administer(tmp_path: Path, line: str) -> None:
    daemon = make_daemon(tmp_path, ACCESS)
    reply = say(daemon, irc("dave", "bob"), line)
    assert "needs the admin role" in reply
    assert "is an operator" in reply


@pytest.mark.parametrize("line", ["new fresh", "addstep extra", "set openbread note hi",
                                  "unload"])
def test_admin_may_administer(tmp_path: Path, line: str) -> None:
    daemon = make_daemon(tmp_path, ACCESS)
    assert "needs the" not in say(daemon, irc("al", "alice"), line)


def test_flow_role_decides_load(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, ACCESS)
    # bob is an admin of flow toast only.
    assert "needs the admin role" in say(daemon, irc("bob"), "load other", "irc:#elsewhere")
    assert "joined that run" in say(daemon, irc("bob"), "load toast.flow", "irc:#elsewhere")
    assert "needs the" not in say(daemon, irc("bob"), "set openbread note from bob")
    # alice, an admin elsewhere, is an observer of flow other.
    assert "needs the admin role" in say(daemon, irc("al", "alice"), "load other")


def test_help_lists_only_allowed_commands(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, ACCESS)
    lines = daemon.execute(CHANNEL, irc("carol"), "help").lines
    listed = {line.split()[0] for line in lines if line.startswith("  ")}
    assert "status" in listed
    assert "dump" in listed
    assert "gimme" not in listed
    assert "load" not in listed
    assert "exec" not in listed
    assert "progression:" not in lines
    assert lines[-1].endswith("more commands need a role above observer for flow toast, so "
                              "they are not listed.")


def test_help_for_one_command_names_the_role(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, ACCESS)
    reply = say(daemon, irc("carol"), "help gimme")
    assert reply.startswith("usage: gimme <step>")
    assert reply.endswith("It needs the operator role; carol (irc:carol, not verified) is an "
                          "observer for flow toast.")


def test_help_for_admin_lists_everything(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, ACCESS)
    lines = daemon.execute(CHANNEL, irc("al", "alice"), "help").lines
    listed = {line.split()[0] for line in lines if line.startswith("  ")}
    assert {c.name for c in commands.COMMANDS.values()} == listed
    assert "not listed" not in lines[-1]


def test_without_access_everyone_operates(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path)
    assert "needs the" not in say(daemon, irc("carol"), "set openbread note hi")
    assert "needs the" not in say(daemon, irc("carol"), "load other")
    reply = say(daemon, irc("carol"), "exec true")
    assert reply.startswith("exec needs the admin role; carol (irc:carol, not verified) is an "
                            "operator")
    assert reply.endswith("Admins are listed in wfengine.admins.")


def test_terminal_may_always_leave(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, {"observer": ["tty:guest"]})
    assert daemon.execute("tty:guest", Speaker.terminal("guest"), "quit").quit
    assert not daemon.execute(CHANNEL, irc("guest"), "quit").quit


def test_unverified_refusal_says_how_to_verify(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, {**ACCESS, "requireVerified": True})
    reply = say(daemon, irc("alice"), "unload")
    assert reply == ("unload needs the admin role; alice (irc:alice, not verified) is an "
                     "observer for flow toast. Roles need a verified identity here "
                     "(access.requireVerified): log in to your services account, or speak from "
                     "a room that shows your JID.")
    assert "toast" in daemon.runs


# -- ownership --------------------------------------------------------------------------------

def test_operator_takes_only_free_or_own_steps(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, {"operator": ["irc:bob", "irc:dave"]})
    run = daemon.runs["toast"]
    say(daemon, irc("dave"), "gimme openbread")
    assert run.steps["openbread"].owner == "dave"

    reply = say(daemon, irc("bob"), "gimme openbread")
    assert ("Step openbread is owned by dave; as an operator, bob can take or give away only "
            "unassigned steps and their own. Ask dave or an admin to give it away.") in reply
    assert "giveto" not in reply
    assert run.steps["openbread"].owner == "dave"
    say(daemon, irc("bob"), "giveto bob openbread")
    assert run.steps["openbread"].owner == "dave"

    say(daemon, irc("dave"), "giveto bob openbread")
    assert run.steps["openbread"].owner == "bob"


def test_operator_group_claim_skips_others_steps(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, {"operator": ["irc:bob", "irc:dave"]})
    run = daemon.runs["toast"]
    run.set_owner("openbread", "dave", "test")
    outcome = daemon.execute(CHANNEL, irc("bob"), "gimmegroup food")
    assert run.steps["openbread"].owner == "dave"
    assert run.steps["selectslice"].owner == "bob"
    assert outcome.refusals == 1
    daemon.execute(CHANNEL, irc("bob"), "gimmeall")
    assert run.steps["openbread"].owner == "dave"
    assert run.steps["gettoaster"].owner == "bob"


def test_admin_takes_any_step(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, ACCESS)
    run = daemon.runs["toast"]
    run.set_owner("openbread", "dave", "test")
    say(daemon, irc("al", "alice"), "giveto carol openbread")
    assert run.steps["openbread"].owner == "carol"


def test_impostor_nick_cannot_finish_owned_step(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, {"operator": ["irc-account:alice"],
                                    "requireVerified": True})
    run = daemon.runs["toast"]
    say(daemon, irc("alice", "alice"), "gimme openbread")
    assert run.steps["openbread"].owner == "alice"
    say(daemon, irc("alice", "alice"), "start openbread")

    reply = say(daemon, irc("alice"), "finish openbread")
    assert reply.startswith("finish needs the operator role")
    reply = say(daemon, irc("mallory", "mallory"), "finish openbread")
    assert reply.startswith("finish needs the operator role")
    assert run.steps["openbread"].state is StepState.IN_PROGRESS

    # The account owns the step, whatever nick it speaks under.
    say(daemon, irc("alice_away", "alice"), "finish openbread")
    assert run.steps["openbread"].state is StepState.FINISHED


# -- typed characters and line length ---------------------------------------------------------

def test_no_break_space_separates_words(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path)
    for space in ("\u00a0", "\u3000", "\u2007", "\u202f"):
        daemon.runs["toast"].set_owner("openbread", None, "test")
        outcome = daemon.execute(CHANNEL, irc("bob"), f"gimme{space}openbread")
        assert daemon.runs["toast"].steps["openbread"].owner == "bob", repr(space)
        assert not any(line.startswith("Note:") for line in outcome.lines)


def test_dash_in_step_name_read_as_hyphen(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path)
    daemon.runs["toast"].add_step(StepDef("db-backup"), "test")
    outcome = daemon.execute(CHANNEL, irc("bob"), "gimme db\u2013backup")
    assert outcome.lines[0] == "Note: read '\u2013' (U+2013 EN DASH) as '-'."
    assert daemon.runs["toast"].steps["db-backup"].owner == "bob"
    assert "db\u2013backup" not in daemon.runs["toast"].steps


def test_curly_quotes_read_as_straight(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path)
    outcome = daemon.execute(CHANNEL, irc("bob"), "set openbread note \u201cslowly\u201d")
    assert "Note: read '\u201c' (U+201C LEFT DOUBLE QUOTATION MARK) as '\"'." in outcome.lines
    assert daemon.runs["toast"].steps["openbread"].definition.note == '"slowly"'


@pytest.mark.parametrize(("char", "label"), [
    ("\u200b", "U+200B ZERO WIDTH SPACE"),
    ("\u200d", "U+200D ZERO WIDTH JOINER"),
    ("\ufeff", "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
    ("\u202e", "U+202E RIGHT-TO-LEFT OVERRIDE"),
    ("\u00ad", "U+00AD SOFT HYPHEN"),
    ("\x07", "U+0007 a control character"),
])
def test_invisible_character_rejected(tmp_path: Path, char: str, label: str) -> None:
    daemon = make_daemon(tmp_path)
    outcome = daemon.execute(CHANNEL, irc("bob"), f"gimme open{char}bread")
    assert outcome.lines == [
        f"The command has an invisible or control character, {label}, at position 11; type "
        "the line again without it (copying from documents or chats can add such "
        "characters)."]
    assert outcome.refusals == 1
    assert daemon.runs["toast"].steps["openbread"].owner is None


def test_long_line_rejected(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, limits=Limits(max_line_length=100))
    outcome = daemon.execute(CHANNEL, irc("bob"), "set openbread note " + "x" * 100)
    assert outcome.lines == ["The command is 119 characters long; the limit is 100 "
                             "(limits.maxLineLength). Nothing was done."]
    assert daemon.runs["toast"].steps["openbread"].definition.note is None
    assert "needs" not in say(daemon, irc("bob"), "set openbread note " + "x" * 81)


# -- rate limit -------------------------------------------------------------------------------

def test_rate_limiter_allows_burst_then_rate() -> None:
    limiter = RateLimiter(per_minute=60, burst=3)
    assert [limiter.take("bob", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("bob", 100.0) == pytest.approx(1.0)
    assert limiter.take("carol", 100.0) == 0.0
    assert limiter.take("bob", 101.0) == 0.0
    assert limiter.take("bob", 101.0) > 0


def test_rate_limiter_off_at_zero() -> None:
    limiter = RateLimiter(per_minute=0, burst=1)
    assert all(limiter.take("bob", 0.0) == 0.0 for _ in range(1000))


def test_rate_limiter_forgets_idle_speakers() -> None:
    limiter = RateLimiter(per_minute=60, burst=2)
    for index in range(RateLimiter.MAX_BUCKETS + 5):
        limiter.take(f"nick{index}", float(index))
    assert len(limiter._buckets) < RateLimiter.MAX_BUCKETS


async def test_flooding_speaker_is_told_to_wait(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, limits=Limits(commands_per_minute=6, command_burst=2))
    conversation = MemoryConversation(CHANNEL)
    first = await daemon.handle(conversation, irc("bob"), "gimme openbread")
    await daemon.handle(conversation, irc("bob"), "status")
    third = await daemon.handle(conversation, irc("bob"), "gimme gettoaster")
    assert "Owner of step openbread is now bob" in "\n".join(first.lines)
    assert third.lines == ["bob: too many commands; wait 10 seconds and send it again "
                           "(limits.commandsPerMinute is 6). Nothing was done."]
    assert daemon.runs["toast"].steps["gettoaster"].owner is None
    other = await daemon.handle(conversation, irc("carol"), "gimme gettoaster")
    assert "Owner of step gettoaster is now carol" in "\n".join(other.lines)
    terminal = MemoryConversation("tty:root")
    for _ in range(5):
        reply = await daemon.handle(terminal, Speaker.terminal("root"), "status")
        assert "too many commands" not in "\n".join(reply.lines)


def test_limits_section_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"limits": {"maxLineLength": 5}})
    assert "limits.maxLineLength is 5; use a whole number from 16 to 1,000,000" in \
        str(caught.value)


# -- start-up log -----------------------------------------------------------------------------

def test_daemon_logs_how_roles_are_decided(tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="thehat.daemon")
    make_daemon(tmp_path)
    lines = [r.getMessage() for r in caplog.records if r.name == "thehat.daemon"]
    assert lines.count("access: no access section: every speaker is an operator, and the "
                       "admins are those listed in wfengine.admins") == 1
    caplog.clear()
    make_daemon(tmp_path, ACCESS)
    assert "access: access section: 6 identities with roles, 2 flows with their own roles, " \
           "default role observer, roles apply to any identity" in caplog.messages


def test_admins_key_ignored_with_access(tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    policy = parse_access_section(ACCESS, "test")
    config = Config(engine=EngineConfig(datadir=tmp_path, admins=("bob",)), access=policy)
    Daemon(config, FakeClock())
    assert any("wfengine.admins is ignored" in m for m in caplog.messages)
    assert policy.role(Speaker.plain("bob", admin=True)) is Role.OBSERVER


def test_line_break_inside_command_rejected(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path)
    outcome = daemon.execute(CHANNEL, irc("bob"), "gimme openbread\ngimme gettoaster")
    assert outcome.lines == ["The command has a line break at position 16; send one command "
                             "per line or message."]
    assert daemon.runs["toast"].steps["openbread"].owner is None


def test_line_end_around_command_ignored(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path)
    daemon.execute(CHANNEL, irc("bob"), "gimme openbread\r\n")
    assert daemon.runs["toast"].steps["openbread"].owner == "bob"
