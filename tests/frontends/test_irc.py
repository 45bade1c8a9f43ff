"""The IRC frontend against a real ngircd on 127.0.0.1, with real people and the real daemon.

People are `irc.client_aio` clients (tests/frontends/irc_client.py). The bot is the real
IrcFrontend in a real Daemon from `open_daemon`, whose data directory contains the toast flow.
Most tests use a server with flood throttling off and give the bot a fast rate; the test of a
300-line reply keeps ngircd's default throttling and the bot's default rate.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import yaml

from frontends.irc_protocol import IrcIdentity
from frontends.outbox import JOINER
from frontends.reconnect import ExponentialBackoff
from thehat.flowfile import save_flow
from thehat.model import Flow, StepDef

from tests.frontends.conftest import Bot
from tests.frontends.irc_client import TIMEOUT, ChatClient
from tests.helpers import MemoryConversation
from tests.servers import HOST, NgircdServer, free_port
from tests.tls import CertificateFiles

BOT = "thehat"
VERSION_PREFIX = "thehat version"

StartBot = Callable[..., Awaitable[Bot]]
People = Callable[..., Awaitable[ChatClient]]


def logical_lines(texts: list[str]) -> list[str]:
    """Undo the outbox's joining: one entry per line the daemon wrote."""
    return [part for text in texts for part in text.split(JOINER)]


MARKER_COUNT = itertools.count(1)


async def ask(client: ChatClient, target: str, text: str, sender: str = BOT) -> list[str]:
    """Send `text` to `target` and return the reply's lines.

    Two unique unknown commands go before and after it, and the bot's replies to them frame
    the reply, because the bot handles commands one at a time and sends replies in order.
    """
    in_channel = target.startswith("#")
    before, after = f"mark{next(MARKER_COUNT)}", f"mark{next(MARKER_COUNT)}"
    for line in (before, text, after):
        client.say(target, f"{sender}: {line}" if in_channel and line != text else line)
    reply_target = target if in_channel else client.nick
    lines: list[str] | None = None
    while True:
        message = await client.next_message(sender, reply_target, f"the reply to {text!r}")
        for part in message.split(JOINER):
            if f"'{before}'" in part:
                lines = []
            elif f"'{after}'" in part:
                assert lines is not None, f"the reply to {text!r} came before its start"
                return lines
            elif lines is not None:
                lines.append(part)


async def command(client: ChatClient, channel: str, text: str) -> list[str]:
    return await ask(client, channel, f"{BOT}: {text}")


async def next_line(client: ChatClient, channel: str, contains: str,
                    timeout: float = TIMEOUT) -> str:
    """Return the next line from the bot in `channel` that contains `contains`.

    Lines are counted after undoing the outbox's joining, with a cursor per channel that
    is separate from the client's event cursor.
    """
    found: list[str] = []

    def matched() -> bool:
        lines = logical_lines(client.messages(BOT, channel))
        for index in range(client.line_cursors.get(channel, 0), len(lines)):
            if contains in lines[index]:
                client.line_cursors[channel] = index + 1
                found.append(lines[index])
                return True
        return False

    await client.wait_until(matched, f"a line with {contains!r} in {channel}", timeout)
    return found[0]


# -- the toast flow, end to end -----------------------------------------------------------------


