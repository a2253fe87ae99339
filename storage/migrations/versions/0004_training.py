"""Training: the replay reservoir (examples and per-stratum counts) and the trainer's run log.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0004'
down_revision: Union[str, None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('reservoir_examples',
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('label', sa.String(length=16), nullable=False),
    sa.Column('slot', sa.Integer(), nullable=False),
    sa.Column('example_id', sa.String(length=256), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('ts', sa.DateTime(timezone=True), nullable=True),
    sa.Column('added_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('source', 'label', 'slot', name=op.f('pk_reservoir_examples'))
    )
    with op.batch_alter_table('reservoir_examples', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reservoir_examples_example_id'), ['example_id'], unique=False)

    op.create_table('reservoir_strata',
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('label', sa.String(length=16), nullable=False),
    sa.Column('seen', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('source', 'label', name=op.f('pk_reservoir_strata'))
    )

    op.create_table('training_runs',
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('request', sa.JSON(), nullable=False),
    sa.Column('result', sa.JSON(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('request_id', name=op.f('pk_training_runs'))
    )
    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_training_runs_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_training_runs_version'), ['version'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_training_runs_version'))
        batch_op.drop_index(batch_op.f('ix_training_runs_status'))

    op.drop_table('training_runs')
    op.drop_table('reservoir_strata')
    with op.batch_alter_table('reservoir_examples', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reservoir_examples_example_id'))

    op.drop_table('reservoir_examples')
