"""Shared test helpers: a controllable clock and the toast flow built in code."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from frontends.base import Conversation
from thehat.model import Flow, StepDef


class FakeClock:
    """A clock that moves only when a test says so."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 12, 5, 2, 0, tzinfo=timezone.utc)

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


# The toast flow in the file order of the original example, which the reversion walk relies on.
TOAST_STEPS = [
    ("adjusttoasting", "Adjust toaster to desired toasting level", ["hardware"], ["gettoaster"]),
    ("insertslice", "Place bread in toaster", ["food"], ["gettoaster", "selectslice"]),
    ("selectslice", "Remove slice of bread from bag", ["food"], ["openbread"]),
    ("removetoast", "Remove toast from toaster", ["food"], ["toastbread"]),
    ("preptoaster", "Plug toaster into wall socket", ["hardware"], ["gettoaster"]),
    ("openbread", "Open bread bag", ["food"], []),
    ("gettoaster", "Get toaster out of storage", ["hardware"], []),
    ("toastbread", "Activate toaster", ["food", "hardware"],
     ["insertslice", "adjusttoasting", "preptoaster"]),
]


def toast_flow() -> Flow:
    return Flow(StepDef(name, description=description, groups=tuple(groups), gates=tuple(gates))
                for name, description, groups, gates in TOAST_STEPS)


class MemoryConversation(Conversation):
    """A conversation that keeps what the daemon sends it."""

    def __init__(self, conversation_id: str) -> None:
        self.id = conversation_id
        self.medium = conversation_id.split(":")[0]
        self.received: list[str] = []

    async def send(self, lines: Sequence[str]) -> None:
        self.received.extend(lines)
