"""Telling waiting API processes that a forget request has finished, on PostgreSQL.

A ``?wait=true`` call waits for a request that a worker in another process runs. Without a
signal it can only re-read the row now and then (``UNLEARN_WAIT_POLL_S``), so a request done
in 170 ms was answered after half a second. On PostgreSQL the move to a final status sends a
``NOTIFY`` in the same transaction (delivered at commit, never for a rolled-back move), and
each API process keeps one connection ``LISTEN``ing, which wakes its waiters at once. SQLite
has no such channel: there the waiters re-read (and the embedded executor wakes them
directly).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

CHANNEL = "unlearn_forget_request_finished"

logger = logging.getLogger("unlearn.waiting")


def announce_finished(session: Session, request_id: str) -> None:
    """Queue the notification in the caller's transaction (PostgreSQL only; sent at commit)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:channel, :request_id)"),
                        {"channel": CHANNEL, "request_id": request_id})


class FinishedListener:
    """One connection, in a thread, ``LISTEN``ing on ``CHANNEL``; calls ``on_finished(request_id)``
    for each notification. Reconnects after an error (a database restart): waiters fall back
    to re-reading meanwhile, so a lost connection delays answers, never loses them."""

    def __init__(self, database_url: str, on_finished: Callable[[str], None],
                 retry_s: float = 2.0):
        # psycopg takes the libpq URL: the SQLAlchemy one without its "+psycopg" driver.
        self._conninfo = make_url(database_url).set(drivername="postgresql") \
            .render_as_string(hide_password=False)
        self._on_finished = on_finished
        self._retry_s = retry_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="finished-listener",
                                        daemon=True)
        self.listening = threading.Event()  # set while LISTEN is in effect (tests wait on it)

    def start(self) -> FinishedListener:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True,
                                     connect_timeout=5) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    while not self._stop.is_set():
                        # A short timeout, so that stop() is honoured within a second.
                        for notice in connection.notifies(timeout=1.0):
                            self._on_finished(notice.payload)
            except Exception as error:  # connection lost: wait, then listen again
                self.listening.clear()
                if self._stop.is_set():
                    break
                logger.warning("finish notifications unavailable (%s); retrying in %.0f s",
                               error, self._retry_s)
                self._stop.wait(self._retry_s)
        self.listening.clear()
