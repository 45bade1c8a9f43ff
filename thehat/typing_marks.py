"""Characters that editors, phones and chat clients slip into typed commands.

A command copied from a document or typed on a phone may carry a no-break space, curly quotes
or a dash where a hyphen was meant. The step `db-backup` is then not found, or worse, a new
step `db‐backup` is made that looks the same. `normalise_line` turns such look-alikes into the
plain character and notes what it changed. Characters that cannot be seen at all (zero-width
and direction marks) and control characters are refused, naming the character and where it is.
"""

from __future__ import annotations

import unicodedata
from typing import Final

from thehat.errors import CommandError

# Every space character but the ASCII one, read as a space.
SPACES: Final = frozenset("\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
                          "\u2009\u200a\u202f\u205f\u3000")
# Typographic quotes and look-alike hyphens, read as the ASCII character they stand for.
LOOK_ALIKES: Final = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
    "\u00ab": '"', "\u00bb": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
    "\u2212": "-", "\ufe58": "-", "\ufe63": "-", "\uff0d": "-", "\u2e3a": "-", "\u2e3b": "-",
    "\ufe31": "-", "\ufe32": "-", "\u058a": "-", "\u02d7": "-", "\u2043": "-", "\u1806": "-",
}
# Characters that show nothing, refused because they make equal-looking names differ.
INVISIBLE: Final = frozenset("\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b\u200c"
                             "\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2060\u2061"
                             "\u2062\u2063\u2064\u2066\u2067\u2068\u2069\u206a\u206b\u206c"
                             "\u206d\u206e\u206f\u3164\ufeff\uffa0\u180b\u180c\u180d\u180f"
                             + "".join(map(chr, range(0xFE00, 0xFE10)))
                             + "".join(map(chr, range(0xE0100, 0xE01F0))))


def describe(char: str) -> str:
    """Name a character for a message: its code point, its name and, if visible, itself.

    >>> describe("\\u2013"), describe("\\u200b")
    ("'–' (U+2013 EN DASH)", 'U+200B ZERO WIDTH SPACE')
    """
    name = unicodedata.name(char, "")
    if not name and unicodedata.category(char) == "Cc":
        name = "(control character)"
    label = f"U+{ord(char):04X}" + (f" {name}" if name else "")
    if char in INVISIBLE or char in SPACES or _is_control(char):
        return label
    return f"'{char}' ({label})"


def normalise_line(text: str, offset: int = 0) -> tuple[str, list[str]]:
    """Return `text` with look-alike characters made plain, and a note for each kind changed.

    No-break and other wide spaces become spaces without a note; quotes and dashes get a
    note, because they change what was typed. Raises CommandError for an invisible or control
    character, naming it and its position (counted from 1, plus `offset` characters that came
    before `text`).

    >>> normalise_line("finish db\\u2013backup")
    ('finish db-backup', ["Note: read '–' (U+2013 EN DASH) as '-'."])
    """
    changed: dict[str, str] = {}
    fullwidth: list[str] = []
    result: list[str] = []
    for position, char in enumerate(text, 1 + offset):
        if char in SPACES:
            result.append(" ")
        elif char in LOOK_ALIKES:
            changed.setdefault(char, LOOK_ALIKES[char])
            result.append(LOOK_ALIKES[char])
        elif "\uff01" <= char <= "\uff5e":
            # Fullwidth forms of ASCII characters sit 0xFEE0 above them.
            fullwidth.append(char)
            result.append(chr(ord(char) - 0xFEE0))
        elif char == "\t":
            result.append(char)
        elif char in "\r\n\v\f\x85\u2028\u2029":
            raise CommandError(f"The command has a line break at position {position}; send "
                               "one command per line or message.")
        elif char in INVISIBLE or _is_control(char):
            raise CommandError(f"The command has an invisible or control character, "
                               f"{describe(char)}, at position {position}; type the line "
                               "again without it (copying from documents or chats can add "
                               "such characters).")
        else:
            result.append(char)
    notes = [f"Note: read {describe(char)} as '{plain}'." for char, plain in changed.items()]
    if fullwidth:
        wide = "".join(dict.fromkeys(fullwidth))
        plain = "".join(chr(ord(char) - 0xFEE0) for char in wide)
        notes.append(f"Note: read the fullwidth characters '{wide}' as '{plain}'.")
    return "".join(result), notes


def _is_control(char: str) -> bool:
    """Control and format characters, lone surrogates, line and paragraph separators."""
    return unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp")