async def test_toast_flow_to_end_from_channel(ircd: NgircdServer, start_bot: StartBot,
                                              people: People) -> None:
    alice = await people("alice", ircd.port, ["#toast"])
    bob = await people("bob", ircd.port, ["#toast"])
    carol = await people("carol", ircd.port, ["#watch"])
    bot = await start_bot(ircd.port, ["toast", "#Watch"])
    greeting = await alice.next_message(BOT, "#toast")
    assert greeting == "I answer to thehat (try 'thehat: help')."
    await bob.next_message(BOT, "#toast")
    await carol.next_message(BOT, "#watch")
    assert set(bot.daemon.conversations) >= {"irc:#toast", "irc:#watch"}

    reply = await command(alice, "#toast", "load toast")
    assert "Loaded workflow 'toast', read 8 steps" in reply[0]
    assert reply[1] == "Flow toast: 0 of 8 steps finished."
    reply = await command(carol, "#watch", "load toast")
    assert reply[0].startswith("Flow toast is already running; joined that run.")
    assert bot.daemon.attached("toast") == ["irc:#toast", "irc:#watch"]

    reply = await command(alice, "#toast",
                          "giveto bob openbread selectslice insertslice toastbread")
    assert reply[0] == "Owner of step openbread is now bob (set by alice)"
    assert await next_line(carol, "#watch", "toastbread") == \
        "Owner of step toastbread is now bob (set by alice)"
    reply = await command(alice, "#toast", "gimme gettoaster adjusttoasting preptoaster")
    assert "Owner of step preptoaster is now alice" in reply

    # Forward: each finish prompts the owners of the steps that became ready, by nick.
    reply = await ask(bob, "#toast", "thehat, finish openbread")
    assert reply[0] == ">>> bob changed state of step openbread to done"
    assert "Step selectslice is ready - bob, it's yours." in reply
    assert await next_line(carol, "#watch", "selectslice is ready") == \
        "Step selectslice is ready - bob, it's yours."
    reply = await ask(alice, "#toast", "thehat start gettoaster")
    assert reply[0] == ">>> alice changed state of step gettoaster to in prog"
    reply = await command(alice, "#toast", "finish gettoaster")
    assert "Step adjusttoasting is ready - alice, it's yours." in reply
    assert "Step preptoaster is ready - alice, it's yours." in reply
    await next_line(carol, "#watch", "preptoaster is ready - alice")
    await command(bob, "#toast", "finish selectslice")
    await command(alice, "#toast", "finish adjusttoasting preptoaster")
    reply = await command(bob, "#toast", "finish insertslice")
    assert "Step toastbread is ready - bob, it's yours." in reply
    reply = await command(bob, "#toast", "start toastbread")
    assert reply[0] == ">>> bob changed state of step toastbread to in prog"

    # The failure turns the flow around; finished steps are reverted in reverse order.
    reply = await command(bob, "#toast", "fail toastbread")
    assert reply[:2] == ["!!!!! FLOW FAILURE !!!!!",
                         "!!! STEP toastbread FAILED - BEGINNING REVERSION PROCESS !!!"]
    assert "Step insertslice can be reverted now - bob, undo it and say 'reverted " \
           "insertslice'." in reply
    assert await next_line(carol, "#watch", "FLOW FAILURE") == "!!!!! FLOW FAILURE !!!!!"
    await next_line(carol, "#watch", "adjusttoasting can be reverted now - alice")
    reply = await command(alice, "#toast", "start selectslice")
    assert any("revert" in line for line in reply), reply
    await command(bob, "#toast", "reverted insertslice")
    reply = await command(alice, "#toast", "reverted adjusttoasting preptoaster")
    assert "Step gettoaster can be reverted now - alice, undo it and say 'reverted " \
           "gettoaster'." in reply
    await command(bob, "#toast", "reverted selectslice")
    await command(alice, "#toast", "reverted gettoaster")
    reply = await command(bob, "#toast", "reverted openbread")
    assert "** Flow ended **" in reply
    assert await next_line(carol, "#watch", "Flow ended") == "** Flow ended **"

    # The bare nick is the status command.
    alice.say("#toast", "thehat")
    status = await next_line(alice, "#toast", "status request")
    assert status.startswith("TheHat ")
    progress = await next_line(alice, "#toast", "Flow toast was REVERTED")
    assert progress == "Flow toast was REVERTED after toastbread failed: 6 of 6 started " \
                       "steps reverted."
    run = bot.daemon.runs["toast"]
    assert run.ended


# -- conversations and addressing ---------------------------------------------------------------


