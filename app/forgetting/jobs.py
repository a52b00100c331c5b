"""Forget requests on procrastinate (PostgreSQL): deferring a request's job in the filing
transaction, the task that runs it, stalled-job recovery, cancellation, and the worker.

procrastinate keeps the jobs in the same database as the requests, fetches them with
``FOR UPDATE SKIP LOCKED``, wakes workers with LISTEN/NOTIFY, records a heartbeat per
worker, and retries jobs. What it does not know about (which attempt may publish a
version, the audit trail) stays in ``execution``: the job only says "run request X now".
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import threading
from collections.abc import Callable, Iterable

import procrastinate
from procrastinate import builtin_tasks, job_context
from procrastinate.worker import Worker
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from app.context import ServiceContext
from app.db.base import utcnow
from app.forgetting import execution
from app.observability.logs import log_context
from app.forget_requests.models import ForgetRequest, RequestStatus
from app.unlearning.base import HEAVY_QUEUE, LIGHT_QUEUE

logger = logging.getLogger("unlearn.worker")

TASK_NAME = "unlearn.run_forget_request"
QUEUES = (HEAVY_QUEUE, LIGHT_QUEUE)
# Finished jobs are removed after UNLEARN_JOB_RETENTION_HOURS by procrastinate's own
# cleanup, deferred once an hour by its periodic scheduler. It has a queue of its own that
# every worker takes beside the ones it was given: one DELETE, nothing to route by resource,
# and a heavy-only or light-only deployment must still clean up.
CLEANUP_TASK = "unlearn.remove_old_jobs"
MAINTENANCE_QUEUE = "maintenance"
CLEANUP_CRON = "23 * * * *"  # hourly, off the hour when other cron jobs crowd the database


def conninfo(database_url: str) -> str:
    """libpq connection string of a SQLAlchemy PostgreSQL URL."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(
        hide_password=False)


