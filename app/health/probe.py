"""Readiness checks on their own connection and their own thread.

``/readyz`` must answer while the request thread pool or the request connection pool is
exhausted (a probe that queues behind the traffic it is meant to judge gets the pod
restarted for nothing). So the check runs on a dedicated one-thread executor with an
unpooled engine of its own (a fresh connection per check, nothing to exhaust), and the
route awaits it with a timeout: a database that hangs is reported as unreachable.
Concurrent probes share the check in flight instead of queueing more.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future, ThreadPoolExecutor

from sqlalchemy.pool import NullPool

from app.db.migrations import migration_status
from app.db.session import make_engine


class ReadinessProbe:
    def __init__(self, database_url: str, timeout_s: float):
        self.timeout_s = timeout_s
        self._engine = make_engine(database_url, poolclass=NullPool)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="readiness")
        self._in_flight: Future | None = None

    def _check(self) -> tuple[str | None, str | None]:
        return migration_status(self._engine)

    async def migration_status(self) -> tuple[str | None, str | None]:
        """(current, head) revisions; raises on an unreachable database or a timeout."""
        if self._in_flight is None or self._in_flight.done():
            self._in_flight = self._executor.submit(self._check)
        return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(self._in_flight)),
                                      self.timeout_s)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._engine.dispose()
