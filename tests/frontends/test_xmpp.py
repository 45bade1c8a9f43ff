"""The XMPP frontend against a real prosody with a multi-user chat component on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from frontends.reconnect import ExponentialBackoff
from tests.frontends.xmpp_support import (  # noqa: F401  (fixtures)
    BOT,
    TIMEOUT,
    XmppBot,
    XmppPerson,
    new_prosody,
    prosody,
    prosody_program,
    room,
    start_xmpp_bot,
    tls_prosody,
    xmpp_datadir,
    xmpp_people,
)
from tests.helpers import MemoryConversation
from tests.prosody import DOMAIN, ProsodyServer, password_for
from tests.tls import CertificateFiles

StartBot = Callable[..., Awaitable[XmppBot]]
Connect = Callable[..., Awaitable[XmppPerson]]


async def test_toast_flow_with_failure_and_reversion(
        prosody: ProsodyServer, room: str, start_xmpp_bot: StartBot,
        xmpp_people: Connect) -> None:
    bot = await start_xmpp_bot(prosody.port, [room])
    alice = await xmpp_people("alice", prosody.port)
    bob = await xmpp_people("bob", prosody.port)
    await alice.join(room)
    await bob.join(room)

    reply = await alice.ask(room, f"{BOT}: load toast", "Loaded workflow 'toast'")
    assert "read 8 steps" in reply
    reply = await alice.ask(room, f"{BOT}, gimme openbread selectslice insertslice",
                            "Owner of step insertslice is now alice")
    assert "Owner of step openbread is now alice" in reply
    reply = await bob.ask(room, f"{BOT} gimme gettoaster, adjusttoasting, preptoaster",
                          "Owner of step preptoaster is now bob")

    # Bob sees alice's prompts in the room, and the other way round.
    since = bob.mark()
    reply = await alice.ask(room, f"{BOT}: finish openbread",
                            ">>> alice changed state of step openbread to done")
    assert "Step selectslice is ready - alice, it's yours." in reply
    await bob.wait_for("changed state of step openbread to done", since=since)
    reply = await bob.ask(room, f"{BOT}: finish gettoaster", "to done")
    assert "Step adjusttoasting is ready - bob, it's yours." in reply
    assert "Step preptoaster is ready - bob, it's yours." in reply
    await alice.ask(room, f"{BOT}: finish selectslice",
                    "Step insertslice is ready - alice, it's yours.")
    await bob.ask(room, f"{BOT}: finish adjusttoasting preptoaster",
                  ">>> bob changed state of step preptoaster to done")
    await alice.ask(room, f"{BOT}: start insertslice",
                    ">>> alice changed state of step insertslice to in prog")

    # Bob may not fail a step that alice owns; alice may.
    reply = await bob.ask(room, f"{BOT}: fail insertslice", "insertslice")
    assert "FAILED" not in reply
    reply = await alice.ask(room, f"{BOT}: fail insertslice",
                            "!!! STEP insertslice FAILED - BEGINNING REVERSION PROCESS !!!")
    assert "Step selectslice can be reverted now - alice" in reply
    assert "Step adjusttoasting can be reverted now - bob" in reply
    assert "Step preptoaster can be reverted now - bob" in reply

    await alice.ask(room, f"{BOT}: reverted selectslice",
                    "Step openbread can be reverted now - alice")
    await bob.ask(room, f"{BOT}: reverted adjusttoasting preptoaster",
                  "Step gettoaster can be reverted now - bob")
    await alice.ask(room, f"{BOT}: reverted openbread",
                    ">>> alice changed state of step openbread to reverted")
    reply = await bob.ask(room, f"{BOT}: reverted gettoaster",
                          ">>> bob changed state of step gettoaster to reverted")
    assert "REVERTED after insertslice failed" in reply

    run = bot.daemon.runs["toast"]
    states = {name: run.step(name).state.value for name in run.steps}
    assert states["insertslice"] == "failed"
    assert states["openbread"] == "reverted"
    assert states["toastbread"] == "pending"
    assert bot.frontend.last_identity is not None
    assert bot.frontend.last_identity.nick == "bob"


async def test_identity_keeps_real_jid(prosody: ProsodyServer, room: str,
                                       start_xmpp_bot: StartBot, xmpp_people: Connect) -> None:
    bot = await start_xmpp_bot(prosody.port, [room])
    alice = await xmpp_people("alice", prosody.port)
    await alice.join(room)
    await alice.ask(room, f"{BOT}: status", "No flow")
    identity = bot.frontend.last_identity
    assert identity is not None
    assert identity.nick == "alice"
    # The bot created the room, so as its owner it sees the occupants' real JIDs.
    assert identity.jid == f"alice@{DOMAIN}"
    assert identity.verified


async def test_history_replay_is_not_executed(prosody: ProsodyServer, room: str,
                                              start_xmpp_bot: StartBot,
                                              xmpp_people: Connect) -> None:
    alice = await xmpp_people("alice", prosody.port)
    await alice.join(room)
    alice.say(room, f"{BOT}: load toast")
    alice.say(room, f"{BOT}: gimme openbread")
    # The room stores the lines before the bot requests its history.
    await alice.wait_for("gimme openbread", nick="alice", room=room)

    bot = await start_xmpp_bot(prosody.port, [room], history=20)
    await alice.wait_for("I answer to", room=room)
    await _settle()
    assert bot.frontend.skipped["history"] >= 2
    assert "toast" not in bot.daemon.runs
    assert bot.daemon.run_for(f"xmpp:{room}") is None


async def test_own_echo_is_not_executed(prosody: ProsodyServer, room: str,
                                        start_xmpp_bot: StartBot,
                                        xmpp_people: Connect) -> None:
    # The bot responds to "load", so its own line "load toast" would run if echoes counted.
    bot = await start_xmpp_bot(prosody.port, [room], respondTo="load")
    alice = await xmpp_people("alice", prosody.port)
    await alice.join(room)
    await bot.frontend.daemon.handle(bot.frontend.rooms[room], "alice", "status")
    bot.frontend.put(room, ["load toast"])
    await alice.wait_for("load toast", room=room)
    await _settle()
    assert bot.frontend.skipped["echo"] >= 1
    assert "toast" not in bot.daemon.runs


async def test_direct_message_answered_directly(prosody: ProsodyServer, room: str,
                                                start_xmpp_bot: StartBot,
                                                xmpp_people: Connect) -> None:
    bot = await start_xmpp_bot(prosody.port, [room])
    alice = await xmpp_people("alice", prosody.port)
    await alice.join(room)
    alice.tell(f"{BOT}@{DOMAIN}", "load toast")
    reply = await alice.wait_direct("Loaded workflow 'toast'")
    assert "read 8 steps" in reply
    assert bot.daemon.run_for(f"xmpp:direct:alice@{DOMAIN}") is bot.daemon.runs["toast"]
    identity = bot.frontend.directs[f"alice@{DOMAIN}"].last_identity
    assert identity is not None
    assert identity.nick == "alice"
    assert identity.verified


async def test_unaddressed_lines_are_ignored(prosody: ProsodyServer, room: str,
                                             start_xmpp_bot: StartBot,
                                             xmpp_people: Connect) -> None:
    bot = await start_xmpp_bot(prosody.port, [room])
    alice = await xmpp_people("alice", prosody.port)
    await alice.join(room)
    alice.say(room, f"ask {BOT}: load toast")
    alice.say(room, f"{BOT}s are nice; load toast")
    await alice.ask(room, f"{BOT}: status", "No flow")
    assert "toast" not in bot.daemon.runs


async def test_long_reply_split_between_lines(prosody: ProsodyServer, room: str,
                                              start_xmpp_bot: StartBot,
                                              xmpp_people: Connect) -> None:
    await start_xmpp_bot(prosody.port, [room], max_message_bytes=200)
    alice = await xmpp_people("alice", prosody.port)
    await alice.join(room)
    since = alice.mark()
    await alice.ask(room, f"{BOT}: load toast", "Loaded workflow")
    await alice.wait_for("Get toaster out of storage", room=room, since=since)
    messages = [m.body for m in alice.received[since:] if m.nick == BOT]
    assert len(messages) > 1
    assert all(len(body.encode("utf-8")) <= 200 for body in messages)
    # Every status row arrives whole, so the pieces were cut between lines.
    rows = [line for body in messages for line in body.splitlines() if "openbread" in line]
    assert rows[-1].split() == ["UNASSIGNED", "pending", "0", "openbread", "Open", "bread",
                                "bag"]


async def test_kick_rejoins_and_summarises(prosody: ProsodyServer, room: str,
                                           start_xmpp_bot: StartBot,
                                           xmpp_people: Connect,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import frontends.xmpp as xmpp_module

    monkeypatch.setattr(xmpp_module, "REJOIN_INITIAL_DELAY", 0.2)
    alice = await xmpp_people("alice", prosody.port)
    # Alice creates the room, so she owns it and may kick.
    await alice.join(room)
    bot = await start_xmpp_bot(prosody.port, [room])
    await alice.wait_for("I answer to", room=room)
    await alice.ask(room, f"{BOT}: load toast", "Loaded workflow")
    muc = alice.client.plugin["xep_0045"]
    await muc.set_role(room, BOT, "none", reason="testing kicks")
    await _until(lambda: not bot.frontend.rooms[room].joined)
    since = alice.mark()
    await bot.daemon.handle(_other_conversation(bot), "carol", "status")
    reply = await alice.wait_for("Back after", room=room, since=since, timeout=TIMEOUT)
    assert "Back after" in reply
    assert bot.frontend.rooms[room].joined


async def test_ban_gives_up_on_room(prosody: ProsodyServer, room: str,
                                    start_xmpp_bot: StartBot, xmpp_people: Connect,
                                    caplog: pytest.LogCaptureFixture) -> None:
    alice = await xmpp_people("alice", prosody.port)
    await alice.join(room)
    bot = await start_xmpp_bot(prosody.port, [room])
    await alice.wait_for("I answer to", room=room)
    muc = alice.client.plugin["xep_0045"]
    await muc.set_affiliation(room, "outcast", jid=f"{BOT}@{DOMAIN}", reason="testing bans")
    await _until(lambda: bot.frontend.rooms[room].given_up)
    assert not bot.frontend.rooms[room].joined
    assert any("banned from room" in record.getMessage() for record in caplog.records)


async def test_server_restart_rejoins_within_seconds(
        new_prosody: Callable[..., ProsodyServer], room: str, start_xmpp_bot: StartBot,
        xmpp_people: Connect) -> None:
    server = new_prosody()
    backoff = ExponentialBackoff(initial=0.2, max_delay=1.0, jitter=0)
    bot = await start_xmpp_bot(server.port, [room], reconnect=backoff)
    alice = await xmpp_people("alice", server.port)
    await alice.join(room)
    await alice.ask(room, f"{BOT}: load toast", "Loaded workflow")
    await alice.ask(room, f"{BOT}: gimme openbread", "Owner of step openbread is now alice")
    await alice.close()

    await asyncio.to_thread(server.stop)
    await _until(lambda: not bot.frontend.ready.is_set())
    # A change made elsewhere while the bot is away is summed up on its return.
    await bot.daemon.handle(_other_conversation(bot), "alice", "finish openbread")
    await asyncio.sleep(1.0)
    await asyncio.to_thread(server.start)
    returned = time.monotonic()
    await asyncio.wait_for(bot.frontend.ready.wait(), 10)
    assert bot.frontend.rooms[room].joined
    assert time.monotonic() - returned < 10

    alice = await xmpp_people("alice", server.port)
    await alice.join(room, history=5)
    reply = await alice.ask(room, f"{BOT}: status", "Flow toast")
    assert "1 of 8 steps finished" in reply
    # The summary went to the room before alice came back, so she finds it in the history.
    summaries = [m.body for m in alice.received if m.nick == BOT and m.delayed
                 and m.body.startswith("Back after")]
    assert summaries, "the bot posted no summary after the restart"
    assert "1 step finished" in summaries[-1]


async def test_admin_quit_stops_bot(prosody: ProsodyServer, room: str,
                                    start_xmpp_bot: StartBot, xmpp_people: Connect) -> None:
    bot = await start_xmpp_bot(prosody.port, [room], admins=(f"alice@{DOMAIN}",))
    bob = await xmpp_people("bob", prosody.port)
    await bob.join(room)
    reply = await bob.ask(room, f"{BOT}: quit", "needs the admin role")
    assert f"bob (xmpp:bob@{DOMAIN}) is an operator" in reply
    alice = await xmpp_people("alice", prosody.port)
    await alice.join(room)
    alice.say(room, f"{BOT}: quit")
    await bot.stopped()


async def test_starttls_with_test_ca(tls_prosody: ProsodyServer, room: str,
                                     certificates: CertificateFiles, start_xmpp_bot: StartBot,
                                     xmpp_people: Connect) -> None:
    # The server requires STARTTLS of every client, so a bot in the room used TLS.
    bot = await start_xmpp_bot(tls_prosody.port, [room], tls="required",
                               tls_cafile=str(certificates.ca_certificate))
    alice = await xmpp_people("alice", tls_prosody.port, certificates.ca_certificate)
    await alice.join(room)

    reply = await alice.ask(room, f"{BOT}: date", "Workflow engine time is: ")
    assert reply.startswith("Workflow engine time is: ")
    assert bot.frontend.rooms[room].joined
    assert _bot_logins(tls_prosody) >= 1


async def test_tls_required_rejects_plain_server(prosody: ProsodyServer, room: str,
                                                 start_xmpp_bot: StartBot,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    logins_before = _bot_logins(prosody)

    bot = await start_xmpp_bot(prosody.port, [room], tls="required", wait=False)
    await _until(lambda: "does not offer STARTTLS" in caplog.text)

    assert not bot.frontend.ready.is_set()
    assert _bot_logins(prosody) == logins_before


async def test_wrong_ca_rejects_server(tls_prosody: ProsodyServer, room: str, wrong_ca: Path,
                                       start_xmpp_bot: StartBot,
                                       caplog: pytest.LogCaptureFixture) -> None:
    logins_before = _bot_logins(tls_prosody)

    bot = await start_xmpp_bot(tls_prosody.port, [room], tls="required",
                               tls_cafile=str(wrong_ca), wait=False)
    await _until(lambda: "certificate verify failed" in caplog.text)

    assert not bot.frontend.ready.is_set()
    assert _bot_logins(tls_prosody) == logins_before


def _bot_logins(server: ProsodyServer) -> int:
    """Count the bot's successful logins in the server's log."""
    return server.log_text().count(f"Authenticated as {BOT}@{DOMAIN}")


def _other_conversation(bot: XmppBot) -> MemoryConversation:
    """Return a terminal-like conversation attached to the same run as the bot's rooms."""
    conversation = MemoryConversation("tty:test")
    bot.daemon.register(conversation)
    run = next(iter(bot.daemon.runs), None)
    if run is not None:
        bot.daemon.attach(conversation.id, run)
    return conversation


async def _until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout:.0f} s")
        await asyncio.sleep(0.05)


async def _settle(seconds: float = 0.5) -> None:
    """Give the bot time to act on what it received, so that a test can see it did not."""
    await asyncio.sleep(seconds)


async def test_plain_login_kept_out_of_debug_log(
        new_prosody: Callable[..., ProsodyServer], room: str, start_xmpp_bot: StartBot,
        caplog: pytest.LogCaptureFixture) -> None:
    # Without SCRAM the bot logs in with SASL PLAIN, whose <auth> is the base64 of the
    # password, and slixmpp logs every stanza it sends at DEBUG.
    caplog.set_level(logging.DEBUG)
    server = new_prosody(disabled_mechanisms=("SCRAM-SHA-1",))
    password = password_for(BOT)
    plain = base64.b64encode(f"\0{BOT}\0{password}".encode()).decode()

    await start_xmpp_bot(server.port, [room])

    logged = [record.getMessage() for record in caplog.records]
    assert any('mechanism="PLAIN">***</auth>' in text for text in logged)
    assert not [text for text in logged if plain in text]
    assert not [text for text in logged if password in text]
