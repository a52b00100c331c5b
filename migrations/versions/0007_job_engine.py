"""job engine: procrastinate's schema (PostgreSQL only), phase/queue/job on forget requests,
the hand-written lease column removed

Revision ID: 0007
Revises: 0006
"""
from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _procrastinate_schema() -> str:
    from procrastinate.schema import SchemaManager

    return SchemaManager.get_schema()


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # procrastinate's own schema, as the installed release ships it. Run on the DBAPI
        # cursor with no parameters at all: the SQL holds '%' and ':' that must stay literal.
        with bind.connection.dbapi_connection.cursor() as cursor:
            cursor.execute(_procrastinate_schema())
    with op.batch_alter_table("forget_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("phase", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("queue", sa.String(length=32), nullable=False,
                                      server_default="heavy"))
        batch_op.add_column(sa.Column("job_id", sa.BigInteger(), nullable=True))
        batch_op.drop_index(batch_op.f("ix_forget_requests_lease_expires_at"))
        batch_op.drop_column("lease_expires_at")
    # Rows filed before: output dampening is the one light method.
    op.execute("UPDATE forget_requests SET queue = 'light' WHERE method = 'output_dampening'")


def downgrade() -> None:
    with op.batch_alter_table("forget_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.create_index(batch_op.f("ix_forget_requests_lease_expires_at"),
                              ["lease_expires_at"], unique=False)
        batch_op.drop_column("job_id")
        batch_op.drop_column("queue")
        batch_op.drop_column("phase")
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        schema = _procrastinate_schema()
        for table in re.findall(r"CREATE TABLE (\w+)", schema):
            bind.exec_driver_sql(f"DROP TABLE IF EXISTS {table} CASCADE")
        for function in sorted(set(re.findall(r"CREATE FUNCTION (\w+)", schema))):
            bind.exec_driver_sql(f"DROP FUNCTION IF EXISTS {function} CASCADE")
        for type_ in re.findall(r"CREATE TYPE (\w+)", schema):
            bind.exec_driver_sql(f"DROP TYPE IF EXISTS {type_} CASCADE")
