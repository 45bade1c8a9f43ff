"""The outbox: splitting under a byte limit, the token bucket, joining, order, pause and resume.

The outbox runs here with a list as its medium. Its pacing against a real server's flood
control is tested in test_irc.py (300 lines through ngircd's default throttling).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from frontends.outbox import (
    JOINER,
    PRIVATE_BACKLOG,
    Outbox,
    Rate,
    TokenBucket,
    TransmitError,
    split_first,
    split_text,
)

LIMIT = 40


class Medium:
    """Records what the outbox transmits, with the time of each message."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []
        self.times: list[float] = []
        self.fail_next = 0

    def transmit(self, target: str, text: str) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise TransmitError("connection lost")
        self.messages.append((target, text))
        self.times.append(time.monotonic())

    def texts(self, target: str | None = None) -> list[str]:
        return [text for t, text in self.messages if target is None or t == target]


@pytest.fixture
def medium() -> Medium:
    return Medium()


@pytest.fixture
async def start_outbox(medium: Medium) -> AsyncIterator[Callable[..., Outbox]]:
    tasks: list[asyncio.Task[None]] = []

    def start(rate: Rate, limit: int = LIMIT) -> Outbox:
        outbox = Outbox(medium.transmit, lambda target: limit, rate)
        tasks.append(asyncio.create_task(outbox.run()))
        return outbox

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# -- splitting ----------------------------------------------------------------------------------


def test_split_at_last_space_that_fits() -> None:
    assert split_first("alpha beta gamma", 12) == ("alpha beta", "gamma")


def test_split_without_space_cuts_at_character_boundary() -> None:
    text = "€" * 10  # 3 bytes each

    head, rest = split_first(text, 10)

    assert head == "€" * 3
    assert rest == "€" * 7


def test_split_never_returns_pieces_over_limit() -> None:
    text = "Grüße aus Köln, 日本語のテキスト, emoji 🎉🎉🎉 " * 20

    pieces = split_text(text, 50)

    assert all(len(piece.encode()) <= 50 for piece in pieces)
    assert " ".join(pieces) == text


def test_split_rejects_limit_below_one_character() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        split_first("abc", 3)


@given(st.text(min_size=1, max_size=300), st.integers(min_value=4, max_value=64))
def test_split_keeps_every_character(text: str, limit: int) -> None:
    head, rest = split_first(text, limit)

    assert len(head.encode("utf-8")) <= limit
    # Splitting at a space drops exactly that space; any other cut drops nothing.
    assert text in (head + rest, head + " " + rest)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1,
               max_size=400), st.integers(min_value=4, max_value=80))
def test_split_text_pieces_are_valid_and_bounded(text: str, limit: int) -> None:
    pieces = split_text(text, limit)

    for piece in pieces:
        data = piece.encode("utf-8")
        assert len(data) <= limit
        assert data.decode("utf-8") == piece


# -- token bucket -------------------------------------------------------------------------------


def test_bucket_allows_burst_then_interval() -> None:
    now = [0.0]
    bucket = TokenBucket(Rate(burst=3, interval=2.0), clock=lambda: now[0])

    taken = [bucket.take() for _ in range(4)]

    assert taken == [True, True, True, False]
    assert bucket.wait_time() == pytest.approx(2.0)
    now[0] = 2.0
    assert bucket.take() is True


def test_bucket_charge_goes_into_debt() -> None:
    now = [0.0]
    bucket = TokenBucket(Rate(burst=2, interval=1.0), clock=lambda: now[0])

    bucket.charge(4)

    assert bucket.wait_time() == pytest.approx(3.0)


def test_bucket_refill_stops_at_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(Rate(burst=2, interval=1.0), clock=lambda: now[0])
    now[0] = 100.0

    assert bucket.tokens == 2


def test_bucket_without_interval_is_unlimited() -> None:
    bucket = TokenBucket(Rate(burst=1, interval=0))

    assert all(bucket.take() for _ in range(1000))


@pytest.mark.parametrize("burst, interval", [(0, 1.0), (1, -1.0)])
def test_rate_rejects_invalid_values(burst: int, interval: float) -> None:
    with pytest.raises(ValueError):
        Rate(burst, interval)


# -- the outbox ---------------------------------------------------------------------------------


async def test_outbox_keeps_order_across_targets(start_outbox: Callable[..., Outbox],
                                                 medium: Medium) -> None:
    outbox = start_outbox(Rate(burst=100, interval=0.001))

    outbox.put("#a", ["a1", "a2"])
    outbox.put("#b", ["b1"])
    outbox.put("#a", ["a3"])
    assert await outbox.drain(5)

    assert medium.messages == [("#a", "a1"), ("#a", "a2"), ("#b", "b1"), ("#a", "a3")]


async def test_outbox_sends_burst_then_paces(start_outbox: Callable[..., Outbox],
                                             medium: Medium) -> None:
    outbox = start_outbox(Rate(burst=3, interval=0.1))

    outbox.put("#a", [f"line {i}" for i in range(7)], joinable=False)
    assert await outbox.drain(5)

    assert medium.texts() == [f"line {i}" for i in range(7)]
    gaps = [later - earlier for earlier, later in zip(medium.times, medium.times[1:])]
    assert max(gaps[:2]) < 0.05, "the burst goes out at once"
    assert min(gaps[2:]) >= 0.09, "after the burst, one message per interval"


