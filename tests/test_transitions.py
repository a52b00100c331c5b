"""The request state machine on its own: the table, a legal move with its audit entry, an
illegal one refused before anything is written, a lost race, and the move and its audit
entry committing (or rolling back) together. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from app.audit.models import AuditEntry
from app.audit.service import AuditAction
from app.forget_requests.finished import FinishedListener
from app.forget_requests.models import FINAL_STATUSES, ForgetRequest, RequestStatus
from app.forgetting.schemas import ForgetRequestCreate
from app.forgetting.service import submit_request
from app.forgetting.transitions import ALLOWED, IllegalTransition, transition
from tests.conftest import forget_body

S = RequestStatus


def file(ctx) -> str:
    request, _ = submit_request(ctx.db, ctx.model_name, ForgetRequestCreate(**forget_body()),
                                "test", ctx.settings.max_sample_ids, settings=ctx.settings,
                                data=ctx.model_data(ctx.model_name))
    return request.id


def entries(ctx, request_id: str) -> list[AuditEntry]:
    with ctx.db.session() as session:
        return list(session.scalars(select(AuditEntry)
                                    .where(AuditEntry.forget_request_id == request_id)
                                    .order_by(AuditEntry.id)))


def status(ctx, request_id: str) -> str:
    with ctx.db.session() as session:
        return session.get(ForgetRequest, request_id).status


def take(session, request_id: str, **overrides):
    arguments = dict(source=S.queued, target=S.running, actor="worker:w",
                     action=AuditAction.forget_request_started,
                     values={"worker_id": "w"}, details={"worker": "w"})
    return transition(session, request_id, **{**arguments, **overrides})


def test_the_table_has_every_status_and_final_ones_go_nowhere():
    assert set(ALLOWED) == set(RequestStatus)
    assert {s.value for s, targets in ALLOWED.items() if not targets} == FINAL_STATUSES
    assert ALLOWED[S.queued] == {S.running, S.cancelled}
    assert S.queued not in ALLOWED[S.queued]  # no move is a no-op


def test_a_legal_move_changes_the_row_and_writes_its_audit_entry(ctx):
    request_id = file(ctx)
    with ctx.db.write_session() as session:
        moved = take(session, request_id, details=lambda row: {"queue": row.queue})
        assert (moved.status, moved.worker_id) == ("running", "w")  # the row as it is now
    assert status(ctx, request_id) == "running"
    last = entries(ctx, request_id)[-1]
    assert (last.action, last.actor, last.details) == (
        "forget_request.started", "worker:w", {"queue": "light"})  # the default method's
    assert last.model_version == 1 and last.model_name == ctx.model_name


@pytest.mark.parametrize("source,target", [(S.completed, S.running), (S.queued, S.completed),
                                           (S.cancelled, S.queued), (S.failed, S.failed)])
def test_an_illegal_move_is_refused_before_anything_is_written(ctx, source, target):
    request_id = file(ctx)
    before = len(entries(ctx, request_id))
    with pytest.raises(IllegalTransition) as refused:
        with ctx.db.write_session() as session:
            take(session, request_id, source=source, target=target)
    assert f"cannot go from {source.value!r} to {target.value!r}" in str(refused.value)
    assert status(ctx, request_id) == "queued"
    assert len(entries(ctx, request_id)) == before


def test_a_move_from_a_status_the_row_has_left_does_nothing(ctx):
    request_id = file(ctx)
    with ctx.db.write_session() as session:
        assert take(session, request_id) is not None
    before = len(entries(ctx, request_id))
    with ctx.db.write_session() as session:
        assert take(session, request_id) is None  # no longer queued: someone else won
        # held_by: a running request held by another execution is not ours to move
        assert transition(session, request_id, source=S.running, target=S.failed,
                          held_by="other", actor="worker:other",
                          action=AuditAction.forget_request_failed, details={}) is None
    assert status(ctx, request_id) == "running"
    assert len(entries(ctx, request_id)) == before


def test_the_move_and_its_audit_entry_commit_or_roll_back_together(ctx):
    request_id = file(ctx)
    before = len(entries(ctx, request_id))
    with pytest.raises(RuntimeError, match="after the move"):
        with ctx.db.write_session() as session:
            assert take(session, request_id) is not None
            raise RuntimeError("after the move, before the commit")
    assert status(ctx, request_id) == "queued"
    assert len(entries(ctx, request_id)) == before


def _fail(session, request_id: str):
    return transition(session, request_id, source=S.running, target=S.failed,
                      held_by="w", actor="worker:w", action=AuditAction.forget_request_failed,
                      details={"error": "test"})


def test_a_committed_final_move_wakes_listening_api_processes_and_nothing_else_does(ctx):
    """PostgreSQL: ?wait=true callers in other processes hear of a finished request at its
    commit. A move to a non-final status, and a final move rolled back, send nothing:
    notifications arrive in commit order, so the first one heard must be the final move's."""
    if ctx.db.engine.dialect.name != "postgresql":
        pytest.skip("finish notifications are PostgreSQL's LISTEN/NOTIFY")
    heard: list[str] = []
    arrived = threading.Event()
    listener = FinishedListener(ctx.db.url, lambda request_id: (heard.append(request_id),
                                                                arrived.set()))
    listener.start()
    try:
        assert listener.listening.wait(10), "the listener never started listening"
        rolled_back, finished = file(ctx), file(ctx)
        with ctx.db.write_session() as session:  # non-final moves: no notification
            take(session, rolled_back)
            take(session, finished)
        with pytest.raises(RuntimeError):
            with ctx.db.write_session() as session:
                assert _fail(session, rolled_back) is not None
                raise RuntimeError("rolled back: its NOTIFY must not be sent")
        with ctx.db.write_session() as session:
            assert _fail(session, finished) is not None
        assert arrived.wait(10), "no finish notification arrived"
        assert heard[0] == finished
    finally:
        listener.stop()
    assert status(ctx, rolled_back) == "running"
