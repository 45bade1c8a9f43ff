"""Pure helpers of the XMPP frontend: who spoke, which lines are commands, message packing.

Nothing here touches the network or imports slixmpp, so these rules are tested on their own.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from frontends.outbox import split_text

# Ids of sent messages remembered to recognise the room's echo of them. The room reflects a
# message within milliseconds, so this only has to cover the messages of a few seconds.
MAX_SENT_IDS: Final = 4096
# Elements whose text is a credential: SASL <auth> and <response> (RFC 6120 section 6.4) and
# the <password> of in-band registration (XEP-0077) and legacy login (XEP-0078). With SASL
# PLAIN, <auth> contains the base64 of the account and the password.
_CREDENTIAL_ELEMENT: Final = re.compile(r"(<(auth|response|password)\b[^>]*>)[^<]*(</\2>)")


@dataclass(frozen=True)
class XmppIdentity:
    """Who sent a message: the room nick, and the real bare JID when it is known.

    `verified` is true when the server vouches for `jid`: the room disclosed the occupant's
    real JID (a non-anonymous room, or the bot is a moderator of a semi-anonymous one), or
    the message came straight from the sender's account. A nick alone is never verified,
    because anyone may take a free nick in a room.
    """

    nick: str
    jid: str | None = None
    verified: bool = False


def addressed_command(text: str, names: Sequence[str]) -> str | None:
    """Return the command in a line addressed to one of `names`, or None if not addressed.

    A line is addressed when it starts with a name followed by `:`, `,`, whitespace or
    nothing; names compare without case. The bare name returns an empty command.

    >>> addressed_command("thehat: gimme toast", ["thehat"])
    'gimme toast'
    >>> addressed_command("Hat, status", ["thehat", "hat"]), addressed_command("hat", ["hat"])
    ('status', '')
    >>> addressed_command("thehats are nice", ["thehat"]) is None
    True
    >>> addressed_command("ask thehat: status", ["thehat"]) is None
    True
    """
    stripped = text.strip()
    folded = stripped.casefold()
    # The longest name first, so that "hat" does not take the line "hatbot: status".
    for name in sorted(names, key=len, reverse=True):
        key = name.casefold()
        if not folded.startswith(key):
            continue
        rest = stripped[len(name):]
        if not rest:
            return ""
        match = re.match(r"[:,]|\s", rest)
        if match:
            return rest[match.end():].lstrip(":, \t").strip()
    return None


def pack_lines(lines: Iterable[str], limit: int) -> list[str]:
    """Join lines into messages of at most `limit` UTF-8 bytes, breaking only between lines.

    A single line longer than `limit` is split at spaces (see `outbox.split_text`).
    Blank lines inside a reply are kept, blank lines at the ends are dropped.

    >>> pack_lines(["one", "two", "three"], 8)
    ['one\\ntwo', 'three']
    >>> pack_lines(["a long line here"], 8)
    ['a long', 'line', 'here']
    """
    messages: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        for piece in (split_text(line, limit) if line else [""]):
            extra = len(piece.encode("utf-8")) + (1 if current else 0)
            if current and size + extra > limit:
                messages.append("\n".join(current))
                current, size = [], 0
                extra = len(piece.encode("utf-8"))
            current.append(piece)
            size += extra
    if current:
        messages.append("\n".join(current))
    return [message.strip("\n") for message in messages if message.strip()]


class SentIds:
    """The ids of the newest messages the bot sent, to recognise the room's echo of them.

    >>> sent = SentIds(maximum=2)
    >>> for name in ("a", "b", "c"):
    ...     sent.add(name)
    >>> "a" in sent, "c" in sent
    (False, True)
    """

    def __init__(self, maximum: int = MAX_SENT_IDS) -> None:
        self.maximum = maximum
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, stanza_id: str) -> None:
        self._ids[stanza_id] = None
        while len(self._ids) > self.maximum:
            self._ids.popitem(last=False)

    def __contains__(self, stanza_id: object) -> bool:
        return stanza_id in self._ids


def clean_text(text: str) -> str:
    """Remove characters that XML 1.0 cannot carry, so that a stanza is never invalid.

    >>> clean_text("ok\\x00\\x07 done\\tnow")
    'ok done\\tnow'
    """
    return "".join(char for char in text if _xml_character(ord(char)))


def _xml_character(code: int) -> bool:
    # XML 1.0 section 2.2: tab, line feed, carriage return, then U+0020 up to U+10FFFF
    # without the surrogates, U+FFFE and U+FFFF.
    return (code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD
            or 0x10000 <= code <= 0x10FFFF)


def redact_credentials(xml: str) -> str:
    """Replace the text of every element that carries a credential by `***`, for the log.

    >>> redact_credentials('<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">'
    ...                    'AGhhdABodW50ZXIy</auth>')
    '<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">***</auth>'
    >>> redact_credentials("<message><body>the auth is fine</body></message>")
    '<message><body>the auth is fine</body></message>'
    """
    return _CREDENTIAL_ELEMENT.sub(r"\1***\3", xml)
