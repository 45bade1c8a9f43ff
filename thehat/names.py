"""Rules for the names users type: step and group names, and close-match suggestions."""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Iterable

NAME_PUNCTUATION = frozenset("_-.")
# Scripts whose letters look alike; one name may use letters of only one of them.
LOOK_ALIKE_SCRIPTS = frozenset({"LATIN", "GREEK", "CYRILLIC"})


def name_problem(name: str, kind: str = "step name") -> str | None:
    """Return why `name` cannot be a step or group name, or None when it is fine.

    Names are typed in chat and split on commas and whitespace, so they may contain only
    letters, digits, `_`, `-` and `.` (letters and digits of any script).

    >>> name_problem("db-upgrade_1.2") is None
    True
    >>> name_problem("pre check")
    "invalid step name 'pre check': ' ' (U+0020) is not allowed; use only letters, digits, '_', '-' and '.'"
    """
    if name == "":
        return f"empty {kind}; give it a name of letters, digits, '_', '-' or '.'"
    for char in name:
        if not (char.isalnum() or char in NAME_PUNCTUATION):
            return (
                f"invalid {kind} {name!r}: {char!r} (U+{ord(char):04X}) is not allowed; "
                "use only letters, digits, '_', '-' and '.'"
            )
    return mixed_script_problem(name, kind)


def mixed_script_problem(name: str, kind: str) -> str | None:
    """Return why `name` mixes Latin, Greek and Cyrillic letters, or None when it does not.

    Such a name can look exactly like another one (a Cyrillic 'е' in 'openbrеad').

    >>> mixed_script_problem("openbr\u0435ad", "step name")
    "invalid step name 'openbrеad': 'е' (U+0435 CYRILLIC SMALL LETTER IE) mixes Cyrillic with Latin letters, so the name can look like another; type it in one script"
    """
    first: str | None = None
    for char in name:
        script = unicodedata.name(char, "").split(" ", 1)[0]
        if script not in LOOK_ALIKE_SCRIPTS:
            continue
        if first is None:
            first = script
        elif script != first:
            return (f"invalid {kind} {name!r}: {char!r} (U+{ord(char):04X} "
                    f"{unicodedata.name(char)}) mixes {script.title()} with {first.title()} "
                    "letters, so the name can look like another; type it in one script")
    return None


def close_matches(word: str, candidates: Iterable[str], limit: int = 3) -> list[str]:
    """Return up to `limit` candidates that look like `word`, best first.

    Case is ignored when comparing, so `Gimme` finds `gimme`.

    >>> close_matches("toastbraed", ["toastbread", "openbread", "removetoast"])
    ['toastbread']
    """
    by_folded: dict[str, str] = {}
    for candidate in candidates:
        by_folded.setdefault(candidate.casefold(), candidate)
    found = difflib.get_close_matches(word.casefold(), list(by_folded), n=limit, cutoff=0.6)
    return [by_folded[f] for f in found]


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """Return ` (did you mean 'x'?)` for the closest candidates, or an empty string.

    >>> did_you_mean("strat", ["start", "status", "reverted"])
    " (did you mean 'start' or 'status'?)"
    """
    matches = close_matches(word, candidates)
    if not matches:
        return ""
    return " (did you mean " + " or ".join(repr(m) for m in matches) + "?)"
