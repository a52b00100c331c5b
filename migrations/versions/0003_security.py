"""security: API keys, the audit log's hash chain, append-only triggers

Revision ID: 0003
Revises: 0002 (written against 0001; re-chained after 0002 landed on main)
Create Date: 2026-11-26 14:30:00

Existing audit entries are chained in id order, then the columns become NOT NULL and
triggers reject UPDATE and DELETE on audit_log (and TRUNCATE on PostgreSQL).
"""
from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

from app.audit.chain import GENESIS_HASH, entry_hash

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

POSTGRES_TRIGGERS = """
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
"""

SQLITE_TRIGGERS = [
    """CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE is not allowed'); END""",
    """CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: DELETE is not allowed'); END""",
]


def _chain_existing_entries() -> tuple[int, str]:
    connection = op.get_bind()
    audit = sa.table(
        "audit_log", sa.column("id", sa.Integer), sa.column("created_at", sa.DateTime(True)),
        sa.column("actor"), sa.column("action"), sa.column("subject_reference"),
        sa.column("forget_request_id"), sa.column("model_name"),
        sa.column("model_version", sa.Integer), sa.column("details", sa.JSON),
        sa.column("seq", sa.Integer), sa.column("prev_hash"), sa.column("entry_hash"),
    )
    previous, seq = GENESIS_HASH, 0
    rows = connection.execute(sa.select(audit).order_by(audit.c.id)).mappings().all()
    for row in rows:
        seq += 1
        record = dict(row, seq=seq)
        if record["created_at"].tzinfo is None:  # SQLite returns naive UTC
            record["created_at"] = record["created_at"].replace(tzinfo=dt.timezone.utc)
        current = entry_hash(previous, record)
        connection.execute(audit.update().where(audit.c.id == row["id"])
                           .values(seq=seq, prev_hash=previous, entry_hash=current))
        previous = current
    return seq, previous


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("salt", sa.String(length=64), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("name", name=op.f("uq_api_keys_name")),
    )
    op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_chain_head")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seq", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("entry_hash", sa.String(length=64), nullable=True))
    seq, head = _chain_existing_entries()
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.alter_column("seq", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("entry_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_audit_log_seq"), ["seq"])
    op.execute(sa.text("INSERT INTO audit_chain_head (id, seq, head_hash) "
                       "VALUES (1, :seq, :head)").bindparams(seq=seq, head=head))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_TRIGGERS)
    elif op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    elif op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_audit_log_seq"), type_="unique")
        batch_op.drop_column("entry_hash")
        batch_op.drop_column("prev_hash")
        batch_op.drop_column("seq")
    op.drop_table("audit_chain_head")
    op.drop_table("api_keys")
