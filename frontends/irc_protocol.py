"""IRC protocol rules the frontend relies on, as pure functions and small records.

Nothing here touches a socket or the `irc` library. The module covers case mapping, lines
addressed to the bot, the byte budget of one message, the server's ISUPPORT and CAP features,
and the services accounts of the people the bot can see.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

log = logging.getLogger(__name__)

# RFC 2812 section 2.3: a message is at most 512 bytes, CR LF included.
MAX_LINE_BYTES: Final = 512
# Until the server echoes the bot's own user and host, assume long ones: 10 characters of
# user name (USERLEN on most servers, "~" included) and 63 of host (the longest DNS label;
# cloaked hosts are usually shorter).
ASSUMED_USER_LENGTH: Final = 10
ASSUMED_HOST_LENGTH: Final = 63

# ISUPPORT CASEMAPPING values and the characters each folds besides A-Z. RFC 2812 section
# 2.2: "{}|^" are the lower case of "[]\~", and that is the default when a server sends no
# CASEMAPPING. strict-rfc1459 leaves "~" and "^" apart.
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = "abcdefghijklmnopqrstuvwxyz"
CASEMAPPINGS: Final = {
    "ascii": str.maketrans(_UPPER, _LOWER),
    "rfc1459": str.maketrans(_UPPER + "[]\\~", _LOWER + "{}|^"),
    "strict-rfc1459": str.maketrans(_UPPER + "[]\\", _LOWER + "{}|"),
}
DEFAULT_CASEMAPPING: Final = "rfc1459"

# IRCv3 capabilities the frontend requests when the server offers them.
IDENTITY_CAPABILITIES: Final = ("account-tag", "account-notify", "extended-join")
SASL_CAPABILITY: Final = "sasl"

# Separators that may follow the bot's name at the start of an addressed line.
ADDRESS_SEPARATORS: Final = ":, \t"


def irc_lower(text: str, casemapping: str = DEFAULT_CASEMAPPING) -> str:
    """Fold `text` to lower case as the server compares nicknames and channel names.

    Unknown case mappings (such as rfc7613) fall back to Unicode case folding.

    >>> irc_lower("Alice[Away]"), irc_lower("Alice[Away]", "ascii")
    ('alice{away}', 'alice[away]')
    """
    table = CASEMAPPINGS.get(casemapping)
    if table is None:
        return text.casefold()
    return text.translate(table)


def addressed_command(text: str, names: Iterable[str],
                      casemapping: str = DEFAULT_CASEMAPPING) -> str | None:
    """Return the command of a line that starts with one of `names`, else None.

    The name must start the line and be followed by the end of the line or by `:`, `,` or
    whitespace; the command is what follows those separators ("" for the bare name).
    Names are compared as the server compares nicknames.

    >>> addressed_command("Hat: gimme x", ["hat"]), addressed_command("hat", ["hat"])
    ('gimme x', '')
    >>> addressed_command("hatter: hi", ["hat"]) is None, addressed_command("a hat: x", ["hat"])
    (True, None)
    """
    folded_text = irc_lower(text, casemapping)
    # Longest first, so that an alias that extends another one wins.
    for name in sorted(set(names), key=len, reverse=True):
        folded = irc_lower(name, casemapping)
        if not folded or not folded_text.startswith(folded):
            continue
        rest = text[len(name):]
        if rest and rest[0] not in ADDRESS_SEPARATORS:
            continue
        return rest.lstrip(ADDRESS_SEPARATORS).strip()
    return None


def text_limit(nick: str, user: str | None, host: str | None, target: str) -> int:
    """Return the most UTF-8 bytes of text one PRIVMSG to `target` may carry.

    The server relays the message as `:nick!user@host PRIVMSG target :text` CR LF, and that
    whole line must stay within MAX_LINE_BYTES. Unknown user and host count as long ones.

    >>> text_limit("hat", "~hat", "127.0.0.1", "#ops")
    476
    """
    user_length = len(user.encode()) if user else ASSUMED_USER_LENGTH
    host_length = len(host.encode()) if host else ASSUMED_HOST_LENGTH
    prefix = (1 + len(nick.encode()) + 1 + user_length + 1 + host_length
              + len(" PRIVMSG ") + len(target.encode()) + len(" :"))
    return MAX_LINE_BYTES - prefix - len("\r\n")


@dataclass
class ServerSupport:
    """The features from the server's ISUPPORT (005) lines that the frontend uses."""

    casemapping: str = DEFAULT_CASEMAPPING
    nicklen: int | None = None
    whox: bool = False

    def update(self, tokens: Sequence[str]) -> None:
        """Read `NAME=value` and `NAME` tokens of one 005 line (the trailing text excluded)."""
        for token in tokens:
            name, _, value = token.partition("=")
            name = name.upper()
            if name == "CASEMAPPING" and value:
                self.casemapping = value.lower()
            elif name == "NICKLEN" and value.isdigit():
                self.nicklen = int(value)
            elif name == "WHOX":
                self.whox = True
            elif name == "-WHOX":
                self.whox = False