async def test_addressing_forms(ircd: NgircdServer, start_bot: StartBot, people: People,
                                channel: str) -> None:
    alice = await people("alice", ircd.port, [channel])
    await start_bot(ircd.port, [channel], respondTo="hat")
    await alice.next_message(BOT, channel)

    for text in ("thehat: date", "TheHat, date", "thehat date", "hat: date", "HAT date"):
        reply = await ask(alice, channel, text)
        assert len(reply) == 1, text
        assert reply[0].startswith("Workflow engine time is: "), text

    for text in ("tell thehat: date", "thehatter: date", "date", "hats: date"):
        alice.say(channel, text)
        alice.say(channel, "thehat: version")
        answer = await alice.next_message(BOT, channel)
        assert answer.startswith(VERSION_PREFIX), f"{text!r} was taken as a command"


async def test_private_messages_answered_in_private(ircd: NgircdServer, start_bot: StartBot,
                                                    people: People, channel: str) -> None:
    alice = await people("alice", ircd.port, [channel])
    bob = await people("bob", ircd.port, [channel])
    bot = await start_bot(ircd.port, [channel])
    await alice.next_message(BOT, channel)

    reply = await ask(bob, BOT, "status")
    assert reply == ["No flow loaded or defined here; load one with load <flow> (ls lists "
                     "them)."]
    reply = await ask(bob, BOT, "load toast")
    assert "Loaded workflow 'toast', read 8 steps" in reply[0]
    assert bot.daemon.attachments["irc:query:bob"] == "toast"

    # Events of the run reach the private conversation too.
    reply = await command(alice, channel, "load toast")
    await command(alice, channel, "gimme openbread")
    await command(alice, channel, "finish openbread")
    event = await bob.next_message(BOT, "bob",
                                   text=lambda text: "changed state of step openbread" in text)
    assert ">>> alice changed state of step openbread to done" in event.split(JOINER)
    channel_lines = logical_lines(bob.messages(BOT, channel))
    assert all("No flow loaded" not in line for line in channel_lines)


async def test_identity_has_no_account_on_ngircd(ircd: NgircdServer, start_bot: StartBot,
                                                 people: People, channel: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="frontends.irc")
    alice = await people("alice", ircd.port, [channel])
    bot = await start_bot(ircd.port, [channel])
    await alice.next_message(BOT, channel)

    await command(alice, channel, "date")

    assert bot.frontend.last_identity == IrcIdentity("alice", "~alice", HOST, None, False)
    assert bot.frontend.channels[0].last_identity == bot.frontend.last_identity
    assert "account=None, verified=False" in caplog.text


async def test_quit_only_for_admins(ircd: NgircdServer, start_bot: StartBot, people: People,
                                    channel: str) -> None:
    alice = await people("Alice", ircd.port, [channel])
    bob = await people("bob", ircd.port, [channel])
    bot = await start_bot(ircd.port, [channel], admins=("alice",))
    await alice.next_message(BOT, channel)

    reply = await command(bob, channel, "quit")
    assert reply == ["quit needs the admin role; bob (irc:bob, not verified) is an operator. "
                     "Admins are listed in wfengine.admins."]
    reply = await command(bob, channel, "shutdown")
    assert reply[0].startswith("quit needs the admin role")
    assert not bot.task.done()

    alice.say(channel, "thehat: shutdown")
    assert await next_line(alice, channel, "Bye") == "Bye."
    await alice.next_event(lambda seen: seen.kind == "quit" and seen.nick == BOT,
                           "the bot's QUIT")
    await bot.stopped()
    assert bot.task.result() is None


# -- robustness ---------------------------------------------------------------------------------


async def test_invalid_utf8_input_is_replaced(ircd: NgircdServer, start_bot: StartBot,
                                              people: People, channel: str) -> None:
    alice = await people("alice", ircd.port, [channel])
    mallory = await people("mallory", ircd.port, [channel])
    bot = await start_bot(ircd.port, [channel])
    await alice.next_message(BOT, channel)

    mallory.send_bytes(b"PRIVMSG " + channel.encode() + b" :thehat: \xff\xfe\xc3 bad\r\n")
    reply = await next_line(mallory, channel, "Unknown command")
    assert reply == "Unknown command '\ufffd\ufffd\ufffd'; say help for the list of commands."
    mallory.send_bytes(b"PRIVMSG thehat :\xc3\x28 hello\r\n")
    reply = await mallory.next_message(BOT, "mallory")
    assert reply == "Unknown command '\ufffd('; say help for the list of commands."
    # A line cut inside a character, then a valid command on the same connection.
    mallory.send_bytes(b"PRIVMSG " + channel.encode() + b" :thehat: date \xe2\x82\r\n")
    assert (await next_line(mallory, channel, "engine time")).startswith("Workflow engine")

    reply = await command(alice, channel, "date")
    assert reply[0].startswith("Workflow engine time is: ")
    assert bot.frontend.ready.is_set()


