"""Roles, identities, typed look-alike characters and limits, through the real daemon."""

from __future__ import annotations

import asyncio
import logging
import re
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
                     "tictoc"]
ADMIN_COMMANDS = ["load other", "reload", "unload", "new fresh", "save", "addstep extra",
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
        f"{word.name} needs the {needed} role; carol (irc:carol, not verified) is an observer. "
        f"Ask an admin to list you under access.{needed} in the configuration.")
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
    assert lines[-1].endswith("more commands need a role above observer, so they are not "
                              "listed.")


def test_help_for_one_command_names_the_role(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, ACCESS)
    reply = say(daemon, irc("carol"), "help gimme")
    assert reply.startswith("usage: gimme <step>")
    assert reply.endswith("It needs the operator role; carol (irc:carol, not verified) is an "
                          "observer.")


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
                     "observer. Roles need a verified identity here (access.requireVerified): "
                     "log in to your services account (NickServ or SASL).")
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
    ("\x07", "U+0007 (control character)"),
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
    # The wait is 10 seconds less the time the first commands took, so it is matched loosely.
    assert len(third.lines) == 1
    assert re.fullmatch(r"bob: too many commands; wait (9|10) seconds and send it again "
                        r"\(limits\.commandsPerMinute is 6\)\. Nothing was done, and more "
                        r"commands before then get no reply\.", third.lines[0])
    fourth = await daemon.handle(conversation, irc("bob"), "gimme gettoaster")
    assert fourth.lines == []
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
                       "admins are the terminal's user and those listed in wfengine.admins") == 1
    caplog.clear()
    make_daemon(tmp_path, ACCESS)
    assert "access: access section: identities with roles: 6, flows with roles of their own: " \
           "2, default role observer, roles apply to any identity" in caplog.messages


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


# -- roles of one flow do not reach beyond it -------------------------------------------------

SANDBOX = {"default": "observer", "admin": ["irc-account:alice"],
           "flows": {"sandbox": {"admin": ["irc:carol"]}}}


@pytest.mark.parametrize("line", ["exec id", "quit", "checkout .", "commit . x"])
def test_flow_admin_has_no_host_commands(tmp_path: Path, line: str) -> None:
    daemon = make_daemon(tmp_path, SANDBOX)
    say(daemon, irc("carol"), "new sandbox", "irc:#sand")
    outcome = daemon.execute("irc:#sand", irc("carol"), line)
    assert outcome.lines[0].endswith("needs the admin role; carol (irc:carol, not verified) is "
                                     "an observer. Ask an admin to list you under access.admin "
                                     "in the configuration.")
    assert not outcome.quit
    assert not outcome.launches


def test_flow_admin_cannot_set_step_commands(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, SANDBOX)
    say(daemon, irc("carol"), "new sandbox", "irc:#sand")
    say(daemon, irc("carol"), "addstep x", "irc:#sand")
    reply = say(daemon, irc("carol"), "set x startCommand touch /tmp/owned", "irc:#sand")
    assert reply.startswith("Only admins can set startCommand, because it runs on the bot's "
                            "host")
    assert "carol (irc:carol, not verified) is an observer." in reply
    reply = say(daemon, irc("carol"), "giveto program:./deploy.sh x", "irc:#sand")
    assert reply.startswith("Only admins can give steps to a program")
    assert daemon.runs["sandbox"].steps["x"].definition.start_command is None
    assert daemon.runs["sandbox"].steps["x"].owner is None


def test_save_under_another_name_needs_that_flow(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, SANDBOX)
    other = tmp_path / "data" / "other.flow"
    before = other.read_text()
    say(daemon, irc("carol"), "new sandbox", "irc:#sand")
    say(daemon, irc("carol"), "addstep x", "irc:#sand")
    reply = say(daemon, irc("carol"), "save other force", "irc:#sand")
    assert reply.startswith("save needs the admin role; carol (irc:carol, not verified) is an "
                            "observer.")
    assert other.read_text() == before
    assert "sandbox" in daemon.runs


def test_flow_demotion_holds_for_save(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, {"admin": ["irc:alice"],
                                    "flows": {"other": {"observer": ["irc:alice"]}}})
    say(daemon, irc("alice"), "new scratch", "irc:#scratch")
    reply = say(daemon, irc("alice"), "save other force", "irc:#scratch")
    assert reply.startswith("save needs the admin role; alice (irc:alice, not verified) is an "
                            "observer for flow other. Ask an admin to list you under "
                            "access.flows.other.admin in the configuration.")


