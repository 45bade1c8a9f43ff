"""Verified IRC identities against real services: InspIRCd 3 linked to Atheme on 127.0.0.1.

People are raw-line clients (tests/ircservices.py) that may log in with SASL PLAIN while they
register. The bot is the real IrcFrontend in a real Daemon, as in test_irc.py. Every new
client waits about a second for InspIRCd to complete its registration, so the tests connect
their clients at the same time where the order does not matter.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

import pytest

from tests.frontends.conftest import Bot
from tests.ircservices import AccountClient, ServicesNetwork

BOT = "thehat"
PASSWORDS = {"alice": "secret-alice", BOT: "secret-thehat"}
# Seconds to wait for the bot to learn an account from the server.
ACCOUNT_TIMEOUT = 10.0

StartBot = Callable[..., Awaitable[Bot]]
People = Callable[..., Awaitable[AccountClient]]

WORDS = itertools.count(1)


@pytest.fixture(scope="module", autouse=True)
def accounts(irc_services: ServicesNetwork) -> None:
    """Register the accounts before any client of this module takes their nicks."""
    for account, password in PASSWORDS.items():
        irc_services.register(account, password)


async def speak_to_bot(client: AccountClient, channel: str) -> None:
    """Send the bot an unknown word in `channel` and wait for the reply that names it.

    The bot records the sender's identity before it replies, so `last_identity` is the
    client's once this returns.
    """
    word = f"probe{next(WORDS)}"
    client.say(channel, f"{BOT}: {word}")
    await client.next_message(BOT, channel, text=lambda text: f"'{word}'" in text)


async def wait_for_account(bot: Bot, nick: str, account: str | None) -> None:
    """Wait until the bot's account book has `account` for `nick` (None: logged out)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ACCOUNT_TIMEOUT
    book = bot.frontend.accounts.accounts
    while nick not in book or book[nick] != account:
        if loop.time() > deadline:
            raise AssertionError(f"the bot did not learn account {account!r} for {nick} in "
                                 f"{ACCOUNT_TIMEOUT:.0f} s; it has {book.get(nick, 'nothing')!r}")
        await asyncio.sleep(0.02)
        book = bot.frontend.accounts.accounts


async def test_account_tag_names_logged_in_sender(irc_services: ServicesNetwork,
                                                  services_people: People,
                                                  channel: str) -> None:
    alice, bob, carol = await asyncio.gather(
        services_people("alice", account="alice", password=PASSWORDS["alice"]),
        services_people("bob", capabilities=("account-tag",)),
        services_people("carol"))
    assert alice.logged_in == "alice"
    assert "account-tag" in bob.enabled
    for client in (alice, bob, carol):
        await client.join(channel)

    alice.say(channel, "hello from alice")
    from_alice = await bob.next_message("alice", channel)
    carol.say(channel, "hello from carol")
    from_carol = await bob.next_message("carol", channel)

    assert from_alice.tags.get("account") == "alice"
    assert from_alice.raw.startswith("@account=alice ")
    assert "account" not in from_carol.tags
    assert from_alice.arguments[-1] == "hello from alice"


async def test_frontend_verifies_account_not_nick(irc_services: ServicesNetwork,
                                                  start_bot: StartBot, services_people: People,
                                                  channel: str) -> None:
    bot, alice = await asyncio.gather(
        start_bot(irc_services.port, [channel]),
        services_people("alice", account="alice", password=PASSWORDS["alice"]))
    await alice.join(channel)

    await speak_to_bot(alice, channel)
    identity = bot.frontend.last_identity
    assert identity is not None
    assert identity.nick == "alice"
    assert identity.account == "alice"
    assert identity.verified is True

    await alice.close()
    impostor = await services_people("alice", [channel])
    await speak_to_bot(impostor, channel)
    identity = bot.frontend.last_identity
    assert identity is not None
    assert identity.nick == "alice"
    assert identity.account is None
    assert identity.verified is False


async def test_frontend_learns_accounts_from_server(irc_services: ServicesNetwork,
                                                    start_bot: StartBot,
                                                    services_people: People,
                                                    channel: str) -> None:
    # alice is in the channel before the bot, so the bot learns her account from WHOX.
    alice, carol = await asyncio.gather(
        services_people("alice", [channel], account="alice", password=PASSWORDS["alice"]),
        services_people("carol"))
    bot = await start_bot(irc_services.port, [channel],
                          sasl={"account": BOT, "password": PASSWORDS[BOT]})

    session = bot.frontend.session
    assert session is not None
    assert session.negotiation.account == BOT
    assert {"account-tag", "account-notify", "extended-join"} <= session.negotiation.enabled
    assert bot.frontend.support.whox
    await wait_for_account(bot, "alice", "alice")

    # carol joins logged out (extended-join), then logs in with NickServ (account-notify).
    await carol.join(channel)
    await wait_for_account(bot, "carol", None)
    carol.send(f"PRIVMSG NickServ :IDENTIFY alice {PASSWORDS['alice']}")
    await carol.next_line(lambda line: line.command == "900", "the 900 logged-in reply")
    await wait_for_account(bot, "carol", "alice")

    await speak_to_bot(carol, channel)
    identity = bot.frontend.last_identity
    assert identity is not None
    assert identity.nick == "carol"
    assert identity.account == "alice"
    assert identity.verified is True
    assert alice.logged_in == "alice"
