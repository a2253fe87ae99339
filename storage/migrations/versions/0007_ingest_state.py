"""Ingest state: what each source already emitted, its feeds' HTTP validators and backoff, processed files,
and the webhook event ids already taken (issue 16).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0007'
down_revision: Union[str, None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('ingest_items',
    sa.Column('source', sa.String(length=256), nullable=False),
    sa.Column('item_key', sa.String(length=256), nullable=False),
    sa.Column('emitted_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('source', 'item_key', name=op.f('pk_ingest_items'))
    )
    op.create_index(op.f('ix_ingest_items_emitted_at'), 'ingest_items', ['emitted_at'], unique=False)
    op.create_table('ingest_feeds',
    sa.Column('source', sa.String(length=256), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('etag', sa.String(length=1024), nullable=True),
    sa.Column('last_modified', sa.String(length=256), nullable=True),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('retry_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.String(length=2000), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('source', 'url', name=op.f('pk_ingest_feeds'))
    )
    op.create_table('ingest_files',
    sa.Column('source', sa.String(length=256), nullable=False),
    sa.Column('path', sa.String(length=2048), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('mtime', sa.Float(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('position', sa.BigInteger(), nullable=False),
    sa.Column('done', sa.Boolean(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('source', 'path', name=op.f('pk_ingest_files'))
    )
    op.create_table('ingest_seen_events',
    sa.Column('source', sa.String(length=256), nullable=False),
    sa.Column('event_id', sa.String(length=256), nullable=False),
    sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('source', 'event_id', name=op.f('pk_ingest_seen_events'))
    )
    op.create_index(op.f('ix_ingest_seen_events_seen_at'), 'ingest_seen_events', ['seen_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_ingest_seen_events_seen_at'), table_name='ingest_seen_events')
    op.drop_table('ingest_seen_events')
    op.drop_table('ingest_files')
    op.drop_table('ingest_feeds')
    op.drop_index(op.f('ix_ingest_items_emitted_at'), table_name='ingest_items')
    op.drop_table('ingest_items')
