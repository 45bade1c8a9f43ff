"""Roles over a real prosody multi-user chat on 127.0.0.1, by real JID and by nick alone.

The bot creates its rooms, so it owns them and gets every occupant's real JID: the identity
`xmpp:<bare JID>` is verified there. In a room someone else created with the default
configuration, the bot is an ordinary occupant that gets nicks only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from thehat.access import parse_access_section
from thehat.model import StepState

from tests.frontends.xmpp_support import (  # noqa: F401  (fixtures)
    BOT,
    TIMEOUT,
    XmppBot,
    XmppPerson,
    prosody,
    prosody_program,
    room,
    start_xmpp_bot,
    xmpp_datadir,
    xmpp_people,
)
from tests.prosody import DOMAIN, ProsodyServer

StartBot = Callable[..., Awaitable[XmppBot]]
Connect = Callable[..., Awaitable[XmppPerson]]

ACCESS = {
    "default": "observer",
    "admin": [f"xmpp:alice@{DOMAIN}"],
    "operator": [f"xmpp:bob@{DOMAIN}"],
}


async def test_roles_by_real_jid(prosody: ProsodyServer, room: str, start_xmpp_bot: StartBot,
                                 xmpp_people: Connect) -> None:
    bot = await start_xmpp_bot(prosody.port, [room], admins=(),
                               access=parse_access_section(ACCESS, "test"))
    alice = await xmpp_people("alice", prosody.port)
    bob = await xmpp_people("bob", prosody.port)
    carol = await xmpp_people("carol", prosody.port)
    for person in (alice, bob, carol):
        await person.join(room)

    reply = await bob.ask(room, f"{BOT}: load toast", "needs the")
    assert reply.startswith(f"load needs the admin role; bob (xmpp:bob@{DOMAIN}) is an operator")
    await alice.ask(room, f"{BOT}: load toast", "Loaded workflow 'toast'")

    reply = await carol.ask(room, f"{BOT}: gimme openbread", "needs the")
    assert reply.startswith(f"gimme needs the operator role; carol (xmpp:carol@{DOMAIN}) is an "
                            "observer.")
    await carol.ask(room, f"{BOT}: status", "Flow toast")
    help_text = await carol.ask(room, f"{BOT}: help", "Say help <command>")
    assert "gimme" not in help_text
    assert "dump" in help_text

    await bob.ask(room, f"{BOT}: gimme openbread", "Owner of step openbread is now bob")
    await bob.ask(room, f"{BOT}: start openbread", "openbread")
    reply = await bob.ask(room, f"{BOT}: unload", "needs the")
    assert reply.startswith("unload needs the admin role")
    reply = await bob.ask(room, f"{BOT}: quit", "needs the")
    assert reply.startswith("quit needs the admin role")
    run = bot.daemon.runs["toast"]
    assert run.steps["openbread"].state is StepState.IN_PROGRESS
    assert not bot.task.done()


async def test_taken_nick_keeps_real_jid(prosody: ProsodyServer, room: str,
                                         start_xmpp_bot: StartBot,
                                         xmpp_people: Connect) -> None:
    bot = await start_xmpp_bot(prosody.port, [room], admins=(),
                               access=parse_access_section(
                                   {**ACCESS, "requireVerified": True}, "test"))
    carol = await xmpp_people("carol", prosody.port)
    # carol takes the room nick alice, the admin's name.
    await carol.client.plugin["xep_0045"].join_muc_wait(room, "alice", maxstanzas=0,
                                                         timeout=TIMEOUT)
    reply = await carol.ask(room, f"{BOT}: load toast", "needs the")
    assert reply.startswith(f"load needs the admin role; alice (xmpp:carol@{DOMAIN}) is an "
                            "observer.")
    assert bot.daemon.run_for(f"xmpp:{room}") is None


async def test_anonymous_room_gives_nicks_only(prosody: ProsodyServer, room: str,
                                               start_xmpp_bot: StartBot,
                                               xmpp_people: Connect) -> None:
    # carol creates the room before the bot, so the bot is not a moderator and gets no JIDs.
    carol = await xmpp_people("carol", prosody.port)
    await carol.join(room)
    bot = await start_xmpp_bot(prosody.port, [room], admins=(),
                               access=parse_access_section(
                                   {**ACCESS, "requireVerified": True}, "test"))
    alice = await xmpp_people("alice", prosody.port)
    await alice.join(room)

    reply = await alice.ask(room, f"{BOT}: load toast", "needs the")
    assert reply == ("load needs the admin role; alice is an observer. Roles need a verified "
                     "identity here (access.requireVerified): speak in a room that shows your "
                     "JID to the bot, or send the command to the bot directly.")
    assert bot.frontend.last_identity is not None
    assert bot.frontend.last_identity.jid is None

    # Straight from her account, alice is verified and an admin.
    alice.tell(f"{BOT}@{DOMAIN}", "load toast")
    await alice.wait_direct("Loaded workflow 'toast'")
