"""The `limits` section: how much one speaker and one flow may ask of the daemon.

A speaker may send `commandBurst` commands at once and then `commandsPerMinute` a minute (a
token bucket per speaker); the terminal is not limited. A command line may be at most
`maxLineLength` characters. A flow may have at most `maxFlowSteps` steps and its file at most
`maxFlowBytes` bytes. Every limit has a default, so the section is optional; 0 turns the
command rate limit off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from thehat.errors import ConfigError

SECTION: Final = "limits"
# The largest flow file the loader reads at all; maxFlowBytes may only lower it. That is about
# 70,000 steps of 230 bytes (every key written out).
# NOTE: files outside the plain layout of thehat.flowscan go through PyYAML's pure-Python
# parser, which reads roughly 0.25 MB/s (an estimate from one machine), so such a file near
# this limit takes about a minute to load.
HARD_MAX_FLOW_BYTES: Final = 16 * 1024 * 1024
KEYS: Final = frozenset({"commandsPerMinute", "commandBurst", "maxLineLength", "maxFlowSteps",
                         "maxFlowBytes"})


@dataclass(frozen=True)
class Limits:
    """The parsed `limits` section, with its defaults."""

    commands_per_minute: int = 60
    command_burst: int = 20
    max_line_length: int = 4096
    max_flow_steps: int = 50_000
    max_flow_bytes: int = HARD_MAX_FLOW_BYTES


def parse_limits_section(section: Any, source: str) -> Limits:
    """Validate the `limits` section; ConfigError names the key, its value and the range."""
    from frontends.config_values import mapping_value

    if section is None:
        return Limits()
    mapping_value(section, SECTION, KEYS, source)
    values: dict[str, int] = {}
    ranges = {
        "commandsPerMinute": ("commands_per_minute", 0, 100_000),
        "commandBurst": ("command_burst", 1, 100_000),
        "maxLineLength": ("max_line_length", 16, 1_000_000),
        "maxFlowSteps": ("max_flow_steps", 1, 1_000_000),
        "maxFlowBytes": ("max_flow_bytes", 1, HARD_MAX_FLOW_BYTES),
    }
    for key, (field_name, low, high) in ranges.items():
        if section.get(key) is not None:
            values[field_name] = _whole_number(section[key], f"{SECTION}.{key}", low, high,
                                               source)
    return Limits(**values)


def _whole_number(value: Any, key: str, low: int, high: int, source: str) -> int:
    try:
        number = int(str(value).strip().replace("_", ""))
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise ConfigError(f"{source}: {key} is {value!r}; use a whole number from {low:,} "
                          f"to {high:,}")
    return number


class RateLimiter:
    """A token bucket per speaker: `burst` commands at once, then `per_minute` a minute.

    `now` values are monotonic seconds from the caller, so tests need no sleeping.
    """

    # Buckets kept before the full ones are dropped, so many passing speakers cost little.
    MAX_BUCKETS: Final = 10_000

    def __init__(self, per_minute: int, burst: int) -> None:
        self.per_second = per_minute / 60.0
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        # When each speaker's current wait ends, so a flood gets one reply per wait.
        self._wait_ends: dict[str, float] = {}

    @property
    def enabled(self) -> bool:
        return self.per_second > 0

    def take(self, key: str, now: float) -> float:
        """Take one command for `key`; return 0, or the seconds to wait before the next one."""
        if not self.enabled:
            return 0.0
        tokens, then = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - then) * self.per_second)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return max(0.1, (1.0 - tokens) / self.per_second)
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > self.MAX_BUCKETS:
            self._drop_full(now)
        return 0.0

    def tell(self, key: str, now: float, wait: float) -> bool:
        """Tell whether to reply to `key`'s refused command: once until the wait is over."""
        if self._wait_ends.get(key, 0.0) > now:
            return False
        if len(self._wait_ends) > self.MAX_BUCKETS:
            self._wait_ends = {k: end for k, end in self._wait_ends.items() if end > now}
        self._wait_ends[key] = now + wait
        return True

    def _drop_full(self, now: float) -> None:
        """Forget the speakers whose buckets have filled up again."""
        for key, (tokens, then) in list(self._buckets.items()):
            if tokens + (now - then) * self.per_second >= self.burst:
                del self._buckets[key]


def wait_words(seconds: float) -> str:
    """Say a short wait in words.

    >>> wait_words(0.3), wait_words(1.2), wait_words(75)
    ('1 second', '2 seconds', '75 seconds')
    """
    whole = max(1, math.ceil(seconds))
    return f"{whole} second" if whole == 1 else f"{whole} seconds"
