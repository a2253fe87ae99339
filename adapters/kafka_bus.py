"""The Kafka bus backend, over kafka-python: one daemon per role, scaled out by consumer groups.

What it promises on top of the bus contract (:mod:`aet.pipeline.ports`):

* **Topics** are created with ``settings.partitions`` partitions and
  ``settings.replication_factor`` replicas; existing topics are left alone.
* **Publishing** is keyed (the default murmur2 partitioner: one key, one
  partition, in order), with ``acks=all`` and unlimited retries within
  ``delivery_timeout_ms``. :meth:`KafkaBus.flush` raises :class:`BusError`
  unless every record the calling thread published since its last flush was
  acknowledged. After such an error the records may or may not have been
  written: publish them again (outputs are keyed, so a duplicate overwrites).
  A producer that failed is replaced by a new one, which is what an idempotent
  producer needs after its broker lost its state.
* **Consuming** uses consumer groups with auto-commit off. :meth:`commit`
  commits, per partition, the position after the last record that ``poll``
  returned from it, and only for partitions this member still owns.
* **Rebalance safety**: when partitions are revoked (or lost), the records of
  those partitions that were polled but not yet committed are *abandoned*:
  this member never commits them later, even if its batch completes. Their
  new owner starts from the last commit and processes them again. That owner
  may be this member: a partition it keeps through a rebalance also goes back
  to the committed offset (kafka-python would otherwise keep the position, and
  the abandoned records would never be committed by anyone). The outputs are
  keyed by message id, so re-processing overwrites instead of duplicating
  results in the store (``aet.scored`` may carry the record twice, with the
  same content). A commit the coordinator refuses because the group moved on
  (``CommitFailedError``, ``ILLEGAL_GENERATION``, ``UNKNOWN_MEMBER_ID``,
  ``REBALANCE_IN_PROGRESS``) is treated the same way: logged, abandoned, not
  raised. Other commit failures (broker unreachable, timeout) raise
  :class:`BusError` so that the caller retries.
* **Long work**: :meth:`pause` pauses every assigned partition (and any
  partition assigned while paused); ``poll`` then returns nothing but keeps
  the member alive within ``max_poll_interval_ms``. See
  :func:`aet.pipeline.worker.run_paused`.
* **Lag**: :meth:`_KafkaConsumer.lag` uses the high watermarks of the fetch
  responses. :meth:`KafkaBus.group_lag` asks ListOffsets for the end offsets,
  which is exact on Apache Kafka; tansu (the test broker) answers with the
  base offset of the last record batch + 1, so the end offsets are corrected
  by the high watermark of a one-batch fetch. Both are therefore exact on
  both brokers, but treat them as *approximate on tansu*: the correction is
  skipped (with a warning) when the fetch does not answer within the connect
  timeout, and a broker restart loses tansu's committed offsets.
* **Losing the broker**: publish, flush and commit raise :class:`BusError`
  within bounded time; ``poll`` returns nothing while the broker is away and
  resumes when it is back. If the broker came back with a shorter log than
  this consumer's position (a broker that lost its data, such as tansu after a
  restart, where no OFFSET_OUT_OF_RANGE reset ever happens), the consumer
  notices that the high watermark is below its position and rewinds that
  partition to the beginning, as ``auto_offset_reset=earliest`` would.
* **Client settings** in ``settings.kafka`` are passed through to kafka-python:
  top-level keys go to every client (producer, consumer, admin) that knows
  them, e.g. ``security_protocol``, ``sasl_*``, ``ssl_*``; the sub-dicts
  ``producer``, ``consumer`` and ``admin`` go to that client only and win over
  both the top level and the measured defaults of :data:`TUNED`. Strings (as
  environment variables give them) are converted to the type of kafka-python's
  default for that key. A key that no client knows is an error.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from aet.pipeline.ports import Bus, BusError, BusRecord, Consumer

try:  # kafka-python is a dependency, but keep the import error readable.
    import kafka.errors as kerrors
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.consumer.subscription_state import ConsumerRebalanceListener
    from kafka.partitioner.default import DefaultPartitioner, murmur2
    from kafka.structs import OffsetAndMetadata
except ImportError as exc:  # pragma: no cover - exercised only without the dependency
    raise ImportError("the kafka bus backend needs kafka-python: pip install kafka-python") from exc

if TYPE_CHECKING:
    from aet.pipeline.config import BusSettings

log = logging.getLogger(__name__)


class CachedMurmur2Partitioner(DefaultPartitioner):
    """kafka-python's default partitioner with each key's murmur2 hash remembered.

    The partition of a key is the one the Java client and kafka-python pick
    (murmur2 of the key bytes, modulo the partition count), so producers of
    any client agree. kafka-python computes murmur2 in pure Python for every
    record; AET's keys (entities, channels, message ids of a batch) repeat, so
    remembering the hash of the last keys saves about a fifth of the cost of a
    publish. Keyless records are spread as before.
    """

    def __init__(self, maxsize: int = 65536) -> None:
        self._hash = functools.lru_cache(maxsize=maxsize)(lambda key: murmur2(key) & 0x7FFFFFFF)

    def partition(
        self, topic: str, key: Any, serialized_key: bytes | None, value: Any, serialized_value: Any, cluster: Any
    ) -> int:
        if serialized_key is None:
            return super().partition(topic, key, serialized_key, value, serialized_value, cluster)
        parts = cluster.partitions_for_topic(topic)
        if not parts:
            raise ValueError(f"Topic {topic} not found in ClusterMetadata")
        ordered = sorted(parts)
        return ordered[self._hash(bytes(serialized_key)) % len(ordered)]


#: Client settings chosen by measurement against tansu with ``aet bench bus`` (numbers in docs/kafka.md).
#: They apply unless ``tuned=False`` and each key can be overridden through ``settings.kafka``.
#:
#: * Consumer: a kafka-python consumer keeps at most one fetch in flight per broker and
#:   leaves a partition out of the fetch while it still has buffered records. AET keys
#:   records by entity or channel, so most partitions of a topic are often idle; a fetch
#:   holding only idle partitions then waits ``fetch_max_wait_ms`` (500 ms by default) at
#:   the broker while the busy partition's next fetch queues behind it. A 50 ms wait and a
#:   4 MiB per-partition fetch (fewer refetches of the busy partition) remove most of that
#:   stall. ``fetch_min_bytes``, ``max_poll_records`` (the adapter passes ``max_records``
#:   on every poll) and socket buffer sizes showed no effect beyond noise and stay default.
#: * Producer: kafka-python spends its time per record in Python. Lingering 20 ms into
#:   512 KiB batches cuts the per-request work and the wake-ups of its IO thread (workers
#:   flush after each batch, so the linger adds no latency there; the batch stays under
#:   Apache Kafka's default 1 MiB ``message.max.bytes``), and :class:`CachedMurmur2Partitioner`
#:   skips the pure-Python hash of keys seen before. Idempotence stays on (its cost was
#:   within noise); a producer that fails for good is replaced (see :meth:`KafkaBus.flush`).
TUNED: dict[str, dict[str, Any]] = {
    "producer": {
        "linger_ms": 20,
        "batch_size": 512 * 1024,
        "partitioner": CachedMurmur2Partitioner(),
    },
    "consumer": {
        "fetch_max_wait_ms": 50,
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
    },
    "admin": {},
}

#: Settings that the delivery contract depends on; not tuning, so always applied.
_REQUIRED_CONSUMER = {"enable_auto_commit": False, "auto_offset_reset": "earliest"}
_REQUIRED_PRODUCER = {"acks": "all"}
#: Operational defaults (not tuning): a record not acknowledged within 30 s fails, so that a
#: worker's flush reports an outage and retries with backoff instead of blocking for minutes.
_DEFAULT_PRODUCER = {"request_timeout_ms": 10_000, "delivery_timeout_ms": 30_000}

#: Errors meaning the group has moved on: the commit is refused and will never succeed.
_GROUP_MOVED_ON = (
    kerrors.CommitFailedError,
    kerrors.IllegalGenerationError,
    kerrors.UnknownMemberIdError,
    kerrors.RebalanceInProgressError,
    kerrors.FencedInstanceIdError,
)

_CLIENTS = {"producer": KafkaProducer, "consumer": KafkaConsumer, "admin": KafkaAdminClient}


def _coerce(value: Any, default: Any) -> Any:
    """Turn a string from the environment into the type of kafka-python's default for that key."""
    if not isinstance(value, str) or default is None or isinstance(default, str):
        return value
    text = value.strip()
    if isinstance(default, bool):
        if text.lower() in ("true", "1", "yes", "on"):
            return True
        if text.lower() in ("false", "0", "no", "off"):
            return False
        return value
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            return value
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            return value
    return value


