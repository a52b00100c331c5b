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
import time
import uuid

from app.core.context import ServiceContext
from app.forgetting.execution import claim_next, execute_request, recover_expired, warm_up
from app.observability.logs import bind_log_context, log_context

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
    """Claims and runs requests one at a time. Shutdown is graceful: ``request_stop`` stops
    claiming at once; the request in hand may finish during ``shutdown_grace_s``, after
    which it is interrupted at its next checkpoint and released back to the queue."""

    def __init__(self, ctx: ServiceContext, notifier: Notifier, poll_interval: float = 1.0,
                 worker_id: str | None = None):
        self.ctx = ctx
        self.notifier = notifier  # wakes us when a request is filed
        self.done = Notifier()  # we wake waiters when a request finishes
        self.poll_interval = poll_interval
        self.worker_id = worker_id or make_worker_id()
        self._stop = threading.Event()
        self._cancel = threading.Event()  # interrupt the request in hand and release it
        self.warmed_up = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_recovery = 0.0

    def recover(self) -> int:
        """Requeue (or fail) requests of vanished workers; at most once a second."""
        now = time.monotonic()
        if now - self._last_recovery < min(1.0, self.ctx.settings.lease_s / 2):
            return 0
        self._last_recovery = now
        return recover_expired(self.ctx, self.worker_id)

    def run_once(self) -> bool:
        """Claim and execute one request; False if the queue was empty."""
        if self.recover():
            self.done.notify()
        if self._stop.is_set():
            return False
        request_id = claim_next(self.ctx, self.worker_id)
        if request_id is None:
            return False
        self.done.notify()
        with log_context(forget_request_id=request_id):
            execute_request(self.ctx, request_id, self.worker_id, cancel=self._cancel)
        self.done.notify()
        return True

    def run_forever(self) -> None:
        bind_log_context(worker_id=self.worker_id)  # on every line this thread logs
        warm_up(self.ctx)
        self.warmed_up.set()
        logger.info("worker %s ready", self.worker_id)
        while not self._stop.is_set():
            since = self.notifier.generation
            try:
                if self.run_once():
                    continue
            except Exception:  # database briefly unreachable: log, back off, go on
                logger.exception("worker loop error")
            # Woken when a request is filed here, and at least every poll interval for
            # requests filed by other processes and leases to recover.
            self.notifier.wait(since, self.poll_interval)
        logger.info("worker %s stopped", self.worker_id)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run_forever, name="unlearn-worker",
                                        daemon=True)
        self._thread.start()

    def request_stop(self, grace_s: float | None = None) -> None:
        """Stop claiming now; release the request in hand if it is still running after
        ``grace_s`` (default: the shutdown_grace_s setting). Safe in a signal handler."""
        grace = self.ctx.settings.shutdown_grace_s if grace_s is None else grace_s
        self._stop.set()
        self.notifier.notify()
        if grace <= 0:
            self._cancel.set()
        else:
            timer = threading.Timer(grace, self._cancel.set)
            timer.daemon = True
            timer.start()

    def stop(self, grace_s: float | None = None, timeout: float = 30.0) -> None:
        """Graceful stop of the worker thread (see ``request_stop``), then wait for it."""
        self.request_stop(grace_s)
        if self._thread is not None:
            grace = self.ctx.settings.shutdown_grace_s if grace_s is None else grace_s
            self._thread.join(grace + timeout)