def test_flow_entry_named_in_refusal(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, ACCESS)
    reply = say(daemon, irc("al", "alice"), "load other", "irc:#elsewhere")
    assert reply == ("load needs the admin role; al (irc:al, not verified; irc-account:alice) "
                     "is an observer for flow other. Ask an admin to list you under "
                     "access.flows.other.admin in the configuration.")


def test_observer_joins_active_run(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, ACCESS)
    reply = say(daemon, irc("carol"), "load toast", "irc:query:carol")
    assert "joined that run" in reply
    assert daemon.run_for("irc:query:carol") is daemon.runs["toast"]
    # Moving an attached conversation to another run needs an operator.
    daemon.runs["other"] = Run("other", toast_flow(), daemon.clock)
    reply = say(daemon, irc("carol"), "restore other", "irc:query:carol")
    assert reply.startswith("restore needs the operator role")
    assert daemon.run_for("irc:query:carol") is daemon.runs["toast"]


def test_bringing_back_ended_run_needs_admin(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, ACCESS)
    reply = say(daemon, irc("bob"), "restore other", "irc:#elsewhere")
    assert reply.startswith("restore needs the admin role; bob (irc:bob, not verified) is an "
                            "operator.")


# -- the section's keys and warnings ----------------------------------------------------------

def test_flow_keys_read_as_load_names_them() -> None:
    policy = parse_access_section({"flows": {"toast.flow": {"observer": ["irc:bob"]}},
                                   "operator": ["irc:bob"]}, "test")
    assert policy.role(irc("bob"), "toast") is Role.OBSERVER