def client_configs(settings: BusSettings, *, tuned: bool = True) -> dict[str, dict[str, Any]]:
    """The kafka-python keyword arguments of the producer, consumer and admin client.

    Order of precedence, lowest first: kafka-python's defaults, :data:`TUNED`
    (when ``tuned``), the settings this module requires for its contract,
    top-level ``settings.kafka`` keys, then ``settings.kafka[client]``.
    """
    extra = dict(settings.kafka or {})
    per_client = {name: dict(extra.pop(name, None) or {}) for name in _CLIENTS}
    for name, section in per_client.items():
        if not isinstance(section, dict):
            raise BusError(f"bus.kafka.{name} must be a mapping of kafka-python settings")
    unknown = [k for k in extra if not any(k in cls.DEFAULT_CONFIG for cls in _CLIENTS.values())]
    for name, section in per_client.items():
        unknown += [f"{name}.{k}" for k in section if k not in _CLIENTS[name].DEFAULT_CONFIG]
    if unknown:
        raise BusError(f"unknown kafka-python settings in bus.kafka: {', '.join(sorted(unknown))}")

    base = {"bootstrap_servers": settings.bootstrap_servers.split(","), "client_id": settings.client_id}
    out: dict[str, dict[str, Any]] = {}
    for name, cls in _CLIENTS.items():
        defaults = cls.DEFAULT_CONFIG
        cfg: dict[str, Any] = dict(base)
        if tuned:
            cfg.update(TUNED[name])
        if name == "consumer":
            cfg.update(_REQUIRED_CONSUMER)
        elif name == "producer":
            cfg.update(_DEFAULT_PRODUCER)
            cfg.update(_REQUIRED_PRODUCER)
        cfg.update({k: v for k, v in extra.items() if k in defaults})
        cfg.update(per_client[name])
        out[name] = {k: _coerce(v, defaults.get(k)) for k, v in cfg.items()}
    return out