async def test_nick_in_use_takes_alternate_then_reclaims(
        ircd: NgircdServer, start_bot: StartBot, people: People, channel: str) -> None:
    holder = await people("thehat", ircd.port, [channel])
    alice = await people("alice", ircd.port, [channel])
    bot = await start_bot(ircd.port, [channel], altnicks=["hatbot"], reclaim_interval=3600)
    joined = await alice.next_event(lambda seen: seen.kind == "join" and seen.nick == "hatbot",
                                    "the bot joining as hatbot")
    assert joined.target == channel
    assert bot.frontend.nick == "hatbot"
    assert (await alice.next_message("hatbot", channel)).startswith("I answer to hatbot")

    reply = await ask(alice, channel, "hatbot: date", sender="hatbot")
    assert reply[0].startswith("Workflow engine time is: ")

    await holder.close()
    renamed = await alice.next_event(lambda seen: seen.kind == "nick" and seen.nick == "hatbot",
                                     "the bot taking its nick back")
    assert renamed.target == BOT
    reply = await command(alice, channel, "date")
    assert reply[0].startswith("Workflow engine time is: ")
    assert bot.frontend.nick == BOT


async def test_nick_reclaimed_periodically(ircd: NgircdServer, start_bot: StartBot,
                                           people: People, channel: str) -> None:
    # The holder shares no channel with the bot, so only the periodic attempt notices it leave.
    holder = await people("thehat", ircd.port)
    alice = await people("alice", ircd.port, [channel])
    bot = await start_bot(ircd.port, [channel], reclaim_interval=1)
    await alice.next_event(lambda seen: seen.kind == "join" and seen.nick == "thehat_",
                           "the bot joining as thehat_")

    await holder.close()

    await alice.next_event(lambda seen: seen.kind == "nick" and seen.nick == "thehat_",
                           "the bot taking its nick back", timeout=10)
    assert bot.frontend.nick == BOT


async def test_long_multibyte_line_is_split_intact(ircd: NgircdServer, start_bot: StartBot,
                                                   people: People, channel: str,
                                                   datadir: Path) -> None:
    description = "Grüße aus Köln — 日本語のテキストを送ります — emoji 🎉🍞 — " * 16
    description = description.strip()
    assert len(description.encode()) > 1200
    save_flow(Flow([StepDef("grüße", description=description)]), datadir / "long.flow")
    alice = await people("alice", ircd.port, [channel])
    await start_bot(ircd.port, [channel])
    await alice.next_message(BOT, channel)
    alice.raw_lines.clear()

    reply = await command(alice, channel, "load long")

    from_bot = [line for line in alice.raw_lines if line.startswith(b":thehat!")]
    assert len(from_bot) >= 6
    for line in from_bot:
        assert len(line) + 2 <= 512, f"line of {len(line) + 2} bytes with CR LF"
        line.decode("utf-8")  # raises if a character was cut
    assert description in " ".join(reply)


