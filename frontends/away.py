"""What a conversation missed while the bot was away, summed up in one line when it is back.

While a chat connection is down, the lines the daemon sends to a conversation cannot be
delivered. A frontend keeps them in an `AwayLog` and, once it is back in the conversation,
posts `AwayLog.summary`: counts of state changes, the failure, the steps that are ready now
with their owners (so that owners are highlighted), the end of the flow, and the other lines
as they were. The log recognises the event lines that `thehat.status.event_lines` writes; a
line it does not recognise is kept word for word.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

# Lines that are not recognised are quoted in the summary, at most this many.
MAX_QUOTED_LINES: Final = 5

_STATE_CHANGE = re.compile(r">>> (?P<actor>\S+) changed state of step (?P<step>\S+) "
                           r"to (?P<state>.+)")
_READY_OWNED = re.compile(r"Step (?P<step>\S+) is ready - (?P<owner>.+), it's yours\.")
_READY_FREE = re.compile(r"Step (?P<step>\S+) is ready and unassigned")
_REVERTABLE_OWNED = re.compile(r"Step (?P<step>\S+) can be reverted now - (?P<owner>.+), "
                               r"undo it and say ")
_REVERTABLE_FREE = re.compile(r"Step (?P<step>\S+) can be reverted now and is unassigned")
_FAILED = re.compile(r"!!! STEP (?P<step>\S+) FAILED - BEGINNING REVERSION PROCESS !!!")
_FAILURE_BANNER: Final = "!!!!! FLOW FAILURE !!!!!"
_FLOW_ENDED: Final = "** Flow ended **"

# State words of the ">>> ... changed state" lines, in the order the summary counts them.
_STATE_WORDS: Final = {"in prog": "started", "done": "finished", "failed": "failed",
                       "reverting": "reverting", "reverted": "reverted"}


def format_duration(seconds: float) -> str:
    """Format a duration for people, to the second.

    >>> format_duration(12.4), format_duration(185), format_duration(7260)
    ('12 s', '3 min 5 s', '2 h 1 min')
    """
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


@dataclass
class AwayLog:
    """The lines one conversation missed since `since` (a `clock` time), in order."""

    clock: Callable[[], float] = time.monotonic
    since: float | None = None
    lines: list[str] = field(default_factory=list)

    @property
    def away(self) -> bool:
        return self.since is not None

    def start(self) -> None:
        """Start collecting, unless already collecting since an earlier moment."""
        if self.since is None:
            self.since = self.clock()

    def add(self, lines: Sequence[str]) -> None:
        self.lines.extend(lines)

    def finish(self) -> str:
        """Return the summary line and forget what was collected."""
        seconds = 0.0 if self.since is None else self.clock() - self.since
        text = summarize(self.lines, seconds)
        self.since = None
        self.lines = []
        return text


def summarize(lines: Sequence[str], seconds: float) -> str:
    """Summarise the event lines missed during `seconds` in one line.

    >>> summarize([">>> bob changed state of step a to done",
    ...            "Step b is ready - alice, it's yours."], 12)
    'Back after 12 s; meanwhile: 1 step finished; ready now: b (alice).'
    """
    counts: dict[str, int] = {}
    ready: dict[str, str] = {}
    revertable: dict[str, str] = {}
    failed: list[str] = []
    ended = False
    quoted: list[str] = []
    for line in lines:
        if match := _STATE_CHANGE.fullmatch(line):
            word = _STATE_WORDS.get(match["state"], match["state"])
            counts[word] = counts.get(word, 0) + 1
            ready.pop(match["step"], None)
            revertable.pop(match["step"], None)
        elif match := _READY_OWNED.fullmatch(line):
            ready[match["step"]] = match["owner"]
        elif match := _READY_FREE.match(line):
            ready[match["step"]] = "unassigned"
        elif match := _REVERTABLE_OWNED.match(line):
            revertable[match["step"]] = match["owner"]
        elif match := _REVERTABLE_FREE.match(line):
            revertable[match["step"]] = "unassigned"
        elif match := _FAILED.fullmatch(line):
            failed.append(match["step"])
            # Steps ready to go forward are not ready any more once the flow turns around.
            ready.clear()
        elif line == _FAILURE_BANNER:
            continue
        elif line == _FLOW_ENDED:
            ended = True
        else:
            quoted.append(line)

    parts = []
    if counts:
        parts.append(_count_text(counts))
    for step in failed:
        parts.append(f"step {step} FAILED and the flow is reverting")
    if ready:
        parts.append("ready now: " + ", ".join(f"{step} ({owner})"
                                                for step, owner in ready.items()))
    if revertable:
        parts.append("to revert now: " + ", ".join(f"{step} ({owner})"
                                                    for step, owner in revertable.items()))
    if ended:
        parts.append("the flow ended")
    if quoted:
        shown = " | ".join(quoted[:MAX_QUOTED_LINES])
        more = len(quoted) - MAX_QUOTED_LINES
        parts.append(f"also: {shown}" + (f" (and {more} more lines)" if more > 0 else ""))
    head = f"Back after {format_duration(seconds)}"
    if not parts:
        return f"{head}; nothing changed meanwhile."
    return f"{head}; meanwhile: " + "; ".join(parts) + "."


def _count_text(counts: dict[str, int]) -> str:
    """Say how many steps changed to each state, in the order of `_STATE_WORDS`.

    >>> _count_text({"finished": 3, "started": 1})
    '1 step started, 3 finished'
    """
    order = list(_STATE_WORDS.values())
    words = sorted(counts, key=lambda word: order.index(word) if word in order else len(order))
    texts: list[str] = []
    for word in words:
        number = counts[word]
        if not texts:
            texts.append(f"{number} step{'s' if number != 1 else ''} {word}")
        else:
            texts.append(f"{number} {word}")
    return ", ".join(texts)