async def test_outbox_joins_lines_that_would_wait(start_outbox: Callable[..., Outbox],
                                                  medium: Medium) -> None:
    outbox = start_outbox(Rate(burst=3, interval=0.05), limit=60)
    lines = [f"event {i:02d}" for i in range(30)]

    outbox.put("#a", lines)
    assert await outbox.drain(5)

    texts = medium.texts()
    assert texts[:2] == ["event 00", "event 01"], "lines that need not wait stay alone"
    assert len(texts) < 10
    assert all(len(text.encode()) <= 60 for text in texts)
    assert [part for text in texts for part in text.split(JOINER)] == lines


async def test_outbox_never_joins_other_targets(start_outbox: Callable[..., Outbox],
                                                medium: Medium) -> None:
    outbox = start_outbox(Rate(burst=1, interval=0.02), limit=200)

    outbox.put("#a", ["a1", "a2"])
    outbox.put("#b", ["b1", "b2"])
    outbox.put("#a", ["a3"])
    assert await outbox.drain(5)

    assert medium.messages == [("#a", f"a1{JOINER}a2"), ("#b", f"b1{JOINER}b2"),
                               ("#a", "a3")]


async def test_outbox_keeps_unjoinable_lines_apart(start_outbox: Callable[..., Outbox],
                                                   medium: Medium) -> None:
    outbox = start_outbox(Rate(burst=1, interval=0.02), limit=200)

    outbox.put("#a", ["OWNER  STATE", "alice  pending"], joinable=False)
    assert await outbox.drain(5)

    assert medium.texts() == ["OWNER  STATE", "alice  pending"]


async def test_outbox_splits_long_line_in_order(start_outbox: Callable[..., Outbox],
                                                medium: Medium) -> None:
    outbox = start_outbox(Rate(burst=100, interval=0.001), limit=20)
    text = "Grüße " * 30

    outbox.put("#a", [text, "after"])
    assert await outbox.drain(5)

    texts = medium.texts()
    assert texts[-1] == "after"
    assert " ".join(texts[:-1]) == text
    assert all(len(t.encode()) <= 20 for t in texts)


async def test_outbox_drops_blank_lines(start_outbox: Callable[..., Outbox],
                                        medium: Medium) -> None:
    outbox = start_outbox(Rate(burst=100, interval=0.001))

    outbox.put("#a", ["one", "", "   ", "two"])
    assert await outbox.drain(5)

    assert medium.texts() == ["one", "two"]


async def test_outbox_pause_holds_and_resume_sends(start_outbox: Callable[..., Outbox],
                                                   medium: Medium) -> None:
    outbox = start_outbox(Rate(burst=100, interval=0.001))
    outbox.pause()

    outbox.put("#a", ["held"])
    assert not await outbox.drain(0.2)
    assert medium.messages == []

    outbox.resume()
    assert await outbox.drain(5)
    assert medium.texts() == ["held"]


async def test_outbox_requeues_on_transmit_error(start_outbox: Callable[..., Outbox],
                                                 medium: Medium) -> None:
    outbox = start_outbox(Rate(burst=100, interval=0.001))
    medium.fail_next = 1

    outbox.put("#a", ["first", "second"], joinable=False)
    await asyncio.sleep(0.1)

    assert outbox.paused
    assert outbox.pending == 2
    outbox.resume()
    assert await outbox.drain(5)
    assert medium.texts() == ["first", "second"]


async def test_outbox_clear_drops_queue(start_outbox: Callable[..., Outbox],
                                        medium: Medium) -> None:
    outbox = start_outbox(Rate(burst=100, interval=0.001))
    outbox.pause()
    outbox.put("#a", ["one", "two"])

    assert outbox.clear() == 2
    assert await outbox.drain(1)


async def test_lines_of_different_puts_never_joined() -> None:
    sent: list[tuple[str, str]] = []
    outbox = Outbox(lambda target, text: sent.append((target, text)), lambda target: 400,
                    Rate(burst=1, interval=0.01))
    outbox.put("#ops", ["row one", "row two"])
    outbox.put("#ops", [">>> event"])
    runner = asyncio.create_task(outbox.run())
    try:
        assert await outbox.drain(5)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert [text for _, text in sent] == ["row one | row two", ">>> event"]


def test_hold_private_notice_once() -> None:
    outbox = Outbox(lambda target, text: None, lambda target: 400)
    outbox.put("bob", [f"line {number}" for number in range(PRIVATE_BACKLOG - 1)])
    assert outbox.hold_private("bob") == 0

    outbox.put("bob", ["one more"])
    assert outbox.hold_private("bob") == PRIVATE_BACKLOG
    assert outbox.hold_private("bob") == PRIVATE_BACKLOG + 1
    assert outbox.queued("bob") == PRIVATE_BACKLOG + 1
    assert outbox.hold_private("#ops") == 0
    outbox.clear()
    assert outbox.hold_private("bob") == 0
    outbox.put("bob", [f"line {number}" for number in range(PRIVATE_BACKLOG)])
    assert outbox.hold_private("bob") == PRIVATE_BACKLOG
    assert outbox.queued("bob") == PRIVATE_BACKLOG + 1
