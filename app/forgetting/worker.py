"""A worker loop that claims queued forget requests and executes them.

Runs as a thread inside the API process (the embedded default) or as the main loop of a
separate process. A ``Notifier`` lets the API wake the worker as soon as a request is
filed and lets waiting HTTP calls (``?wait=true``) return as soon as it finishes.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from app.core.context import ServiceContext
from app.forgetting.execution import claim_next, execute_request, warm_up

logger = logging.getLogger("unlearn.worker")


class Notifier:
    """An event counter. Read ``generation`` *before* checking for work, then
    ``wait(generation, timeout)``: a notification that lands in between is not lost."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generation = 0

    @property
    def generation(self) -> int:
        with self._condition:
            return self._generation

    def notify(self) -> None:
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def wait(self, since: int, timeout: float) -> None:
        with self._condition:
            self._condition.wait_for(lambda: self._generation != since, timeout)


def make_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(self, ctx: ServiceContext, notifier: Notifier, poll_interval: float = 1.0,
                 worker_id: str | None = None):
        self.ctx = ctx
        self.notifier = notifier  # wakes us when a request is filed
        self.done = Notifier()  # we wake waiters when a request finishes
        self.poll_interval = poll_interval
        self.worker_id = worker_id or make_worker_id()
        self._stop = threading.Event()
        self.warmed_up = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> bool:
        """Claim and execute one request; False if the queue was empty."""
        request_id = claim_next(self.ctx, self.worker_id)
        if request_id is None:
            return False
        self.done.notify()
        execute_request(self.ctx, request_id, self.worker_id)
        self.done.notify()
        return True

    def run_forever(self) -> None:
        logger.info("worker %s started", self.worker_id)
        warm_up(self.ctx)
        self.warmed_up.set()
        while not self._stop.is_set():
            since = self.notifier.generation
            try:
                if self.run_once():
                    continue
            except Exception:  # database briefly unreachable: log, back off, go on
                logger.exception("worker loop error")
            self.notifier.wait(since, self.poll_interval)
        logger.info("worker %s stopped", self.worker_id)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run_forever, name="unlearn-worker",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming; the request in hand (if any) finishes first."""
        self._stop.set()
        self.notifier.notify()
        if self._thread is not None:
            self._thread.join(timeout)
