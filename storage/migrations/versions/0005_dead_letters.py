"""Dead letters keep a bounded copy: the original's size and sha256, whether the copy is truncated, the key,
when it was replayed; 64-bit offsets; an index on created_at for ``aet dlq list --since``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0005'
down_revision: Union[str, None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.add_column(sa.Column('key', sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column('raw_size', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('raw_sha256', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('truncated', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('replayed_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.alter_column('offset', existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=True)
        batch_op.create_index(batch_op.f('ix_dead_letters_created_at'), ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dead_letters_created_at'))
        batch_op.alter_column('offset', existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=True)
        batch_op.drop_column('replayed_at')
        batch_op.drop_column('truncated')
        batch_op.drop_column('raw_sha256')
        batch_op.drop_column('raw_size')
        batch_op.drop_column('key')
