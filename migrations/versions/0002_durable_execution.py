"""durable execution: leases and heartbeats, idempotency keys, one version per request

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("forget_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("body_sha256", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_forget_requests_lease_expires_at"),
                              ["lease_expires_at"], unique=False)
        batch_op.create_unique_constraint(batch_op.f("uq_forget_requests_idempotency_key"),
                                          ["idempotency_key"])

    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_versions_forget_request_id"))
        batch_op.create_index(batch_op.f("ix_model_versions_forget_request_id"),
                              ["forget_request_id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_versions_forget_request_id"))
        batch_op.create_index(batch_op.f("ix_model_versions_forget_request_id"),
                              ["forget_request_id"], unique=False)

    with op.batch_alter_table("forget_requests", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_forget_requests_idempotency_key"),
                                 type_="unique")
        batch_op.drop_index(batch_op.f("ix_forget_requests_lease_expires_at"))
        batch_op.drop_column("body_sha256")
        batch_op.drop_column("idempotency_key")
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("lease_expires_at")
