"""The tamper-evident audit log: append-only triggers, the hash chain, tamper detection
(each naming the entry), concurrent appends, export, and `unlearn audit verify`."""

from __future__ import annotations

import csv
import io
import json
import threading

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from app.audit.chain import entry_hash, verify_records
from app.audit.models import AuditEntry
from app.audit.service import AuditAction, chain_head, entry_record, record, verify_chain
from app.main import create_app
from tests.audit_chain import append_entries, migrated_database, tamper
from tests.conftest import api_key


@pytest.fixture
def chain_db(database_url):
    """Just a migrated database (SQLite and PostgreSQL): the chain needs nothing else."""
    from types import SimpleNamespace

    database = migrated_database(database_url)
    with database.session() as session:
        record(session, AuditAction.model_registered, "test", model_name="mnist-cnn",
               model_version=1, details={"artifact_sha256": "0" * 64})
    yield SimpleNamespace(db=database)
    database.dispose()


def _verify(ctx, anchor=None):
    with ctx.db.session() as session:
        return verify_chain(session, anchor)


def _id_of(ctx, seq: int) -> int:
    with ctx.db.session() as session:
        return session.scalar(select(AuditEntry.id).where(AuditEntry.seq == seq))


def test_the_database_refuses_update_and_delete(chain_db):
    append_entries(chain_db.db, 2)
    for statement in ("UPDATE audit_log SET actor = 'mallory' WHERE seq = 1",
                      "DELETE FROM audit_log WHERE seq = 1"):
        with pytest.raises(Exception, match="append-only"):
            with chain_db.db.engine.begin() as connection:
                connection.execute(text(statement))
    assert _verify(chain_db).intact


def test_intact_chain_reports_head_and_count(chain_db):
    append_entries(chain_db.db, 5)
    result = _verify(chain_db)
    with chain_db.db.session() as session:
        head = chain_head(session)
        count = len(session.scalars(select(AuditEntry.id)).all())
    assert result.intact and result.entries_checked == count == head.seq >= 6
    assert result.head_hash == head.hash
    assert _verify(chain_db, anchor=head).intact
    assert not _verify(chain_db, anchor=type(head)(3, "0" * 64)).intact


def test_wrong_anchor_reports_the_real_head_and_the_mismatch_apart(chain_db):
    append_entries(chain_db.db, 5)
    with chain_db.db.session() as session:
        head = chain_head(session)
    for anchor in (type(head)(3, "0" * 64), type(head)(head.seq + 10, "0" * 64)):
        result = _verify(chain_db, anchor=anchor)
        assert not result.intact and result.anchor_matches is False and result.chain_intact
        assert (result.head_seq, result.head_hash) == (head.seq, head.hash)
        assert result.entries_checked == head.seq and result.broken_seq is None
        assert "anchor" in result.reason and "ANCHOR MISMATCH" in result.describe()
    matched = _verify(chain_db, anchor=head)
    assert matched.intact and matched.anchor_matches is True and matched.chain_intact


