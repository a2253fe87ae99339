"""The ports: what the roles need from the bus, the stores, the registry and the artifact directory.

The roles (pipeline/roles/), the worker loop and the learning code are written
against these ``typing.Protocol`` interfaces only. ``aet.adapters`` (bus backends,
alert sinks) and ``aet.storage`` (SQL stores, model registry, artifact directory)
implement them, and the composition root (pipeline/runtime.py) is the only place
that chooses an implementation. The values that cross these interfaces (bus
records, registry snapshots, the monitor's and the alert engine's rows) are
defined here as well, so that ``aet.adapters`` and ``aet.storage`` import from
``aet.pipeline`` nothing but this module, ``records``, ``config`` and ``metrics``
(tests/test_architecture.py checks it).

Each protocol is as narrow as its users: the hot-swap follower only reads the
champion (:class:`RegistryReader`), the promotion gate also changes it
(:class:`Registry`); the reservoir sees its rows (:class:`ReservoirStore`) and the
trainer its run log (:class:`TrainerStore`), although one SQL class keeps both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol, Self

from pydantic import BaseModel, ConfigDict

from aet.pipeline.records import Alert, ControlEvent, DeadLetter, LabelRecord, ScoredMessage

# ---------------------------------------------------------------------------- the bus
#
# The contract is deliberately the intersection of what an in-process queue and
# Kafka can both promise: keyed publishing into partitioned topics, consumer
# groups that share partitions, polling in batches, and an explicit commit that
# a worker calls only after a batch's outputs are published and stored. A
# worker written against it runs unchanged on either backend.


@dataclass(frozen=True)
class BusRecord:
    """One record as read from a topic partition."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    timestamp_ms: int


class BusError(RuntimeError):
    """The bus cannot do what was asked (unreachable broker, closed bus, bad topic)."""


class Consumer(Protocol):
    """A member of a consumer group, reading its share of the partitions of some topics."""

    def poll(self, max_records: int, timeout_ms: int) -> list[BusRecord]:
        """Return up to ``max_records`` records, waiting at most ``timeout_ms`` for the first.

        Records of one partition come in offset order. An empty list means
        nothing arrived in time.
        """
        ...

    def commit(self) -> None:
        """Commit the position after every record returned by ``poll`` so far.

        Call only once the outputs of those records are published and stored:
        after a crash, the group resumes from the last commit.
        """
        ...

    def lag(self) -> int:
        """Records in this member's partitions not yet committed (approximate on Kafka)."""
        ...

    def pause(self) -> None:
        """Stop fetching while slow work runs; ``poll`` keeps the membership alive (default: nothing to pause)."""
        return None

    def resume(self) -> None:
        """Fetch again after :meth:`pause`."""
        return None

    def close(self) -> None:
        """Leave the group (without committing)."""
        ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Publisher(Protocol):
    """The publishing half of the bus (stream ingest and alert forwarding need no more)."""

    def publish(self, topic: str, value: bytes, key: str | None = None) -> None:
        """Queue one record; records with the same key land in the same partition, in order."""
        ...

    def flush(self, timeout_s: float | None = None) -> None:
        """Block until every queued record is acknowledged, or raise :class:`BusError`."""
        ...


class Bus(Publisher, Protocol):
    """A partitioned, keyed publish/subscribe log."""

    def create_topics(self, topics: Iterable[str], partitions: int | None = None) -> None:
        """Create topics that do not exist yet (existing ones are left as they are)."""
        ...

    def consumer(self, group: str, topics: Sequence[str]) -> Consumer:
        """Join ``group`` as a new member reading ``topics`` from the group's committed position."""
        ...

    def group_lag(self, group: str, topics: Sequence[str]) -> int:
        """Records in ``topics`` that ``group`` has not committed yet."""
        ...

    def close(self) -> None:
        """Flush and release every resource."""
        ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- results


class BatchStore(Protocol):
    """Where the worker loop stores one batch's outputs, after publishing them and before committing."""

    def write(
        self,
        *,
        scored: Sequence[ScoredMessage] = (),
        labels: Sequence[LabelRecord] = (),
        dead_letters: Sequence[DeadLetter] = (),
        events: Sequence[ControlEvent] = (),
        alerts: Sequence[Alert] = (),
    ) -> Sequence[DeadLetter] | None:
        """Write the batch's results in one transaction; every write is an upsert on the record's key.

        Returns what it refused to write as dead letters (a message id taken by another text), for the worker
        to publish to the dead-letter topic; None or empty when it refused nothing.
        """
        ...


# ---------------------------------------------------------------------------- models

ModelStatus = Literal["champion", "challenger", "rejected", "retired", "rolled_back"]