@pytest.mark.parametrize(("flows", "message"), [
    ({"bad/../x": {}}, "access.flows.bad/../x is not a flow name: '..' is not allowed"),
    ({"a": {}, "a.flow": {}}, "access.flows.a.flow repeats flow a; keep its roles in one entry"),
])
def test_flow_key_errors(flows: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_access_section({"flows": flows}, "test")
    assert message in str(caught.value)


def test_section_without_admin_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_daemon(tmp_path, {"operator": ["irc:bob"], "requireVerified": True})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert ("access: the access section lists no admin, so nobody can load flows, stop the "
            "bot or change settings from chat or the terminal; add identities under "
            "access.admin") in warnings
    assert ("access: access.requireVerified is true, so the nick entries irc:bob never match; "
            "list services accounts as irc-account:<name> instead") in warnings


# -- more look-alike characters ---------------------------------------------------------------

def test_variation_selector_rejected(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path)
    reply = say(daemon, irc("bob"), "giveto bob\ufe0f openbread")
    assert "U+FE0F VARIATION SELECTOR-16, at position 11" in reply
    assert daemon.runs["toast"].steps["openbread"].owner is None


def test_fullwidth_letters_read_as_ascii(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path)
    outcome = daemon.execute(CHANNEL, irc("bob"), "gimme ｏｐｅｎbread")
    assert outcome.lines[0] == "Note: read the fullwidth characters 'ｏｐｅｎ' as 'open'."
    assert daemon.runs["toast"].steps["openbread"].owner == "bob"


def test_other_dashes_read_as_hyphen(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path)
    daemon.runs["toast"].add_step(StepDef("db-backup"), "test")
    for dash in ("\u2e3a", "\u058a", "\u2043"):
        daemon.runs["toast"].set_owner("db-backup", None, "test")
        daemon.execute(CHANNEL, irc("bob"), f"gimme db{dash}backup")
        assert daemon.runs["toast"].steps["db-backup"].owner == "bob", repr(dash)


def test_mixed_script_step_name_rejected(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path)
    reply = say(daemon, irc("bob"), "addstep openbr\u0435ad")
    assert ("'\u0435' (U+0435 CYRILLIC SMALL LETTER IE) mixes Cyrillic with Latin letters, so "
            "the name can look like another; type it in one script") in reply
    assert "openbr\u0435ad" not in daemon.runs["toast"].steps


def test_position_counts_leading_spaces(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path)
    reply = say(daemon, irc("bob"), "   finish a\u200bb")
    assert "at position 12;" in reply


def test_rate_limit_follows_origin_across_nicks(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, limits=Limits(commands_per_minute=1, command_burst=2))
    conversation = MemoryConversation(CHANNEL)
    ran = 0
    for index in range(6):
        speaker = Speaker(f"bob{index}", (Identity("irc", f"bob{index}"),),
                          origin="~bob@host.example")
        reply = asyncio.run(daemon.handle(conversation, speaker, "version"))
        ran += any("thehat version" in line for line in reply.lines)
    assert ran == 2


# -- second round of attacks ------------------------------------------------------------------

@pytest.mark.parametrize("line", ["load other", "restore other", "new sandbox"])
def test_observer_cannot_move_channel_off_its_run(tmp_path: Path, line: str) -> None:
    access = {"admin": ["irc-account:alice"],
              "flows": {"other": {"operator": ["irc-account:carol"]},
                        "sandbox": {"admin": ["irc-account:carol"]}}}
    daemon = make_daemon(tmp_path, access)
    daemon.runs["other"] = Run("other", toast_flow(), daemon.clock)
    reply = say(daemon, irc("carol", "carol"), line)
    assert "role; carol (irc:carol, not verified; irc-account:carol) is an observer." in reply
    assert daemon.attachments[CHANNEL] == "toast"


def test_observer_may_load_the_run_already_followed(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, ACCESS)
    assert "joined that run" in say(daemon, irc("carol"), "load toast")


def test_flow_named_force_judged_as_flow(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, {"admin": ["irc:alice"], "operator": ["irc:bob"],
                                    "flows": {"toast": {"admin": ["irc:bob"]}}})
    reply = say(daemon, irc("bob"), "restore force", "irc:query:bob")
    assert reply.startswith("restore needs the admin role; bob (irc:bob, not verified) is an "
                            "operator.")
    reply = say(daemon, irc("bob"), "save force force")
    assert reply.startswith("save needs the admin role")
    assert not (tmp_path / "data" / "force.flow").exists()


@pytest.mark.parametrize("nick", ["program:/usr/local/bin/backup.sh", "clock-alarm:0/0/0@0:0:0"])
def test_owner_names_kept_from_speakers(tmp_path: Path, nick: str) -> None:
    daemon = make_daemon(tmp_path, {"default": "operator", "admin": ["irc-account:alice"]})
    run = daemon.runs["toast"]
    run.set_owner("openbread", nick, "test")
    reply = say(daemon, xmpp(nick), "finish openbread")
    assert reply == (f"finish is not allowed under the name {nick!r}, which is kept for clock "
                     "and program owners; change your nick and try again.")
    assert run.steps["openbread"].state is StepState.PENDING
    assert "Flow toast" in say(daemon, xmpp(nick), "status")


def test_account_case_does_not_block_owner(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, {"requireVerified": True, "admin": ["irc-account:root"],
                                    "operator": ["irc-account:alice"]})
    daemon.runs["toast"].set_owner("openbread", "alice", "flow file")
    say(daemon, irc("Alice", "Alice"), "start openbread")
    assert daemon.runs["toast"].steps["openbread"].state is StepState.IN_PROGRESS


def test_help_matches_what_runs(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, {"admin": ["irc:alice"], "operator": ["irc:bob"],
                                    "flows": {"toast": {"admin": ["irc:bob"]}}})
    lines = daemon.execute(CHANNEL, irc("bob"), "help").lines
    listed = {line.split()[0] for line in lines if line.startswith("  ")}
    assert "exec" not in listed
    assert "quit" not in listed
    assert "set" in listed
    reply = say(daemon, irc("bob"), "help exec")
    assert reply.endswith("It needs the admin role; bob (irc:bob, not verified) is an "
                          "operator.")
    observer = daemon.execute("irc:query:carol", irc("carol"), "help").lines
    assert "load" in {line.split()[0] for line in observer if line.startswith("  ")}
    assert say(daemon, irc("carol"), "help load", "irc:query:carol").endswith(
        "starting a run or bringing back an ended one needs the admin role.")


def test_not_owner_hint_fits_role(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, {"admin": ["irc:alice"], "operator": ["irc:bob"]})
    daemon.runs["toast"].set_owner("openbread", "alice", "test")
    assert say(daemon, irc("bob"), "start openbread").startswith(
        "Step openbread is owned by alice; only alice can change its state (ask alice or an "
        "admin to give it to you).")
    daemon.runs["toast"].set_owner("openbread", "bob", "test")
    assert say(daemon, irc("alice"), "start openbread").startswith(
        "Step openbread is owned by bob; only bob can change its state (to take it over: "
        "gimme openbread).")