async def test_reply_of_300_lines_under_default_throttling(
        throttled_ircd: NgircdServer, start_bot: StartBot, people: People, channel: str,
        datadir: Path) -> None:
    steps = [StepDef(f"s{number:03d}", gates=(f"s{number - 1:03d}",) if number else ())
             for number in range(320)]
    save_flow(Flow(steps), datadir / "big.flow")
    alice = await people("alice", throttled_ircd.port, [channel])
    # The bot's default rate: 4 lines at once, then one line every 2 seconds.
    bot = await start_bot(throttled_ircd.port, [channel], rate={})
    await alice.next_message(BOT, channel, timeout=60)
    conversation = bot.frontend.channels[0]
    await bot.daemon.handle(conversation, "alice", "load big")
    expected = (await bot.daemon.handle(conversation, "alice", "list")).lines
    assert len(expected) == 321

    started = time.monotonic()
    alice.say(channel, "thehat: list")
    received: list[str] = []
    while len(received) < len(expected):
        text = await alice.next_message(BOT, channel, "the rest of the list", timeout=60)
        received.extend(text.split(JOINER))
    elapsed = time.monotonic() - started

    assert received == expected
    assert bot.frontend.ready.is_set(), "the bot lost its connection"
    assert not any(seen.kind == "quit" and seen.nick == BOT for seen in alice.seen)
    messages = len(alice.messages(BOT, channel)) - 1
    assert messages < 40, "lines that had to wait should have been joined"
    assert elapsed > (messages - 4) * 2.0 * 0.9, "the bot's rate limit was not applied"


async def test_server_restart_reconnects_and_summarises(new_ircd: Callable[..., NgircdServer],
                                                        start_bot: StartBot,
                                                        people: People) -> None:
    server = new_ircd(max_penalty=0)
    channel = "#restart"
    alice = await people("alice", server.port, [channel])
    attempts = RecordingBackoff(ExponentialBackoff(initial=1.0, max_delay=2.0))
    bot = await start_bot(server.port, [channel], strategy=attempts)
    await alice.next_message(BOT, channel)
    await command(alice, channel, "load toast")
    await command(alice, channel, "gimme openbread")

    await asyncio.to_thread(server.stop)
    await wait_until(lambda: not bot.frontend.ready.is_set(), "the bot notices the loss")

    # While the bot is away, the run moves on from another conversation.
    terminal = MemoryConversation("tty:carol")
    bot.daemon.register(terminal)
    await bot.daemon.handle(terminal, "carol", "load toast")
    await bot.daemon.handle(terminal, "carol", "giveto carol openbread")
    await bot.daemon.handle(terminal, "carol", "finish openbread")

    # Restart right after a failed attempt, so that alice is back before the bot.
    attempts.called.clear()
    await asyncio.wait_for(attempts.called.wait(), TIMEOUT)
    await asyncio.to_thread(server.start)
    returned = time.monotonic()
    alice = await people("alice", server.port, [channel])

    await alice.next_event(lambda seen: seen.kind == "join" and seen.nick == BOT,
                           "the bot rejoining", timeout=15)
    assert time.monotonic() - returned < 10
    summary = await alice.next_message(BOT, channel)
    assert summary.startswith("Back after ")
    assert "meanwhile: 1 step finished" in summary
    assert "ready now: selectslice (unassigned)" in summary
    assert "also: Owner of step openbread is now carol" in summary

    reply = await command(alice, channel, "status")
    assert "Flow toast: 1 of 8 steps finished." in reply