class ModelInfo(BaseModel):
    """A snapshot of one registry row."""

    model_config = ConfigDict(from_attributes=True, frozen=True)

    version: str
    parent: str | None
    status: str
    artifact_path: str
    sha256: str
    backbone: str
    labels: list[str]
    metrics: dict[str, Any]
    info: dict[str, Any]
    created_at: datetime
    promoted_at: datetime | None

    @property
    def weights_version(self) -> str:
        """The version whose weights this one serves: the base of a fast-path heads version, else itself."""
        if self.info.get("kind") == "heads" and self.info.get("base"):
            return str(self.info["base"])
        return self.version


class ModelRef(Protocol):
    """What names a sealed artifact: a registry snapshot, or the target of a hot swap."""

    @property
    def version(self) -> str: ...

    @property
    def artifact_path(self) -> str: ...

    @property
    def sha256(self) -> str: ...


class RegistryReader(Protocol):
    """The read side of the model registry."""

    def champion(self) -> ModelInfo | None:
        """The version that serves now, if any."""
        ...

    def get(self, version: str) -> ModelInfo:
        """The row of ``version``; raises for an unknown version."""
        ...

    def find(self, **info: Any) -> list[ModelInfo]:
        """Versions whose ``info`` has every given key with the given value, oldest first."""
        ...

    def list(self) -> list[ModelInfo]:
        """Every version, oldest first."""
        ...


class Registry(RegistryReader, Protocol):
    """The model registry: versions, their artifacts, and which one is the champion."""

    def next_version(self) -> str:
        """The next free version name."""
        ...

    def register(
        self,
        *,
        version: str,
        artifact_path: str,
        sha256: str,
        backbone: str,
        labels: list[str],
        status: ModelStatus = "challenger",
        parent: str | None = None,
        metrics: dict[str, Any] | None = None,
        info: dict[str, Any] | None = None,
    ) -> ModelInfo:
        """Add a version whose artifact is sealed; registering it as ``champion`` retires the previous one."""
        ...

    def promote(self, version: str, *, expect_weights: str | None = None) -> ModelInfo:
        """Make ``version`` the champion and retire the previous one.

        With ``expect_weights``, only while the champion serves those weights (checked in the same
        transaction); else :class:`ChampionChanged` is raised and nothing changes.
        """
        ...

    def set_status(self, version: str, status: ModelStatus, *, note: dict[str, Any] | None = None) -> ModelInfo:
        """Change a version that does not serve; ``note`` is merged into its info."""
        ...

    def rollback(self, to: str | None = None) -> tuple[ModelInfo, ModelInfo]:
        """Demote the champion and reinstate ``to`` (default: the previous champion); (demoted, champion)."""
        ...


class StateFenced(BaseException):
    """This instance no longer owns the persisted state it writes: a newer instance took it over.

    Raised by a state write whose fencing epoch is stale (storage/fencing.py). It
    derives from :class:`BaseException`, like :class:`SystemExit`, so that no retry
    loop catches it: the stale instance stops instead of overwriting the new owner's
    state, and its batch stays uncommitted for the owner to process.
    """


class ChampionChanged(RuntimeError):
    """A promotion meant for one champion's weights found other weights serving (a race lost to another promotion)."""


class ArtifactError(RuntimeError):
    """An artifact is missing, incomplete, or does not match its recorded digest."""


class Artifacts(Protocol):
    """Model artifacts written atomically: staged, filled, then sealed under their version."""

    def path_of(self, version: str) -> Path:
        """Where the artifact of ``version`` lives once sealed."""
        ...

    def stage(self) -> Path:
        """A fresh, empty staging directory to save a model into."""
        ...

    def commit(self, staged: Path, version: str) -> tuple[Path, str]:
        """Seal a staged directory as ``version``; (final path, artifact digest)."""
        ...

    def discard(self, staged: Path) -> None:
        """Remove a staging directory that will not be committed."""
        ...


# ---------------------------------------------------------------------------- training

#: (source, label, n, capacity) -> slot to write (0 <= slot < capacity) or None to skip; n counts this example.
SlotChooser = Callable[[str, str, int, int], "int | None"]


class ReservoirStore(Protocol):
    """The rows of the rehearsal reservoir (the sampling decisions are the caller's)."""

    def reservoir_add(self, items: Sequence[dict[str, Any]], capacity: int, choose: SlotChooser) -> dict[str, int]:
        """Offer items (``id``, ``text``, ``label``, ``source``, optional ``ts``) in order, in one transaction.

        Returns counts of ``kept``, ``replaced``, ``dropped`` and ``duplicate`` items.
        """
        ...

    def reservoir_rows(self, source: str | None = None) -> list[dict[str, Any]]:
        """Every slot (source, label, slot, example_id, text, ts), in slot order."""
        ...

    def reservoir_seen(self) -> dict[tuple[str, str], int]:
        """How many examples each (source, label) stratum has been offered."""
        ...


