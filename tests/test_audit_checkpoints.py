"""Signed checkpoints of the audit chain head, kept outside the database: the tampering
that the hash chain alone cannot see (a consistent rewrite by the database's owner) is
reported against the latest checkpoint, by the service, over HTTP and by the CLI."""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.audit.chain import entry_hash
from app.audit.checkpoints import (
    LocalCheckpointStore,
    check_against_checkpoint,
    write_checkpoint,
)
from app.audit.models import AuditEntry
from app.audit.service import AuditAction, chain_head, entry_record, record, verify_chain
from app.core.signing import load_or_create_signer
from tests.audit_chain import append_entries, migrated_database, tamper
from tests.conftest import api_key, forget_body


@pytest.fixture
def audit(database_url, tmp_path):
    """A migrated database with six entries, the service key, and a checkpoint file."""
    db = migrated_database(database_url)
    append_entries(db, 6)
    yield SimpleNamespace(db=db, signer=load_or_create_signer(tmp_path / "key.pem"),
                          store=LocalCheckpointStore(tmp_path / "checkpoints.jsonl"))
    db.dispose()


def _check(audit):
    with audit.db.session() as session:
        return (verify_chain(session),
                check_against_checkpoint(session, audit.store.latest(),
                                         audit.signer.public_key))


def _records(audit) -> list[dict]:
    with audit.db.session() as session:
        return [entry_record(row) for row in
                session.scalars(select(AuditEntry).order_by(AuditEntry.seq))]


def _move_head(audit, seq: int, digest: str) -> None:
    tamper(audit.db, "UPDATE audit_chain_head SET seq = :s, head_hash = :h", s=seq, h=digest)


def _insert(audit, entry: dict) -> None:
    tamper(audit.db, "INSERT INTO audit_log (created_at, actor, action, subject_reference, "
                "forget_request_id, model_name, model_version, details, seq, prev_hash, "
                "entry_hash) VALUES (:created_at, :actor, :action, :subject_reference, "
                ":forget_request_id, :model_name, :model_version, :details, :seq, "
                ":prev_hash, :entry_hash)",
         **{**{k: v for k, v in entry.items() if k != "id"},
            "details": json.dumps(entry["details"])})


def test_an_untouched_chain_agrees_with_its_checkpoint(audit):
    assert write_checkpoint(audit.db, audit.signer, audit.store) is not None
    assert write_checkpoint(audit.db, audit.signer, audit.store) is None  # head unchanged
    line = json.loads(audit.store.path.read_text().splitlines()[-1])
    assert line["checkpoint"]["seq"] == 6 and line["signature"]["algorithm"] == "Ed25519"
    with audit.db.session() as session:
        record(session, AuditAction.version_promoted, "tester", details={"later": True})
    chain, check = _check(audit)
    assert chain.intact and check.ok and check.finding == "intact"
    assert check.checkpoint_seq == 6 and check.unanchored_entries == 1


def test_deleting_the_tail_and_moving_the_head_back_is_a_missing_tail(audit):
    write_checkpoint(audit.db, audit.signer, audit.store)
    records = _records(audit)
    tamper(audit.db, "DELETE FROM audit_log WHERE seq > 4")
    _move_head(audit, 4, records[3]["entry_hash"])
    chain, check = _check(audit)
    assert chain.intact  # the chain alone cannot tell
    assert check.finding == "missing_tail" and "entries 5-6 were deleted" in check.detail


def test_rewriting_from_the_middle_and_rehashing_everything_after_is_a_rewrite(audit):
    write_checkpoint(audit.db, audit.signer, audit.store)
    records = _records(audit)
    previous = records[1]["prev_hash"]
    for row in records[1:]:
        if row["seq"] == 2:
            row["actor"] = "mallory"
        row["prev_hash"] = previous
        row["entry_hash"] = previous = entry_hash(previous, row)
        tamper(audit.db, "UPDATE audit_log SET actor = :a, prev_hash = :p, entry_hash = :h "
                    "WHERE seq = :s", a=row["actor"], p=row["prev_hash"],
             h=row["entry_hash"], s=row["seq"])
    _move_head(audit, 6, previous)
    chain, check = _check(audit)
    assert chain.intact  # consistently re-hashed: the chain alone cannot tell
    assert check.finding == "rewritten" and "entry seq 6" in check.detail


def _forge(audit, created_at: dt.datetime) -> None:
    """Append a well-formed entry with the app's own rights (INSERT + moving the head)."""
    with audit.db.session() as session:
        head = chain_head(session)
    forged = {"seq": head.seq + 1, "created_at": created_at, "actor": "mallory",
              "action": "model.promoted", "subject_reference": None,
              "forget_request_id": None, "model_name": "mnist-cnn", "model_version": 1,
              "details": {"forged": True}, "prev_hash": head.hash}
    forged["entry_hash"] = entry_hash(head.hash, forged)
    _insert(audit, forged)
    _move_head(audit, forged["seq"], forged["entry_hash"])