async def test_kicked_bot_rejoins_and_summarises(ircd: NgircdServer, start_bot: StartBot,
                                                 people: People, channel: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("frontends.irc_events.REJOIN_DELAY", 0.2)
    alice = await people("alice", ircd.port, [channel])  # the first to join is operator
    bot = await start_bot(ircd.port, [channel])
    await alice.next_message(BOT, channel)
    await command(alice, channel, "load toast")

    alice.connection.kick(channel, BOT, "testing")
    await wait_until(lambda: not bot.frontend.channels[0].joined, "the bot to see the kick")
    terminal = MemoryConversation("tty:carol")
    bot.daemon.register(terminal)
    await bot.daemon.handle(terminal, "carol", "load toast")
    await bot.daemon.handle(terminal, "carol", "gimme openbread")

    await alice.next_event(lambda seen: seen.kind == "join" and seen.nick == BOT,
                           "the bot rejoining")
    summary = await next_line(alice, channel, "Back after")
    assert "also: Owner of step openbread is now carol" in summary


async def test_silent_server_is_dropped_and_reconnected(start_bot: StartBot) -> None:
    server = SilentServer()
    await server.start()
    try:
        bot = await start_bot(server.port, ["#silent"], wait=False, ping_interval=1,
                              ping_timeout=1, reconnect={"initial": 0.2, "max": 0.5})
        await wait_until(lambda: server.connections >= 2, "a second connection")
        assert server.pings >= 1
        assert not bot.task.done()
    finally:
        server.close()


# -- connection options -------------------------------------------------------------------------


async def test_server_password_is_sent_but_never_logged(
        new_ircd: Callable[..., NgircdServer], start_bot: StartBot, people: People,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server = new_ircd(password="letmein-7281")
    channel = "#locked"

    bot = await start_bot(server.port, [channel], password="letmein-7281")

    assert bot.frontend.channels[0].joined
    assert "PASS ***" in caplog.text
    assert "letmein-7281" not in caplog.text
    assert "letmein-7281" not in repr(bot.frontend.settings)


async def test_nickserv_identification(new_ircd: Callable[..., NgircdServer],
                                       start_bot: StartBot, people: People,
                                       caplog: pytest.LogCaptureFixture) -> None:
    # ngircd has no services; a person named NickServ receives what the bot sends to it.
    caplog.set_level(logging.DEBUG)
    server = new_ircd(max_penalty=0)
    service = await people("NickServ", server.port)

    await start_bot(server.port, ["#identified"], altnicks=["hatbot"],
                    nickserv={"password": "ns-secret-51"})

    text = await service.next_message(BOT, "NickServ")
    assert text == "IDENTIFY thehat ns-secret-51"
    # The test's own NickServ client logs what it receives; only the bot's log matters.
    bot_log = "\n".join(record.getMessage() for record in caplog.records
                        if record.name.startswith(("frontends", "thehat")))
    assert "IDENTIFY ***" in bot_log
    assert "ns-secret-51" not in bot_log


async def test_tls_with_test_ca(new_ircd: Callable[..., NgircdServer],
                                certificates: CertificateFiles, start_bot: StartBot,
                                people: People) -> None:
    server = new_ircd(max_penalty=0, tls_port=free_port(), certificate=certificates.certificate,
                      key=certificates.key)
    alice = await people("alice", server.port, ["#tls"])

    await start_bot(server.tls_port, ["#tls"], tls=True,
                    tls_cafile=str(certificates.ca_certificate))
    await alice.next_message(BOT, "#tls")
    reply = await command(alice, "#tls", "date")
    assert reply[0].startswith("Workflow engine time is: ")


@pytest.mark.parametrize("trusted", ["system CAs", "wrong CA"])
async def test_tls_rejects_untrusted_certificate(
        trusted: str, new_ircd: Callable[..., NgircdServer], certificates: CertificateFiles,
        wrong_ca: Path, start_bot: StartBot, caplog: pytest.LogCaptureFixture) -> None:
    server = new_ircd(max_penalty=0, tls_port=free_port(), certificate=certificates.certificate,
                      key=certificates.key)
    # Verification is on by default; the system's CAs never signed the test certificate.
    settings = {"tls_cafile": str(wrong_ca)} if trusted == "wrong CA" else {}

    bot = await start_bot(server.tls_port, ["#tls"], tls=True, wait=False, **settings)
    await wait_until(lambda: "certificate verify failed" in caplog.text,
                     "the bot to reject the certificate")

    assert not bot.frontend.ready.is_set()
    # ngircd logs 'User "thehat!~thehat@127.0.0.1" registered' for a completed login.
    assert 'User "thehat!' not in server.log_text()


async def test_clock_steps_announced_in_channel(ircd: NgircdServer, start_bot: StartBot,
                                                people: People, datadir: Path,
                                                channel: str) -> None:
    (datadir / "soon.flow").write_text(
        "- step: announce\n  owner: clock-alarm:0/0/0@0:0:0\n"
        "- step: soak\n  owner: clock-stopwatch:0/0/0@0:0:1\n  gates: [announce]\n"
        "- step: verify\n  owner: bob\n  gates: [soak]\n", encoding="utf-8")
    alice = await people("alice", ircd.port, [channel])
    bot = await start_bot(ircd.port, [channel])
    await alice.next_message(BOT, channel)
    bot.daemon.start_automation()
    await command(alice, channel, "load soon")

    await command(alice, channel, "clockProcessing on")

    assert await next_line(alice, channel, "step announce to done") == \
        ">>> clock-alarm:0/0/0@0:0:0 changed state of step announce to done"
    assert await next_line(alice, channel, "step soak to done") == \
        ">>> clock-stopwatch:0/0/0@0:0:1 changed state of step soak to done"
    assert await next_line(alice, channel, "verify is ready") == \
        "Step verify is ready - bob, it's yours."
    assert "CLOCK ADVANCE" in await next_line(alice, channel, "CLOCK ADVANCE")


async def test_thehat_run_starts_irc_frontend(ircd: NgircdServer, people: People,
                                              tmp_path: Path, datadir: Path,
                                              channel: str) -> None:
    config = tmp_path / "thehat.yaml"
    config.write_text(yaml.safe_dump({
        "wfengine": {"datadir": str(datadir), "admins": ["alice"]},
        "thehat-irc": {"nic": "runbot", "server": HOST, "port": ircd.port,
                       "channel": channel.lstrip("#")},
    }), encoding="utf-8")
    alice = await people("alice", ircd.port, [channel])
    program = Path(sys.executable).with_name("thehat")
    process = await asyncio.create_subprocess_exec(
        str(program), "run", "-c", str(config), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        await alice.next_event(lambda seen: seen.kind == "join" and seen.nick == "runbot",
                               "the bot joining")
        assert (await alice.next_message("runbot", channel)).startswith("I answer to runbot")
        reply = await ask(alice, channel, "runbot: load toast", sender="runbot")
        assert "Loaded workflow 'toast', read 8 steps" in reply[0]
        alice.say(channel, "runbot: quit")
        status = await asyncio.wait_for(process.wait(), TIMEOUT)
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()
    output = (await process.stdout.read()).decode() if process.stdout else ""
    assert status == 0, output
    assert "joined " + channel in output


def test_missing_library_names_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import frontends
    from frontends import irc as irc_frontend
    from thehat.errors import TheHatError

    monkeypatch.delitem(sys.modules, "frontends.irc_connection")
    monkeypatch.delattr(frontends, "irc_connection")
    monkeypatch.setitem(sys.modules, "irc.client_aio", None)

    with pytest.raises(TheHatError, match=r"pip install 'thehat\[irc\]'"):
        irc_frontend._load_library()


# -- helpers ------------------------------------------------------------------------------------


class RecordingBackoff:
    """A reconnect strategy that delegates to another and signals each delay it hands out."""

    def __init__(self, inner: ExponentialBackoff) -> None:
        self.inner = inner
        self.delays: list[float] = []
        self.called = asyncio.Event()

    def next_delay(self) -> float:
        delay = self.inner.next_delay()
        self.delays.append(delay)
        self.called.set()
        return delay

    def connected(self) -> None:
        self.inner.connected()

    def disconnected(self) -> None:
        self.inner.disconnected()


async def wait_until(condition: Callable[[], object], description: str,
                     timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {description}"
        await asyncio.sleep(0.02)


class SilentServer:
    """A fake IRC server that registers clients and echoes JOIN, then never replies to PING."""

    def __init__(self) -> None:
        self.connections = 0
        self.pings = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        nick = "thehat"
        try:
            while line := await reader.readline():
                words = line.decode("utf-8", "replace").split()
                if not words:
                    continue
                if words[0] == "NICK":
                    nick = words[1]
                elif words[0] == "USER":
                    writer.write(f":fake 001 {nick} :Welcome {nick}!u@h\r\n".encode())
                elif words[0] == "JOIN":
                    writer.write(f":{nick}!u@h JOIN {words[1]}\r\n".encode())
                elif words[0] == "PING":
                    self.pings += 1
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
