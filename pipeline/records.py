"""Typed records that travel on the bus, one pydantic model per topic.

Every record carries ``schema_version`` so that consumers can refuse records
they do not understand instead of misreading them. Decoding never raises into
a worker loop uncaught: :func:`decode` turns every failure into
:class:`BadRecord`, whose reason becomes a dead-letter record.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, date, datetime
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

SCHEMA_VERSION = 1
Sentiment = Literal["negative", "neutral", "positive"]
LABELS: tuple[Sentiment, Sentiment, Sentiment] = ("negative", "neutral", "positive")
Source = Literal["news", "chat"]
DEFAULT_MAX_TEXT_CHARS = 5000


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def parse_event_time(value: Any) -> datetime:
    """Parse an ISO-8601 time or date into an aware UTC datetime.

    Dates without a time (``2020-03-16``) mean midnight UTC, and times without
    an offset are taken as UTC: both are common in exported corpora.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError as exc:
            raise ValueError(f"unparsable timestamp {value!r}: expected ISO-8601") from exc
    else:
        raise ValueError(f"unparsable timestamp {value!r}: expected an ISO-8601 string")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


MAX_FEATURES_CHARS = 65_536  # base64 of 24,576 float16 values: far above any encoder's feature width


def pack_features(values: np.ndarray) -> str:
    """A feature vector as base64 of little-endian float16 (2 bytes a value on the wire)."""
    return base64.b64encode(np.asarray(values, dtype="<f2").tobytes()).decode("ascii")


def unpack_features(text: str) -> np.ndarray:
    """The float32 vector :func:`pack_features` packed."""
    return np.frombuffer(base64.b64decode(text, validate=True), dtype="<f2").astype(np.float32)


class Record(BaseModel):
    """Base of every bus record: strict about unknown versions, tolerant of extra fields."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: int = SCHEMA_VERSION

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(f"unsupported schema_version {value} (this build reads {SCHEMA_VERSION})")
        return value

    def to_bytes(self) -> bytes:
        """UTF-8 JSON, the wire format of every topic."""
        return self.model_dump_json().encode("utf-8")


class Message(Record):
    """An incoming news sentence or chat message (topic ``aet.messages``)."""

    id: str = Field(min_length=1, max_length=256)
    source: Source
    channel: str = Field(default="default", max_length=256)
    text: str
    ts: datetime
    entities: list[str] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("ts", mode="before")
    @classmethod
    def _parse_ts(cls, value: Any) -> datetime:
        return parse_event_time(value)

    @field_validator("text")
    @classmethod
    def _text_within_limits(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise ValueError("text is empty")
        limit = (info.context or {}).get("max_text_chars", DEFAULT_MAX_TEXT_CHARS)
        if len(value) > limit:
            raise ValueError(f"text has {len(value)} characters, over the limit of {limit}")
        return value

    @property
    def key(self) -> str:
        """Partition key: the first entity, else the channel, so one entity stays ordered."""
        return self.entities[0] if self.entities else self.channel


class Probs(BaseModel):
    """Class probabilities of one prediction."""

    model_config = ConfigDict(frozen=True)

    negative: float = Field(ge=0.0, le=1.0)
    neutral: float = Field(ge=0.0, le=1.0)
    positive: float = Field(ge=0.0, le=1.0)


class ScoredMessage(Message):
    """A message with its sentiment and the model version that produced it (``aet.scored``).

    ``base_version`` names the weights when a fast-path heads version served
    (``model_version`` ``v0002.h3`` on ``v0002``); ``features`` carries the
    model's features of the text (:func:`pack_features`) for the fast path to
    learn from without running the encoder again.
    """

    label: Sentiment
    probs: Probs
    score: float = Field(ge=-1.0, le=1.0, description="p_positive - p_negative")
    model_version: str
    scored_at: datetime = Field(default_factory=utcnow)
    base_version: str | None = None
    base_probs: Probs | None = None  # the weights' own probabilities, when a fast-path head served instead
    features: str | None = Field(default=None, max_length=MAX_FEATURES_CHARS)

    @property
    def base(self) -> str:
        """The version of the weights that scored this message."""
        return self.base_version or self.model_version

    @field_validator("text")
    @classmethod
    def _text_within_limits(cls, value: str, info: ValidationInfo) -> str:
        return value


class LabelRecord(Record):
    """A delayed ground-truth label for one message (``aet.labels``)."""

    message_id: str = Field(min_length=1, max_length=256)
    label: Sentiment
    ts: datetime = Field(default_factory=utcnow)
    annotator: str = "unknown"

    @field_validator("ts", mode="before")
    @classmethod
    def _parse_ts(cls, value: Any) -> datetime:
        return parse_event_time(value)


ControlKind = Literal[
    "drift",
    "retrain_request",
    "training_result",
    "promotion",
    "heads",
    "rollback",
    "rejection",
]


class ControlEvent(Record):
    """A control-plane event: drift, retrain request, training result, promotion, rollback."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    kind: ControlKind
    ts: datetime = Field(default_factory=utcnow)
    model_version: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)


