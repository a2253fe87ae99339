"""The bus contract every backend implements, and the factory that picks one.

The contract is deliberately the intersection of what an in-process queue and
Kafka can both promise: keyed publishing into partitioned topics, consumer
groups that share partitions, polling in batches, and an explicit commit that
a worker calls only after a batch's outputs are published and stored. A
worker written against it runs unchanged on either backend.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

if TYPE_CHECKING:
    from pipeline.config import BusSettings


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

    def __enter__(self) -> "Consumer":
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

    def __enter__(self) -> "Bus":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_bus(settings: "BusSettings") -> Bus:
    """Open the backend named by ``settings.backend``."""
    if settings.backend == "memory":
        from adapters.memory_bus import MemoryBus

        return MemoryBus(partitions=settings.partitions, journal_dir=settings.journal_dir)
    if settings.backend == "kafka":
        from adapters.kafka_bus import KafkaBus

        return KafkaBus(settings)
    raise BusError(f"unknown bus backend {settings.backend!r}: use 'memory' or 'kafka'")
