"""Automatic rollback: the live comparison, the registry side, and the drift monitor that runs it."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from aet.adapters.memory_bus import MemoryBus
from aet.pipeline.config import MonitorSettings, TopicSettings
from aet.pipeline.learning.promotion import Promoter
from aet.pipeline.learning.rollback import AutoRollback, RollbackGuard
from aet.pipeline.records import LABELS, ControlEvent, decode
from aet.pipeline.roles.monitor import Monitor
from aet.storage.db import Database
from aet.storage.drift_store import MonitorStore
from aet.storage.registry import ModelRegistry
from tests.pipeline.roles.test_monitor import CALM, SHIFTED, label, scored


def feed(guard: Any, version: str, correct: int, wrong: int) -> None:
    for _ in range(correct):
        guard.learn_one(version, True)
    for _ in range(wrong):
        guard.learn_one(version, False)


def test_no_verdict_until_the_new_version_has_enough_labels() -> None:
    guard = RollbackGuard(labels=50, margin=0.05)
    feed(guard, "v1", 45, 5)
    guard.watch("v2", "v1")
    feed(guard, "v2", 20, 29)
    assert guard.verdict() is None
    guard.learn_one("v2", False)
    v = guard.verdict()
    assert v is not None and v.rollback and (v.accuracy, v.previous_accuracy) == (0.4, 0.9)
    assert "below by more than the margin" in v.reason
    assert guard.verdict() is None  # judged once


def test_a_promotion_within_the_margin_stands_and_labels_of_the_old_version_keep_counting() -> None:
    guard = RollbackGuard(labels=20, margin=0.1)
    feed(guard, "v1", 0, 4)
    feed(guard, "v1", 16, 0)  # 0.80
    guard.watch("v2", "v1")
    feed(guard, "v1", 2, 0)  # delayed labels of messages v1 scored: still v1's window (0.9 over its last 20)
    feed(guard, "v2", 16, 4)  # 0.80 >= 0.9 - 0.1
    v = guard.verdict()
    assert v is not None and not v.rollback and v.previous_accuracy == pytest.approx(0.9)


def test_a_promotion_is_judged_against_the_stream_as_served_not_the_last_heads_versions_few_labels() -> None:
    guard = RollbackGuard(labels=40, margin=0.05)
    feed(guard, "v1.h1", 30, 8)  # heads versions follow each other on the same weights: 30/38 ...
    feed(guard, "v1.h2", 2, 0)  # ... and the last one had only 2 labels, both right
    guard.watch("v2", "v1.h2")
    feed(guard, "v2", 32, 8)  # 0.80 against 0.80 over the last 40 served before, not 1.0 over 2
    v = guard.verdict()
    assert v is not None and not v.rollback and v.previous_accuracy == pytest.approx(0.8) and v.previous_labeled == 40


def test_without_a_baseline_the_promotion_stands() -> None:
    guard = RollbackGuard(labels=10)
    guard.watch("v2", "v1")
    feed(guard, "v2", 0, 10)
    v = guard.verdict()
    assert v is not None and not v.rollback and "no labeled predictions" in v.reason


def test_guard_state_round_trips() -> None:
    guard = RollbackGuard(labels=10)
    feed(guard, "v1", 7, 3)
    guard.watch("v2", "v1")
    feed(guard, "v2", 2, 1)
    again = RollbackGuard(labels=10)
    again.restore(guard.state())
    assert again.state() == guard.state() and again.watching == ("v2", "v1")


@pytest.fixture
def registry(database: Database) -> ModelRegistry:
    r = ModelRegistry(database)
    for i in (1, 2):
        r.register(
            version=f"v000{i}",
            artifact_path=f"/m/v{i}",
            sha256=str(i) * 64,
            backbone="tiny",
            labels=list(LABELS),
            status="champion" if i == 1 else "challenger",
        )
    return r


def test_a_promotion_whose_live_accuracy_falls_is_rolled_back_in_the_registry(registry: ModelRegistry) -> None:
    auto = AutoRollback(registry, RollbackGuard(labels=30, margin=0.05), check_s=0)
    assert auto.step() is None and auto.champion == "v0001"
    feed(auto, "v0001", 27, 3)
    Promoter(registry).promote("v0002")
    assert auto.step() is None and auto.guard.watching == ("v0002", "v0001")
    feed(auto, "v0002", 15, 15)
    event = auto.step()
    assert event is not None and event.kind == "rollback"
    assert (event.payload["from"], event.payload["to"]) == ("v0002", "v0001")
    assert event.payload["reason"].startswith("automatic: live accuracy 0.500")
    assert event.payload["live_check"]["previous_accuracy"] == pytest.approx(0.9)
    assert registry.champion().version == "v0001" and registry.get("v0002").status == "rolled_back"
    assert auto.step() is None and auto.guard.watching is None  # the rollback itself is not judged


def test_a_manual_rollback_is_not_judged(registry: ModelRegistry) -> None:
    auto = AutoRollback(registry, RollbackGuard(labels=10), check_s=0)
    Promoter(registry).promote("v0002")
    auto.step()
    Promoter(registry).rollback(reason="operator")
    auto.step()
    assert auto.champion == "v0001" and auto.guard.watching is None


def test_the_monitor_rolls_back_a_promotion_on_live_labels(database: Database, registry: ModelRegistry) -> None:
    topics = TopicSettings()
    bus = MemoryBus(partitions=2)
    bus.create_topics(topics.all())
    settings = MonitorSettings(
        detectors=["page_hinkley_class_mix"],
        warmup=1000,
        champion_check_s=0,
        rollback_labels=40,
        rollback_margin=0.1,
        retrain_cooldown_s=0,
    )
    auto = AutoRollback(registry, RollbackGuard(settings.rollback_labels, settings.rollback_margin), check_s=0)
    monitor = Monitor(bus, MonitorStore(database), topics, settings, rollback=auto)

    def stream(ids: range, version: str) -> None:
        for i in ids:  # every message is truly neutral; v0001 says neutral, v0002 says negative
            bus.publish(topics.scored, scored(i, CALM if version == "v0001" else SHIFTED, version=version), key="k")
            bus.publish(topics.labels, label(f"m{i}", "neutral"), key=f"m{i}")
        monitor.run(threading.Event(), drain=True)

    stream(range(60), "v0001")
    Promoter(registry).promote("v0002")
    stream(range(60, 120), "v0002")
    events = [decode(ControlEvent, r.value) for r in bus.read_all(topics.control)]
    [rollback] = [e for e in events if e.kind == "rollback"]
    assert rollback.payload["to"] == "v0001" and registry.champion().version == "v0001"
    assert rollback.id in {e.id for e in MonitorStore(database).events(kinds=("rollback",))}
    bus.close()
