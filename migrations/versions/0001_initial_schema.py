"""initial schema: registry, forget requests, audit log

Revision ID: 0001
Revises: 
Create Date: 2026-11-26 13:59:36.312180
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa



revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    
    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('subject_reference', sa.String(length=200), nullable=True),
    sa.Column('forget_request_id', sa.String(length=36), nullable=True),
    sa.Column('model_name', sa.String(length=100), nullable=True),
    sa.Column('model_version', sa.Integer(), nullable=True),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_action'), ['action'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_log_actor'), ['actor'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_log_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_log_forget_request_id'), ['forget_request_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_log_model_version'), ['model_version'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_log_subject_reference'), ['subject_reference'], unique=False)

    op.create_table('forget_requests',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('model_name', sa.String(length=100), nullable=False),
    sa.Column('source_version', sa.Integer(), nullable=False),
    sa.Column('result_version', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('method', sa.String(length=64), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('target_classes', sa.JSON(), nullable=False),
    sa.Column('target_sample_ids', sa.JSON(), nullable=False),
    sa.Column('requested_by', sa.String(length=200), nullable=False),
    sa.Column('subject_reference', sa.String(length=200), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('metrics', sa.JSON(), nullable=True),
    sa.Column('progress', sa.Float(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('worker_id', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_forget_requests'))
    )
    with op.batch_alter_table('forget_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_forget_requests_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_forget_requests_model_name'), ['model_name'], unique=False)
        batch_op.create_index(batch_op.f('ix_forget_requests_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_forget_requests_subject_reference'), ['subject_reference'], unique=False)

    op.create_table('registered_models',
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('production_version', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_registered_models'))
    )
    op.create_table('model_versions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('model_name', sa.String(length=100), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('parent_version', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('architecture', sa.String(length=64), nullable=False),
    sa.Column('forget_request_id', sa.String(length=36), nullable=True),
    sa.Column('method', sa.String(length=64), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('forgotten_classes', sa.JSON(), nullable=False),
    sa.Column('forgotten_sample_ids', sa.JSON(), nullable=False),
    sa.Column('artifact_path', sa.String(length=500), nullable=False),
    sa.Column('artifact_sha256', sa.String(length=64), nullable=False),
    sa.Column('backbone_sha256', sa.String(length=64), nullable=False),
    sa.Column('model_card', sa.JSON(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_name'], ['registered_models.name'], name=op.f('fk_model_versions_model_name_registered_models')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_versions')),
    sa.UniqueConstraint('model_name', 'version', name='uq_model_versions_name_version')
    )
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_versions_forget_request_id'), ['forget_request_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_model_versions_model_name'), ['model_name'], unique=False)




def downgrade() -> None:
    
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_versions_model_name'))
        batch_op.drop_index(batch_op.f('ix_model_versions_forget_request_id'))

    op.drop_table('model_versions')
    op.drop_table('registered_models')
    with op.batch_alter_table('forget_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_forget_requests_subject_reference'))
        batch_op.drop_index(batch_op.f('ix_forget_requests_status'))
        batch_op.drop_index(batch_op.f('ix_forget_requests_model_name'))
        batch_op.drop_index(batch_op.f('ix_forget_requests_created_at'))

    op.drop_table('forget_requests')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_subject_reference'))
        batch_op.drop_index(batch_op.f('ix_audit_log_model_version'))
        batch_op.drop_index(batch_op.f('ix_audit_log_forget_request_id'))
        batch_op.drop_index(batch_op.f('ix_audit_log_created_at'))
        batch_op.drop_index(batch_op.f('ix_audit_log_actor'))
        batch_op.drop_index(batch_op.f('ix_audit_log_action'))

    op.drop_table('audit_log')

