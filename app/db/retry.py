"""Retrying writes that a database blip should not fail.

Progress and heartbeat writes are small and idempotent: when the database is briefly
unreachable (connection refused or dropped, pool timeout) they are retried with a short
backoff instead of aborting the work they report on. ``is_transient`` is also what the
API maps to ``503`` (app.api.errors).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

T = TypeVar("T")
logger = logging.getLogger("unlearn.db")

TRANSIENT_ERRORS = (OperationalError, InterfaceError, PoolTimeoutError, DisconnectionError)


def is_transient(error: BaseException) -> bool:
    """A lost or unreachable database, as opposed to a bad statement or bad data."""
    if isinstance(error, TRANSIENT_ERRORS):
        return True
    return isinstance(error, DBAPIError) and bool(error.connection_invalidated)


def retry_transient(operation: Callable[[], T], *, attempts: int = 4,
                    first_delay_s: float = 0.2, max_delay_s: float = 2.0,
                    what: str = "database write",
                    sleep: Callable[[float], None] = time.sleep) -> T:
    """Run ``operation``; on a transient error retry up to ``attempts`` times in all,
    doubling the delay; the last error is raised. Other errors are raised at once."""
    delay = first_delay_s
    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except Exception as error:
            if not is_transient(error) or attempt == attempts:
                raise
            logger.warning("%s failed (%s), retry %d/%d in %.1fs", what,
                           type(error).__name__, attempt, attempts - 1, delay)
            sleep(delay)
            delay = min(max_delay_s, delay * 2)
    raise AssertionError("unreachable")
