"""Typed records that travel on the bus, one pydantic model per topic.

Every record carries ``schema_version`` so that consumers can refuse records
they do not understand instead of misreading them. Decoding is total: whatever
:func:`decode` is given (a tombstone, any bytes, any JSON) it returns a record
or raises :class:`BadRecord`, whose reason becomes a dead-letter record. What
it returns can be serialized and stored: no NUL or lone surrogate in any
string, every string within its database column, event times within
:class:`~aet.pipeline.config.LimitsSettings`' window around the wall clock,
bounded entities, meta and payloads, so a bad record is refused here, with a
reason, instead of failing every write later.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

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

from aet.pipeline.config import DeadLetterSettings, LimitsSettings

SCHEMA_VERSION = 1
Sentiment = Literal["negative", "neutral", "positive"]
LABELS: tuple[Sentiment, Sentiment, Sentiment] = ("negative", "neutral", "positive")
Source = Literal["news", "chat"]
DEFAULT_MAX_TEXT_CHARS = 5000
# Widths of the database columns these fields are stored in (storage/tables.py): enforced when a record
# is decoded, because SQLite does not enforce them and PostgreSQL refuses the whole batch.
ID_CHARS = 256  # message ids, channels, entities, topics, keys
ANNOTATOR_CHARS = 128
VERSION_CHARS = 64  # model versions, control event ids, dead-letter stages, alert kinds
ALERT_ID_CHARS = 128
REASON_CHARS = 2000  # a dead letter's reason
MAX_NESTING = 32  # JSON objects and arrays inside a record

_limits = LimitsSettings()
_dead_letters = DeadLetterSettings()


def configure(limits: LimitsSettings | None = None, dead_letters: DeadLetterSettings | None = None) -> None:
    """Make these the limits and dead-letter settings of this process (the composition root calls it once)."""
    global _limits, _dead_letters
    if limits is not None:
        _limits = limits
    if dead_letters is not None:
        _dead_letters = dead_letters


def current_limits() -> LimitsSettings:
    """The limits records are decoded with unless a decode passes its own (``limits=`` in the context)."""
    return _limits


def current_dead_letter_settings() -> DeadLetterSettings:
    """What dead letters keep and when writes give up, as :func:`configure` set them."""
    return _dead_letters


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
            raise ValueError(f"unparsable timestamp {_shown(value)}: expected ISO-8601") from exc
    else:
        raise ValueError(f"unparsable timestamp {_shown(value)}: expected an ISO-8601 string")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise ValueError(f"timestamp {_shown(value)} is out of range in UTC") from exc


def _shown(value: Any, limit: int = 80) -> str:
    """``repr`` of a value for a reason, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_event_time(ts: datetime, limits: LimitsSettings | None = None, now: datetime | None = None) -> datetime:
    """``ts`` if it lies within the limits' window around ``now`` (the wall clock), else a ValueError."""
    limits = limits or _limits
    now = now or utcnow()
    try:
        earliest = now - timedelta(days=limits.max_past_days)
    except OverflowError:
        earliest = datetime.min.replace(tzinfo=UTC)
    try:
        latest = now + timedelta(seconds=limits.max_future_s)
    except OverflowError:
        latest = datetime.max.replace(tzinfo=UTC)
    if ts < earliest:
        raise ValueError(
            f"event time {ts.isoformat()} is more than {limits.max_past_days:g} days in the past (limits.max_past_days)"
        )
    if ts > latest:
        raise ValueError(
            f"event time {ts.isoformat()} is more than {limits.max_future_s:g} s in the future (limits.max_future_s)"
        )
    return ts


def _context_limits(info: ValidationInfo) -> tuple[LimitsSettings, datetime | None]:
    context = info.context or {}
    return context.get("limits") or _limits, context.get("now")


def check_storable(value: Any, where: str = "record", depth: int = 0, *, finite: bool = True) -> None:
    """Refuse what no column can hold, anywhere in ``value``: NUL characters (PostgreSQL refuses them in text),
    lone surrogates (not UTF-8, so not serializable), with ``finite`` NaN and infinities (not JSON: PostgreSQL's
    json refuses them, the wire turns them into null) and JSON nested deeper than ``MAX_NESTING``."""
    if isinstance(value, float):
        if finite and not math.isfinite(value):
            raise ValueError(f"{where}: {value} is not a finite number")
        return
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{where}: contains a NUL character")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"{where}: not valid Unicode ({exc.reason} at {exc.start})") from exc
        return
    if isinstance(value, (dict, list, tuple)) and depth >= MAX_NESTING:
        raise ValueError(f"{where}: nested deeper than {MAX_NESTING} levels")
    if isinstance(value, dict):
        for k, v in value.items():
            name = k if isinstance(k, str) and k.isprintable() and len(k) <= 40 else "(a key)"
            check_storable(k, where, depth + 1, finite=finite)
            check_storable(v, name if depth == 0 else f"{where}.{name}", depth + 1, finite=finite)
    elif isinstance(value, (list, tuple)):
        for v in value:
            check_storable(v, where, depth + 1, finite=finite)


