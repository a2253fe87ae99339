"""The worker loop shared by every role: poll a batch, handle it, publish, store, commit.

A role only implements :meth:`Worker.handle`, turning a batch of bus records
into :class:`Outputs`. The loop guarantees the delivery contract
(docs/architecture.md, "Delivery"): outputs are published and flushed, then
stored, and only then is the batch committed, so a crash at any point
re-delivers the batch and its keyed outputs overwrite instead of duplicating. A
failing publish or store is retried with backoff, never skipped; a stop request
(SIGTERM) finishes the current batch, commits it, and returns. A slow batch runs
while the consumer keeps polling with its partitions paused (:func:`run_paused`),
so that Kafka does not evict the member from its group.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aet.pipeline import metrics
from aet.pipeline.ports import BatchStore, Bus, BusError, BusRecord, Consumer
from aet.pipeline.records import Alert, ControlEvent, DeadLetter, LabelRecord, ScoredMessage

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

    if executor is not None:
        executor.submit(target)
    else:
        threading.Thread(target=target, name="aet-paused-work", daemon=True).start()
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
        try:
            with self.bus.consumer(self.group, self.topics) as consumer:
                while not stop.is_set():
                    self.before_batch()
                    batch = collect_batch(consumer, self.max_batch, self.max_wait_ms, stop)
                    if not batch:
                        metrics.CONSUMER_LAG.labels(self.role).set(consumer.lag())
                        if drain and consumer.lag() == 0:
                            break
                        continue
                    processed += self.process(consumer, batch, stop)
        finally:
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
        metrics.PROCESSED.labels(self.role).inc(len(batch) - len(out.dead_letters))
        metrics.BATCH_SIZE.labels(self.role).observe(len(batch))
        metrics.BATCH_LATENCY.labels(self.role).observe(time.perf_counter() - started)
        with self._committed:
            self._committed.notify_all()
        return len(batch)

    def _handle_publish_store(self, batch: list[BusRecord], stop: threading.Event) -> Outputs:
        """Handle a batch, then publish and flush its outputs, then store them (retrying both)."""
        out = self.handle(batch)
        for dl in out.dead_letters:
            out.publish.append((self.dlq_topic, dl.key, dl.to_bytes()))
            metrics.REJECTED.labels(self.role, dl.stage).inc()
            log.warning("dead letter from %s at %s[%s]@%s: %s", dl.stage, dl.topic, dl.partition, dl.offset, dl.reason)

        def publish_all() -> None:
            for topic, key, value in out.publish:
                self.bus.publish(topic, value, key=key)
            self.bus.flush()

        self._retry("publish", publish_all, stop)
        self._retry(
            "store",
            lambda: self.store.write(
                scored=out.scored,
                labels=out.labels,
                dead_letters=out.dead_letters,
                events=out.events,
                alerts=out.alerts,
            ),
            stop,
        )
        return out

    def wait_for_commit(self, timeout_s: float) -> None:
        """Block until the next batch is committed or ``timeout_s`` passes."""
        with self._committed:
            self._committed.wait(timeout_s)

    def _retry(self, operation: str, fn: Callable[[], T], stop: threading.Event, max_backoff_s: float = 30.0) -> T:
        """Run ``fn`` until it succeeds, backing off exponentially; a stop request does not skip it.

        Giving up would mean committing a batch whose outputs are lost, so a
        stop during an outage aborts the batch uncommitted instead.
        """
        delay = 0.2
        while True:
            try:
                return fn()
            except Exception as exc:
                metrics.RETRIES.labels(self.role, operation).inc()
                if stop.is_set():
                    log.error("%s failed during shutdown, batch left uncommitted: %s", operation, exc)
                    raise
                log.warning("%s failed (%s: %s); retrying in %.1fs", operation, type(exc).__name__, exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, max_backoff_s)
