"""The events a run emits: past-tense facts, declared once here.

The engine returns a list of `Event` for every change it applies. The daemon stores them, replies
to the speaker, prompts the attached conversations and marks renderings stale from them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class EventKind(enum.Enum):
    """What happened. Values are the snake_case names used in logs, the store and the web site."""

    FLOW_LOADED = "flow_loaded"
    STEP_READY = "step_ready"
    STEP_STARTED = "step_started"
    STEP_FINISHED = "step_finished"
    STEP_FAILED = "step_failed"
    STEP_REVERTING = "step_reverting"
    STEP_REVERTED = "step_reverted"
    OWNER_CHANGED = "owner_changed"
    REVERSION_STARTED = "reversion_started"
    FLOW_ENDED = "flow_ended"
    STEP_ADDED = "step_added"
    STEP_REMOVED = "step_removed"
    STEP_EDITED = "step_edited"


@dataclass(frozen=True, slots=True)
class Event:
    """One fact about a run.

    `actor` is the identity that caused it (a user, or a clock or program owner), `step` the step
    it concerns, if any. `detail` holds kind-specific values:

    - step_ready: `reverting` (True when the step is now due for reversion), `owner`, `groups`,
      `revert_command` (True when the step has one);
    - owner_changed: `old`, `new`;
    - reversion_started: `in_progress` (list of [step, owner] pairs that must stop);
    - step_edited: `field`, `old`, `new`;
    - step_removed: `dependants` (steps whose gate on it was dropped);
    - flow_ended: `reverting`, `counts` (state value -> number of steps).
    """

    kind: EventKind
    time: datetime
    actor: str | None = None
    step: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