class TrainerStore(Protocol):
    """What the trainer role reads and writes: labeled windows and its run log."""

    def labeled_examples(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        source: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Labeled messages with ``start <= ts < end``, oldest first (with ``limit``, the most recent)."""
        ...

    def begin_run(self, request_id: str, request: dict[str, Any]) -> dict[str, Any]:
        """Count one more attempt at ``request_id``; the run's row after the update."""
        ...

    def get_run(self, request_id: str) -> dict[str, Any] | None: ...

    def note_failure(self, request_id: str, error: str) -> None: ...

    def forget_attempt(self, request_id: str) -> None:
        """Do not count the current attempt (it was stopped on purpose, not a failure)."""
        ...

    def finish_run(
        self, request_id: str, *, status: str, version: str | None, result: dict[str, Any], error: str | None = None
    ) -> None: ...


# ---------------------------------------------------------------------------- the drift monitor


@dataclass
class MonitorBatch:
    """The monitor's own rows for one batch, written with the batch's events and dead letters."""

    joins: list[dict[str, Any]] = field(default_factory=list)
    drop_joins: list[str] = field(default_factory=list)
    quality: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, Any] | None = None


@dataclass(frozen=True)
class StoredPrediction:
    """A prediction read back from the results (for labels whose message left the monitor's memory)."""

    message_id: str
    source: str
    label: str
    model_version: str
    ts: datetime


class HeldLabel(Protocol):
    """A label in the ledger that still waits for its message."""

    @property
    def message_id(self) -> str: ...

    @property
    def label(self) -> str: ...

    @property
    def label_ts(self) -> datetime: ...

    @property
    def annotator(self) -> str: ...

    @property
    def held_at(self) -> int | None: ...


