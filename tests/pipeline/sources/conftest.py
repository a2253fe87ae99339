"""Fixtures of the source tests: a real SQLite ingest store, a memory bus and a reader of what was published."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aet.adapters.memory_bus import MemoryBus
from aet.pipeline.config import TopicSettings
from aet.pipeline.ports import Bus
from aet.pipeline.records import DeadLetter, Message, decode
from aet.pipeline.sources.emit import Emitter
from aet.storage.db import Database
from aet.storage.ingest_store import IngestStore

TOPICS = TopicSettings()


@pytest.fixture
def ingest_db(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'ingest.db'}")
    yield db
    db.dispose()


@pytest.fixture
def ingest_store(ingest_db: Database) -> IngestStore:
    return IngestStore(ingest_db)


@pytest.fixture
def bus() -> Iterator[MemoryBus]:
    b = MemoryBus(partitions=3)
    b.create_topics(TOPICS.all())
    yield b
    b.close()


@pytest.fixture
def emitter(bus: MemoryBus) -> Emitter:
    return Emitter(bus, TOPICS)


def read_topic(bus: Bus, topic: str) -> list[tuple[str | None, bytes]]:
    """Every (key, value) of ``topic`` so far, read by a new group."""
    out: list[tuple[str | None, bytes]] = []
    with bus.consumer(f"reader-{uuid.uuid4().hex[:8]}", [topic]) as consumer:
        while batch := consumer.poll(1000, 50):
            out += [(r.key, r.value) for r in batch]
    return out


@pytest.fixture
def published(bus: MemoryBus) -> Callable[[], list[Message]]:
    """The messages published to aet.messages so far (each checked to be keyed by entity, else id)."""

    def read() -> list[Message]:
        messages = []
        for key, value in read_topic(bus, TOPICS.messages):
            m = decode(Message, value)
            assert key == (m.entities[0] if m.entities else m.id)
            messages.append(m)
        return messages

    return read


@pytest.fixture
def dead_letters(bus: MemoryBus) -> Callable[[], list[DeadLetter]]:
    return lambda: [decode(DeadLetter, v) for _, v in read_topic(bus, TOPICS.dlq)]
