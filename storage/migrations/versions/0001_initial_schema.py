"""Initial schema: scored messages, labels, models, control events, alerts, dead letters.

Revision ID: 0001
Revises: 
Create Date: 2026-11-29
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0001'
down_revision: Union[str, None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('alerts',
    sa.Column('id', sa.String(length=128), nullable=False),
    sa.Column('entity', sa.String(length=256), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('window_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('window_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('z', sa.Float(), nullable=False),
    sa.Column('model_version', sa.String(length=64), nullable=False),
    sa.Column('raised_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alerts'))
    )
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_alerts_entity'), ['entity'], unique=False)
        batch_op.create_index(batch_op.f('ix_alerts_model_version'), ['model_version'], unique=False)
        batch_op.create_index(batch_op.f('ix_alerts_window_end'), ['window_end'], unique=False)

    op.create_table('control_events',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('model_version', sa.String(length=64), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_control_events'))
    )
    with op.batch_alter_table('control_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_control_events_kind'), ['kind'], unique=False)
        batch_op.create_index(batch_op.f('ix_control_events_ts'), ['ts'], unique=False)

    op.create_table('dead_letters',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('stage', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('topic', sa.String(length=256), nullable=True),
    sa.Column('partition', sa.Integer(), nullable=True),
    sa.Column('offset', sa.Integer(), nullable=True),
    sa.Column('raw', sa.Text(), nullable=True),
    sa.Column('raw_base64', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dead_letters'))
    )
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dead_letters_stage'), ['stage'], unique=False)

    op.create_table('labels',
    sa.Column('message_id', sa.String(length=256), nullable=False),
    sa.Column('label', sa.String(length=16), nullable=False),
    sa.Column('ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('annotator', sa.String(length=128), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('message_id', name=op.f('pk_labels'))
    )
    with op.batch_alter_table('labels', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_labels_ts'), ['ts'], unique=False)

    op.create_table('models',
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('parent', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('artifact_path', sa.Text(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('backbone', sa.Text(), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('info', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('promoted_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['parent'], ['models.version'], name=op.f('fk_models_parent_models')),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_models'))
    )
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_models_status'), ['status'], unique=False)
        batch_op.create_index(
            'uq_models_one_champion', ['status'], unique=True,
            sqlite_where=sa.text("status = 'champion'"), postgresql_where=sa.text("status = 'champion'"),
        )

    op.create_table('scored_messages',
    sa.Column('message_id', sa.String(length=256), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('channel', sa.String(length=256), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('entities', sa.JSON(), nullable=False),
    sa.Column('meta', sa.JSON(), nullable=False),
    sa.Column('label', sa.String(length=16), nullable=False),
    sa.Column('p_negative', sa.Float(), nullable=False),
    sa.Column('p_neutral', sa.Float(), nullable=False),
    sa.Column('p_positive', sa.Float(), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('model_version', sa.String(length=64), nullable=False),
    sa.Column('scored_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('message_id', name=op.f('pk_scored_messages'))
    )
    with op.batch_alter_table('scored_messages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_scored_messages_model_version'), ['model_version'], unique=False)
        batch_op.create_index(batch_op.f('ix_scored_messages_ts'), ['ts'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('scored_messages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_scored_messages_ts'))
        batch_op.drop_index(batch_op.f('ix_scored_messages_model_version'))

    op.drop_table('scored_messages')
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_index('uq_models_one_champion')
        batch_op.drop_index(batch_op.f('ix_models_status'))

    op.drop_table('models')
    with op.batch_alter_table('labels', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_labels_ts'))

    op.drop_table('labels')
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dead_letters_stage'))

    op.drop_table('dead_letters')
    with op.batch_alter_table('control_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_control_events_ts'))
        batch_op.drop_index(batch_op.f('ix_control_events_kind'))

    op.drop_table('control_events')
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_alerts_window_end'))
        batch_op.drop_index(batch_op.f('ix_alerts_model_version'))
        batch_op.drop_index(batch_op.f('ix_alerts_entity'))

    op.drop_table('alerts')
