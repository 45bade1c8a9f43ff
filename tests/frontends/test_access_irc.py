"""Roles over real IRC servers on 127.0.0.1: by nick on ngircd, by services account on
InspIRCd linked to Atheme, and a speaker who takes an admin's nick."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from frontends.outbox import BACKLOG_LINE, JOINER
from thehat.access import AccessPolicy, parse_access_section
from thehat.limits import Limits
from thehat.flowfile import save_flow
from thehat.model import Flow, StepDef, StepState

from tests.frontends.conftest import Bot
from tests.frontends.irc_client import ChatClient
from tests.frontends.test_irc import BOT, command
from tests.frontends.test_irc_services import PASSWORDS as SERVICE_PASSWORDS
from tests.frontends.test_irc_services import wait_for_account
from tests.ircservices import INSPIRCD_MODULES, AccountClient, ServicesNetwork
from tests.servers import NgircdServer

StartBot = Callable[..., Awaitable[Bot]]
People = Callable[..., Awaitable[ChatClient]]
AccountPeople = Callable[..., Awaitable[AccountClient]]

# The services network lives for the whole session, so accounts keep one password everywhere.
PASSWORDS = {"alice": SERVICE_PASSWORDS["alice"], "bob": "secret-bob"}
MARKS = itertools.count(1)


def by_nick() -> AccessPolicy:
    return parse_access_section({"default": "observer", "admin": ["irc:alice"],
                                 "operator": ["irc:bob"]}, "test")


async def test_roles_by_nick(ircd: NgircdServer, start_bot: StartBot, people: People,
                             channel: str) -> None:
    alice = await people("alice", ircd.port, [channel])
    bob = await people("bob", ircd.port, [channel])
    carol = await people("carol", ircd.port, [channel])
    bot = await start_bot(ircd.port, [channel], admins=(), access=by_nick())
    await alice.next_message(BOT, channel)

    reply = await command(bob, channel, "load toast")
    assert reply == ["load needs the admin role; bob (irc:bob, not verified) is an operator. "
                     "Ask an admin to list you under access.admin in the configuration."]
    reply = await command(alice, channel, "load toast")
    assert "Loaded workflow 'toast', read 8 steps" in reply[0]

    reply = await command(carol, channel, "gimme openbread")
    assert reply == ["gimme needs the operator role; carol (irc:carol, not verified) is an "
                     "observer. Ask an admin to list you under access.operator in the "
                     "configuration."]
    reply = await command(carol, channel, "status")
    assert any("Flow toast: 0 of 8 steps finished." in line for line in reply)
    help_lines = await command(carol, channel, "help")
    listed = {line.split()[0] for line in help_lines if line.startswith("  ")}
    assert "status" in listed
    assert "gimme" not in listed

    await command(bob, channel, "gimme openbread")
    await command(bob, channel, "start openbread")
    reply = await command(bob, channel, "unload")
    assert reply[0].startswith("unload needs the admin role")
    reply = await command(bob, channel, "quit")
    assert reply[0].startswith("quit needs the admin role")
    assert bot.daemon.runs["toast"].steps["openbread"].state is StepState.IN_PROGRESS
    assert not bot.task.done()


async def test_taken_nick_refused_when_verified_required(ircd: NgircdServer,
                                                         start_bot: StartBot, people: People,
                                                         channel: str) -> None:
    # ngircd has no services, so no speaker there is verified.
    access = parse_access_section({"default": "operator", "requireVerified": True,
                                   "admin": ["irc:alice", "irc-account:alice"]}, "test")
    impostor = await people("alice", ircd.port, [channel])
    bot = await start_bot(ircd.port, [channel], admins=("alice",), access=access)
    await impostor.next_message(BOT, channel)

    reply = await command(impostor, channel, "load toast")
    assert reply == ["load needs the admin role; alice (irc:alice, not verified) is an "
                     "observer. Roles need a verified identity here (access.requireVerified): "
                     "log in to your services account (NickServ or SASL)."]
    reply = await command(impostor, channel, "quit")
    assert reply[0].startswith("quit needs the admin role")
    assert bot.daemon.run_for(f"irc:{channel}") is None
    assert not bot.task.done()


async def test_flooding_speaker_told_to_wait(ircd: NgircdServer, start_bot: StartBot,
                                             people: People, channel: str) -> None:
    bob = await people("bob", ircd.port, [channel])
    await start_bot(ircd.port, [channel],
                    limits=Limits(commands_per_minute=2, command_burst=3))
    await bob.next_message(BOT, channel)
    for word in ("version", "date", "hello"):
        bob.say(channel, f"{BOT}: {word}")
    bob.say(channel, f"{BOT}: ls")
    text = await bob.next_message(BOT, channel, "the rate limit reply",
                                  text=lambda text: "too many commands" in text)
    # The wait is 30 seconds less the time the first commands took, so it is matched loosely.
    assert re.fullmatch(r"bob: too many commands; wait (29|30) seconds and send it again "
                        r"\(limits\.commandsPerMinute is 2\)\. Nothing was done, and more "
                        r"commands before then get no reply\.", text), text


# -- verified accounts: InspIRCd with Atheme --------------------------------------------------

@pytest.fixture(scope="module")
def accounts(irc_services: ServicesNetwork) -> None:
    for account, password in PASSWORDS.items():
        irc_services.register(account, password)


async def ask(client: AccountClient, channel: str, text: str) -> list[str]:
    """Send `text` to the bot between two unknown words and return the bot's lines between
    their replies, because the bot handles commands in order."""
    before, after = f"mark{next(MARKS)}", f"mark{next(MARKS)}"
    for line in (before, text, after):
        client.say(channel, f"{BOT}: {line}")
    lines: list[str] | None = None
    while True:
        message = await client.next_message(BOT, channel)
        for part in message.arguments[-1].split(JOINER):
            if f"'{before}'" in part:
                lines = []
            elif f"'{after}'" in part:
                assert lines is not None, f"the reply to {text!r} came before its start"
                return lines
            elif lines is not None:
                lines.append(part)


async def test_verified_account_roles_and_impostor(accounts: None,
                                                   irc_services: ServicesNetwork,
                                                   start_bot: StartBot,
                                                   services_people: AccountPeople,
                                                   channel: str) -> None:
    access = parse_access_section({"default": "observer", "requireVerified": True,
                                   "admin": ["irc-account:alice"],
                                   "operator": ["irc-account:bob"]}, "test")
    bot, alice, bob = await asyncio.gather(
        start_bot(irc_services.port, [channel], admins=(), access=access),
        services_people("alice", account="alice", password=PASSWORDS["alice"]),
        services_people("bob", account="bob", password=PASSWORDS["bob"]))
    await alice.join(channel)
    await bob.join(channel)

    reply = await ask(alice, channel, "load toast")
    assert "Loaded workflow 'toast', read 8 steps" in reply[0]
    reply = await ask(bob, channel, "unload")
    assert reply == ["unload needs the admin role; bob (irc:bob, not verified; "
                     "irc-account:bob) is an operator. Ask an admin to list you under "
                     "access.admin in the configuration."]
    await ask(alice, channel, "gimme openbread")
    await ask(alice, channel, "start openbread")
    run = bot.daemon.runs["toast"]
    assert run.steps["openbread"].owner == "alice"

    # alice leaves; someone takes her nick without logging in to her account.
    await alice.close()
    impostor = await services_people("alice", [channel])
    reply = await ask(impostor, channel, "finish openbread")
    assert reply[0].startswith("finish needs the operator role; alice (irc:alice, not "
                               "verified) is an observer. Roles need a verified identity here")
    reply = await ask(impostor, channel, "unload")
    assert reply[0].startswith("unload needs the admin role")
    assert run.steps["openbread"].state is StepState.IN_PROGRESS
    assert "toast" in bot.daemon.runs

    # bob, a verified operator, may not finish alice's step: ownership uses the account.
    reply = await ask(bob, channel, "finish openbread")
    assert any("owned by alice" in line for line in reply)
    assert run.steps["openbread"].state is StepState.IN_PROGRESS

    # The real alice, logged in under another nick, owns the step by her account.
    await impostor.close()
    returning = await services_people("alice_", [channel], account="alice",
                                      password=PASSWORDS["alice"])
    await ask(returning, channel, "finish openbread")
    assert run.steps["openbread"].state is StepState.FINISHED


@pytest.fixture(scope="module")
def untagged_network() -> Iterator[ServicesNetwork]:
    """InspIRCd and Atheme with account-notify and extended-join but no account-tag, so the
    bot must keep track of accounts itself."""
    modules = tuple(name for name in INSPIRCD_MODULES if name != "ircv3_accounttag")
    network = ServicesNetwork(modules=modules)
    try:
        network.start()
        network.register("alice", PASSWORDS["alice"])
        yield network
    finally:
        network.remove()


async def test_account_expires_when_no_channel_shared(untagged_network: ServicesNetwork,
                                                     start_bot: StartBot,
                                                     channel: str) -> None:
    access = parse_access_section({"default": "observer", "requireVerified": True,
                                   "admin": ["irc-account:alice"]}, "test")
    bot = await start_bot(untagged_network.port, [channel], admins=(), access=access)
    session = bot.frontend.session
    assert session is not None
    assert "account-tag" not in session.negotiation.enabled
    assert "account-notify" in session.negotiation.enabled
    alice = AccountClient("alice", untagged_network.port, account="alice",
                          password=PASSWORDS["alice"])
    mallory = AccountClient("alice", untagged_network.port)
    try:
        await alice.connect([channel])
        await wait_for_account(bot, "alice", "alice")

        # alice leaves the channel, then changes nick: the server no longer reports her changes to the bot.
        alice.send(f"PART {channel}")
        alice.send("NICK alice_away")
        await alice.next_line(lambda line: line.command == "NICK", "the NICK echo")
        await mallory.connect()
        mallory.say(BOT, "load toast")
        answer = await mallory.next_line(
            lambda line: line.command == "PRIVMSG" and line.nick == BOT, "the bot's reply")
        assert answer.arguments[-1].startswith("load needs the admin role; alice (irc:alice, "
                                               "not verified) is an observer.")
        assert bot.daemon.run_for("irc:query:alice") is None
    finally:
        await mallory.close()
        await alice.close()


async def test_private_backlog_holds_commands(ircd: NgircdServer, start_bot: StartBot,
                                              people: People, channel: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="frontends.irc")
    bob = await people("bob", ircd.port, [channel])
    alice = await people("alice", ircd.port, [channel])
    # One message at once, then one a second: a help reply stays queued while the next
    # commands arrive.
    await start_bot(ircd.port, [channel], rate={"burst": 1, "interval": 1.0})
    await alice.next_message(BOT, channel)

    def held() -> int:
        return sum("not running a command from bob" in message for message in caplog.messages)

    # Each help reply is over 40 lines; twenty of them would hold the outbox for minutes.
    for _ in range(20):
        bob.say(BOT, "help")
    for _ in range(1000):
        if held() >= 15:
            break
        await asyncio.sleep(0.02)
    assert held() >= 15
    await bob.next_message(BOT, "bob", "the backlog notice", timeout=60.0,
                           text=lambda text: text == BACKLOG_LINE)
    alice.say(channel, f"{BOT}: version")
    await alice.next_message(BOT, channel, "the version reply", timeout=60.0,
                             text=lambda text: "thehat version" in text)
    notices = [text for text in bob.messages(BOT, "bob") if text == BACKLOG_LINE]
    assert 1 <= len(notices) <= 2


async def test_long_private_reply_cut(ircd: NgircdServer, start_bot: StartBot, people: People,
                                      channel: str, datadir: Path) -> None:
    save_flow(Flow(StepDef(f"step{number:03}") for number in range(150)),
              datadir / "big.flow")
    bob = await people("bob", ircd.port, [channel])
    await start_bot(ircd.port, [channel], rate={"burst": 50, "interval": 0.02})
    bob.say(BOT, "load big")
    bob.say(BOT, "list")
    await bob.next_message(BOT, "bob", "the cut reply", text=lambda text: text.endswith(
        "more lines were not sent here, so that other conversations are not held up; ask in "
        "a channel or see the status web page."))
    lines = [part for text in bob.messages(BOT, "bob") for part in text.split(JOINER)]
    assert "step149" not in " ".join(lines)


async def test_server_without_accounts_warned(ircd: NgircdServer, start_bot: StartBot,
                                              channel: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    access = parse_access_section({"requireVerified": True,
                                   "admin": ["irc-account:alice"]}, "test")
    await start_bot(ircd.port, [channel], access=access)
    assert any("confirms no services accounts (no account-tag or account-notify), so every "
               "speaker on it is an observer" in message for message in caplog.messages)
