"""The database tables (SQLAlchemy 2.x declarative), mirrored by the Alembic migrations.

Rows that the bus can deliver more than once are keyed by a natural id (the
message id, the event id, a digest of a dead letter), so writing them again
after a crash overwrites instead of duplicating.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    false,
    text,
)
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
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


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
            "uq_models_one_champion",
            "status",
            unique=True,
            sqlite_where=text("status = 'champion'"),
            postgresql_where=text("status = 'champion'"),
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
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)  # indexed by 0003 (feeds poll it)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)


class AlertDeliveryRow(Base):
    """The outbox of alert sinks (webhook, stdout): one row per alert and sink until delivered.

    A sink finds alerts that have no row yet, delivers them, and keeps failed ones
    ``pending`` with a growing ``next_attempt_at``; ``claimed_until`` is a short lease
    so two dispatchers do not send the same alert at once.
    """

    __tablename__ = "alert_deliveries"

    alert_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    sink: Mapped[str] = mapped_column(String(512), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending, delivered, rejected
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class EntityBaselineRow(Base):
    """The alert engine's baseline of one entity and alert kind (entity ``*``: the global prior)."""

    __tablename__ = "entity_baselines"

    entity: Mapped[str] = mapped_column(String(256), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), primary_key=True)
    mean: Mapped[float] = mapped_column(Float)
    var: Mapped[float] = mapped_column(Float)
    noise: Mapped[float] = mapped_column(Float)
    windows: Mapped[int] = mapped_column(Integer)
    through: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EntitySentimentRow(Base):
    """Counts of one entity's scored messages per event-time bucket (the analysts' chart)."""

    __tablename__ = "entity_sentiment"

    entity: Mapped[str] = mapped_column(String(256), primary_key=True)
    bucket_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True, index=True)
    bucket_end: Mapped[datetime] = mapped_column(UTCDateTime)
    n: Mapped[int] = mapped_column(Integer)
    negative: Mapped[int] = mapped_column(Integer)
    neutral: Mapped[int] = mapped_column(Integer)
    positive: Mapped[int] = mapped_column(Integer)
    score_sum: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DeadLetterRow(Base):
    """Refused inputs, keyed by a digest of where they came from and what they were.

    ``raw``/``raw_base64`` hold a copy of at most ``dead_letters.raw_bytes`` of the input; ``raw_size`` and
    ``raw_sha256`` describe the whole of it and ``truncated`` says the copy is only its beginning (all three
    NULL/false for rows from before revision 0005). ``replayed_at``: when ``aet dlq replay`` re-published it.
    """

    __tablename__ = "dead_letters"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    stage: Mapped[str] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(Text)
    topic: Mapped[str | None] = mapped_column(String(256), nullable=True)
    partition: Mapped[int | None] = mapped_column(Integer, nullable=True)
    offset: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # Kafka offsets are 64-bit
    raw: Mapped[str | None] = mapped_column(Text, nullable=True)
    raw_base64: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    key: Mapped[str | None] = mapped_column(String(256), nullable=True)
    raw_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    raw_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    truncated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    replayed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ReservoirExampleRow(Base):
    """One slot of the replay reservoir: a past labeled example kept for replay and the forgetting check.

    Slots are per (source, label) stratum, so the reservoir is bounded per
    source and balanced over the classes (see pipeline/learning/rehearsal.py).
    """

    __tablename__ = "reservoir_examples"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    label: Mapped[str] = mapped_column(String(16), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    example_id: Mapped[str] = mapped_column(String(256), index=True)
    text: Mapped[str] = mapped_column(Text)
    ts: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ReservoirStratumRow(Base):
    """How many examples one (source, label) stratum of the reservoir has seen (reservoir sampling's n)."""

    __tablename__ = "reservoir_strata"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    label: Mapped[str] = mapped_column(String(16), primary_key=True)
    seen: Mapped[int] = mapped_column(Integer)


class TrainingRunRow(Base):
    """One retrain request as the trainer handled it: attempts, outcome, the version it produced."""

    __tablename__ = "training_runs"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # running, registered, rejected
    attempts: Mapped[int] = mapped_column(Integer)
    version: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    request: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


# Drift monitor (pipeline/roles/monitor.py), created by migration 0002.


class DetectorStateRow(Base):
    """The drift monitor's saved state: detectors, stream positions, episodes, pending retrain requests.

    One row per monitor (its consumer group), written in the same transaction as
    the batch's events, so a restart resumes exactly where the last stored batch left off.
    """

    __tablename__ = "detector_state"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LabelJoinRow(Base):
    """The monitor's ledger of delayed labels: ``joined`` to their prediction, or ``held`` until it arrives."""

    __tablename__ = "label_joins"

    message_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    label: Mapped[str] = mapped_column(String(16))
    annotator: Mapped[str] = mapped_column(String(128))
    label_ts: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str | None] = mapped_column(String(16), nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    predicted: Mapped[str | None] = mapped_column(String(16), nullable=True)
    message_ts: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    position: Mapped[int | None] = mapped_column(Integer, nullable=True)
    held_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LiveQualityRow(Base):
    """Live quality on labeled messages per source and model version: totals and a rolling window."""

    __tablename__ = "live_quality"

    source: Mapped[str] = mapped_column(String(16), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    labeled: Mapped[int] = mapped_column(Integer)
    correct: Mapped[int] = mapped_column(Integer)
    window: Mapped[int] = mapped_column(Integer)
    accuracy: Mapped[float] = mapped_column(Float)
    macro_f1: Mapped[float] = mapped_column(Float)
    confusion: Mapped[list[list[int]]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StateFenceRow(Base):
    """Who owns a role's persisted state (a monitor group's detector state, the alert engine's baselines).

    An instance takes the fence when it loads the state (``epoch`` + 1) and every
    write of the state checks, in its transaction, that the epoch is still its own;
    a stale instance's write is refused (storage/fencing.py).
    """

    __tablename__ = "state_fences"

    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer)
    owner: Mapped[str] = mapped_column(String(256))
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime)
    written_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class IngestItemRow(Base):
    """An item an ingest source has emitted (a feed item's guid hash, a file line's key): emitted once, ever."""

    __tablename__ = "ingest_items"

    source: Mapped[str] = mapped_column(String(256), primary_key=True)
    item_key: Mapped[str] = mapped_column(String(256), primary_key=True)
    emitted_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class IngestFeedRow(Base):
    """A polled feed's HTTP cache validators (ETag, Last-Modified) and its error backoff."""

    __tablename__ = "ingest_feeds"

    source: Mapped[str] = mapped_column(String(256), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048), primary_key=True)
    etag: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    last_modified: Mapped[str | None] = mapped_column(String(256), nullable=True)
    failures: Mapped[int] = mapped_column(Integer)
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class IngestFileRow(Base):
    """A file a file source has read: its identity (size, mtime, sha256) and how far it got (``position``,
    the byte offset after the last emitted batch; ``done`` when the whole file is emitted)."""

    __tablename__ = "ingest_files"

    source: Mapped[str] = mapped_column(String(256), primary_key=True)
    path: Mapped[str] = mapped_column(String(2048), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime: Mapped[float] = mapped_column(Float)
    sha256: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(BigInteger)
    done: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class IngestSeenEventRow(Base):
    """A webhook event id already taken (Slack retries an event it thinks was lost: it is published once)."""

    __tablename__ = "ingest_seen_events"

    source: Mapped[str] = mapped_column(String(256), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class AlertAckRow(Base):
    """An analyst's acknowledgement of an alert, shown to every analyst on the page (the latest one wins)."""

    __tablename__ = "alert_acks"

    alert_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    by: Mapped[str] = mapped_column(String(128))
    note: Mapped[str] = mapped_column(String(1000), default="")
    acked_at: Mapped[datetime] = mapped_column(UTCDateTime)
