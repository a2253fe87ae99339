"""Fencing on SQLite and PostgreSQL: of two instances that keep the same state, the newest owns it.

Each instance is a store on its own Database (its own connections, as two
processes would have). Before fencing, the stale instance's write silently
replaced the newer one's state.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from aet.adapters.memory_bus import MemoryBus
from aet.pipeline.config import TopicSettings
from aet.pipeline.ports import BaselineSnapshot, BusRecord, MonitorBatch, StateFenced
from aet.pipeline.records import ControlEvent
from aet.pipeline.roles.alerts import AlertWorker
from aet.storage import fencing
from aet.storage.alert_store import AlertStore
from aet.storage.db import Database
from aet.storage.drift_store import MonitorStore
from aet.storage.store import ResultStore
from aet.storage.tables import ControlEventRow, DetectorStateRow, EntityBaselineRow, StateFenceRow
from tests.pipeline.alert_messages import msg, settings

T0 = datetime(2026, 3, 2, 12, tzinfo=UTC)


def stored_state(db: Database, name: str) -> dict[str, object] | None:
    with db.session() as s:
        row = s.get(DetectorStateRow, name)
        return dict(row.state) if row is not None else None


def test_two_monitors_in_one_group_the_stale_one_cannot_overwrite_the_state(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = MonitorStore(Database(database.url)), MonitorStore(Database(database.url))
    assert first.load_state("aet-monitor") is None
    first.write_batch("aet-monitor", MonitorBatch(state={"by": "first", "seen": 10}))
    assert second.load_state("aet-monitor") == {"by": "first", "seen": 10}  # the second takes over from here
    second.write_batch("aet-monitor", MonitorBatch(state={"by": "second", "seen": 11}))

    late = ControlEvent(kind="drift", ts=T0, payload={"source": "news"})
    with pytest.raises(StateFenced, match="refused"):
        first.write_batch("aet-monitor", MonitorBatch(state={"by": "first", "seen": 99}), events=[late])
    assert stored_state(database, "aet-monitor") == {"by": "second", "seen": 11}
    with database.session() as s:
        assert s.get(ControlEventRow, late.id) is None  # nothing of the refused batch was written
    assert any("holds epoch 1" in r.getMessage() and "epoch 2" in r.getMessage() for r in caplog.records)
    second.write_batch("aet-monitor", MonitorBatch(state={"by": "second", "seen": 12}))  # the owner goes on
    other = MonitorStore(Database(database.url))
    other.write_batch("another-group", MonitorBatch(state={"by": "other"}))  # fences are per monitor group
    second.write_batch("aet-monitor", MonitorBatch(state={"by": "second", "seen": 13}))
    assert stored_state(database, "aet-monitor") == {"by": "second", "seen": 13}


def test_a_restarted_instance_takes_the_state_back(database: Database) -> None:
    first, second = MonitorStore(Database(database.url)), MonitorStore(Database(database.url))
    first.load_state("m")
    second.load_state("m")
    first.load_state("m")  # restarted after the second: now the newest
    first.write_batch("m", MonitorBatch(state={"by": "first"}))
    with pytest.raises(StateFenced):
        second.write_batch("m", MonitorBatch(state={"by": "second"}))
    with database.session() as s:
        fence = s.get(StateFenceRow, "monitor:m")
        assert fence is not None and fence.epoch == 3 and fence.owner == first.owner


def test_two_alert_engines_the_stale_one_cannot_overwrite_baselines(database: Database) -> None:
    first, second = AlertStore(Database(database.url)), AlertStore(Database(database.url))

    def baseline(mean: float) -> BaselineSnapshot:
        return BaselineSnapshot("$ACME", "negative_surge", mean, 0.01, 0.0, 5, T0)

    first.load_baselines()
    first.save_state([baseline(0.2)], [])
    assert [b.mean for b in second.load_baselines()] == [0.2]
    second.save_state([baseline(0.3)], [])
    with pytest.raises(StateFenced):
        first.save_state([baseline(0.9)], [])
    with database.session() as s:
        assert list(s.scalars(select(EntityBaselineRow.mean))) == [0.3]


def test_the_stale_alert_engine_stops_instead_of_retrying(database: Database) -> None:
    topics = TopicSettings()
    bus = MemoryBus(partitions=1)
    bus.create_topics(topics.all())
    for m in [msg(i, id=f"f{i}") for i in range(6)]:
        bus.publish(topics.scored, m.to_bytes(), key=m.key)

    def engine() -> AlertWorker:
        db = Database(database.url)
        return AlertWorker(bus, ResultStore(db), topics, settings(), state=AlertStore(db))

    stale, owner = engine(), engine()
    stale.run(threading.Event(), drain=True)  # takes the fence, saves its buckets
    owner.run(threading.Event(), drain=True)  # started later: takes it over
    more = msg(7, id="f7")
    stale.handle([BusRecord(topics.scored, 0, 99, more.key, more.to_bytes(), None)])
    with pytest.raises(StateFenced):  # not an Exception: the worker's retry loops do not catch it
        stale.flush_state()
    assert not isinstance(StateFenced("x"), Exception)
    bus.close()


def test_fences_are_taken_in_turn_and_checked_in_the_write_transaction(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    with database.session() as s, s.begin():
        assert fencing.take(s, "x", "a") == 1
        assert fencing.take(s, "x", "b") == 2
        fencing.check(s, "x", 2, "b")
        with pytest.raises(StateFenced, match="held at epoch 2 by b"):
            fencing.check(s, "x", 1, "a")
