"""The exception hierarchy of thehat.

Every error a user can cause derives from `TheHatError` and carries a message that can be shown
to that user as it is. Anything else that escapes is a bug: frontends reply with a short generic
line and the traceback goes to the log.
"""

from __future__ import annotations

from dataclasses import dataclass


class TheHatError(Exception):
    """Base class of every expected, user-facing error."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a flow definition, located as precisely as the source allows."""

    message: str
    line: int | None = None
    step: str | None = None

    def describe(self, source: str | None = None) -> str:
        """Format the problem as `source:line: step 'x': message`.

        >>> Problem("gate 'b' names a missing step", line=4, step="a").describe("toast.flow")
        "toast.flow:4: step 'a': gate 'b' names a missing step"
        """
        where = []
        if source is not None:
            where.append(source if self.line is None else f"{source}:{self.line}")
        elif self.line is not None:
            where.append(f"line {self.line}")
        if self.step is not None:
            where.append(f"step {self.step!r}")
        return ": ".join(where + [self.message])


class FlowError(TheHatError):
    """A flow definition, or an edit of one, is invalid.

    `problems` lists every problem found, so a user can fix them all in one pass.
    """

    def __init__(self, problems: list[Problem], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__("\n".join(p.describe(source) for p in self.problems))


class ConfigError(TheHatError):
    """The configuration file is unreadable or a key in it has an invalid value."""


class CommandError(TheHatError):
    """A command was understood but cannot be carried out; the message gives the reason."""


class Refusal(CommandError):
    """The engine rejected a state or ownership change (not owner, gated, wrong direction, ...)."""
