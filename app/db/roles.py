"""PostgreSQL roles: migrations run as the owner, the service as an app role that owns
nothing.

The owner role (the one in the migration URL) owns every table. The app role gets only
what the service needs: read and write on the service's tables, but on ``audit_log`` only
SELECT and INSERT, so it cannot UPDATE, DELETE or TRUNCATE audit entries, and, owning no
table, cannot ``ALTER TABLE ... DISABLE TRIGGER`` or drop the append-only triggers either.
(It can still move ``audit_chain_head``, which every append must update: the signed
checkpoints in ``app.audit.checkpoints`` cover that.)

``app_role_statements`` is run by the owner after each migration (``unlearn db
grant-app-role NAME``; ``--print-sql`` prints it for a DBA). Default privileges make tables
that later migrations create readable and writable by the app role; re-running the
command restores the audit table's narrower rights.
"""

from __future__ import annotations

import re

from sqlalchemy import text
from sqlalchemy.engine import Engine

# Tables whose rows the service never changes once written: the audit entries.
APPEND_ONLY_TABLES = ("audit_log",)
# Read-only for the service: the migration bookkeeping.
READ_ONLY_TABLES = ("alembic_version",)

ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _identifier(name: str) -> str:
    if not ROLE_NAME.match(name):
        raise ValueError(f"role name {name!r}: use lower-case letters, digits and _")
    return f'"{name}"'


def app_role_statements(app_role: str, owner_role: str, database: str) -> list[str]:
    app, owner, db = _identifier(app_role), _identifier(owner_role), f'"{database}"'
    statements = [
        f"REVOKE ALL ON DATABASE {db} FROM PUBLIC",
        f"GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {app}",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        f"GRANT USAGE ON SCHEMA public TO {app}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {app}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {app}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {app}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
        f"GRANT USAGE, SELECT ON SEQUENCES TO {app}",
    ]
    for table in APPEND_ONLY_TABLES:
        statements.append(f"REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER "
                          f"ON {table} FROM {app}")
    for table in READ_ONLY_TABLES:
        statements.append(f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {table} FROM {app}")
    return statements


def grant_app_role(owner_engine: Engine, app_role: str) -> list[str]:
    """Apply the grants as the owner (the engine's user); returns what was run."""
    if owner_engine.dialect.name != "postgresql":
        raise ValueError("app roles are a PostgreSQL feature; SQLite has no roles")
    with owner_engine.begin() as connection:
        owner = connection.scalar(text("SELECT current_user"))
        database = connection.scalar(text("SELECT current_database()"))
        statements = app_role_statements(app_role, owner, database)
        for statement in statements:
            connection.execute(text(statement))
    return statements
