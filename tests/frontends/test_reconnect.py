"""The reconnect policy: exponential growth, the cap, jitter, and the reset after a stable link.

The frontend's use of the policy against a real server that goes away is tested in
test_irc.py (server restart).
"""

from __future__ import annotations

import random

import pytest

from frontends.reconnect import ExponentialBackoff, ReconnectStrategy


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_up_to_cap() -> None:
    backoff = ExponentialBackoff(initial=1, max_delay=10, jitter=0)

    delays = [backoff.next_delay() for _ in range(7)]

    assert delays == [1, 2, 4, 8, 10, 10, 10]


def test_backoff_jitter_stays_in_range() -> None:
    backoff = ExponentialBackoff(initial=4, max_delay=4, jitter=0.5, rng=random.Random(7))

    delays = [backoff.next_delay() for _ in range(200)]

    assert min(delays) >= 2.0
    assert max(delays) <= 4.0
    assert len(set(delays)) > 100, "jitter should spread the delays"


def test_backoff_resets_after_stable_connection() -> None:
    clock = FakeClock()
    backoff = ExponentialBackoff(initial=1, max_delay=60, jitter=0, stable_after=30,
                                 clock=clock)
    for _ in range(4):
        backoff.next_delay()

    backoff.connected()
    clock.now += 31
    backoff.disconnected()

    assert backoff.next_delay() == 1


def test_backoff_keeps_growing_after_short_connection() -> None:
    clock = FakeClock()
    backoff = ExponentialBackoff(initial=1, max_delay=60, jitter=0, stable_after=30,
                                 clock=clock)
    for _ in range(3):
        backoff.next_delay()

    backoff.connected()
    clock.now += 5
    backoff.disconnected()

    assert backoff.next_delay() == 8


def test_backoff_failed_attempt_does_not_reset() -> None:
    backoff = ExponentialBackoff(initial=1, max_delay=60, jitter=0, stable_after=0)
    backoff.next_delay()

    # An attempt that never connected reports only the loss.
    backoff.disconnected()

    assert backoff.next_delay() == 2


def test_backoff_long_outage_does_not_overflow() -> None:
    backoff = ExponentialBackoff(initial=1, max_delay=300, jitter=0)

    for _ in range(2000):
        delay = backoff.next_delay()

    assert delay == 300


@pytest.mark.parametrize("arguments, message", [
    ({"initial": 0}, "initial"),
    ({"initial": 10, "max_delay": 5}, "max_delay"),
    ({"factor": 0.5}, "factor"),
    ({"jitter": 1.5}, "jitter"),
])
def test_backoff_rejects_invalid_settings(arguments: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExponentialBackoff(**arguments)


def test_backoff_is_a_reconnect_strategy() -> None:
    strategy: ReconnectStrategy = ExponentialBackoff()

    assert strategy.next_delay() > 0
