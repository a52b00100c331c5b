"""models name the dataset they were trained on and their architecture; forget requests
keep the dataset's own sample IDs

Revision ID: 0006
Revises: 0005

Every model recorded before this revision is the bundled MNIST CNN: it gets dataset
'mnist' and architecture 'mnist-cnn'. Version rows keep their 'mnist-cnn-v1', which the
architecture catalogue still knows as an alias, so nothing recorded changes meaning.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("registered_models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dataset_name", sa.String(100), nullable=False,
                                      server_default="mnist"))
        batch_op.add_column(sa.Column("architecture", sa.String(64), nullable=False,
                                      server_default="mnist-cnn"))
        batch_op.add_column(sa.Column("created_by", sa.String(200), nullable=False,
                                      server_default="system"))
    with op.batch_alter_table("forget_requests", schema=None) as batch_op:
        # The dataset's own IDs of target_sample_ids, as the request named them (NULL where
        # they are the integer IDs themselves, as for MNIST).
        batch_op.add_column(sa.Column("target_sample_keys", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("target_class_names", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("forget_requests", schema=None) as batch_op:
        batch_op.drop_column("target_class_names")
        batch_op.drop_column("target_sample_keys")
    with op.batch_alter_table("registered_models", schema=None) as batch_op:
        batch_op.drop_column("created_by")
        batch_op.drop_column("architecture")
        batch_op.drop_column("dataset_name")
