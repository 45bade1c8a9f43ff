"""Outgoing chat messages, paced so that a server never throttles or disconnects the bot.

One `Outbox` serves one connection. Frontends put lines for a target (a channel, a room, a
person) into it, and its sender task hands them to a `transmit(target, text)` callable at the
pace of a token bucket. The outbox depends on the chat medium only through two callables,
so IRC and XMPP share it:

- Order is kept: lines leave in the order they were put, across all targets.
- Long lines are split to fit `limit(target)` bytes of UTF-8, at a space when there is one,
  and never inside a character.
- Lines that would have to wait for the rate are joined: a message that takes the bucket's
  last token also takes the next joinable lines of the same `put` for the same target,
  separated by " | ", up to the byte limit. A short reply goes out line by line at once, and
  a long one goes out as a few full messages instead of hundreds of short ones.
- `pause` keeps every line queued (for example while the connection is down) and `resume` sends
  them on.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

log = logging.getLogger(__name__)

JOINER: Final = " | "
# Lines queued for one private conversation above which its commands wait. The outbox is one
# queue for every target, so without it one person could delay every channel's replies by
# asking for long ones in private.
PRIVATE_BACKLOG: Final = 40
# Lines of one reply sent to a private conversation; the rest is summed up in one line.
PRIVATE_REPLY_LINES: Final = 60
BACKLOG_LINE: Final = ("Your earlier replies are still being sent, so this command was not "
                       "run; send it again once they have arrived.")
# The longest UTF-8 encoding of one character, so the smallest usable byte limit.
MAX_CHARACTER_BYTES: Final = 4


def private_reply(lines: list[str]) -> list[str]:
    """Return `lines` cut to PRIVATE_REPLY_LINES for a private conversation, the last line
    saying how many more there were, so one private reply cannot hold up every channel.

    >>> private_reply([f"line {n}" for n in range(100)])[-1]
    '41 more lines were not sent here, so that other conversations are not held up; ask in a channel or see the status web page.'
    """
    if len(lines) <= PRIVATE_REPLY_LINES:
        return lines
    kept = PRIVATE_REPLY_LINES - 1
    return [*lines[:kept], f"{len(lines) - kept} more lines were not sent here, so that other "
                           "conversations are not held up; ask in a channel or see the status "
                           "web page."]


class TransmitError(Exception):
    """Raised by a `transmit` callable when the message could not be handed to the medium.

    The outbox puts the message back at the front of its queue and pauses until `resume`.
    """


@dataclass(frozen=True)
class Rate:
    """A token bucket: `burst` messages at once, then one message every `interval` seconds.

    An `interval` of 0 turns the limit off. The defaults stay under the server flood control
    of RFC 1459 section 8.10 (2 seconds of penalty per message, reading stops 10 seconds
    ahead, so 5 messages at once) with one message to spare. They also stay under ngircd 26's
    default throttling, measured at 4 lines at once and then 3 lines a second.
    """

    burst: int = 4
    interval: float = 2.0

    def __post_init__(self) -> None:
        if self.burst < 1:
            raise ValueError(f"invalid burst {self.burst!r}: use 1 or more messages")
        if self.interval < 0:
            raise ValueError(f"invalid interval {self.interval!r}: use 0 or more seconds")


class TokenBucket:
    """The tokens of a `Rate`, refilled by the clock; the balance may go below zero.

    A negative balance records messages sent outside the bucket (`charge`), which the next
    messages then wait for.

    >>> now = [0.0]
    >>> bucket = TokenBucket(Rate(burst=2, interval=1.0), clock=lambda: now[0])
    >>> bucket.take(), bucket.take(), bucket.wait_time()
    (True, True, 1.0)
    >>> now[0] = 0.5
    >>> bucket.take(), bucket.wait_time()
    (False, 0.5)
    """

    def __init__(self, rate: Rate, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._tokens = float(rate.burst)
        self._updated = clock()

    @property
    def tokens(self) -> float:
        """The tokens available now; infinite when the rate has no interval."""
        if self.rate.interval == 0:
            return float("inf")
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(float(self.rate.burst), self._tokens + elapsed / self.rate.interval)
        self._updated = now
        return self._tokens

    def wait_time(self) -> float:
        """Return the seconds until one token is available (0 when one is available now)."""
        missing = 1.0 - self.tokens
        return 0.0 if missing <= 0 else missing * self.rate.interval

    def take(self) -> bool:
        """Take one token if one is available now, and tell whether it was taken."""
        if self.tokens < 1:
            return False
        self.charge(1)
        return True

    def charge(self, count: int = 1) -> None:
        """Take `count` tokens whether or not they are available."""
        if self.rate.interval == 0:
            return
        self._tokens = self.tokens - count


def split_first(text: str, limit: int) -> tuple[str, str]:
    """Split `text` into a head of at most `limit` UTF-8 bytes and the rest.

    The cut is at the last space that fits, which is dropped, or else at the last character
    boundary that fits. Raises ValueError when `limit` is below MAX_CHARACTER_BYTES, because
    a character might not fit at all.

    >>> split_first("one two three", 9)
    ('one two', 'three')
    >>> split_first("ääää", 5)
    ('ää', 'ää')
    """
    if limit < MAX_CHARACTER_BYTES:
        raise ValueError(f"invalid byte limit {limit}: it must be at least "
                         f"{MAX_CHARACTER_BYTES} so that any character fits")
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text, ""
    cut = limit
    # Bytes of the form 0b10xxxxxx continue a character, so a cut before one splits it.
    while data[cut] & 0xC0 == 0x80:
        cut -= 1
    space = data.rfind(b" ", 0, cut + 1)
    if space > 0:
        return data[:space].decode("utf-8"), data[space + 1:].decode("utf-8")
    return data[:cut].decode("utf-8"), data[cut:].decode("utf-8")


def split_text(text: str, limit: int) -> list[str]:
    """Split `text` into pieces of at most `limit` UTF-8 bytes each, as `split_first` does.

    >>> split_text("one two three four", 9)
    ['one two', 'three', 'four']
    """
    pieces = []
    while True:
        head, text = split_first(text, limit)
        pieces.append(head)
        if not text:
            return pieces


@dataclass
class _Item:
    target: str
    text: str
    joinable: bool
    # Lines are joined only with lines of the same `put`, so the rest of one reply is never
    # stuck onto the start of the next.
    batch: int


class Outbox:
    """The paced queue of outgoing messages of one connection.

    `transmit(target, text)` sends one message; it may raise TransmitError. `limit(target)`
    returns the most UTF-8 bytes of text that one message to that target may carry. Start
    the sender with `run` in a task of its own; cancel the task to stop it.
    """

    def __init__(self, transmit: Callable[[str, str], None], limit: Callable[[str], int],
                 rate: Rate | None = None, *, clock: Callable[[], float] = time.monotonic,
                 joiner: str = JOINER) -> None:
        self._transmit = transmit
        self._limit = limit
        self.bucket = TokenBucket(rate or Rate(), clock)
        self.joiner = joiner
        self._queue: deque[_Item] = deque()
        self._paused = False
        self._changed = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._batches = itertools.count()
        self.sent = 0
        # Private conversations whose held command has had the backlog notice.
        self._held: set[str] = set()

    @property
    def pending(self) -> int:
        """The number of queued lines (or pieces of lines) not yet sent."""
        return len(self._queue)

    @property
    def paused(self) -> bool:
        return self._paused

    def queued(self, target: str) -> int:
        """Return the number of lines (or pieces of lines) queued for `target`."""
        return sum(1 for item in self._queue if item.target == target)

    def hold_private(self, target: str) -> int:
        """Return the lines still queued for private conversation `target` when its next
        command must wait for them (PRIVATE_BACKLOG or more), else 0.

        The first held command of a backlog queues BACKLOG_LINE for `target`; the next ones
        get nothing, until a command is let through again.
        """
        queued = self.queued(target)
        if queued < PRIVATE_BACKLOG:
            self._held.discard(target)
            return 0
        if target not in self._held:
            self._held.add(target)
            self.put(target, [BACKLOG_LINE], joinable=False)
        return queued

    def put(self, target: str, lines: Iterable[str], *, joinable: bool = True) -> None:
        """Queue `lines` for `target`, in order. Blank lines are dropped.

        With `joinable` False, each line goes out as a message of its own (split if too
        long), and no other line is ever joined to it.
        """
        count = 0
        batch = next(self._batches)
        for line in lines:
            if line.strip():
                self._queue.append(_Item(target, line, joinable, batch))
                count += 1
        if count:
            self._empty.clear()
            self._changed.set()

    def pause(self) -> None:
        """Hold every queued and future line until `resume`."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._changed.set()

    def clear(self) -> int:
        """Drop every queued line and return how many there were."""
        count = len(self._queue)
        self._queue.clear()
        self._empty.set()
        return count

    def charge(self, count: int = 1) -> None:
        """Count `count` messages sent around the outbox (JOIN, for example) against the rate."""
        self.bucket.charge(count)

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued line is sent; return False if `timeout` seconds ran out."""
        try:
            await asyncio.wait_for(self._empty.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def run(self) -> None:
        """Send queued lines at the bucket's pace until cancelled."""
        while True:
            if self._paused or not self._queue:
                self._changed.clear()
                await self._changed.wait()
                continue
            delay = self.bucket.wait_time()
            if delay > 0:
                await self._sleep_or_change(delay)
                continue
            self._send_one()

    async def _sleep_or_change(self, delay: float) -> None:
        # Wake early on pause or resume, so a paused outbox never sends after its sleep.
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), delay)
        except asyncio.TimeoutError:
            pass

    def _send_one(self) -> None:
        join = self.bucket.tokens < 2
        target, text = self._next_message(join)
        self.bucket.take()
        try:
            self._transmit(target, text)
        except TransmitError as exc:
            log.warning("sending to %s failed (%s); holding %d lines until the connection "
                        "is back", target, exc, len(self._queue) + 1)
            self._queue.appendleft(_Item(target, text, False, -1))
            self._paused = True
            return
        self.sent += 1
        if not self._queue:
            self._empty.set()

    def _next_message(self, join: bool) -> tuple[str, str]:
        """Remove and return the next message: one line, a piece of one, or joined lines."""
        head = self._queue[0]
        limit = self._limit(head.target)
        piece, rest = split_first(head.text, limit)
        if rest:
            head.text = rest
            return head.target, piece
        self._queue.popleft()
        text = head.text
        if not (join and head.joinable):
            return head.target, text
        size = len(text.encode("utf-8"))
        separator = len(self.joiner.encode("utf-8"))
        while self._queue:
            following = self._queue[0]
            if (following.target != head.target or not following.joinable
                    or following.batch != head.batch):
                break
            extra = separator + len(following.text.encode("utf-8"))
            if size + extra > limit:
                break
            self._queue.popleft()
            text += self.joiner + following.text
            size += extra
        return head.target, text
