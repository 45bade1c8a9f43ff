"""One daemon serving a terminal, an IRC channel and an XMPP room attached to the same run."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from tests.frontends.conftest import Bot
from tests.frontends.irc_client import ChatClient
from tests.frontends.xmpp_support import (  # noqa: F401  (fixtures)
    BOT,
    XmppBot,
    XmppPerson,
    prosody,
    prosody_program,
    room,
    start_xmpp_bot,
    xmpp_datadir,
    xmpp_people,
)
from tests.helpers import MemoryConversation
from tests.prosody import ProsodyServer
from tests.servers import NgircdServer


async def _terminal_saw(terminal: MemoryConversation, text: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not any(text in line for line in terminal.received):
        if loop.time() > deadline:
            raise AssertionError(f"the terminal got no line with {text!r}; got "
                                 f"{terminal.received!r}")
        await asyncio.sleep(0.02)


async def test_step_finished_anywhere_reaches_other_media(
        ircd: NgircdServer, channel: str, start_bot: Callable[..., Awaitable[Bot]],
        people: Callable[..., Awaitable[ChatClient]], prosody: ProsodyServer, room: str,
        start_xmpp_bot: Callable[..., Awaitable[XmppBot]],
        xmpp_people: Callable[..., Awaitable[XmppPerson]]) -> None:
    irc_bot = await start_bot(ircd.port, [channel])
    daemon = irc_bot.daemon
    await start_xmpp_bot(prosody.port, [room], daemon=daemon)
    terminal = MemoryConversation("tty:carol")
    daemon.register(terminal)

    bob = await people("bob", ircd.port, [channel])
    alice = await xmpp_people("alice", prosody.port)
    await alice.join(room)
    await daemon.handle(terminal, "carol", "load toast")
    bob.say(channel, "thehat: load toast")
    await bob.next_message("thehat", channel, text=lambda t: "already running" in t)
    await alice.ask(room, f"{BOT}: load toast", "already running")
    assert sorted(daemon.attached("toast")) == sorted(
        ["tty:carol", f"irc:{channel}", f"xmpp:{room}"])

    # Finished in the XMPP room: announced on IRC and in the terminal.
    await alice.ask(room, f"{BOT}: gimme openbread", "Owner of step openbread is now alice")
    await alice.ask(room, f"{BOT}: finish openbread", "step openbread to done")
    await bob.next_message("thehat", channel,
                           text=lambda t: ">>> alice changed state of step openbread to done" in t)
    await _terminal_saw(terminal, ">>> alice changed state of step openbread to done")

    # Finished on IRC: announced in the room and in the terminal.
    since = alice.mark()
    bob.say(channel, "thehat: gimme gettoaster")
    await bob.next_message("thehat", channel, text=lambda t: "now bob" in t)
    bob.say(channel, "thehat: finish gettoaster")
    await alice.wait_for(">>> bob changed state of step gettoaster to done", room=room,
                         since=since)
    await _terminal_saw(terminal, ">>> bob changed state of step gettoaster to done")

    # Finished in the terminal: announced on IRC and in the room.
    since = alice.mark()
    await daemon.handle(terminal, "carol", "gimme preptoaster")
    await daemon.handle(terminal, "carol", "finish preptoaster")
    await alice.wait_for(">>> carol changed state of step preptoaster to done", room=room,
                         since=since)
    await bob.next_message("thehat", channel,
                           text=lambda t: ">>> carol changed state of step preptoaster" in t)
