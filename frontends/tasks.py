"""Background tasks of a chat frontend: kept referenced, crashes logged, cancelled on stop.

asyncio keeps only a weak reference to a task, so a frontend must keep its own. An exception
in a task that is never awaited would otherwise show up only when the task is collected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


def spawn(group: set[asyncio.Task[None]], coroutine: Coroutine[Any, Any, None],
          name: str) -> asyncio.Task[None]:
    """Start a task and keep it in `group` until it ends; log it if it fails."""
    task = asyncio.create_task(coroutine, name=name)
    group.add(task)
    task.add_done_callback(group.discard)
    task.add_done_callback(_log_failure)
    return task


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("task %s failed", task.get_name(), exc_info=task.exception())


async def cancel_all(group: set[asyncio.Task[None]]) -> None:
    """Cancel every task in `group` and wait until they have ended."""
    pending = list(group)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


class Waker:
    """A sleep that `wake` cuts short, so that stopping need not wait out a reconnect delay."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self._event.clear()
        try:
            await asyncio.wait_for(self._event.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def wake(self) -> None:
        self._event.set()
