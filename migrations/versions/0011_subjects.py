"""data subjects: keyed subject hashes on forget requests, auto-promotion, purged artifacts

Revision ID: 0011
Revises: 0010

Forget requests gain the HMAC-SHA256 hashes of the subjects they name (never the
identifiers), how many samples those subjects owned, whether the result is promoted when
production still holds the erased data, and which production version still held it at
completion. ``version_purges`` records artifacts deleted from superseded versions; the
version rows themselves are never changed.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("forget_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("target_subject_hashes", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("subject_sample_count", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("promote", sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column("production_left_superseded", sa.Integer(),
                                      nullable=True))
    op.create_table(
        "version_purges",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_name", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("artifact_path", sa.String(length=500), nullable=False),
        sa.Column("superseded_by", sa.String(length=36), nullable=False),
        sa.Column("purged_by", sa.String(length=200), nullable=False),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_version_purges")),
        sa.UniqueConstraint("model_name", "version", name="uq_version_purges_name_version"),
    )
    with op.batch_alter_table("version_purges", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_version_purges_model_name"), ["model_name"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("version_purges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_version_purges_model_name"))
    op.drop_table("version_purges")
    with op.batch_alter_table("forget_requests", schema=None) as batch_op:
        batch_op.drop_column("production_left_superseded")
        batch_op.drop_column("promote")
        batch_op.drop_column("subject_sample_count")
        batch_op.drop_column("target_subject_hashes")
