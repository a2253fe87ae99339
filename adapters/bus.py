"""The bus contract every backend implements, and the factory that picks one.

The contract is deliberately the intersection of what an in-process queue and
Kafka can both promise: keyed publishing into partitioned topics, consumer
groups that share partitions, polling in batches, and an explicit commit that
a worker calls only after a batch's outputs are published and stored. A
worker written against it runs unchanged on either backend.
"""

from __future__ import annotations

import abc
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from aet.pipeline.config import BusSettings

_log = logging.getLogger(__name__)
T = TypeVar("T")


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


class Consumer(abc.ABC):
    """A member of a consumer group, reading its share of the partitions of some topics."""

    @abc.abstractmethod
    def poll(self, max_records: int, timeout_ms: int) -> list[BusRecord]:
        """Return up to ``max_records`` records, waiting at most ``timeout_ms`` for the first.

        Records of one partition come in offset order. An empty list means
        nothing arrived in time.
        """

    @abc.abstractmethod
    def commit(self) -> None:
        """Commit the position after every record returned by ``poll`` so far.

        Call only once the outputs of those records are published and stored:
        after a crash, the group resumes from the last commit.
        """

    @abc.abstractmethod
    def lag(self) -> int:
        """Records in this member's partitions not yet committed (approximate on Kafka)."""

    def pause(self) -> None:
        """Stop fetching while slow work runs; ``poll`` keeps the membership alive."""

    def resume(self) -> None:
        """Fetch again after :meth:`pause`."""

    @abc.abstractmethod
    def close(self) -> None:
        """Leave the group (without committing)."""

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Bus(abc.ABC):
    """A partitioned, keyed publish/subscribe log."""

    @abc.abstractmethod
    def create_topics(self, topics: Iterable[str], partitions: int | None = None) -> None:
        """Create topics that do not exist yet (existing ones are left as they are)."""

    @abc.abstractmethod
    def publish(self, topic: str, value: bytes, key: str | None = None) -> None:
        """Queue one record; records with the same key land in the same partition, in order."""

    @abc.abstractmethod
    def flush(self, timeout_s: float | None = None) -> None:
        """Block until every queued record is acknowledged, or raise :class:`BusError`."""

    @abc.abstractmethod
    def consumer(self, group: str, topics: Sequence[str]) -> Consumer:
        """Join ``group`` as a new member reading ``topics`` from the group's committed position."""

    @abc.abstractmethod
    def group_lag(self, group: str, topics: Sequence[str]) -> int:
        """Records in ``topics`` that ``group`` has not committed yet."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush and release every resource."""

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_bus(settings: BusSettings) -> Bus:
    """Open the backend named by ``settings.backend``."""
    if settings.backend == "memory":
        from aet.adapters.memory_bus import MemoryBus

        return MemoryBus(partitions=settings.partitions, journal_dir=settings.journal_dir)
    if settings.backend == "kafka":
        from aet.adapters.kafka_bus import KafkaBus

        return KafkaBus(settings)
    raise BusError(f"unknown bus backend {settings.backend!r}: use 'memory' or 'kafka'")


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
                    _log.debug("poll while paused failed: %s", exc)
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