def uses_job_engine(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def job_counts(session: Session) -> dict[tuple[str, str], int]:
    """The job engine's jobs by (queue, status): every queue a worker takes (the
    maintenance queue included) and every status procrastinate has, 0 where there are none,
    so that an alert on a series never finds it missing. Finished jobs count until the
    hourly clean-up removes them. Empty off PostgreSQL (no job engine there)."""
    if not uses_job_engine(session):
        return {}
    counts = {(queue, status.value): 0
              for queue in (*QUEUES, MAINTENANCE_QUEUE) for status in procrastinate.jobs.Status}
    for queue, status, count in session.execute(text(
            "SELECT queue_name, status::text, count(*) FROM procrastinate_jobs "
            "GROUP BY queue_name, status")):
        counts[(queue, status)] = count
    return counts


def defer_in_transaction(session: Session, request: ForgetRequest) -> int:
    """Enqueue the request's job on the session's own connection, inside its transaction
    (procrastinate's defer function, as ``App.defer`` calls it): a filing that rolls back
    leaves no job, and a committed one always has its job."""
    job_id = session.execute(
        text("SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[ROW(:queue, :task, 0, NULL, "
             "NULL, CAST(:args AS jsonb), NULL)::procrastinate_job_to_defer_v1]))"),
        {"queue": request.queue, "task": TASK_NAME,
         "args": json.dumps({"request_id": request.id})},
    ).scalar_one()
    request.job_id = job_id
    return job_id


def cancel_job_in_transaction(session: Session, job_id: int) -> None:
    """A queued job is cancelled; a running one gets procrastinate's abort flag (the
    execution itself stops at its next checkpoint, when it finds the request cancelled)."""
    session.execute(text("SELECT procrastinate_cancel_job_v1(:job_id, true, false)"),
                    {"job_id": job_id})


def recover_stalled_job(ctx: ServiceContext, job_id: int, stalled_worker: int | None,
                        request_id: str, actor: str) -> str | None:
    """One stalled job (its worker stopped heartbeating): requeue its request (or fail it
    after max_attempts) and retry the job, in one transaction. Returns what was done, or
    None if another worker already dealt with it."""
    with ctx.db.session() as session:
        job = session.execute(
            text("SELECT status, worker_id FROM procrastinate_jobs WHERE id = :id FOR UPDATE"),
            {"id": job_id}).one_or_none()
        if job is None or job.status != "doing" or job.worker_id != stalled_worker:
            return None  # retried, finished or taken over since we looked
        request = session.scalar(select(ForgetRequest).where(ForgetRequest.id == request_id)
                                 .with_for_update())
        outcome = "retried"
        if request is not None and request.status == RequestStatus.running.value:
            outcome = execution.requeue_or_fail(
                session, ctx, request, actor,
                f"worker {request.worker_id} stopped heartbeating (procrastinate worker "
                f"{stalled_worker}, job {job_id})")
        if request is None or request.status != RequestStatus.queued.value:
            # Nothing left to run (failed, cancelled or finished): close the job.
            session.execute(text("SELECT procrastinate_finish_job_v1(:id, 'failed', false)"),
                            {"id": job_id})
            return outcome if outcome == "failed" else "closed"
        session.execute(text("SELECT procrastinate_retry_job_v2(:id, now(), NULL, NULL, NULL)"),
                        {"id": job_id})
        return outcome


def recover_orphaned_requests(ctx: ServiceContext, actor: str) -> int:
    """Requests 'running' whose job has ended (neither 'todo' nor 'doing'). Only an anomaly
    leaves one: a stalled worker that resumes reports its abandoned attempt to procrastinate,
    which may close the job another worker is running, and that worker then dies too.
    Nothing would ever run such a request again: once its attempt has written nothing for
    UNLEARN_STALLED_AFTER_S, requeue it with a fresh job."""
    with ctx.db.session() as session:
        orphans = list(session.scalars(
            select(ForgetRequest)
            .where(ForgetRequest.status == RequestStatus.running.value,
                   # and no sign of life from its attempt for as long as a stall takes
                   ForgetRequest.heartbeat_at < utcnow() - dt.timedelta(
                       seconds=ctx.settings.stalled_after_s),
                   text("EXISTS (SELECT 1 FROM procrastinate_jobs AS job "
                        "WHERE job.id = forget_requests.job_id "
                        "AND job.status NOT IN ('todo', 'doing'))"))
            .with_for_update(skip_locked=True)))
        for request in orphans:
            ended = request.job_id
            if execution.requeue_or_fail(
                    session, ctx, request, actor,
                    f"its job {ended} ended while it was running") == "requeued":
                defer_in_transaction(session, request)
        return len(orphans)


async def retry_stalled_jobs(app: procrastinate.App, ctx: ServiceContext, actor: str) -> int:
    """procrastinate's stalled-job detection (workers whose heartbeat is older than
    UNLEARN_STALLED_AFTER_S), then our recovery for each job found; and requests whose
    job ended under them."""
    stalled = await app.job_manager.get_stalled_jobs(
        task_name=TASK_NAME, seconds_since_heartbeat=ctx.settings.stalled_after_s)
    done = await asyncio.to_thread(recover_orphaned_requests, ctx, actor)
    for job in stalled:
        assert job.id is not None  # a stalled job was deferred, so it has an id
        request_id = job.task_kwargs.get("request_id")  # deferred as a str (defer_in_transaction)
        outcome = await asyncio.to_thread(recover_stalled_job, ctx, job.id, job.worker_id,
                                          str(request_id), actor)
        if outcome is not None:
            done += 1
            logger.warning("stalled job %s (request %s, procrastinate worker %s): %s",
                           job.id, request_id, job.worker_id, outcome)
    return done


def build_job_app(ctx: ServiceContext, worker_name: str,
                  on_finished: Callable[[], None] | None = None) -> procrastinate.App:
    """A procrastinate App on the service's database with the forget-request task."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(
        conninfo=conninfo(ctx.settings.database_url)))

    # A release on shutdown raises ExecutionReleased: procrastinate puts the job back
    # (the request row was already requeued). Nothing else is retried by procrastinate:
    # a method failure is a final 'failed' on the request.
    @app.task(name=TASK_NAME, pass_context=True,
              retry=procrastinate.RetryStrategy(max_attempts=50,
                                                retry_exceptions={execution.ExecutionReleased}))
    def run_forget_request(context: job_context.JobContext, request_id: str) -> str:
        def shutting_down() -> bool:
            return context.abort_reason() == job_context.AbortReason.SHUTDOWN

        execution_id = execution.new_execution_id(worker_name)
        try:
            # Every line about this request carries its ID and this worker's.
            with log_context(forget_request_id=request_id, worker_id=worker_name):
                logger.info("job %s: request %s on queue %s as %s", context.job.id,
                            request_id, context.job.queue, execution_id)
                outcome = execution.run_request(ctx, request_id, execution_id, shutting_down)
        finally:
            if on_finished is not None:
                on_finished()
        if outcome == execution.RELEASED:
            raise execution.ExecutionReleased(f"request {request_id} released on shutdown")
        return outcome

    retention_hours = ctx.settings.job_retention_hours

    # Only procrastinate's rows go: jobs in a final state (succeeded, failed, cancelled,
    # aborted) for longer than the retention, with their events. A request's record is its
    # forget_requests row and the audit log, which this never touches; a queued or running
    # job is never final. The queueing lock keeps one cleanup waiting at most, however long
    # the workers are busy.
    @app.periodic(cron=CLEANUP_CRON)
    @app.task(name=CLEANUP_TASK, queue=MAINTENANCE_QUEUE, queueing_lock=CLEANUP_TASK,
              pass_context=True)
    async def remove_old_jobs(context: job_context.JobContext, timestamp: int) -> None:
        await builtin_tasks.remove_old_jobs(
            context, max_hours=retention_hours, remove_failed=True, remove_cancelled=True,
            remove_aborted=True)

    return app


class JobWorker:
    """A procrastinate worker for the given queues, plus a side task that retries stalled
    jobs. Runs in the foreground (``unlearn worker``) or on a thread inside the API
    (``UNLEARN_EMBEDDED_WORKER`` on PostgreSQL). One request at a time: requests are
    CPU/GPU-bound, so parallelism comes from more workers."""

    def __init__(self, ctx: ServiceContext, queues: Iterable[str] | None = None,
                 on_finished: Callable[[], None] | None = None, name: str | None = None):
        self.ctx = ctx
        self.queues = list(queues) if queues else list(QUEUES)
        self.queues.append(MAINTENANCE_QUEUE)
        self.name = name or execution.process_name()
        self.on_finished = on_finished
        self.warmed_up = threading.Event()
        self._worker: Worker | None = None
        self._thread: threading.Thread | None = None

    async def _sweep_stalled(self, app: procrastinate.App) -> None:
        interval = min(5.0, self.ctx.settings.stalled_after_s / 3)
        alive = self.ctx.settings.worker_alive_file
        while True:
            try:
                await retry_stalled_jobs(app, self.ctx, f"worker:{self.name}")
                if alive is not None:  # the loop runs and the database answers
                    alive.touch()
            except Exception:  # database briefly unreachable: try again next round
                logger.exception("stalled-job check failed")
            await asyncio.sleep(interval)

    async def run(self, install_signal_handlers: bool = True) -> None:
        settings = self.ctx.settings
        app = build_job_app(self.ctx, self.name, self.on_finished)
        async with app.open_async():
            self._worker = Worker(
                app=app, queues=self.queues, name=self.name, concurrency=1, wait=True,
                fetch_job_polling_interval=min(5.0, settings.stalled_after_s / 3),
                abort_job_polling_interval=1.0,
                shutdown_graceful_timeout=settings.shutdown_grace_s,
                install_signal_handlers=install_signal_handlers,
                update_heartbeat_interval=settings.heartbeat_s,
                stalled_worker_timeout=settings.stalled_after_s,
            )
            sweeper = asyncio.create_task(self._sweep_stalled(app), name="retry-stalled-jobs")
            logger.info("worker %s ready (procrastinate, queues %s)", self.name,
                        ",".join(self.queues))  # the maintenance queue included
            self.warmed_up.set()
            try:
                await self._worker.run()
            finally:
                sweeper.cancel()
                await asyncio.gather(sweeper, return_exceptions=True)
        logger.info("worker %s stopped", self.name)

    def start(self) -> None:
        """Run on a daemon thread with its own event loop (embedded in the API)."""
        def main() -> None:
            execution.warm_up(self.ctx)  # as `unlearn worker` does before its first request
            asyncio.run(self.run(install_signal_handlers=False))

        self._thread = threading.Thread(target=main, name="unlearn-job-worker", daemon=True)
        self._thread.start()

    def stop(self, grace_s: float | None = None, timeout: float = 30.0) -> None:
        """Stop fetching; the request in hand may finish within ``grace_s`` (default
        UNLEARN_SHUTDOWN_GRACE_S), then it is released at its next checkpoint."""
        grace = self.ctx.settings.shutdown_grace_s if grace_s is None else grace_s
        self.warmed_up.wait(timeout)
        if self._worker is not None:
            self._worker.shutdown_graceful_timeout = grace
            self._worker.stop()
        if self._thread is not None:
            self._thread.join(grace + timeout)
