"""Building an audit chain in a test database and tampering with it behind the service's
back: shared by the audit-log tests and the checkpoint tests."""

from __future__ import annotations

from sqlalchemy import text

from app.audit.service import AuditAction, record
from app.db.migrations import upgrade
from app.db.session import Database


def migrated_database(database_url: str) -> Database:
    """A database at the latest migration (the chain head row included)."""
    upgrade(database_url)
    return Database(database_url)


def append_entries(db: Database, count: int, actor: str = "tester") -> None:
    """``count`` entries, each in its own transaction, as the service appends them."""
    for index in range(count):
        with db.session() as session:
            record(session, AuditAction.version_promoted, actor, model_name="mnist-cnn",
                   model_version=1, details={"index": index, "score": 0.1 * index})


def tamper(db: Database, *statements: str, **params) -> None:
    """Change the table behind the service's back, as someone with database access (its
    owner) could: switch the append-only triggers off and run ``statements``."""
    with db.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        else:
            connection.execute(text("DROP TRIGGER IF EXISTS audit_log_no_update"))
            connection.execute(text("DROP TRIGGER IF EXISTS audit_log_no_delete"))
        for statement in statements:
            connection.execute(text(statement), params)