#: Publishes without a flush after which acknowledged futures are forgotten.
_PRUNE_AT = 50_000


def _user_set(settings: BusSettings, client: str, key: str) -> bool:
    """Whether ``settings.kafka`` sets ``key`` for ``client`` (top level or in its section)."""
    extra = settings.kafka or {}
    return key in extra or key in (extra.get(client) or {})


def _key_bytes(key: str | None) -> bytes | None:
    return key.encode("utf-8") if key is not None else None


class KafkaBus(Bus):
    """A :class:`~aet.pipeline.ports.Bus` on a Kafka cluster (or any Kafka-protocol broker)."""

    def __init__(self, settings: BusSettings, *, tuned: bool = True) -> None:
        self.settings = settings
        self.configs = client_configs(settings, tuned=tuned)
        self.connect_timeout_ms = int(settings.connect_timeout_s * 1000)
        # Nothing may block longer than the connect timeout when the broker is away, unless asked to.
        for name, key in (
            ("producer", "max_block_ms"),
            ("producer", "bootstrap_timeout_ms"),
            ("consumer", "bootstrap_timeout_ms"),
            ("admin", "bootstrap_timeout_ms"),
        ):
            if not _user_set(settings, name, key):
                self.configs[name][key] = self.connect_timeout_ms
        # Every record is acknowledged or failed within delivery_timeout_ms, so flush waits that long at most.
        self.flush_timeout_s = self.configs["producer"]["delivery_timeout_ms"] / 1000 + settings.connect_timeout_s
        self._lock = threading.Lock()
        self._admin_lock = threading.Lock()
        self._local = threading.local()
        self._producer: KafkaProducer | None = None
        self._probe: KafkaConsumer | None = None
        self._probe_lock = threading.Lock()
        self._consumers: weakref.WeakSet[_KafkaConsumer] = weakref.WeakSet()
        self._closed = False
        self._admin = self._connect_admin()

    # -- connection -------------------------------------------------------------

    def _connect_admin(self) -> KafkaAdminClient:
        cfg = self.configs["admin"]
        started = time.monotonic()
        try:
            return KafkaAdminClient(**cfg)
        except Exception as exc:
            raise BusError(
                f"cannot reach Kafka at {self.settings.bootstrap_servers} "
                f"(gave up after {time.monotonic() - started:.1f}s, connect_timeout_s="
                f"{self.settings.connect_timeout_s:g}): {type(exc).__name__}: {exc}. "
                "Check --bootstrap-servers / AET_BUS__BOOTSTRAP_SERVERS, that the broker is running, "
                "and the security settings in bus.kafka"
            ) from exc

    def _ensure_open(self) -> None:
        if self._closed:
            raise BusError("the bus is closed")

    # -- topics -----------------------------------------------------------------

    def create_topics(self, topics: Iterable[str], partitions: int | None = None) -> None:
        self._ensure_open()
        wanted = list(dict.fromkeys(topics))
        if not wanted:
            return
        n = partitions or self.settings.partitions
        missing = wanted
        with self._admin_lock:
            try:
                existing = set(self._admin.list_topics())
                missing = [t for t in wanted if t not in existing]
                if not missing:
                    return
                spec = {
                    t: {"num_partitions": n, "replication_factor": self.settings.replication_factor} for t in missing
                }
                result = self._admin.create_topics(spec, raise_errors=False)
            except kerrors.KafkaError as exc:
                raise BusError(f"cannot create topics {missing}: {exc}") from exc
        for topic in result.get("topics", []):
            code = topic.get("error_code", 0)
            if code in (0, kerrors.TopicAlreadyExistsError.errno):
                continue
            err = kerrors.for_code(code)
            raise BusError(f"cannot create topic {topic.get('name')!r}: {err.__name__}: {topic.get('error_message')}")
        log.info("created topics %s with %d partitions", ", ".join(missing), n)

    def partitions_for(self, topic: str) -> list[int]:
        """Partition ids of ``topic`` (empty if it does not exist)."""
        with self._admin_lock:
            try:
                described = self._admin.describe_topics([topic])
            except kerrors.KafkaError as exc:
                raise BusError(f"cannot describe topic {topic!r}: {exc}") from exc
        for t in described:
            if t.get("name") == topic and not t.get("error_code"):
                return sorted(p["partition_index"] for p in t.get("partitions", []))
        return []

    # -- producing --------------------------------------------------------------

    def _get_producer(self) -> KafkaProducer:
        producer = self._producer
        if producer is not None:
            return producer
        with self._lock:
            self._ensure_open()
            if self._producer is None:
                try:
                    self._producer = KafkaProducer(**self.configs["producer"])
                except Exception as exc:
                    raise BusError(
                        f"cannot start a Kafka producer for {self.settings.bootstrap_servers}: {exc}"
                    ) from exc
            return self._producer

    def _discard_producer(self, broken: KafkaProducer) -> None:
        """Replace a producer after a failure (an idempotent producer can stay broken for good)."""
        with self._lock:
            if self._producer is broken:
                self._producer = None
        try:
            broken.close(timeout=0)
        except Exception:
            log.debug("closing a failed producer raised", exc_info=True)

    def _pending(self) -> list[Any]:
        pending = getattr(self._local, "pending", None)
        if pending is None:
            pending = self._local.pending = []
            self._local.failure = None
            self._local.prune_at = _PRUNE_AT
        return pending

    def publish(self, topic: str, value: bytes, key: str | None = None) -> None:
        if not isinstance(value, (bytes, bytearray)):
            raise TypeError(f"bus values are bytes, got {type(value).__name__}")
        self._ensure_open()
        producer = self._get_producer()
        try:
            future = producer.send(topic, value=bytes(value), key=_key_bytes(key))
        except kerrors.KafkaTimeoutError as exc:
            raise BusError(f"publish to {topic} timed out (is the broker reachable?): {exc}") from exc
        except (kerrors.KafkaError, AssertionError) as exc:
            self._discard_producer(producer)
            raise BusError(f"publish to {topic} failed: {type(exc).__name__}: {exc}") from exc
        pending = self._pending()
        pending.append(future)
        if len(pending) >= self._local.prune_at:
            self._prune(pending)

    def _prune(self, pending: list[Any]) -> None:
        """Forget acknowledged futures so a long run of publishes without a flush stays small."""
        keep = []
        for f in pending:
            if not f.is_done:
                keep.append(f)
            elif f.failed() and self._local.failure is None:
                self._local.failure = f.exception
        pending[:] = keep
        self._local.prune_at = max(_PRUNE_AT, 2 * len(keep))

    def flush(self, timeout_s: float | None = None) -> None:
        self._ensure_open()
        pending = self._pending()
        producer = self._producer
        timeout = self.flush_timeout_s if timeout_s is None else timeout_s
        failure: BaseException | None = None
        try:
            if producer is not None:
                producer.flush(timeout=timeout)
        except kerrors.KafkaTimeoutError as exc:
            failure = BusError(f"flush timed out after {timeout:g}s: records not acknowledged (broker unreachable?)")
            failure.__cause__ = exc
        if failure is None:
            first = self._local.failure
            failed = 0
            for f in pending:
                if not f.is_done:
                    failed += 1
                elif f.failed():
                    failed += 1
                    first = first or f.exception
            if failed or first is not None:
                failure = BusError(
                    f"{failed or 'some'} of {len(pending)} records were not acknowledged: "
                    f"{type(first).__name__}: {first}"
                )
        pending.clear()
        self._local.failure = None
        self._local.prune_at = _PRUNE_AT
        if failure is not None:
            if producer is not None:
                self._discard_producer(producer)
            raise failure

    # -- consuming --------------------------------------------------------------

    def consumer(self, group: str, topics: Sequence[str]) -> Consumer:
        self._ensure_open()
        c = _KafkaConsumer(self, group, tuple(topics))
        self._consumers.add(c)
        return c

    def end_offsets(self, topic: str) -> dict[int, int]:
        """The end offset (offset of the next record) of each partition of ``topic``."""
        parts = self.partitions_for(topic)
        ends = self._end_offsets([TopicPartition(topic, p) for p in parts])
        return {tp.partition: o for tp, o in ends.items()}

    def _list_offsets(self, tps: list[TopicPartition], spec: int) -> dict[TopicPartition, int]:
        if not tps:
            return {}
        with self._admin_lock:
            try:
                got = self._admin.list_partition_offsets(dict.fromkeys(tps, spec))
            except kerrors.KafkaError as exc:
                raise BusError(f"cannot list offsets: {exc}") from exc
        return {tp: o.offset for tp, o in got.items()}

    def _end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """End offsets from ListOffsets, corrected by the high watermark of a fetch.

        ListOffsets is exact on Apache Kafka; tansu answers with the base offset
        of the last record batch + 1. A fetch from that batch returns the high
        watermark, which both brokers report correctly, so a short-lived,
        group-less probe consumer reads it. If the probe gets no answer within
        the connect timeout, the ListOffsets figure is returned (approximate).
        """
        reported = self._list_offsets(tps, -1)
        want = {tp: o for tp, o in reported.items() if o > 0}
        out = dict(reported)
        if not want:
            return out
        with self._probe_lock:
            probe = self._get_probe()
            pending = set(want)
            try:
                probe.assign(list(want))
                for tp, o in want.items():
                    probe.seek(tp, o - 1)
                deadline = time.monotonic() + self.settings.connect_timeout_s
                while pending and time.monotonic() < deadline:
                    probe.poll(timeout_ms=50, max_records=100_000)
                    for tp in list(pending):
                        hw = probe.highwater(tp)
                        if hw is not None:
                            out[tp] = max(hw, reported[tp])
                            pending.discard(tp)
            except (kerrors.KafkaError, AssertionError) as exc:
                log.warning("end-offset probe failed (%s); using ListOffsets, which may under-count", exc)
            finally:
                try:
                    probe.unsubscribe()
                except Exception:  # noqa: BLE001
                    self._probe = None
        if pending:
            log.warning("no high watermark for %d partitions in time; end offsets may under-count", len(pending))
        return out

    def newest_timestamps(self, topic: str) -> dict[int, int]:
        """The timestamp (ms, as its producer stamped it) of the newest record of each non-empty partition.

        ``aet doctor`` compares them with this machine's clock: a record stamped in the future means a
        producer's clock, or this one, is off.
        """
        self._ensure_open()
        tps = [TopicPartition(topic, p) for p in self.partitions_for(topic)]
        ends = {tp: o for tp, o in self._end_offsets(tps).items() if o > 0}
        out: dict[int, int] = {}
        if not ends:
            return out
        with self._probe_lock:
            probe = self._get_probe()
            try:
                probe.assign(list(ends))
                for tp, o in ends.items():
                    probe.seek(tp, o - 1)
                deadline = time.monotonic() + self.settings.connect_timeout_s
                while len(out) < len(ends) and time.monotonic() < deadline:
                    for tp, records in probe.poll(timeout_ms=50, max_records=100).items():
                        for r in records:
                            if r.offset == ends[tp] - 1:
                                out[tp.partition] = int(r.timestamp)
            except (kerrors.KafkaError, AssertionError) as exc:
                raise BusError(f"cannot read the newest records of {topic}: {exc}") from exc
            finally:
                try:
                    probe.unsubscribe()
                except Exception:  # noqa: BLE001
                    self._probe = None
        return out

    def _get_probe(self) -> KafkaConsumer:
        if self._probe is None:
            cfg = {
                k: v
                for k, v in self.configs["consumer"].items()
                if k not in ("group_id", "group_instance_id", "enable_auto_commit")
            }
            cfg.update(
                group_id=None,
                enable_auto_commit=False,
                fetch_min_bytes=1,
                fetch_max_wait_ms=10,
                max_partition_fetch_bytes=1,
                fetch_max_bytes=1,
            )
            try:
                self._probe = KafkaConsumer(**cfg)
            except Exception as exc:
                raise BusError(f"cannot open an offset probe on {self.settings.bootstrap_servers}: {exc}") from exc
        return self._probe

    def committed(self, group: str) -> dict[TopicPartition, int]:
        """The group's committed offsets."""
        with self._admin_lock:
            try:
                got = self._admin.list_group_offsets(group)
            except kerrors.KafkaError as exc:
                raise BusError(f"cannot read committed offsets of {group!r}: {exc}") from exc
        return {tp: om.offset for tp, om in got.get(group, {}).items() if om.offset is not None and om.offset >= 0}

    def group_lag(self, group: str, topics: Sequence[str]) -> int:
        """Records in ``topics`` not committed by ``group`` (exact on Kafka, approximate on tansu)."""
        self._ensure_open()
        tps = [TopicPartition(t, p) for t in topics for p in self.partitions_for(t)]
        if not tps:
            return 0
        ends = self._end_offsets(tps)
        committed = self.committed(group)
        missing = [tp for tp in tps if tp not in committed]
        starts = self._list_offsets(missing, -2) if missing else {}
        return sum(max(0, ends.get(tp, 0) - committed.get(tp, starts.get(tp, 0))) for tp in tps)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            producer, self._producer = self._producer, None
        try:
            if producer is not None:
                try:
                    producer.flush(timeout=self.flush_timeout_s)
                except kerrors.KafkaError as exc:
                    log.warning("records still unacknowledged at close: %s", exc)
                producer.close(timeout=self.flush_timeout_s)
            for c in list(self._consumers):
                c.close()
            with self._probe_lock:
                if self._probe is not None:
                    self._probe.close(autocommit=False)
                    self._probe = None
        finally:
            self._closed = True
            with self._admin_lock:
                self._admin.close()