class RetrainRequest(BaseModel):
    """The payload of a ``retrain_request`` control event, as the trainer reads it (every field optional).

    ``window`` ({start, end}, or ``window_start``/``window_end``, or ``since``/``until``)
    names the stored labeled messages to train on, ``source`` keeps one source's,
    ``data`` names a labeled JSONL file instead; ``drift_event_id`` (or
    ``drift_event.id``) is the lineage; ``mode``, ``max_examples`` and ``auto_promote``
    override the trainer's settings for this request.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    window_start: datetime | None = None
    window_end: datetime | None = None
    source: Literal["news", "chat"] | None = None
    data: str | None = None
    mode: Literal["full", "attention", "lora"] | None = None
    max_examples: int | None = Field(default=None, ge=1)
    drift_event_id: str | None = None
    auto_promote: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError(f"the payload must be an object, not {type(value).__name__}")
        v = dict(value)
        window = v.pop("window", None)
        if window is not None:
            if not isinstance(window, dict):
                raise ValueError("window must be an object with start and/or end")
            v.setdefault("window_start", window.get("start"))
            v.setdefault("window_end", window.get("end"))
        if "since" in v:
            v.setdefault("window_start", v.pop("since"))
        if "until" in v:
            v.setdefault("window_end", v.pop("until"))
        drift = v.get("drift_event")
        if isinstance(drift, dict) and "drift_event_id" not in v:
            v["drift_event_id"] = drift.get("id")
        return v

    @field_validator("window_start", "window_end", mode="before")
    @classmethod
    def _time(cls, value: Any) -> Any:
        return None if value is None else parse_event_time(value)

    @model_validator(mode="after")
    def _ordered(self) -> RetrainRequest:
        if self.window_start and self.window_end and self.window_end <= self.window_start:
            raise ValueError(
                f"window end {self.window_end.isoformat()} is not after its start {self.window_start.isoformat()}"
            )
        return self

    def window(self) -> dict[str, str | None]:
        return {
            "start": self.window_start.isoformat() if self.window_start else None,
            "end": self.window_end.isoformat() if self.window_end else None,
        }


class Alert(Record):
    """A sentiment alert about one entity over one event-time window (``aet.alerts``)."""

    id: str
    entity: str
    kind: str
    window_start: datetime
    window_end: datetime
    counts: dict[str, int]
    shares: dict[str, float]
    baseline: dict[str, float]
    z: float
    severity: Literal["info", "warning", "critical"]
    example_ids: list[str] = Field(default_factory=list)
    model_version: str
    raised_at: datetime = Field(default_factory=utcnow)
    # Added with the alert engine; optional so that older alert records still decode.
    trigger_id: str | None = Field(default=None, description="the message whose arrival raised the alert")
    model_versions: dict[str, int] = Field(default_factory=dict, description="messages in the window per model version")

    @model_validator(mode="after")
    def _window_ordered(self) -> Alert:
        if self.window_end < self.window_start:
            raise ValueError("window_end is before window_start")
        return self


class DeadLetter(Record):
    """A refused input with the reason and the stage that refused it (``aet.dlq``).

    ``raw`` is the input as text when it is valid UTF-8; otherwise ``raw_base64``
    holds the exact bytes, so nothing is lost.
    """

    stage: str
    reason: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    raw: str | None = None
    raw_base64: str | None = None
    ts: datetime = Field(default_factory=utcnow)

    @classmethod
    def of(
        cls,
        raw: bytes,
        *,
        stage: str,
        reason: str,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        key: str | None = None,
    ) -> DeadLetter:
        """Build a dead letter that keeps the raw input exactly."""
        try:
            text, b64 = raw.decode("utf-8"), None
        except UnicodeDecodeError:
            text, b64 = None, base64.b64encode(raw).decode("ascii")
        return cls(
            stage=stage,
            reason=reason,
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            raw=text,
            raw_base64=b64,
        )


class BadRecord(ValueError):
    """An input that cannot become a valid record; ``reason`` says why, for the DLQ."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


RecordT = TypeVar("RecordT", bound=Record)


def explain(error: ValidationError) -> str:
    """A one-line, human-readable summary of a pydantic validation error."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "record"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "missing field"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def decode(model: type[RecordT], raw: bytes | str | dict[str, Any], **context: Any) -> RecordT:
    """Decode and validate one record, raising :class:`BadRecord` with a reason on any failure."""
    if isinstance(raw, dict):
        payload = raw
    else:
        try:
            payload = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadRecord(f"not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise BadRecord(f"not a JSON object: got {type(payload).__name__}")
    try:
        return model.model_validate(payload, context=context)
    except ValidationError as exc:
        raise BadRecord(explain(exc)) from exc
