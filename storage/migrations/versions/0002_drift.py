"""Drift monitor: detector state, the delayed-label ledger, live quality per source and model version.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0002'
down_revision: Union[str, None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('detector_state',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('state', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_detector_state'))
    )
    op.create_table('label_joins',
    sa.Column('message_id', sa.String(length=256), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('label', sa.String(length=16), nullable=False),
    sa.Column('annotator', sa.String(length=128), nullable=False),
    sa.Column('label_ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=True),
    sa.Column('model_version', sa.String(length=64), nullable=True),
    sa.Column('predicted', sa.String(length=16), nullable=True),
    sa.Column('message_ts', sa.DateTime(timezone=True), nullable=True),
    sa.Column('position', sa.Integer(), nullable=True),
    sa.Column('held_at', sa.Integer(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('message_id', name=op.f('pk_label_joins'))
    )
    with op.batch_alter_table('label_joins', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_label_joins_status'), ['status'], unique=False)

    op.create_table('live_quality',
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('model_version', sa.String(length=64), nullable=False),
    sa.Column('labeled', sa.Integer(), nullable=False),
    sa.Column('correct', sa.Integer(), nullable=False),
    sa.Column('window', sa.Integer(), nullable=False),
    sa.Column('accuracy', sa.Float(), nullable=False),
    sa.Column('macro_f1', sa.Float(), nullable=False),
    sa.Column('confusion', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('source', 'model_version', name=op.f('pk_live_quality'))
    )


def downgrade() -> None:
    op.drop_table('live_quality')
    with op.batch_alter_table('label_joins', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_label_joins_status'))

    op.drop_table('label_joins')
    op.drop_table('detector_state')