def _change(ctx):
    tamper(ctx.db, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 3")
    return 3, "changed"


def _rewrite_with_own_hash(ctx):
    # A smarter forger recomputes the changed entry's own hash: the next entry exposes it.
    with ctx.db.session() as session:
        row = entry_record(session.scalar(select(AuditEntry).where(AuditEntry.seq == 3)))
    row["actor"] = "mallory"
    tamper(ctx.db, "UPDATE audit_log SET actor = 'mallory', entry_hash = :h WHERE seq = 3",
         h=entry_hash(row["prev_hash"], row))
    return 4, "prev_hash"


def _delete(ctx):
    tamper(ctx.db, "DELETE FROM audit_log WHERE seq = 3")
    return 4, "entry 3 is missing"


def _delete_last(ctx):
    with ctx.db.session() as session:
        last = chain_head(session).seq
    tamper(ctx.db, f"DELETE FROM audit_log WHERE seq = {last}")
    return last, "deleted"


def _reorder(ctx):
    tamper(ctx.db, "UPDATE audit_log SET seq = -1 WHERE seq = 3",
         "UPDATE audit_log SET seq = 3 WHERE seq = 4",
         "UPDATE audit_log SET seq = 4 WHERE seq = -1")
    return 3, "prev_hash"


def _insert_forged(ctx):
    # A forged entry with a correctly computed hash, appended without the chain head.
    with ctx.db.session() as session:
        head = chain_head(session)
        template = entry_record(session.scalar(select(AuditEntry).where(AuditEntry.seq == 2)))
    forged = {**template, "seq": head.seq + 1, "actor": "mallory", "prev_hash": head.hash}
    forged["entry_hash"] = entry_hash(head.hash, forged)
    tamper(ctx.db, "INSERT INTO audit_log (created_at, actor, action, subject_reference, "
              "forget_request_id, model_name, model_version, details, seq, prev_hash, "
              "entry_hash) VALUES (:created_at, :actor, :action, :subject_reference, "
              ":forget_request_id, :model_name, :model_version, :details, :seq, :prev_hash, "
              ":entry_hash)",
         **{**{k: v for k, v in forged.items() if k != "id"},
            "details": json.dumps(forged["details"])})
    return head.seq + 1, "not appended through the service"


@pytest.mark.parametrize("tampering", [_change, _rewrite_with_own_hash, _delete, _delete_last,
                                      _reorder, _insert_forged],
                         ids=["change", "rewrite", "delete", "delete-last", "reorder",
                              "insert-forged"])
def test_tampering_is_detected_and_names_the_entry(chain_db, tampering):
    append_entries(chain_db.db, 5)
    assert _verify(chain_db).intact
    ids_before = {seq: _id_of(chain_db, seq) for seq in range(1, 8)}
    seq, reason = tampering(chain_db)
    result = _verify(chain_db)
    assert not result.intact
    assert result.broken_seq == seq, result
    assert reason in result.reason, result.reason
    if tampering in (_change, _rewrite_with_own_hash, _delete):
        assert result.broken_id == ids_before[seq]  # the row id is named too
    assert f"entry seq {seq}" in result.describe()


def test_concurrent_appends_form_one_linear_chain(chain_db):
    with chain_db.db.session() as session:
        start = chain_head(session).seq
    errors = []

    def writer(name: str) -> None:
        try:
            append_entries(chain_db.db, 8, actor=name)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(f"writer-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    result = _verify(chain_db)
    assert result.intact and result.entries_checked == start + 32
    with chain_db.db.session() as session:
        seqs = session.scalars(select(AuditEntry.seq).order_by(AuditEntry.seq)).all()
    assert seqs == list(range(1, start + 33))


def test_verify_and_export_over_http_and_cli(ctx, monkeypatch, tmp_path):
    append_entries(ctx.db, 3, actor="=cmd|' /C calc'!A0")  # a spreadsheet formula as actor
    auditor = {"Authorization": f"Bearer {api_key(ctx, 'auditor')}"}
    with TestClient(create_app(ctx), headers=auditor) as client:
        verified = client.get("/audit-log/verify").json()
        assert verified["intact"] is True and verified["broken_seq"] is None
        count = verified["entries_checked"]

        exported = client.get("/audit-log/export", params={"format": "jsonl"})
        assert exported.headers["content-type"].startswith("application/x-ndjson")
        lines = exported.text.splitlines()
        assert len(lines) == count
        offline = verify_records(json.loads(line) for line in lines)
        assert offline.intact and offline.head_hash == verified["head_hash"]
        export_file = tmp_path / "audit.jsonl"
        export_file.write_text(exported.text)

        table = client.get("/audit-log/export", params={"format": "csv"})
        assert table.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(table.text)))
        assert len(rows) == count and rows[-1]["entry_hash"] == verified["head_hash"]
        formulas = [row["actor"] for row in rows if "calc" in row["actor"]]
        assert len(formulas) == 3 and all(a.startswith("'=") for a in formulas)  # inert

        assert client.get("/audit-log/export", params={"format": "xml"}).status_code == 422

        tamper(ctx.db, "UPDATE audit_log SET details = '{}' WHERE seq = 2")
        broken = client.get("/audit-log/verify").json()
        assert broken["intact"] is False and broken["broken_seq"] == 2
        assert broken["broken_id"] == _id_of(ctx, 2)

    from typer.testing import CliRunner

    from app.cli import cli
    from app.core.config import get_settings

    # The CLI reads its settings from the environment: point it at this test's database,
    # signing key and checkpoint file, never at whatever ./var holds on the machine.
    monkeypatch.setenv("UNLEARN_DATABASE_URL", ctx.settings.database_url)
    monkeypatch.setenv("UNLEARN_SIGNING_KEY_PATH", str(ctx.settings.signing_key_path))
    monkeypatch.setenv("UNLEARN_AUDIT_CHECKPOINT_PATH", str(ctx.settings.audit_checkpoint_path))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        from_db = runner.invoke(cli, ["audit", "verify"])
        assert from_db.exit_code == 1 and "BROKEN at entry seq 2" in from_db.output
        from_file = runner.invoke(cli, ["audit", "verify", "--file", str(export_file)])
        assert from_file.exit_code == 0 and f"{count} entries" in from_file.output
        export_file.write_text("\n".join(json.dumps({**json.loads(l), "actor": "eve"})
                                         if i == 1 else l for i, l in enumerate(lines)))
        tampered = runner.invoke(cli, ["audit", "verify", "--file", str(export_file)])
        assert tampered.exit_code == 1 and "entry seq 2" in tampered.output
    finally:
        get_settings.cache_clear()


def test_migration_chains_entries_written_before_it(database_url):
    from app.db.migrations import upgrade
    from app.db.session import Database

    upgrade(database_url, "0001")
    database = Database(database_url)
    try:
        with database.engine.begin() as connection:
            for index in range(3):
                connection.execute(
                    text("INSERT INTO audit_log (created_at, actor, action, details) "
                         "VALUES (:at, 'old', 'model.registered', :details)"),
                    {"at": f"2026-01-0{index + 1} 12:00:00.123456+00:00",
                     "details": json.dumps({"n": index, "x": 0.1})})
        upgrade(database_url)
        with database.session() as session:
            record(session, AuditAction.version_promoted, "new", model_version=1)
        with database.session() as session:
            result = verify_chain(session)
        assert result.intact and result.entries_checked == 4
    finally:
        database.dispose()