class MonitorLedger(Protocol):
    """What the drift monitor keeps: its state, the delayed-label ledger and live quality, and what it reads back."""

    def write_batch(
        self,
        name: str,
        batch: MonitorBatch,
        *,
        events: Sequence[ControlEvent] = (),
        dead_letters: Sequence[DeadLetter] = (),
    ) -> None:
        """Everything one monitor batch produced, in one transaction."""
        ...

    def load_state(self, name: str) -> dict[str, Any] | None: ...

    def held_labels(self) -> Sequence[HeldLabel]:
        """Labels waiting for their message, oldest first."""
        ...

    def joined(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` already have a joined label."""
        ...

    def predictions(self, ids: Sequence[str]) -> dict[str, StoredPrediction]:
        """Stored predictions of ``ids``."""
        ...

    def latest_control_ts(self, kinds: Sequence[str]) -> datetime | None:
        """Time of the newest control event of these kinds."""
        ...

    def count_control(self, kind: str, **payload: str) -> int:
        """Control events of ``kind`` whose payload has these values (e.g. rejections of one drift episode)."""
        ...


# ---------------------------------------------------------------------------- alerts


@dataclass
class BaselineSnapshot:
    """The persisted state of one alert baseline (``entity`` = ``"*"`` for the global prior)."""

    entity: str
    kind: str
    mean: float
    var: float
    noise: float
    windows: int
    through: datetime | None  # end of the last window folded in (so a replay does not fold it twice)


@dataclass
class BucketSnapshot:
    """Counts of one entity in one event-time bucket (the per-entity sentiment over time)."""

    entity: str
    start: datetime
    end: datetime
    n: int
    negative: int
    neutral: int
    positive: int
    score_sum: float


class AlertState(Protocol):
    """Where the alert engine keeps what must survive a restart."""

    def load_baselines(self) -> list[BaselineSnapshot]: ...

    def recent_alerts(self, within_s: float) -> list[Alert]:
        """Alerts whose window ended within ``within_s`` (event time) of the newest alert's."""
        ...

    def save_state(self, baselines: Sequence[BaselineSnapshot], buckets: Sequence[BucketSnapshot]) -> None: ...


@dataclass(frozen=True)
class Delivery:
    """A claimed outbox row: the alert, how often it was tried before, and the lease it is held by."""

    alert: Alert
    sink: str
    attempts: int
    lease: datetime | None = None  # the claim's expiry, which is also its token (renewed only while it holds)


class AlertOutbox(Protocol):
    """The outbox of the alert sinks: the alerts table is the durable queue, one delivery row per sink."""

    def enqueue_missing(self, sink: str, since: datetime, limit: int = 500) -> int: ...

    def claim_due(self, sink: str, *, limit: int = 20, lease_s: float = 60.0) -> list[Delivery]: ...

    def mark_delivered(self, alert_id: str, sink: str, attempts: int) -> None: ...

    def renew(self, delivery: Delivery, *, lease_s: float) -> Delivery | None:
        """A fresh lease on a claimed row, or ``None`` when its lease has been lost (expired and taken over)."""
        ...

    def mark_failed(
        self,
        alert_id: str,
        sink: str,
        attempts: int,
        error: str,
        *,
        retry_at: datetime | None,
        status: str = "rejected",
    ) -> None: ...

    def expire(self, sink: str, created_before: datetime, reason: str) -> int:
        """Mark ``failed`` the pending rows created before ``created_before``; returns how many."""
        ...

    def purge(self, sink: str, created_before: datetime) -> int:
        """Delete finished rows (delivered, rejected, failed) created before ``created_before``; returns how many."""
        ...


class AlertQueries(Protocol):
    """The read-only queries of the analysts' page."""

    def list_alerts(
        self, *, limit: int = 50, entity: str | None = None, severity: str | None = None, since: datetime | None = None
    ) -> list[Alert]: ...

    def alerts_raised_since(self, since: datetime, limit: int = 500) -> list[Alert]: ...

    def sentiment(self, entity: str, limit: int = 2000) -> list[dict[str, Any]]: ...

    def top_entities(self, limit: int = 20) -> list[dict[str, Any]]: ...

    def model_history(self) -> dict[str, Any]: ...


class AnalystNotes(Protocol):
    """The analysts' page beyond the alerts: evidence messages as text, and acknowledgements."""

    def evidence(self, message_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored messages among ``message_ids`` (text, source, channel, ts, url, label), by id."""
        ...

    def has_alert(self, alert_id: str) -> bool:
        """Whether an alert with this id is stored."""
        ...

    def acknowledge(self, alert_id: str, by: str, note: str = "") -> dict[str, Any]:
        """Store an analyst's acknowledgement of an alert (the latest wins); returns it."""
        ...

    def acks(self, alert_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The acknowledgements of those of ``alert_ids`` that have one, by alert id."""
        ...


# ---------------------------------------------------------------------------- ingest


@dataclass(frozen=True)
class FeedState:
    """What a feed poller keeps about one feed: the HTTP cache validators of its last good response and its
    error backoff (``failures`` in a row, no fetch before ``retry_at``)."""

    url: str
    etag: str | None = None
    last_modified: str | None = None
    failures: int = 0
    retry_at: datetime | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class FileState:
    """What a file source keeps about one file: its identity when it was read (size, mtime, sha256) and how
    far it got (``position``: the byte offset after the last emitted batch; ``done``: all of it emitted)."""

    path: str
    size: int
    mtime: float
    sha256: str
    position: int = 0
    done: bool = False


class SeenEvents(Protocol):
    """Webhook event ids already taken, per source, so that a platform's retry is published once."""

    def seen_events(self, source: str, event_ids: Sequence[str]) -> set[str]:
        """Those of ``event_ids`` already marked seen."""
        ...

    def mark_seen(self, source: str, event_ids: Sequence[str]) -> set[str]:
        """Mark ``event_ids`` seen; returns those that were not seen before (insert-if-absent, race-free)."""
        ...


class IngestState(SeenEvents, Protocol):
    """Where the ingest sources keep what must survive a restart: items emitted, feeds' validators and
    backoff, files read. Writes happen after the bus acknowledged the batch they describe (emit, then save)."""

    def emitted(self, source: str, keys: Sequence[str]) -> set[str]:
        """Those of ``keys`` that ``source`` has emitted before."""
        ...

    def feed(self, source: str, url: str) -> FeedState | None: ...

    def save_feed(self, source: str, state: FeedState, emitted: Sequence[str] = ()) -> None:
        """Save a feed's state and mark ``emitted`` item keys, in one transaction."""
        ...

    def file(self, source: str, path: str) -> FileState | None: ...

    def save_file(self, source: str, state: FileState) -> None: ...

    def purge(self, before: datetime) -> int:
        """Forget emitted items and seen events older than ``before``; returns how many rows went."""
        ...


@dataclass(frozen=True)
class Fetched:
    """A feed's HTTP response: ``status`` 200 with ``body``, or 304 (not modified, no body), with the validators
    to send next time."""

    status: int
    body: bytes = b""
    etag: str | None = None
    last_modified: str | None = None
    url: str = ""  # where the body came from, after redirects
    content_type: str | None = None


class FetchError(RuntimeError):
    """A feed could not be fetched (timeout, refused, too many redirects, too big, an HTTP error status);
    ``retry_after_s``: how long the server asked to be left alone (a 429's or 503's ``Retry-After``)."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class FeedFetcher(Protocol):
    """Fetches a feed's bytes, conditionally (``If-None-Match`` / ``If-Modified-Since``), within limits."""

    def fetch(self, url: str, *, etag: str | None = None, last_modified: str | None = None) -> Fetched:
        """The response, or :class:`FetchError` with the reason."""
        ...
