"""Fixtures for the pipeline unit tests: a real MemoryBus and a real SQLite result store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aet.adapters.memory_bus import MemoryBus
from aet.pipeline.config import TopicSettings
from aet.storage.db import Database
from aet.storage.store import ResultStore


@pytest.fixture
def topics() -> TopicSettings:
    return TopicSettings()


@pytest.fixture
def bus(topics: TopicSettings) -> Iterator[MemoryBus]:
    b = MemoryBus(partitions=3)
    b.create_topics(topics.all())
    yield b
    b.close()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    d = Database(f"sqlite:///{tmp_path / 'pipeline.db'}")
    yield d
    d.dispose()


@pytest.fixture
def store(db: Database) -> ResultStore:
    return ResultStore(db)
