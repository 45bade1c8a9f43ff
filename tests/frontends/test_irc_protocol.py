"""IRC rules without a server: addressing, case mapping, byte budget, accounts, away summaries."""

from __future__ import annotations

import base64
from datetime import datetime, timezone

import pytest

from frontends.away import AwayLog, summarize
from frontends.config_values import Secret
from frontends.irc_config import SaslConfig
from frontends.irc_connection import CapNegotiation, redact
from frontends.irc_protocol import (
    AccountBook,
    ServerSupport,
    addressed_command,
    irc_lower,
    nick_candidates,
    text_limit,
)
from thehat.events import Event, EventKind
from thehat.status import event_lines

NAMES = ["thehat", "hat"]


@pytest.mark.parametrize("text, command", [
    ("thehat: status", "status"),
    ("thehat, gimme openbread", "gimme openbread"),
    ("thehat gimme openbread", "gimme openbread"),
    ("TheHat: list", "list"),
    ("thehat:list", "list"),
    ("thehat", ""),
    ("thehat:", ""),
    ("thehat ,  : finish x", "finish x"),
    ("hat: status", "status"),
    ("HAT, dump", "dump"),
])
def test_addressed_lines_give_command(text: str, command: str) -> None:
    assert addressed_command(text, NAMES) == command


@pytest.mark.parametrize("text", [
    "tell thehat: status",
    "thehatter: status",
    "thehat_: status",
    "hats off",
    "",
    "the hat: status",
])
def test_other_lines_are_not_commands(text: str) -> None:
    assert addressed_command(text, NAMES) is None


def test_addressing_follows_casemapping() -> None:
    assert addressed_command("{bot}: status", ["[Bot]"]) == "status"
    assert addressed_command("{bot}: status", ["[Bot]"], "ascii") is None


def test_irc_lower_casemappings() -> None:
    assert irc_lower("NICK[]\\~", "rfc1459") == "nick{}|^"
    assert irc_lower("NICK[]\\~", "strict-rfc1459") == "nick{}|~"
    assert irc_lower("NICK[]\\~", "ascii") == "nick[]\\~"
    assert irc_lower("ÄBC", "rfc7613") == "äbc"


def test_text_limit_counts_relayed_prefix() -> None:
    limit = text_limit("thehat", "~thehat", "127.0.0.1", "#toast")
    relayed = f":thehat!~thehat@127.0.0.1 PRIVMSG #toast :{'x' * limit}\r\n"

    assert len(relayed.encode()) == 512


def test_text_limit_assumes_long_host_until_known() -> None:
    assert text_limit("thehat", None, None, "#toast") < text_limit("thehat", "~thehat",
                                                                  "127.0.0.1", "#toast")


def test_server_support_reads_isupport() -> None:
    support = ServerSupport()

    support.update(["RFC2812", "CASEMAPPING=ascii", "NICKLEN=30", "WHOX", "PREFIX=(ov)@+"])

    assert support.casemapping == "ascii"
    assert support.nicklen == 30
    assert support.whox is True


def test_identity_without_services_has_no_account() -> None:
    book = AccountBook()

    identity = book.identity("alice", "~alice", "127.0.0.1", {})

    assert identity.account is None
    assert identity.verified is False


def test_identity_from_account_tag_is_verified() -> None:
    book = AccountBook(tagged=True)

    identity = book.identity("alice", "~a", "host", {"account": "alice-acct"})
    logged_out = book.identity("bob", "~b", "host", {})

    assert (identity.account, identity.verified) == ("alice-acct", True)
    assert (logged_out.account, logged_out.verified) == (None, False)


def test_identity_from_join_verified_only_with_notify() -> None:
    stale = AccountBook()
    current = AccountBook(notify=True)
    for book in (stale, current):
        book.set("Alice", "alice-acct")
        book.joined("Alice", "#ops")

    assert stale.identity("alice", None, None, {}).verified is False
    assert current.identity("ALICE", None, None, {}).account == "alice-acct"
    assert current.identity("ALICE", None, None, {}).verified is True


