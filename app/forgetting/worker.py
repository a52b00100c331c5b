"""Who runs forget requests.

- SQLite (the embedded default): ``InProcessExecutor``, one thread inside the API process
  taking the oldest queued request. Only this process runs requests, so a request found
  'running' when it starts was left by a previous run that died: it is requeued. No
  leases, no heartbeats.
- PostgreSQL: procrastinate workers (``app.forgetting.jobs.JobWorker``), as ``unlearn
  worker`` processes and, with ``UNLEARN_EMBEDDED_WORKER``, on a thread inside the API.

A ``Notifier`` lets the API wake the executor as soon as a request is filed, and lets
waiting HTTP calls (``?wait=true``) return as soon as a request run in this process ends.
"""

from __future__ import annotations

import logging
import threading

from app.context import ServiceContext
from app.forgetting import execution
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


class InProcessExecutor:
    """Runs queued requests one at a time on a thread. Shutdown is graceful:
    ``request_stop`` stops taking requests at once; the request in hand may finish during
    ``shutdown_grace_s``, after which it stops at its next checkpoint and is released back
    to the queue."""

    def __init__(self, ctx: ServiceContext, notifier: Notifier, poll_interval: float = 1.0,
                 name: str | None = None):
        self.ctx = ctx
        self.notifier = notifier  # wakes us when a request is filed
        self.done = Notifier()  # we wake waiters when a request finishes
        self.poll_interval = poll_interval
        self.name = name or execution.process_name()
        self.current_execution: str | None = None
        self._stop = threading.Event()
        self._cancel = threading.Event()  # interrupt the request in hand and release it
        self.warmed_up = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> bool:
        """Take and execute one request; False if the queue was empty."""
        if self._stop.is_set():
            return False
        execution_id = execution.new_execution_id(self.name)
        request_id = execution.claim_next(self.ctx, execution_id)
        if request_id is None:
            return False
        self.current_execution = execution_id
        self.done.notify()
        try:
            with log_context(forget_request_id=request_id):
                execution.execute_request(self.ctx, request_id, execution_id,
                                          should_stop=self._cancel.is_set)
        finally:
            self.current_execution = None
            self.done.notify()
        return True

    def run_forever(self) -> None:
        bind_log_context(worker_id=self.name)  # on every line this thread logs
        try:
            if execution.requeue_orphans(self.ctx, f"worker:{self.name}"):
                self.done.notify()
        except Exception:  # database not migrated yet, say: requests will tell why
            logger.exception("could not requeue requests left running")
        execution.warm_up(self.ctx)
        self.warmed_up.set()
        logger.info("worker %s ready (in-process executor)", self.name)
        while not self._stop.is_set():
            since = self.notifier.generation
            try:
                if self.run_once():
                    continue
            except Exception:  # database briefly unavailable: log, back off, go on
                logger.exception("executor loop error")
            # Woken when a request is filed here, and at least every poll interval (a
            # request filed by the CLI or another tool on this database).
            self.notifier.wait(since, self.poll_interval)
        logger.info("worker %s stopped", self.name)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run_forever, name="unlearn-executor",
                                        daemon=True)
        self._thread.start()

    def request_stop(self, grace_s: float | None = None) -> None:
        """Stop taking requests now; release the request in hand if it is still running
        after ``grace_s`` (default: the shutdown_grace_s setting)."""
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
        self.request_stop(grace_s)
        if self._thread is not None:
            grace = self.ctx.settings.shutdown_grace_s if grace_s is None else grace_s
            self._thread.join(grace + timeout)