def test_a_forged_entry_dated_before_the_checkpoint_is_reported(audit):
    write_checkpoint(audit.db, audit.signer, audit.store)
    _forge(audit, dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3))
    chain, check = _check(audit)
    assert chain.intact
    assert check.finding == "forged_entry" and "entry seq 7" in check.detail


def test_a_forged_entry_that_does_not_chain_after_the_checkpoint_is_reported(audit):
    write_checkpoint(audit.db, audit.signer, audit.store)
    records = _records(audit)
    _insert(audit, {**records[-1], "seq": 7, "actor": "mallory"})  # hash not recomputed
    _, check = _check(audit)
    assert check.finding == "forged_entry" and "entry seq 7" in check.detail


def test_what_a_checkpoint_cannot_see_a_plausible_entry_after_it(audit):
    # Documented limit: a well-formed entry appended after the latest checkpoint, dated
    # now, looks like a genuine one until the next checkpoint signs it (as genuine).
    write_checkpoint(audit.db, audit.signer, audit.store)
    _forge(audit, dt.datetime.now(dt.timezone.utc))
    _, check = _check(audit)
    assert check.finding == "intact" and check.unanchored_entries == 1


def test_a_checkpoint_with_a_wrong_signature_is_refused(audit, tmp_path):
    write_checkpoint(audit.db, audit.signer, audit.store)
    document = json.loads(audit.store.path.read_text())
    document["checkpoint"]["seq"] = 3  # "move the checkpoint back" to hide a deletion
    audit.store.append(document)
    _, check = _check(audit)
    assert check.finding == "checkpoint_invalid"
    other = load_or_create_signer(tmp_path / "other.pem")
    audit.store.append(json.loads(audit.store.path.read_text().splitlines()[0]))
    with audit.db.session() as session:
        assert check_against_checkpoint(session, audit.store.latest(),
                                        other.public_key).finding == "checkpoint_invalid"


def test_certificates_checkpoint_their_head_and_verify_reports_the_finding(
        ctx, monkeypatch, tmp_path):
    from app.main import create_app

    auditor = {"Authorization": f"Bearer {api_key(ctx, 'auditor')}"}
    path = ctx.settings.audit_checkpoint_path
    with TestClient(create_app(ctx), headers=auditor) as client:
        client.headers["Authorization"] = f"Bearer {api_key(ctx, name='admin2')}"
        done = client.post("/forget-requests?wait=true", json=forget_body()).json()
        client.headers.update(auditor)
        lines_before = len(path.read_text().splitlines())  # one written at start
        certificate = client.get(f"/forget-requests/{done['id']}/certificate").json()
        head = certificate["certificate"]["audit_chain_head"]
        lines = path.read_text().splitlines()
        assert len(lines) == lines_before + 1
        assert json.loads(lines[-1])["checkpoint"]["seq"] == head["seq"]
        verified = client.get("/audit-log/verify").json()
        assert verified["intact"] is True
        assert verified["checkpoint"]["finding"] == "intact"
        assert verified["checkpoint"]["checkpoint_seq"] == head["seq"]

        with ctx.db.session() as session:
            keep = session.scalar(select(AuditEntry).where(AuditEntry.seq == head["seq"] - 1))
        tamper(ctx.db, f"DELETE FROM audit_log WHERE seq >= {head['seq']}")
        _move_head(SimpleNamespace(db=ctx.db), keep.seq, keep.entry_hash)
        broken = client.get("/audit-log/verify").json()
        assert broken["intact"] is False
        assert broken["broken_seq"] is None  # the chain itself still holds
        assert broken["checkpoint"]["finding"] == "missing_tail"

    from typer.testing import CliRunner

    from app.cli import cli
    from app.core.config import get_settings

    monkeypatch.setenv("UNLEARN_DATABASE_URL", ctx.settings.database_url)
    monkeypatch.setenv("UNLEARN_AUDIT_CHECKPOINT_PATH", str(path))
    monkeypatch.setenv("UNLEARN_SIGNING_KEY_PATH", str(ctx.settings.signing_key_path))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["audit", "verify"])
        assert result.exit_code == 1, result.output
        assert "audit log intact" in result.output and "missing_tail" in result.output
    finally:
        get_settings.cache_clear()


def test_audit_windows_give_one_entry_per_key_per_window_with_the_last_count():
    """Repeatable refusals (failed keys, corrupted versions) are audited in aggregate."""
    from app.audit.aggregation import AuditWindows

    now = [0.0]
    windows = AuditWindows(60, clock=lambda: now[0])
    assert windows.count("a") == 0          # first of its window: write an entry
    assert windows.count("a") is None       # counted, no entry
    assert windows.count("b") == 0          # other keys have their own windows
    assert windows.count("a") is None
    now[0] = 60.0
    assert windows.count("a") == 3          # a new window: the last one had three
    assert windows.count("a") is None
    now[0] = 200.0
    assert windows.count("b") == 1
