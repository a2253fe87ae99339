"""Fixtures for the storage tests: result stores, registries and record factories."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from aet.pipeline.records import Probs, ScoredMessage
from aet.storage.db import Database
from aet.storage.registry import ModelRegistry
from aet.storage.store import ResultStore

ScoredFactory = Callable[..., ScoredMessage]


@pytest.fixture
def store(database: Database) -> ResultStore:
    """A ResultStore on a freshly migrated database (SQLite and PostgreSQL)."""
    return ResultStore(database)


@pytest.fixture
def registry(database: Database) -> ModelRegistry:
    """A ModelRegistry on a freshly migrated database (SQLite and PostgreSQL)."""
    return ModelRegistry(database)


@pytest.fixture
def make_scored() -> ScoredFactory:
    """Build a valid ScoredMessage; keyword arguments override the defaults."""

    def make(message_id: str = "m-1", **overrides: Any) -> ScoredMessage:
        fields: dict[str, Any] = {
            "id": message_id,
            "source": "news",
            "channel": "wire",
            "text": "Shares of $ACME rose 4% after earnings beat estimates.",
            "ts": datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=UTC),
            "entities": ["$ACME"],
            "meta": {"feed": "test"},
            "label": "positive",
            "probs": Probs(negative=0.1, neutral=0.2, positive=0.7),
            "score": 0.6,
            "model_version": "v0001",
            "scored_at": datetime(2024, 3, 1, 12, 30, 16, 654321, tzinfo=UTC),
        }
        fields.update(overrides)
        return ScoredMessage(**fields)

    return make


@pytest.fixture
def model_fields() -> dict[str, Any]:
    """Keyword arguments for ModelRegistry.register, apart from version and status."""
    return {
        "artifact_path": "/models/x",
        "sha256": "0" * 64,
        "backbone": "all-MiniLM-L6-v2",
        "labels": ["negative", "neutral", "positive"],
    }