def parse_capabilities(text: str) -> dict[str, str]:
    """Parse a CAP LS list into capability names and values (empty when there is none).

    >>> parse_capabilities("multi-prefix sasl=PLAIN,EXTERNAL account-tag")
    {'multi-prefix': '', 'sasl': 'PLAIN,EXTERNAL', 'account-tag': ''}
    """
    capabilities = {}
    for item in text.split():
        name, _, value = item.partition("=")
        capabilities[name] = value
    return capabilities


@dataclass(frozen=True)
class IrcIdentity:
    """The sender of a message: nick, user and host as the server shows them, and the services
    account when the server sent it.

    `verified` is True when the server vouched for `account` at the time of the message: an
    `account` message tag, or an account learnt from a JOIN or WHO that account-notify has
    kept current since. An account learnt without account-notify may be out of date, so it is
    not verified. Without services (ngircd, for one) `account` is None and `verified` False.
    """

    nick: str
    user: str | None = None
    host: str | None = None
    account: str | None = None
    verified: bool = False


@dataclass
class AccountBook:
    """The services accounts of the nicks the bot has seen, as far as the server reports them.

    Keys are nicks folded with the server's case mapping. A value of None means "known to be
    logged out"; a missing key means "unknown".
    """

    casemapping: str = DEFAULT_CASEMAPPING
    # Whether the server sends account-notify messages, and account tags on messages.
    notify: bool = False
    tagged: bool = False
    accounts: dict[str, str | None] = field(default_factory=dict)
    # The channels (folded) each nick shares with the bot.
    channels: dict[str, set[str]] = field(default_factory=dict)

    def _key(self, nick: str) -> str:
        return irc_lower(nick, self.casemapping)

    def set(self, nick: str, account: str | None) -> None:
        """Record `account` for `nick`; `*` and `0` (the protocol's "none") mean None."""
        if account in ("*", "0", ""):
            account = None
        self.accounts[self._key(nick)] = account

    def forget(self, nick: str) -> None:
        self.accounts.pop(self._key(nick), None)
        self.channels.pop(self._key(nick), None)

    def rename(self, old: str, new: str) -> None:
        if self._key(old) in self.accounts:
            self.accounts[self._key(new)] = self.accounts.pop(self._key(old))
        if self._key(old) in self.channels:
            self.channels[self._key(new)] = self.channels.pop(self._key(old))

    def clear(self) -> None:
        self.accounts.clear()
        self.channels.clear()

    def joined(self, nick: str, channel: str) -> None:
        """Record that `nick` is in `channel`, a channel the bot is in."""
        self.channels.setdefault(self._key(nick), set()).add(self._key(channel))

    def left(self, nick: str, channel: str) -> None:
        """Record that `nick` left `channel`, and forget them when no channel is shared any
        more. The server then stops reporting their nick and account changes to the bot."""
        key = self._key(nick)
        shared = self.channels.get(key)
        if shared is None:
            return
        shared.discard(self._key(channel))
        if not shared:
            self.forget(nick)

    def bot_left(self, channel: str) -> None:
        """Record that the bot left `channel`, so it no longer shares it with anyone."""
        for nick in list(self.channels):
            self.left(nick, channel)

    def identity(self, nick: str, user: str | None, host: str | None,
                 tags: Mapping[str, str | None]) -> IrcIdentity:
        """Return the identity of the sender of a message with these message `tags`."""
        account_tag = tags.get("account")
        if account_tag:
            self.set(nick, account_tag)
            return IrcIdentity(nick, user, host, account_tag, verified=True)
        if self.tagged:
            # With account-tag on, a message without the tag comes from someone logged out.
            self.set(nick, None)
            return IrcIdentity(nick, user, host)
        account = self.accounts.get(self._key(nick))
        # account-notify keeps an account current only while the bot shares a channel with
        # its user, so an account of someone in no shared channel may be out of date.
        shared = bool(self.channels.get(self._key(nick)))
        return IrcIdentity(nick, user, host, account,
                           verified=account is not None and self.notify and shared)


def nick_candidates(nick: str, altnicks: Sequence[str], extra: int = 20) -> list[str]:
    """Return the nicks to try in order when the configured one is in use.

    After the configured alternatives come the nick with one to three `_` appended, then the
    nick cut to 6 characters with a number, for servers whose NICKLEN is short (9 is the
    RFC 2812 minimum that ngircd keeps by default).

    >>> nick_candidates("thehat", ["hatbot"], extra=2)
    ['thehat', 'hatbot', 'thehat_', 'thehat__', 'thehat___', 'thehat1', 'thehat2']
    """
    candidates = [nick, *altnicks, nick + "_", nick + "__", nick + "___"]
    candidates.extend(f"{nick[:6]}{number}" for number in range(1, extra + 1))
    unique: list[str] = []
    for candidate in candidates:
        if candidate not in unique:
            unique.append(candidate)
    return unique
