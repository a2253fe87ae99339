"""Fakes and helpers for the pipeline unit tests: a fake model, recording wrappers, row readers,
and a worker runner that waits on commits (the bus lag and commit notifications), never on sleeps.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sqlalchemy import select

from aet.adapters.memory_bus import MemoryBus
from aet.pipeline.model import Prediction
from aet.pipeline.ports import Bus, Consumer
from aet.storage.db import Database
from aet.storage.store import ResultStore
from aet.storage.tables import DeadLetterRow, LabelRow, ScoredMessageRow


class FakeModel:
    """A stand-in for SentimentModel: deterministic probabilities, every call recorded.

    A text containing "plunge" is negative, "soar" positive, anything else neutral.
    ``poison`` makes the model raise on any batch containing that substring;
    ``gate`` (entered, release) blocks the first call until ``release`` is set.
    """

    def __init__(
        self,
        version: str = "fake-v1",
        *,
        poison: str | None = None,
        gate: tuple[threading.Event, threading.Event] | None = None,
    ) -> None:
        self.version = version
        self.poison = poison
        self.gate = gate
        self.calls: list[list[str]] = []

    @staticmethod
    def probs_for(text: str) -> list[float]:
        if "plunge" in text:
            return [0.7, 0.2, 0.1]
        if "soar" in text:
            return [0.1, 0.2, 0.7]
        return [0.2, 0.6, 0.2]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        if self.gate is not None:
            entered, release = self.gate
            self.gate = None
            entered.set()
            assert release.wait(10), "test never released the model"
        if self.poison is not None and any(self.poison in t for t in texts):
            raise ValueError(f"cannot score {self.poison!r}")
        return np.array([self.probs_for(t) for t in texts], dtype=np.float32).reshape(len(texts), 3)

    @property
    def base(self) -> str:
        return self.version

    def predict(
        self, texts: Sequence[str], sources: Sequence[str] | None = None, *, features: bool = False
    ) -> Prediction:
        """SentimentModel.predict without features: the scorer's entry point, through predict_proba."""
        return Prediction(self.predict_proba(texts))

    @property
    def batch_sizes(self) -> list[int]:
        return [len(c) for c in self.calls]


class RecordingStore:
    """Wraps a ResultStore; records every write and can fail the first ``fail_times`` writes.

    ``on_write`` runs before each attempt (to observe the bus at that moment).
    """

    def __init__(
        self, inner: ResultStore, *, fail_times: int = 0, on_write: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self.inner = inner
        self.fail_times = fail_times
        self.on_write = on_write
        self.attempts = 0
        self.writes: list[dict[str, Any]] = []
        self.failed = threading.Event()

    def write(self, **kwargs: Any) -> None:
        self.attempts += 1
        if self.on_write is not None:
            self.on_write(kwargs)
        if self.attempts <= self.fail_times:
            self.failed.set()
            raise OSError("database is unavailable (injected)")
        self.inner.write(**kwargs)
        self.writes.append({k: list(v) for k, v in kwargs.items()})


class RecordingBus(Bus):
    """Delegates to a MemoryBus and remembers the global order of every publish."""

    def __init__(self, inner: MemoryBus) -> None:
        self.inner = inner
        self.published: list[tuple[str, str | None, bytes]] = []

    def create_topics(self, topics, partitions=None):  # type: ignore[no-untyped-def]
        self.inner.create_topics(topics, partitions)

    def publish(self, topic: str, value: bytes, key: str | None = None) -> None:
        self.inner.publish(topic, value, key=key)
        self.published.append((topic, key, value))

    def flush(self, timeout_s: float | None = None) -> None:
        self.inner.flush(timeout_s)

    def consumer(self, group: str, topics: Sequence[str]) -> Consumer:
        return self.inner.consumer(group, topics)

    def group_lag(self, group: str, topics: Sequence[str]) -> int:
        return self.inner.group_lag(group, topics)

    def close(self) -> None:
        self.inner.close()

    def on(self, topic: str) -> list[dict[str, Any]]:
        """Decoded JSON of what was published to ``topic``, in publish order."""
        return [json.loads(v) for t, _, v in self.published if t == topic]


def label_rows(db: Database) -> list[LabelRow]:
    with db.session() as s:
        return list(s.scalars(select(LabelRow).order_by(LabelRow.message_id)))


def scored_rows(db: Database) -> list[ScoredMessageRow]:
    with db.session() as s:
        return list(s.scalars(select(ScoredMessageRow).order_by(ScoredMessageRow.message_id)))


def dead_letter_rows(db: Database) -> list[DeadLetterRow]:
    with db.session() as s:
        return list(s.scalars(select(DeadLetterRow)))


def message_payload(i: int | str, text: str | None = None, **fields: Any) -> dict[str, Any]:
    """A valid aet.messages payload."""
    payload: dict[str, Any] = {
        "id": f"m{i}",
        "source": "news",
        "channel": "wire",
        "text": text or f"message number {i}",
        "ts": "2026-03-02T13:00:00+00:00",
        "entities": ["$ACME"],
    }
    payload.update(fields)
    return payload


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode("utf-8")


class Running:
    """A worker's ``run`` in a daemon thread; remembers its result or the exception that ended it."""

    def __init__(self, worker: Any, *, drain: bool = False) -> None:
        self.worker = worker
        self.stop = threading.Event()
        self.result: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(drain,), daemon=True)
        self.thread.start()

    def _run(self, drain: bool) -> None:
        try:
            self.result = self.worker.run(self.stop, drain=drain)
        except BaseException as exc:
            self.error = exc

    def wait_committed(self, bus: Bus, topics: Sequence[str], timeout_s: float = 10.0) -> None:
        """Block until the worker's group has committed everything in ``topics``."""
        deadline = time.monotonic() + timeout_s
        while bus.group_lag(self.worker.group, topics) > 0:
            assert self.thread.is_alive() or self.error is None, f"worker died: {self.error!r}"
            assert time.monotonic() < deadline, (
                f"group {self.worker.group} still lags {bus.group_lag(self.worker.group, topics)}"
            )
            self.worker.wait_for_commit(0.2)

    def finish(self, timeout_s: float = 10.0) -> None:
        """Ask the loop to stop and wait for the thread to end."""
        self.stop.set()
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "worker did not stop"