def _json_chars(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, default=str))


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

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any, info: ValidationInfo) -> Any:
        # Decoding (a context is given) refuses NaN; a record built in code keeps the old leniency (null on the wire).
        if isinstance(data, dict):
            check_storable(data, finite=info.context is not None)
        return data

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

    id: str = Field(min_length=1, max_length=ID_CHARS)
    source: Source
    channel: str = Field(default="default", max_length=ID_CHARS)
    text: str
    ts: datetime
    entities: list[Annotated[str, Field(max_length=ID_CHARS)]] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("ts", mode="before")
    @classmethod
    def _parse_ts(cls, value: Any) -> datetime:
        return parse_event_time(value)

    @field_validator("ts")
    @classmethod
    def _ts_in_window(cls, value: datetime, info: ValidationInfo) -> datetime:
        limits, now = _context_limits(info)
        return check_event_time(value, limits, now)

    @field_validator("entities")
    @classmethod
    def _few_entities(cls, value: list[str], info: ValidationInfo) -> list[str]:
        limit = _context_limits(info)[0].max_entities
        if len(value) > limit:
            raise ValueError(f"{len(value)} entities, over the limit of {limit} (limits.max_entities)")
        return value

    @field_validator("meta")
    @classmethod
    def _small_meta(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        limit = _context_limits(info)[0].max_meta_chars
        size = _json_chars(value)
        if size > limit:
            raise ValueError(f"meta has {size} characters as JSON, over the limit of {limit} (limits.max_meta_chars)")
        return value

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
        """Partition key: the first entity, so one entity stays ordered, else the message id, so that a corpus
        without entities spreads over the partitions and the scorers of a group share it."""
        return self.entities[0] if self.entities else self.id


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
    model_version: str = Field(max_length=VERSION_CHARS)
    scored_at: datetime = Field(default_factory=utcnow)
    base_version: str | None = Field(default=None, max_length=VERSION_CHARS)
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

    message_id: str = Field(min_length=1, max_length=ID_CHARS)
    label: Sentiment
    ts: datetime = Field(default_factory=utcnow)
    annotator: str = Field(default="unknown", max_length=ANNOTATOR_CHARS)

    @field_validator("ts", mode="before")
    @classmethod
    def _parse_ts(cls, value: Any) -> datetime:
        return parse_event_time(value)

    @field_validator("ts")
    @classmethod
    def _ts_in_window(cls, value: datetime, info: ValidationInfo) -> datetime:
        limits, now = _context_limits(info)
        return check_event_time(value, limits, now)


ControlKind = Literal[
    "drift",
    "retrain_request",
    "training_result",
    "promotion",
    "heads",
    "rollback",
    "rejection",
    "shadow",
]


class ControlEvent(Record):
    """A control-plane event: drift, retrain request, training result, promotion, rollback."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=VERSION_CHARS)
    kind: ControlKind
    ts: datetime = Field(default_factory=utcnow)
    model_version: str | None = Field(default=None, max_length=VERSION_CHARS)
    payload: dict[str, Any] = Field(default_factory=dict)

    @field_validator("ts", mode="before")
    @classmethod
    def _parse_ts(cls, value: Any) -> datetime:
        return parse_event_time(value)

    @field_validator("payload")
    @classmethod
    def _small_payload(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        limit = _context_limits(info)[0].max_payload_chars
        size = _json_chars(value)
        if size > limit:
            raise ValueError(f"payload has {size} characters as JSON, over the limit of {limit}")
        return value


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

    id: str = Field(min_length=1, max_length=ALERT_ID_CHARS)
    entity: str = Field(max_length=ID_CHARS)
    kind: str = Field(max_length=VERSION_CHARS)
    window_start: datetime
    window_end: datetime
    counts: dict[str, int]
    shares: dict[str, float]
    baseline: dict[str, float]
    z: float
    severity: Literal["info", "warning", "critical"]
    example_ids: list[str] = Field(default_factory=list)
    model_version: str = Field(max_length=VERSION_CHARS)
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

    It keeps a copy of the input of at most ``dead_letters.raw_bytes`` bytes:
    ``raw`` as text when that copy is valid UTF-8 without NUL, else
    ``raw_base64`` with the exact bytes. ``raw_size`` and ``raw_sha256`` describe
    the whole original, and ``truncated`` says the copy is only its beginning,
    so a dead letter stays small (an 8 MB input does not become an 8 MB record
    over the bus's request limit) and says what it lost.
    """

    stage: str = Field(min_length=1, max_length=VERSION_CHARS)
    reason: str
    topic: str | None = Field(default=None, max_length=ID_CHARS)
    partition: int | None = Field(default=None, ge=0, le=2**31 - 1)
    offset: int | None = Field(default=None, ge=0, le=2**63 - 1)
    key: str | None = Field(default=None, max_length=ID_CHARS)
    raw: str | None = None
    raw_base64: str | None = None
    raw_size: int | None = Field(default=None, ge=0, description="bytes of the original input (None: not recorded)")
    raw_sha256: str | None = Field(default=None, pattern="^[0-9a-f]{64}$")
    truncated: bool = False
    ts: datetime = Field(default_factory=utcnow)

    @field_validator("ts", mode="before")
    @classmethod
    def _parse_ts(cls, value: Any) -> datetime:
        return parse_event_time(value)

    @property
    def kept(self) -> bytes | None:
        """The copy of the input this dead letter kept (all of it unless ``truncated``)."""
        if self.raw is not None:
            return self.raw.encode("utf-8")
        if self.raw_base64 is not None:
            return base64.b64decode(self.raw_base64)
        return None

    @property
    def complete(self) -> bool:
        """Whether the kept copy is the whole original input (so that it can be re-published)."""
        kept = self.kept
        if kept is None or self.truncated:
            return False
        return self.raw_sha256 is None or hashlib.sha256(kept).hexdigest() == self.raw_sha256

    @classmethod
    def of(
        cls,
        raw: bytes | None,
        *,
        stage: str,
        reason: str,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        key: str | None = None,
        max_raw_bytes: int | None = None,
    ) -> DeadLetter:
        """A dead letter of ``raw`` (``None``: a tombstone) that never fails to build.

        Keeps at most ``max_raw_bytes`` of the input (default: ``dead_letters.raw_bytes``);
        the reason, stage, topic and key are cleaned and cut to fit their columns.
        """
        data = b"" if raw is None else bytes(raw)
        limit = _dead_letters.raw_bytes if max_raw_bytes is None else max_raw_bytes
        kept = data[:limit]
        text, b64 = _as_text(kept, cut=len(kept) < len(data)), None
        if text is None:
            b64 = base64.b64encode(kept).decode("ascii")
        return cls(
            stage=clean_text(stage, VERSION_CHARS) or "unknown",
            reason=clean_text(reason, REASON_CHARS),
            topic=clean_text(topic, ID_CHARS) if topic is not None else None,
            partition=partition,
            offset=offset,
            key=clean_text(key, ID_CHARS) if key is not None else None,
            raw=text,
            raw_base64=b64,
            raw_size=len(data),
            raw_sha256=hashlib.sha256(data).hexdigest(),
            truncated=len(kept) < len(data),
        )


def _as_text(kept: bytes, *, cut: bool) -> str | None:
    """``kept`` as text if it is UTF-8 without NUL (a multi-byte character cut at the end is dropped), else None."""
    if b"\x00" in kept:
        return None
    try:
        return kept.decode("utf-8")
    except UnicodeDecodeError as exc:
        if cut and exc.reason == "unexpected end of data" and exc.start >= len(kept) - 3:
            return kept[: exc.start].decode("utf-8")
        return None


def clean_text(text: str, limit: int) -> str:
    """``text`` made storable: NUL and lone surrogates escaped, cut to ``limit`` characters."""
    cleaned = text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


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
        parts.append(f"{where}: {message}" if item["loc"] else message)
    return "; ".join(parts)


def decode(model: type[RecordT], raw: bytes | str | dict[str, Any] | None, **context: Any) -> RecordT:
    """Decode and validate one record; any failure raises :class:`BadRecord` with a reason, never anything else.

    ``raw`` may be anything a bus delivers: ``None`` (a Kafka tombstone), bytes
    that are not UTF-8 or not JSON, JSON of any shape. ``context`` reaches the
    validators: ``max_text_chars``, ``limits`` (default :func:`current_limits`),
    ``now`` (the wall clock the event-time window is around).
    """
    if raw is None:
        raise BadRecord("no value (a tombstone): nothing to decode")
    if isinstance(raw, dict):
        payload: Any = raw
    else:
        try:
            payload = json.loads(raw)
        except RecursionError:
            raise BadRecord(f"not JSON: nested deeper than {MAX_NESTING} levels") from None
        except (ValueError, TypeError) as exc:  # JSONDecodeError, UnicodeDecodeError, huge integers, other types
            raise BadRecord(clean_text(f"not JSON: {exc}", REASON_CHARS)) from exc
    if not isinstance(payload, dict):
        raise BadRecord(f"not a JSON object: got {type(payload).__name__}")
    try:
        return model.model_validate(payload, context=context or {})
    except ValidationError as exc:
        raise BadRecord(clean_text(explain(exc), REASON_CHARS)) from exc
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise BadRecord(clean_text(f"{type(exc).__name__}: {exc}", REASON_CHARS)) from exc
