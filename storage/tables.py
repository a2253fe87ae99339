"""The database tables (SQLAlchemy 2.x declarative), mirrored by the Alembic migrations.

Rows that the bus can deliver more than once are keyed by a natural id (the
message id, the event id, a digest of a dead letter), so writing them again
after a crash overwrites instead of duplicating.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no offsets)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ScoredMessageRow(Base):
    """The latest score of each message (a re-score overwrites)."""

    __tablename__ = "scored_messages"

    message_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    source: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(256))
    text: Mapped[str] = mapped_column(Text)
    ts: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    entities: Mapped[list[str]] = mapped_column(JSON, default=list)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    label: Mapped[str] = mapped_column(String(16))
    p_negative: Mapped[float] = mapped_column(Float)
    p_neutral: Mapped[float] = mapped_column(Float)
    p_positive: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)
    model_version: Mapped[str] = mapped_column(String(64), index=True)
    scored_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LabelRow(Base):
    """Ground-truth labels (analyst or corpus), one per message; the latest wins."""

    __tablename__ = "labels"

    message_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    label: Mapped[str] = mapped_column(String(16))
    ts: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    annotator: Mapped[str] = mapped_column(String(128))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ModelRow(Base):
    """A registered model version: its artifact, lineage, metrics and status."""

    __tablename__ = "models"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    parent: Mapped[str | None] = mapped_column(ForeignKey("models.version"), nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    artifact_path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    backbone: Mapped[str] = mapped_column(Text)
    labels: Mapped[list[str]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    promoted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        # At most one champion, enforced by the database even under concurrent promotions.
        Index(
            "uq_models_one_champion", "status", unique=True,
            sqlite_where=text("status = 'champion'"), postgresql_where=text("status = 'champion'"),
        ),
    )


class ControlEventRow(Base):
    """Drift events, retrain requests, training results, promotions and rollbacks."""

    __tablename__ = "control_events"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    model_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class AlertRow(Base):
    """Sentiment alerts as published to ``aet.alerts``."""

    __tablename__ = "alerts"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    entity: Mapped[str] = mapped_column(String(256), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    window_end: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    z: Mapped[float] = mapped_column(Float)
    model_version: Mapped[str] = mapped_column(String(64), index=True)
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)


class DeadLetterRow(Base):
    """Refused inputs, keyed by a digest of where they came from and what they were."""

    __tablename__ = "dead_letters"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    stage: Mapped[str] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(Text)
    topic: Mapped[str | None] = mapped_column(String(256), nullable=True)
    partition: Mapped[int | None] = mapped_column(Integer, nullable=True)
    offset: Mapped[int | None] = mapped_column(Integer, nullable=True)
    raw: Mapped[str | None] = mapped_column(Text, nullable=True)
    raw_base64: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