def test_account_unverified_once_no_channel_is_shared() -> None:
    book = AccountBook(notify=True)
    book.set("alice", "alice-acct")
    assert book.identity("alice", None, None, {}).verified is False
    book.joined("alice", "#ops")
    book.joined("alice", "#Dev")
    assert book.identity("alice", None, None, {}).verified is True

    book.left("alice", "#ops")
    assert book.identity("alice", None, None, {}).verified is True
    # After the last shared channel the server no longer reports her changes.
    book.left("ALICE", "#dev")
    identity = book.identity("alice", None, None, {})
    assert identity.account is None
    assert identity.verified is False


def test_account_forgotten_when_bot_leaves() -> None:
    book = AccountBook(notify=True)
    book.set("alice", "alice-acct")
    book.joined("alice", "#ops")
    book.bot_left("#ops")
    assert book.identity("alice", None, None, {}).verified is False


def test_account_book_follows_nick_changes_and_logout() -> None:
    book = AccountBook(notify=True)
    book.set("alice", "acct")

    book.rename("alice", "alice_away")
    assert book.identity("alice_away", None, None, {}).account == "acct"
    book.set("alice_away", "*")
    assert book.identity("alice_away", None, None, {}).account is None


def test_nick_candidates_start_with_configured() -> None:
    candidates = nick_candidates("thehat", ["hatbot"])

    assert candidates[:5] == ["thehat", "hatbot", "thehat_", "thehat__", "thehat___"]
    assert len(candidates) == len(set(candidates))


def test_redact_hides_every_password_form() -> None:
    lines = ["PASS s3cret", "AUTHENTICATE czNjcmV0", "PRIVMSG NickServ :IDENTIFY hat s3cret",
             "privmsg nickserv :identify s3cret"]

    for line in lines:
        assert "s3cret" not in redact(line)
        assert "czNjcmV0" not in redact(line)


# -- the summary after an absence --------------------------------------------------------------

WHEN = datetime(2026, 12, 5, 2, 0, tzinfo=timezone.utc)


def event(kind: EventKind, step: str | None = None, actor: str | None = "alice",
          **detail: object) -> Event:
    return Event(kind, WHEN, actor, step, detail)


def test_summary_of_real_event_lines() -> None:
    lines = event_lines([
        event(EventKind.STEP_FINISHED, "openbread"),
        event(EventKind.STEP_READY, "selectslice", owner=None, groups=["food"]),
        event(EventKind.STEP_FINISHED, "gettoaster", actor="bob"),
        event(EventKind.STEP_READY, "preptoaster", owner="bob"),
        event(EventKind.STEP_STARTED, "selectslice"),
        event(EventKind.STEP_FINISHED, "selectslice"),
        event(EventKind.OWNER_CHANGED, "toastbread", new="carol"),
    ])

    summary = summarize(lines, 12.3)

    assert summary == ("Back after 12 s; meanwhile: 1 step started, 3 finished; ready now: "
                       "preptoaster (bob); also: Owner of step toastbread is now carol (set "
                       "by alice).")


def test_summary_of_failure_and_end() -> None:
    lines = event_lines([
        event(EventKind.REVERSION_STARTED, "toastbread", in_progress=[]),
        event(EventKind.STEP_FAILED, "toastbread"),
        event(EventKind.STEP_READY, "insertslice", owner="alice", reverting=True),
        event(EventKind.STEP_REVERTED, "insertslice"),
        event(EventKind.FLOW_ENDED, None, reverting=True, counts={}),
    ])

    summary = summarize(lines, 65)

    assert summary.startswith("Back after 1 min 5 s; meanwhile: ")
    assert "1 step failed, 1 reverted" in summary
    assert "step toastbread FAILED and the flow is reverting" in summary
    assert "to revert now" not in summary
    assert "the flow ended" in summary


def test_summary_when_nothing_happened() -> None:
    assert summarize([], 3) == "Back after 3 s; nothing changed meanwhile."


def test_summary_quotes_at_most_five_unknown_lines() -> None:
    summary = summarize([f"note {i}" for i in range(8)], 1)

    assert "note 4" in summary
    assert "note 5" not in summary
    assert "(and 3 more lines)" in summary


def test_away_log_measures_time_and_resets() -> None:
    now = [100.0]
    log = AwayLog(clock=lambda: now[0])
    log.start()
    now[0] = 112.0
    log.start()  # a second loss keeps the first start
    log.add(["** Flow ended **"])
    now[0] = 130.0

    assert log.finish() == "Back after 30 s; meanwhile: the flow ended."
    assert log.away is False
    assert log.lines == []


