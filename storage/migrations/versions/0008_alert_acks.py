"""Alert acknowledgements: an analyst marks an alert seen on the page, and every other analyst sees it (issue 16).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0008'
down_revision: Union[str, None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('alert_acks',
    sa.Column('alert_id', sa.String(length=128), nullable=False),
    sa.Column('by', sa.String(length=128), nullable=False),
    sa.Column('note', sa.String(length=1000), nullable=False),
    sa.Column('acked_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('alert_id', name=op.f('pk_alert_acks'))
    )


def downgrade() -> None:
    op.drop_table('alert_acks')
