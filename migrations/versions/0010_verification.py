"""forget requests carry their acceptance criteria and the verification of their result

Revision ID: 0010
Revises: 0008
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The new status 'unverified' fits the existing String(16) status column.
    with op.batch_alter_table("forget_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("acceptance", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("verification", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("forget_requests", schema=None) as batch_op:
        batch_op.drop_column("verification")
        batch_op.drop_column("acceptance")
