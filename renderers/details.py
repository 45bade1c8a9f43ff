"""The details of a step that the graph labels and the calendar descriptions show.

Both views list the same fields under the same names, so they are built once here.
"""

from __future__ import annotations

import re
from datetime import tzinfo
from typing import Final
from urllib.parse import quote, urlsplit

from thehat.engine import RunStep
from thehat.status import format_time

LINK_SCHEMES: Final = frozenset({"http", "https", "mailto"})

# C0 and C1 control characters except tab and line feed, DEL, and lone surrogates. None of
# them is allowed in XML 1.0 (SVG) or in iCalendar TEXT values, and NUL ends a C string in dot.
_UNPRINTABLE: Final = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")

# Characters kept as they are in a link: RFC 3986 unreserved and reserved characters plus `%`,
# so an already percent-encoded link is not encoded twice.
_URL_SAFE: Final = "-._~:/?#[]@!$&'()*+,;=%"

# The WHATWG URL standard, which browsers follow, strips C0 controls and spaces from both ends
# of a link and removes tabs and line feeds anywhere in it before it reads the scheme.
_URL_EDGE: Final = "".join(map(chr, range(0x21)))
_URL_REMOVED: Final = re.compile("[\t\n\r]")


def clean_text(text: str) -> str:
    """Return `text` with line ends made `\\n` and unprintable characters replaced by U+FFFD.

    >>> clean_text("a\\r\\nb\\rc\\x00d")
    'a\\nb\\nc\\ufffdd'
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _UNPRINTABLE.sub("\ufffd", text)


def step_fields(step: RunStep, zone: tzinfo | None = None) -> list[tuple[str, str]]:
    """List the (label, value) pairs that describe `step`, each only when it has a value.

    The labels are those of the original TheHat's graph: Name, Description, Owner, Start cmd,
    Finish cmd, Notif(start), Notif(fin), the start, finish, failure and reversion times, and
    Group(s). Times are formatted in `zone` (None: the local zone).
    """
    definition = step.definition
    fields = [("Name", step.name)]
    if definition.description:
        fields.append(("Description", definition.description))
    if step.owner:
        fields.append(("Owner", step.owner))
    if definition.start_command:
        fields.append(("Start cmd", definition.start_command))
    if definition.finish_command:
        fields.append(("Finish cmd", definition.finish_command))
    if definition.notify_at_start:
        fields.append(("Notif(start)", ", ".join(definition.notify_at_start)))
    if definition.notify_at_finish:
        fields.append(("Notif(fin)", ", ".join(definition.notify_at_finish)))
    for label, moment in (("Started at", step.started_at), ("Finished at", step.finished_at),
                          ("Failed at", step.failed_at), ("Reverted at", step.reverted_at)):
        if moment is not None:
            fields.append((label, format_time(moment, zone)))
    if definition.groups:
        fields.append(("Group(s)", ", ".join(definition.groups)))
    return [(label, clean_text(value)) for label, value in fields]


def safe_link(url: str | None, schemes: frozenset[str] = LINK_SCHEMES) -> str | None:
    """Return `url` percent-encoded if its scheme is in `schemes`, else None.

    Spaces, quotes, angle brackets, backslashes and non-ASCII characters are percent-encoded,
    so the result can go into any quoted attribute once `&` is escaped.

    >>> safe_link("https://wiki.example/Upgrade plan?a=1&b=\\"2\\"")
    'https://wiki.example/Upgrade%20plan?a=1&b=%222%22'
    >>> safe_link("javascript:alert(1)") is None, safe_link("JavaScript:x") is None
    (True, True)
    >>> safe_link("mailto:ops@example.org"), safe_link("wiki/page")
    ('mailto:ops@example.org', None)
    """
    if not url:
        return None
    # Done as a browser does it, so that " java\tscript:" is seen as the script it is.
    url = _URL_REMOVED.sub("", url.strip(_URL_EDGE))
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return None
    if scheme not in schemes:
        return None
    return quote(clean_text(url), safe=_URL_SAFE, errors="replace")
