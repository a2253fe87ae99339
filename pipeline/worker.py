"""The worker loop shared by every role: poll a batch, handle it, publish, store, commit.

A role only implements :meth:`Worker.handle`, turning a batch of bus records
into :class:`Outputs`. The loop guarantees the delivery contract
(docs/architecture.md, "Delivery"): outputs are published and flushed, then
stored, and only then is the batch committed, so a crash at any point
re-delivers the batch and its keyed outputs overwrite instead of duplicating.

Failures are classified (:func:`is_transient`). A transient one (broker or
database unreachable) is retried with backoff for as long as it lasts, and the
worker's :attr:`Worker.health` and ``aet_worker_degraded`` say so. Any other
(bad data, a record too large, a constraint the database enforces) is tried
``dead_letters.max_attempts`` times; then the batch's outputs are published and
stored one by one, and those that still fail become dead letters with the
reason, so the rest of the batch is committed and no record is retried
forever. An output over ``dead_letters.max_record_bytes`` is dead-lettered
before it is published. A stop request (SIGTERM) finishes the current batch,
commits it, and returns; a stop during an outage leaves the batch uncommitted.
A slow batch runs
while the consumer keeps polling with its partitions paused (:func:`run_paused`),
so that Kafka does not evict the member from its group.
"""

from __future__ import annotations