# -- capability negotiation and SASL -----------------------------------------------------------


class RecordingConnection:
    """Stands in for the library connection: records the commands CapNegotiation sends."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def cap(self, subcommand: str, *arguments: str) -> None:
        self.sent.append(" ".join(["CAP", subcommand, *arguments]))

    def send_items(self, *items: str) -> None:
        self.sent.append(" ".join(items))


def test_cap_requests_offered_identity_capabilities() -> None:
    connection = RecordingConnection()
    done: list[set[str]] = []
    negotiation = CapNegotiation(connection, None, done.append)

    negotiation.on_cap(["LS", "*", "multi-prefix account-notify"])
    negotiation.on_cap(["LS", "extended-join sasl=PLAIN"])
    negotiation.on_cap(["ACK", "account-notify extended-join"])

    assert connection.sent == ["CAP REQ account-notify extended-join", "CAP END"]
    assert done == [{"account-notify", "extended-join"}]


def test_cap_ends_at_once_when_nothing_useful_is_offered() -> None:
    connection = RecordingConnection()
    negotiation = CapNegotiation(connection, None)

    negotiation.on_cap(["LS", "multi-prefix"])

    assert connection.sent == ["CAP END"]
    assert negotiation.done


def test_sasl_plain_login() -> None:
    connection = RecordingConnection()
    sasl = SaslConfig("hatacct", Secret("pa55word"))
    negotiation = CapNegotiation(connection, sasl)

    negotiation.on_cap(["LS", "sasl=PLAIN,EXTERNAL account-tag"])
    negotiation.on_cap(["ACK", "account-tag sasl"])
    negotiation.on_authenticate("+")
    negotiation.on_numeric("loggedin", ["thehat!u@h", "hatacct", "You are now logged in"])
    negotiation.on_numeric("saslsuccess", ["SASL authentication successful"])

    payload = base64.b64encode(b"hatacct\0hatacct\0pa55word").decode()
    assert connection.sent == ["CAP REQ account-tag sasl", "AUTHENTICATE PLAIN",
                               f"AUTHENTICATE {payload}", "CAP END"]
    assert negotiation.account == "hatacct"


def test_sasl_payload_of_400_bytes_ends_with_plus() -> None:
    connection = RecordingConnection()
    # 3 + 1 + 3 + 1 + 292 bytes = 300 bytes, which base64 turns into exactly 400 characters.
    negotiation = CapNegotiation(connection, SaslConfig("abc", Secret("p" * 292)))
    negotiation.on_cap(["LS", "sasl"])
    negotiation.on_cap(["ACK", "sasl"])

    negotiation.on_authenticate("+")

    chunks = [line.split(" ", 1)[1] for line in connection.sent
              if line.startswith("AUTHENTICATE ") and line != "AUTHENTICATE PLAIN"]
    assert [len(chunk) for chunk in chunks] == [400, 1]
    assert chunks[1] == "+"


def test_sasl_failure_goes_on_without_login(caplog: pytest.LogCaptureFixture) -> None:
    connection = RecordingConnection()
    negotiation = CapNegotiation(connection, SaslConfig("hatacct", Secret("wrong-pw")))
    negotiation.on_cap(["LS", "sasl"])
    negotiation.on_cap(["ACK", "sasl"])
    negotiation.on_authenticate("+")

    negotiation.on_numeric("saslfail", ["SASL authentication failed"])

    assert connection.sent[-1] == "CAP END"
    assert negotiation.account is None
    assert "SASL login to account hatacct failed: SASL authentication failed" in caplog.text
    assert "wrong-pw" not in caplog.text


def test_sasl_not_offered_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    connection = RecordingConnection()
    negotiation = CapNegotiation(connection, SaslConfig("hatacct", Secret("pw")))

    negotiation.on_cap(["LS", "account-tag"])

    assert connection.sent == ["CAP REQ account-tag"]
    assert "the server does not offer SASL" in caplog.text


def test_cap_refused_ends_negotiation() -> None:
    connection = RecordingConnection()
    negotiation = CapNegotiation(connection, None)
    negotiation.on_cap(["LS", "account-tag"])

    negotiation.on_cap(["NAK", "account-tag"])

    assert connection.sent == ["CAP REQ account-tag", "CAP END"]