class _Listener(ConsumerRebalanceListener):
    """Forgets the uncommitted positions of partitions this member no longer owns."""

    def __init__(self, owner: _KafkaConsumer) -> None:
        self._owner = weakref.ref(owner)

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        owner = self._owner()
        if owner is not None:
            owner._forget(set(revoked), "revoked")

    def on_partitions_lost(self, lost: Iterable[TopicPartition]) -> None:
        owner = self._owner()
        if owner is not None:
            owner._forget(set(lost), "lost")

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        owner = self._owner()
        if owner is not None:
            owner._assigned(set(assigned))


class _KafkaConsumer(Consumer):
    """One consumer-group member (see the module doc for commit and rebalance semantics)."""

    def __init__(self, bus: KafkaBus, group: str, topics: tuple[str, ...]) -> None:
        self._bus = bus
        self.group = group
        self.topics = topics
        cfg = dict(bus.configs["consumer"], group_id=group)
        self.commit_timeout_ms = max(bus.connect_timeout_ms, 1000)
        self._lock = threading.Lock()
        self._polled: dict[TopicPartition, int] = {}  # next offset after the last record poll returned
        self._committed: dict[TopicPartition, int] = {}  # what this member committed, per owned partition
        self._base: dict[TopicPartition, int] = {}  # the first offset polled since the partition was assigned
        self._given_up: set[TopicPartition] = set()  # revoked in the rebalance under way
        self._rewind: set[TopicPartition] = set()  # kept through a rebalance: go back to the commit
        self._paused = False
        self._joined = False
        self._closed = False
        #: Rebalance bookkeeping, for logs and tests.
        self.generations = 0
        self.revocations = 0
        self.abandoned_partitions = 0
        try:
            self._consumer = KafkaConsumer(**cfg)
            self._consumer.subscribe(list(topics), listener=_Listener(self))
        except Exception as exc:
            raise BusError(f"cannot join consumer group {group!r} on {bus.settings.bootstrap_servers}: {exc}") from exc

    # -- rebalance callbacks (run on kafka-python's IO thread, inside poll) -----------

    def _forget(self, tps: set[TopicPartition], why: str) -> None:
        with self._lock:
            dropped = [tp for tp in tps if tp in self._polled and self._polled[tp] != self._committed.get(tp)]
            for tp in tps:
                self._polled.pop(tp, None)
                self._committed.pop(tp, None)
                self._base.pop(tp, None)
            self._given_up |= tps
            if tps:
                self.revocations += 1
            self.abandoned_partitions += len(dropped)
        if dropped:
            log.warning(
                "group %s: partitions %s %s with records polled but not committed; this member will not "
                "commit them, the new owner re-processes them (keyed outputs overwrite)",
                self.group,
                sorted(f"{tp.topic}[{tp.partition}]" for tp in dropped),
                why,
            )

    def _assigned(self, tps: set[TopicPartition]) -> None:
        with self._lock:
            self._joined = True
            self.generations += 1
            paused = self._paused
            # kafka-python keeps the fetch position of a partition that is revoked and assigned
            # again in one rebalance. Resume it from the committed offset instead, as a new owner
            # would: the records polled before the rebalance were abandoned, so they must come back.
            self._rewind |= tps & self._given_up
            self._given_up = set()
        log.info("group %s: assigned %s", self.group, sorted(f"{tp.topic}[{tp.partition}]" for tp in tps))
        if paused and tps:
            self._consumer.pause(*tps)

    # -- the Consumer contract ------------------------------------------------------

    def poll(self, max_records: int, timeout_ms: int) -> list[BusRecord]:
        if self._closed:
            raise BusError("consumer is closed")
        try:
            raw = self._consumer.poll(timeout_ms=max(0, int(timeout_ms)), max_records=max(1, int(max_records)))
        except kerrors.KafkaError as exc:
            raise BusError(f"poll failed in group {self.group}: {type(exc).__name__}: {exc}") from exc
        except AssertionError as exc:  # kafka-python asserts on a closed consumer
            raise BusError(f"poll failed in group {self.group}: {exc}") from exc
        with self._lock:
            rewind, self._rewind = self._rewind, set()
        if rewind:
            for tp in rewind:
                raw.pop(tp, None)  # read from the kept position: not handed out, read again below
            self._seek_committed(rewind & self._consumer.assignment())
        if not raw:
            self._rewind_truncated()
            return []
        out: list[BusRecord] = []
        with self._lock:
            for tp, records in raw.items():
                if not records:
                    continue
                self._base.setdefault(tp, records[0].offset)
                for r in records:
                    key = r.key.decode("utf-8", errors="replace") if r.key is not None else None
                    out.append(BusRecord(r.topic, r.partition, r.offset, key, r.value, r.timestamp))
                self._polled[tp] = records[-1].offset + 1
        return out

    def _seek_committed(self, tps: set[TopicPartition]) -> None:
        """Move to the group's committed offset (the beginning when there is none)."""
        for tp in tps:
            try:
                offset = self._consumer.committed(tp, timeout_ms=self.commit_timeout_ms)
                if offset is None:
                    self._consumer.seek_to_beginning(tp)
                else:
                    self._consumer.seek(tp, offset)
            except (kerrors.KafkaError, AssertionError) as exc:
                # Try again on the next poll rather than read on from a position nobody committed.
                log.warning("group %s: cannot read the committed offset of %s (%s); retrying", self.group, tp, exc)
                with self._lock:
                    self._rewind.add(tp)

    def _position(self, tp: TopicPartition) -> int | None:
        try:
            return self._consumer.position(tp, timeout_ms=0)
        except (kerrors.KafkaError, AssertionError):
            return None

    def _rewind_truncated(self) -> None:
        """Rewind partitions whose log is now shorter than our position (a broker that lost its data)."""
        if self._paused:
            return
        for tp in self._consumer.assignment():
            hw = self._consumer.highwater(tp)
            if hw is None:
                continue
            pos = self._position(tp)
            if pos is None or pos <= hw:
                continue
            log.warning(
                "group %s: %s[%d] ends at %d but this consumer is at %d: the broker lost records; "
                "rewinding to the beginning of the partition",
                self.group,
                tp.topic,
                tp.partition,
                hw,
                pos,
            )
            with self._lock:
                self._polled.pop(tp, None)
                self._committed.pop(tp, None)
                self._base.pop(tp, None)
            try:
                self._consumer.seek_to_beginning(tp)
            except (kerrors.KafkaError, AssertionError) as exc:
                log.warning("rewinding %s failed: %s", tp, exc)

    def commit(self) -> None:
        if self._closed:
            raise BusError("consumer is closed")
        owned = self._consumer.assignment()
        with self._lock:
            offsets = {
                tp: OffsetAndMetadata(off, "", -1)
                for tp, off in self._polled.items()
                if tp in owned and self._committed.get(tp) != off
            }
            revocations = self.revocations
        if not offsets:
            return
        try:
            self._consumer.commit(offsets, timeout_ms=self.commit_timeout_ms)
        except _GROUP_MOVED_ON as exc:
            with self._lock:
                for tp, om in offsets.items():
                    if self._polled.get(tp) == om.offset:
                        self._polled.pop(tp, None)
                self.abandoned_partitions += len(offsets)
            log.warning(
                "group %s: commit refused because the group rebalanced (%s); the records of %d partitions "
                "are abandoned uncommitted and will be re-delivered",
                self.group,
                type(exc).__name__,
                len(offsets),
            )
            return
        except (kerrors.KafkaError, AssertionError) as exc:
            raise BusError(f"commit failed in group {self.group}: {type(exc).__name__}: {exc}") from exc
        with self._lock:
            if self.revocations != revocations:
                log.warning("group %s: partitions were revoked while committing", self.group)
            for tp, om in offsets.items():
                if tp in self._polled:
                    self._committed[tp] = om.offset

    def lag(self) -> int:
        """Records in this member's partitions not committed yet.

        Exact once the member has fetched from its partitions (fetch responses
        carry the high watermark). While it holds no partitions (before its
        first assignment, during a rebalance, or with more members than
        partitions) it reports the whole group's lag (:meth:`KafkaBus.group_lag`),
        and a partition not fetched from yet counts as 1, so that ``--drain``
        never stops on a guess.
        """
        if self._closed:
            raise BusError("consumer is closed")
        with self._lock:
            joined = self._joined
        assigned = self._consumer.assignment()
        if not joined or not assigned:
            # Not joined yet, or between the revocation and the assignment of a rebalance (or more
            # members than partitions): only the whole group's lag says whether work is left.
            try:
                return self._bus.group_lag(self.group, self.topics)
            except BusError:
                return 1
        total = 0
        for tp in assigned:
            hw = self._consumer.highwater(tp)
            with self._lock:
                base = self._committed.get(tp, self._base.get(tp))
            if base is None:
                base = self._position(tp)
            if hw is None or base is None:
                total += 1
                continue
            total += max(0, hw - base)
        return total

    def assignment(self) -> set[tuple[str, int]]:
        """The (topic, partition) pairs this member owns now."""
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        with self._lock:
            self._paused = True
        parts = self._consumer.assignment()
        if parts:
            self._consumer.pause(*parts)

    def resume(self) -> None:
        with self._lock:
            self._paused = False
        parts = self._consumer.paused()
        if parts:
            self._consumer.resume(*parts)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._consumer.close(autocommit=False, timeout_ms=self.commit_timeout_ms)
        except Exception as exc:  # noqa: BLE001 - leaving is best effort
            log.warning("closing consumer of group %s: %s", self.group, exc)