import abc
import contextvars
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from aet.pipeline import health, logging_setup, metrics
from aet.pipeline.config import DeadLetterSettings
from aet.pipeline.ports import BatchStore, Bus, BusError, BusRecord, Consumer
from aet.pipeline.records import (
    Alert,
    ControlEvent,
    DeadLetter,
    LabelRecord,
    Record,
    ScoredMessage,
    current_dead_letter_settings,
    utcnow,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Outputs:
    """What one batch produced: records to publish and rows to store."""

    publish: list[tuple[str, str | None, bytes]] = field(default_factory=list)
    scored: list[ScoredMessage] = field(default_factory=list)
    labels: list[LabelRecord] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    events: list[ControlEvent] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    #: Dead letters to store only: read from the dead-letter topic (the recorder), so not published again.
    recorded: list[DeadLetter] = field(default_factory=list)


# Exception class names, wherever they come from (pipeline/ imports no database or Kafka client), that say
# whether trying again can help: a lost connection can come back, a refused value cannot.
TRANSIENT_ERRORS = frozenset(
    {
        "OperationalError",  # SQLAlchemy / DB-API: database unreachable, locked, restarted
        "InterfaceError",
        "DisconnectionError",
        "OSError",  # sockets, files: ConnectionError, TimeoutError, ...
        "KafkaTimeoutError",
        "KafkaConnectionError",
        "NoBrokersAvailable",
        "NodeNotReadyError",
        "BrokerNotAvailableError",
        "LeaderNotAvailableError",
        "NotLeaderForPartitionError",
        "RequestTimedOutError",
        "BusError",  # the bus's own error: the broker is away (unless its cause says otherwise)
    }
)
PERMANENT_ERRORS = frozenset(
    {
        "IntegrityError",  # a constraint the database enforces
        "DataError",  # NUL in text, a value over its column, out of range
        "MessageSizeTooLargeError",
        "RecordTooLargeError",
        "InvalidTopicError",
        "BadRecord",
        "ValueError",
        "TypeError",
        "UnicodeError",
        "OverflowError",
    }
)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` may succeed if tried again (the broker or database is away) rather than never.

    The exception and its causes are read from the innermost out: a permanent cause (a record too large for
    Kafka inside a :class:`BusError`) wins over a transient wrapper. An error of no known kind is permanent,
    so that it is tried a bounded number of times, never forever.
    """
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 16:
        chain.append(current)
        current = current.__cause__ or current.__context__
    for error in reversed(chain):
        names = {cls.__name__ for cls in type(error).__mro__}
        if names & PERMANENT_ERRORS or any(name in str(error) for name in ("MessageSizeTooLarge", "RecordTooLarge")):
            return False
        if names & TRANSIENT_ERRORS:
            return True
    return False


@dataclass
class Health:
    """What a worker's loop is doing: ``ok``, or ``degraded`` while a transient failure is retried."""

    state: str = "ok"
    operation: str | None = None
    error: str | None = None
    since: datetime | None = None
    retries: int = 0
    gave_up: int = 0  # outputs dead-lettered after a permanent failure, since start


def collect_batch(consumer: Consumer, max_records: int, max_wait_ms: int, stop: threading.Event) -> list[BusRecord]:
    """Gather up to ``max_records``, returning early ``max_wait_ms`` after the first one arrived."""
    batch = consumer.poll(max_records, timeout_ms=min(max(max_wait_ms, 50), 500))
    if not batch:
        return batch
    deadline = time.monotonic() + max_wait_ms / 1000
    while len(batch) < max_records and not stop.is_set():
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        if remaining_ms <= 0:
            break
        more = consumer.poll(max_records - len(batch), timeout_ms=remaining_ms)
        if not more:
            break
        batch.extend(more)
    return batch


def run_paused(
    consumer: Consumer,
    fn: Callable[[], T],
    *,
    poll_interval_ms: int = 100,
    grace_s: float = 0.0,
    executor: Executor | None = None,
) -> T:
    """Run ``fn()`` in a worker thread while this thread keeps ``consumer`` alive in its group.

    Kafka evicts a member that does not poll within ``max_poll_interval_ms``,
    whatever its heartbeats say. Long work (a slow batch, a model swap, a
    retrain) therefore runs in another thread while this one pauses every
    assigned partition and keeps polling the paused consumer, which returns no
    records but counts as progress. The partitions are resumed afterwards.
    Returns ``fn``'s result or re-raises its exception.

    ``grace_s``: wait this long for ``fn`` before pausing, so that short work
    never pays for a pause and resume. ``executor``: run ``fn`` there (e.g. a
    one-thread pool that keeps a model on one thread) instead of a new thread.
    Poll errors while paused (a broker that is away) are logged and retried:
    the work itself decides the outcome. Do not nest calls on one consumer.
    """
    done = threading.Event()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            outcome["error"] = exc
        finally:
            done.set()

    context = contextvars.copy_context()  # the work logs with this thread's role, message id, model version
    if executor is not None:
        executor.submit(context.run, target)
    else:
        threading.Thread(target=context.run, args=(target,), name="aet-paused-work", daemon=True).start()
    finished_early = done.wait(grace_s) if grace_s > 0 else done.is_set()
    if not finished_early:
        consumer.pause()
        stray: list[BusRecord] = []
        try:
            while not done.is_set():
                try:
                    stray.extend(consumer.poll(max_records=1, timeout_ms=poll_interval_ms))
                except BusError as exc:
                    log.debug("poll while paused failed: %s", exc)
                    done.wait(poll_interval_ms / 1000)
        finally:
            consumer.resume()
        done.wait()
        if stray:
            raise BusError(
                f"{type(consumer).__name__} returned {len(stray)} records while paused: "
                "the backend does not honour pause(), so they were read but not processed"
            )
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class DetachedBus:
    """The bus of a worker that never runs its loop (a data-parallel follower rank): every use raises."""

    def _refuse(self, *args: object, **kwargs: object) -> Any:
        raise BusError("this worker is detached from the bus (a data-parallel follower)")

    create_topics = publish = flush = consumer = group_lag = _refuse

    def close(self) -> None:
        return None

    def __enter__(self) -> DetachedBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Worker(abc.ABC):
    """One role's consume-process-publish-store-commit loop."""

    role: str = "worker"
    #: Seconds a batch may take before its partitions are paused while the consumer keeps
    #: polling (see :func:`run_paused`); ``None`` runs batches inline.
    pause_after_s: float | None = 1.0

    def __init__(
        self,
        bus: Bus,
        store: BatchStore,
        *,
        group: str,
        topics: list[str],
        dlq_topic: str,
        max_batch: int = 64,
        max_wait_ms: int = 100,
    ) -> None:
        self.bus = bus
        self.store = store
        self.group = group
        self.topics = topics
        self.dlq_topic = dlq_topic
        self.max_batch = max_batch
        self.max_wait_ms = max_wait_ms
        self.batches = 0
        self.delivery: DeadLetterSettings = current_dead_letter_settings()
        self.health = Health()
        self._committed = threading.Condition()
        self._executor: ThreadPoolExecutor | None = None

    @abc.abstractmethod
    def handle(self, records: list[BusRecord]) -> Outputs:
        """Turn a batch of records into outputs. Must not raise for a bad record: dead-letter it."""

    def before_batch(self) -> None:
        """Hook run between batches (e.g. to swap in a newly promoted model); nothing by default."""
        return None

    def run(self, stop: threading.Event, *, drain: bool = False) -> int:
        """Process batches until ``stop`` is set (or, with ``drain``, until nothing is left).

        Returns the number of records processed.
        """
        processed = 0
        logging_setup.set_role(self.role)
        try:
            with self.bus.consumer(self.group, self.topics) as consumer:
                while not stop.is_set():
                    self.before_batch()
                    batch = collect_batch(consumer, self.max_batch, self.max_wait_ms, stop)
                    health.mark_subscribed(self.role)  # a poll came back: the daemon's /readyz may say so
                    if not batch:
                        metrics.CONSUMER_LAG.labels(self.role).set(consumer.lag())
                        if drain and consumer.lag() == 0:
                            break
                        continue
                    processed += self.process(consumer, batch, stop)
        finally:
            health.mark_subscribed(self.role, False)
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
        return processed

    def process(self, consumer: Consumer, batch: list[BusRecord], stop: threading.Event) -> int:
        """Handle one batch and apply the delivery contract; returns the batch size."""
        started = time.perf_counter()
        metrics.CONSUMED.labels(self.role).inc(len(batch))
        if self.pause_after_s is None:
            out = self._handle_publish_store(batch, stop)
        else:
            # A slow batch must not get this member thrown out of its group: past
            # pause_after_s, pause the partitions and keep polling while the work runs.
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"aet-{self.role}-batch")
            out = run_paused(
                consumer,
                lambda: self._handle_publish_store(batch, stop),
                grace_s=self.pause_after_s,
                executor=self._executor,
            )
        # Kafka may refuse a commit while its broker is away: retry like publish and store.
        self._retry("commit", consumer.commit, stop)
        self.batches += 1
        metrics.PROCESSED.labels(self.role).inc(max(0, len(batch) - len(out.dead_letters)))
        metrics.BATCH_SIZE.labels(self.role).observe(len(batch))
        metrics.BATCH_LATENCY.labels(self.role).observe(time.perf_counter() - started)
        with self._committed:
            self._committed.notify_all()
        return len(batch)

    def _handle_publish_store(self, batch: list[BusRecord], stop: threading.Event) -> Outputs:
        """Handle a batch, then publish and flush its outputs, then store them (see the module's docstring)."""
        out = self.handle(batch)
        self._refuse_oversized(out)
        for dl in out.dead_letters:
            self._announce(dl)
        out.publish.extend((self.dlq_topic, dl.key, dl.to_bytes()) for dl in out.dead_letters)

        def publish_all() -> None:
            for topic, key, value in out.publish:
                self.bus.publish(topic, value, key=key)
            self.bus.flush()

        self._deliver("publish", publish_all, stop, isolate=lambda: self._publish_one_by_one(out, stop))
        refused = self._deliver(
            "store", lambda: self._write(out), stop, isolate=lambda: self._store_one_by_one(out, stop)
        )
        if refused:
            for dl in refused:
                self._announce(dl)
            self._publish_refused(refused, stop)
        return out

    def _write(self, out: Outputs) -> list[DeadLetter]:
        refused = self.store.write(
            scored=out.scored,
            labels=out.labels,
            dead_letters=[*out.dead_letters, *out.recorded],
            events=out.events,
            alerts=out.alerts,
        )
        return list(refused or [])

    def _announce(self, dl: DeadLetter) -> None:
        metrics.REJECTED.labels(self.role, dl.stage).inc()
        with logging_setup.bind(message_id=_message_id(dl)):
            log.warning("dead letter from %s at %s[%s]@%s: %s", dl.stage, dl.topic, dl.partition, dl.offset, dl.reason)

    def _refuse_oversized(self, out: Outputs) -> None:
        """Turn outputs the bus would refuse for their size into dead letters before anything is published."""
        limit = self.delivery.max_record_bytes
        kept: list[tuple[str, str | None, bytes]] = []
        for topic, key, value in out.publish:
            if len(value) <= limit:
                kept.append((topic, key, value))
                continue
            reason = f"output to {topic} has {len(value)} bytes, over dead_letters.max_record_bytes ({limit})"
            out.dead_letters.append(DeadLetter.of(value, stage=self.role, reason=reason, topic=topic, key=key))
            self._gave_up("publish")
        out.publish = kept

    def _gave_up(self, operation: str, n: int = 1) -> None:
        metrics.GAVE_UP.labels(self.role, operation).inc(n)
        self.health.gave_up += n

    def _deliver(
        self, operation: str, fn: Callable[[], T], stop: threading.Event, *, isolate: Callable[[], T] | None = None
    ) -> T:
        """Run ``fn``: a transient failure is retried until it passes, any other ``dead_letters.max_attempts``
        times; then ``isolate`` (a batch's outputs one by one, dead-lettering those refused) runs instead, or,
        without one, the error is raised. A stop request during a failure raises it."""
        attempts = 0
        delay = 0.2
        while True:
            try:
                result = fn()
            except Exception as exc:
                metrics.RETRIES.labels(self.role, operation).inc()
                self.health.retries += 1
                if stop.is_set():
                    log.error("%s failed during shutdown, batch left uncommitted: %s", operation, exc)
                    raise
                if is_transient(exc):
                    self._degraded(operation, exc)
                    log.warning("%s failed (%s); retrying in %.1fs", operation, brief(exc), delay)
                    stop.wait(delay)
                    delay = min(delay * 2, self.delivery.max_backoff_s)
                    continue
                attempts += 1
                if attempts < self.delivery.max_attempts:
                    log.warning(
                        "%s failed (%s), try %d of %d",
                        operation,
                        brief(exc),
                        attempts,
                        self.delivery.max_attempts,
                    )
                    stop.wait(0.05 * attempts)
                    continue
                log.error("%s failed %d times with a permanent error (%s)", operation, attempts, brief(exc))
                self._recovered(operation)
                if isolate is None:
                    raise
                log.error("%s: delivering the batch's outputs one at a time", operation)
                return isolate()
            self._recovered(operation)
            return result

    def _degraded(self, operation: str, exc: BaseException) -> None:
        if self.health.state != "degraded" or self.health.operation != operation:
            self.health.since = utcnow()
        self.health.state, self.health.operation = "degraded", operation
        self.health.error = brief(exc)
        metrics.DEGRADED.labels(self.role, operation).set(1)

    def _recovered(self, operation: str) -> None:
        if self.health.state == "degraded" and self.health.operation == operation:
            since = self.health.since
            log.info("%s works again (failing since %s)", operation, since.isoformat() if since else "?")
            self.health = Health(retries=self.health.retries, gave_up=self.health.gave_up)
            metrics.DEGRADED.labels(self.role, operation).set(0)

    def _publish_one_by_one(self, out: Outputs, stop: threading.Event) -> None:
        """Publish each output on its own; one the bus refuses for good becomes a dead letter, stored with the batch."""
        refused: list[DeadLetter] = []
        for topic, key, value in out.publish:

            def one(topic: str = topic, key: str | None = key, value: bytes = value) -> None:
                self.bus.publish(topic, value, key=key)
                self.bus.flush()

            try:
                self._deliver("publish", one, stop)
            except Exception as exc:
                if stop.is_set():
                    raise
                reason = f"publish to {topic} failed for good: {brief(exc)}"
                refused.append(DeadLetter.of(value, stage=self.role, reason=reason, topic=topic, key=key))
        self._gave_up("publish", len(refused))
        for dl in refused:
            self._announce(dl)
            try:
                self._deliver("publish", partial(self._publish_dead_letters, [dl]), stop)
            except Exception as exc:
                if stop.is_set():
                    raise
                log.error("dead letter could not be published, it is stored only (%s): %s", exc, dl.reason)
        out.dead_letters.extend(refused)

    def _publish_dead_letters(self, dead: list[DeadLetter]) -> None:
        for dl in dead:
            self.bus.publish(self.dlq_topic, dl.to_bytes(), key=dl.key)
        self.bus.flush()

    def _store_one_by_one(self, out: Outputs, stop: threading.Event) -> list[DeadLetter]:
        """Write each output in its own transaction; one the store refuses for good becomes a dead letter."""
        refused: list[DeadLetter] = []
        conflicts: list[DeadLetter] = []
        singles: list[tuple[str, Record, dict[str, Any]]] = [
            *(("scored", m, {"scored": [m]}) for m in out.scored),
            *(("labels", m, {"labels": [m]}) for m in out.labels),
            *(("events", m, {"events": [m]}) for m in out.events),
            *(("alerts", m, {"alerts": [m]}) for m in out.alerts),
            *(("dead_letters", m, {"dead_letters": [m]}) for m in [*out.dead_letters, *out.recorded]),
        ]
        for kind, record, rows in singles:
            try:
                conflicts.extend(self._deliver("store", partial(self._write_rows, rows), stop))
            except Exception as exc:
                if stop.is_set():
                    raise
                reason = f"the store refused this {kind} record for good: {brief(exc)}"
                refused.append(DeadLetter.of(record.to_bytes(), stage=self.role, reason=reason, key=_key_of(record)))
        if refused:
            self._gave_up("store", len(refused))
            for dl in refused:
                self._announce(dl)
            try:
                conflicts.extend(self._deliver("store", partial(self._write_rows, {"dead_letters": refused}), stop))
            except Exception as exc:
                if stop.is_set():
                    raise
                log.error("%d dead letters could not be stored either (%s)", len(refused), brief(exc))
            self._publish_refused(refused, stop)
        return conflicts

    def _write_rows(self, rows: dict[str, Any]) -> list[DeadLetter]:
        return list(self.store.write(**rows) or [])

    def _publish_refused(self, dead: list[DeadLetter], stop: threading.Event) -> None:
        """Publish dead letters that arose after the batch's publish (conflicts, refused writes) to the DLQ topic."""
        try:
            self._deliver("publish", partial(self._publish_dead_letters, dead), stop)
        except Exception as exc:
            if stop.is_set():
                raise
            log.error("%d dead letters were stored but not published (%s)", len(dead), brief(exc))

    def wait_for_commit(self, timeout_s: float) -> None:
        """Block until the next batch is committed or ``timeout_s`` passes."""
        with self._committed:
            self._committed.wait(timeout_s)

    def _retry(self, operation: str, fn: Callable[[], T], stop: threading.Event) -> T:
        """Run ``fn`` until it succeeds, backing off exponentially; a stop request does not skip it.

        Used for the commit, which only the bus can refuse. Giving up would mean
        re-reading a batch whose outputs are out, so a stop during an outage
        aborts the batch uncommitted instead.
        """
        delay = 0.2
        while True:
            try:
                result = fn()
            except Exception as exc:
                metrics.RETRIES.labels(self.role, operation).inc()
                self.health.retries += 1
                if stop.is_set():
                    log.error("%s failed during shutdown, batch left uncommitted: %s", operation, exc)
                    raise
                self._degraded(operation, exc)
                log.warning("%s failed (%s); retrying in %.1fs", operation, brief(exc), delay)
                stop.wait(delay)
                delay = min(delay * 2, self.delivery.max_backoff_s)
                continue
            self._recovered(operation)
            return result


def brief(exc: BaseException) -> str:
    """``Type: first line of the message`` (a database error's message goes on with the statement and its rows)."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0][:500] if lines else ''}"
    return f"{text} (from {brief(exc.__cause__)})" if exc.__cause__ is not None else text


def _message_id(dl: DeadLetter) -> str | None:
    """The id of the message a dead letter keeps, when its copy is JSON that names one (for the log line)."""
    try:
        payload = json.loads(dl.raw) if dl.raw else None
    except ValueError:
        return None
    if isinstance(payload, dict):
        for name in ("id", "message_id"):
            if isinstance(payload.get(name), str):
                return str(payload[name])
    return None


def _key_of(record: Record) -> str | None:
    """The bus key of an output record, for its dead letter."""
    for name in ("key", "message_id", "entity", "id"):
        value = getattr(record, name, None)
        if isinstance(value, str):
            return value
    return None
