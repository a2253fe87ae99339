"""The alert role: publishes, stores and dead-letters; a redelivered batch overwrites its alert."""

from __future__ import annotations

import json
import threading
from typing import Any

from aet.adapters.memory_bus import MemoryBus
from aet.pipeline.config import TopicSettings
from aet.pipeline.records import Alert, ScoredMessage, decode
from aet.pipeline.roles.alerts import AlertWorker
from aet.storage.alert_store import AlertStore
from aet.storage.db import Database
from aet.storage.store import ResultStore
from tests.pipeline.alert_messages import msg, settings


def _scored_topic(bus: MemoryBus, topics: TopicSettings, messages: list[ScoredMessage]) -> None:
    for m in messages:
        bus.publish(topics.scored, m.to_bytes(), key=m.key)


def test_worker_publishes_stores_and_dead_letters(bus: MemoryBus, topics: TopicSettings, db: Database) -> None:
    burst = [msg(i, id=f"w{i}") for i in range(6)]
    _scored_topic(bus, topics, burst)
    bus.publish(topics.scored, b'{"not": "a scored message"}', key="x")
    worker = AlertWorker(bus, ResultStore(db), topics, settings(), state=AlertStore(db))
    worker.run(threading.Event(), drain=True)
    [record] = bus.read_all(topics.alerts)
    alert = decode(Alert, record.value)
    assert record.key == "$ACME" and alert.trigger_id == "w4"
    assert [a.id for a in AlertStore(db).list_alerts()] == [alert.id]
    [dead] = [decode_dead(r.value) for r in bus.read_all(topics.dlq)]
    assert dead["stage"] == "alerts" and "missing field" in dead["reason"]
    # The engine's state went to the database: per-entity buckets for the chart, the prior.
    assert sum(b["n"] for b in AlertStore(db).sentiment("$ACME")) == 6
    assert AlertStore(db).load_baselines() == []  # nothing is folded into a baseline before a window passes


def decode_dead(raw: bytes) -> dict[str, Any]:
    return json.loads(raw)


def test_a_redelivered_batch_overwrites_its_alert(topics: TopicSettings, db: Database) -> None:
    """A second engine (a restart whose last commit was lost) re-reads the batch: still one alert row."""
    burst = [msg(i, id=f"x{i}") for i in range(8)]
    for group in ("g1", "g2"):
        bus = MemoryBus(partitions=1)
        bus.create_topics(topics.all())
        _scored_topic(bus, topics, burst)
        worker = AlertWorker(bus, ResultStore(db), topics, settings(group=group), state=AlertStore(db))
        worker.run(threading.Event(), drain=True)
        assert len(bus.read_all(topics.alerts)) == 1
        bus.close()
    assert len(AlertStore(db).list_alerts()) == 1
