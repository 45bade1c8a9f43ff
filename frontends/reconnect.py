"""When to reconnect after a chat connection is lost: a policy object that frontends are given.

A frontend gets from its `ReconnectStrategy` the delay before the next attempt, and reports
to it when a connection came up and when it went down. The policy does not depend on the
medium, so the IRC and XMPP frontends share it, and a deployment or a test can pass its own.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Final, Protocol

log = logging.getLogger(__name__)

DEFAULT_INITIAL_DELAY: Final = 2.0
DEFAULT_MAX_DELAY: Final = 300.0
DEFAULT_FACTOR: Final = 2.0
DEFAULT_JITTER: Final = 0.5
DEFAULT_STABLE_AFTER: Final = 60.0


class ReconnectStrategy(Protocol):
    """The policy a frontend consults between connection attempts."""

    def next_delay(self) -> float:
        """Return the seconds to wait before the next attempt, and count that attempt."""

    def connected(self) -> None:
        """Record that a connection attempt succeeded."""

    def disconnected(self) -> None:
        """Record that the connection was lost or an attempt failed."""


class ExponentialBackoff:
    """Exponential backoff with jitter and a cap, reset after a stable connection.

    The n-th delay in a row (n counted from 0) is `initial * factor**n`, capped at
    `max_delay`, then multiplied by a random factor between `1 - jitter` and 1. The jitter
    keeps many clients cut off by the same server restart from all coming back at once. A
    connection that stayed up for `stable_after` seconds or longer resets the count, so the
    next loss starts again at `initial`. A connection that drops sooner keeps the count, so a
    server that accepts and then closes at once is not hammered.

    >>> backoff = ExponentialBackoff(initial=1, max_delay=5, jitter=0)
    >>> [backoff.next_delay() for _ in range(5)]
    [1.0, 2.0, 4.0, 5.0, 5.0]
    """

    def __init__(self, initial: float = DEFAULT_INITIAL_DELAY,
                 max_delay: float = DEFAULT_MAX_DELAY, *, factor: float = DEFAULT_FACTOR,
                 jitter: float = DEFAULT_JITTER, stable_after: float = DEFAULT_STABLE_AFTER,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        if initial <= 0 or max_delay < initial:
            raise ValueError(f"invalid backoff delays: initial {initial!r} s must be above 0 "
                             f"and at most max_delay {max_delay!r} s")
        if factor < 1:
            raise ValueError(f"invalid backoff factor {factor!r}: use 1 or more")
        if not 0 <= jitter <= 1:
            raise ValueError(f"invalid backoff jitter {jitter!r}: use a fraction from 0 to 1")
        self.initial = float(initial)
        self.max_delay = float(max_delay)
        self.factor = float(factor)
        self.jitter = float(jitter)
        self.stable_after = float(stable_after)
        self.attempts = 0
        self._clock = clock
        self._rng = rng or random.Random()
        self._connected_at: float | None = None

    def next_delay(self) -> float:
        # The exponent is bounded so that a long outage cannot overflow the float.
        exponent = min(self.attempts, 64)
        delay = min(self.max_delay, self.initial * self.factor ** exponent)
        self.attempts += 1
        if self.jitter:
            delay *= 1 - self.jitter * self._rng.random()
        return delay

    def connected(self) -> None:
        self._connected_at = self._clock()

    def disconnected(self) -> None:
        if self._connected_at is None:
            return
        lasted = self._clock() - self._connected_at
        self._connected_at = None
        if lasted >= self.stable_after:
            log.debug("connection lasted %.0f s, so the backoff starts over", lasted)
            self.attempts = 0
