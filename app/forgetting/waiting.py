"""``?wait=true`` without holding a thread.

A waiting call is a coroutine: between short database reads (each a brief trip to the
thread pool) it sleeps on the event loop, so forty waiting callers cost forty coroutines,
not forty of the thread pool's workers that every synchronous route and dependency
(the API-key check included) shares. It wakes early when the embedded worker reports a
finished request, or when PostgreSQL's finish notification arrives from a worker in
another process (``app.forget_requests.finished``): either changes the ``Notifier``
generation. Without a notification it re-reads the row every ``reread_s``
(``UNLEARN_WAIT_POLL_S``): SQLite has no cross-process signal, and a listener may be
reconnecting.

``WaitSlots`` bounds how many calls one API key may hold waiting at once: a caller over
the bound gets the ``202`` answer at once, as without ``wait``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

T = TypeVar("T")

WAKE_CHECK_S = 0.05  # how often a waiter looks at the embedded worker's notifier


class WaitSlots:
    """Held waits per key. Only the event loop thread touches it, so no lock is needed."""

    def __init__(self, per_key: int):
        self.per_key = per_key
        self._held: dict[str, int] = {}

    def try_acquire(self, key: str) -> bool:
        held = self._held.get(key, 0)
        if held >= self.per_key:
            return False
        self._held[key] = held + 1
        return True

    def release(self, key: str) -> None:
        held = self._held.get(key, 0) - 1
        if held <= 0:
            self._held.pop(key, None)
        else:
            self._held[key] = held

    def held(self, key: str) -> int:
        return self._held.get(key, 0)


async def wait_until(read: Callable[[], T], finished: Callable[[T], bool], notifier,
                     timeout_s: float, reread_s: float = 0.5) -> T:
    """Call ``read`` (blocking, short: run on the thread pool) until ``finished`` says so
    or ``timeout_s`` passes; return the last value read. Between reads, wait for the
    notifier or ``reread_s``, whichever comes first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        since = notifier.generation
        current = await run_in_threadpool(read)
        now = loop.time()
        if finished(current) or now >= deadline:
            return current
        reread_at = min(deadline, now + reread_s)
        while notifier.generation == since and loop.time() < reread_at:
            await asyncio.sleep(min(WAKE_CHECK_S, max(0.0, reread_at - loop.time())))
