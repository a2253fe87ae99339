"""The drift monitor role on a real memory bus and SQLite: delayed-label joins, events, retrain gating, state."""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from aet.adapters.memory_bus import MemoryBus
from aet.pipeline.config import MonitorSettings, TopicSettings
from aet.pipeline.ports import BusRecord
from aet.pipeline.records import ControlEvent, DeadLetter, Message, decode
from aet.pipeline.roles.monitor import Monitor
from aet.pipeline.roles.scorer import to_scored
from aet.storage.db import Database
from aet.storage.drift_store import MonitorStore
from aet.storage.store import ResultStore
from tests.pipeline.pipeline_fakes import dead_letter_rows

T0 = datetime(2026, 3, 2, 13, 0, tzinfo=UTC)
CALM = [0.15, 0.7, 0.15]  # predicted neutral
SHIFTED = [0.7, 0.15, 0.15]  # predicted negative


class FakeEmbedder:
    """Deterministic 16-d embeddings: texts containing "tweet" sit elsewhere."""

    version = "fake-v1"

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        out = []
        for t in texts:
            rng = np.random.default_rng(zlib.crc32(t.encode()))
            out.append(rng.normal(1.5 if "tweet" in t else 0.0, 1.0, 16))
        return np.asarray(out, dtype=np.float32)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def settings(**kw: Any) -> MonitorSettings:
    base = {
        "detectors": ["page_hinkley_class_mix"],
        "warmup": 100,
        "cooldown_messages": 1000,
        "min_labels": 20,
        "retrain_cooldown_s": 0,
        "hold_messages": 50,
        "max_batch": 64,
    }
    base.update(kw)
    return MonitorSettings(**base)


def scored(
    i: int,
    probs: Sequence[float] = CALM,
    *,
    source: str = "news",
    version: str = "fake-v1",
    text: str | None = None,
    base_version: str | None = None,
    base_probs: Sequence[float] | None = None,
) -> bytes:
    """Message ``m{i}`` as scored; with ``base_*``, served by a fast-path head over those weights' ``base_probs``."""
    m = Message(
        id=f"m{i}",
        source=source,
        channel="wire",
        text=text or f"message {i}",
        ts=T0 + timedelta(minutes=i),
        entities=["$ACME"],
    )
    base = np.asarray(base_probs) if base_probs is not None else None
    return to_scored(m, np.asarray(probs), version, base_version=base_version, base_probs=base).to_bytes()


def label(mid: str, value: Any = "neutral", annotator: str = "ana") -> bytes:
    return json.dumps(
        {"message_id": mid, "label": value, "ts": "2026-03-03T00:00:00+00:00", "annotator": annotator}
    ).encode()


def publish_scored(bus: MemoryBus, topics: TopicSettings, ids: range, probs: Sequence[float] = CALM, **kw: Any) -> None:
    for i in ids:
        bus.publish(topics.scored, scored(i, probs, **kw), key="$ACME")


def drain(monitor: Monitor) -> int:
    return monitor.run(threading.Event(), drain=True)


@pytest.fixture
def mstore(db: Database) -> MonitorStore:
    return MonitorStore(db)


def make(bus: MemoryBus, mstore: MonitorStore, topics: TopicSettings, **kw: Any) -> Monitor:
    clock = kw.pop("clock", None)
    embedder = kw.pop("embedder", None)
    extra = {"clock": clock} if clock is not None else {}
    return Monitor(bus, mstore, topics, settings(**kw), embedder=embedder, **extra)


def joins(mstore: MonitorStore) -> dict[str, Any]:
    return {r.message_id: r for r in mstore.label_joins()}


def control(bus: MemoryBus, topics: TopicSettings) -> list[ControlEvent]:
    return [decode(ControlEvent, r.value) for r in bus.read_all(topics.control)]


# ------------------------------------------------------------------ delayed labels


def test_a_label_before_its_message_is_held_then_joined(
    bus: MemoryBus, topics: TopicSettings, mstore: MonitorStore
) -> None:
    bus.publish(topics.labels, label("m1", "negative"), key="m1")
    monitor = make(bus, mstore, topics)
    assert drain(monitor) == 1
    row = joins(mstore)["m1"]
    assert (row.status, row.label, row.predicted, row.held_at) == ("held", "negative", None, 0)
    assert monitor.held.keys() == {"m1"} and bus.read_all(topics.dlq) == []

    publish_scored(bus, topics, range(1, 3))
    assert drain(monitor) == 2
    row = joins(mstore)["m1"]
    assert (row.status, row.label, row.predicted, row.source, row.model_version, row.position) == (
        "joined",
        "negative",
        "neutral",
        "news",
        "fake-v1",
        1,
    )
    assert monitor.held == {} and monitor.counts["joined"] == 1
    [q] = mstore.quality()
    assert (q.source, q.model_version, q.labeled, q.correct, q.accuracy) == ("news", "fake-v1", 1, 0, 0.0)
    assert q.confusion[0][1] == 1  # true negative, predicted neutral


def test_a_label_in_the_same_batch_before_its_message_is_joined(
    bus: MemoryBus, topics: TopicSettings, mstore: MonitorStore
) -> None:
    bus.publish(topics.labels, label("m1", "neutral"), key="m1")
    publish_scored(bus, topics, range(1, 2))
    monitor = make(bus, mstore, topics)
    drain(monitor)
    assert monitor.batches == 1
    assert joins(mstore)["m1"].status == "joined"
    assert monitor.counts["held"] == 1 and monitor.counts["joined"] == 1


def test_duplicate_labels_count_once_even_across_restarts(
    bus: MemoryBus, topics: TopicSettings, mstore: MonitorStore
) -> None:
    publish_scored(bus, topics, range(1, 3))
    for value, who in (("neutral", "first"), ("positive", "second")):
        bus.publish(topics.labels, label("m1", value, who), key="m1")
    monitor = make(bus, mstore, topics)
    drain(monitor)
    assert monitor.counts["joined"] == 1 and monitor.counts["duplicate"] == 1
    assert joins(mstore)["m1"].annotator == "first"  # the first label counts

    bus.publish(topics.labels, label("m1", "negative", "third"), key="m1")  # after a restart: memory is gone
    again = make(bus, mstore, topics)
    again.recent.clear()
    drain(again)
    assert again.counts["duplicate"] == 2  # the counters are part of the saved state
    [q] = mstore.quality()
    assert (q.labeled, q.correct) == (1, 1)
    assert joins(mstore)["m1"].annotator == "first"


def test_labels_for_unknown_ids_are_dead_lettered_after_the_hold(
    bus: MemoryBus, topics: TopicSettings, mstore: MonitorStore, store: ResultStore, db: Database
) -> None:
    bus.publish(topics.labels, label("ghost"), key="ghost")
    # m900 was scored and stored, but its aet.scored record is not on this bus (e.g. before the monitor existed).
    store.write(scored=[decode_scored(scored(900))])
    bus.publish(topics.labels, label("m900", "neutral"), key="m900")
    monitor = make(bus, mstore, topics, hold_messages=5)
    drain(monitor)
    assert set(monitor.held) == {"ghost"}
    assert joins(mstore)["m900"].status == "joined"  # joined to the stored prediction

    publish_scored(bus, topics, range(1, 5))
    drain(monitor)
    assert set(monitor.held) == {"ghost"}  # 4 messages: still held
    publish_scored(bus, topics, range(5, 6))
    drain(monitor)
    assert monitor.held == {} and monitor.counts["expired"] == 1
    [letter] = [decode(DeadLetter, r.value) for r in bus.read_all(topics.dlq)]
    assert letter.stage == "monitor" and letter.key == "ghost"
    assert letter.reason == (
        "label for unknown message id 'ghost': no scored message with this id arrived within 5 messages"
    )
    assert json.loads(letter.raw)["message_id"] == "ghost"
    assert "ghost" not in joins(mstore)
    assert [r.reason for r in dead_letter_rows(db)] == [letter.reason]


def decode_scored(raw: bytes) -> Any:
    from aet.pipeline.records import ScoredMessage

    return decode(ScoredMessage, raw)


def test_invalid_labels_are_dead_lettered_with_the_reason(
    bus: MemoryBus, topics: TopicSettings, mstore: MonitorStore, db: Database
) -> None:
    bad = [label("m1", "bullish"), b"{not json", json.dumps({"label": "neutral"}).encode()]
    for raw in bad:
        bus.publish(topics.labels, raw, key="k")
    publish_scored(bus, topics, range(1, 2))
    bus.publish(topics.labels, label("m1", "neutral"), key="k")
    monitor = make(bus, mstore, topics)
    drain(monitor)
    letters = [decode(DeadLetter, r.value) for r in bus.read_all(topics.dlq)]
    assert [d.raw.encode() for d in letters] == bad
    assert letters[0].reason.startswith("label: Input should be 'negative', 'neutral' or 'positive'")
    assert letters[1].reason.startswith("not JSON")
    assert letters[2].reason == "message_id: missing field"
    assert {d.stage for d in letters} == {"monitor"}
    assert monitor.counts["invalid"] == 3 and monitor.counts["joined"] == 1  # the good label still joins
    assert len(dead_letter_rows(db)) == 3


# ------------------------------------------------------------------ drift events and retrain requests


def test_a_drift_is_one_event_published_and_stored(bus: MemoryBus, topics: TopicSettings, mstore: MonitorStore) -> None:
    publish_scored(bus, topics, range(400))
    publish_scored(bus, topics, range(400, 1200), SHIFTED)
    monitor = make(bus, mstore, topics)
    drain(monitor)
    [event] = control(bus, topics)
    assert event.kind == "drift" and event.model_version == "fake-v1"
    p = event.payload
    assert (p["source"], p["detector"], p["signal"]) == ("news", "page_hinkley_class_mix", "class")
    assert 400 < p["position"] <= 500
    assert p["statistic"]["share_recent"] > p["statistic"]["share_before"] or p["statistic"]["class"] != 0
    assert p["message_id"] == f"m{p['position'] - 1}"
    assert p["message_ts"] == (T0 + timedelta(minutes=p["position"] - 1)).isoformat()
    [stored] = mstore.events(("drift",))
    assert (stored.id, stored.kind, stored.payload) == (event.id, "drift", p)
    assert sample("aet_drift_events_total", source="news", detector="page_hinkley_class_mix") >= 1


def test_the_error_detector_judges_the_weights_under_a_fast_path_head(
    bus: MemoryBus, topics: TopicSettings, mstore: MonitorStore
) -> None:
    """A head that fixes the weights' new errors must not hide their drift from ``adwin_error``."""
    for i in range(1200):
        weights = CALM if i < 400 else SHIFTED  # the weights start to predict negative for neutral messages
        served = scored(i, CALM, version="fake-v1.h1", base_version="fake-v1", base_probs=weights)
        bus.publish(topics.scored, served, key="$ACME")
    for i in range(1200):
        bus.publish(topics.labels, label(f"m{i}"), key=f"m{i}")
    monitor = make(bus, mstore, topics, detectors=["adwin_error"], hold_messages=2000)
    drain(monitor)
    [event] = [e for e in control(bus, topics) if e.kind == "drift"]
    assert (event.payload["detector"], event.model_version) == ("adwin_error", "fake-v1")
    assert 400 < event.payload["position"] <= 600
    assert monitor.quality.of("news", "fake-v1.h1").accuracy() == 1.0  # what served was right on every label


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_retrain_request_waits_for_labels_and_for_the_cooldown(
    bus: MemoryBus, topics: TopicSettings, mstore: MonitorStore, store: ResultStore
) -> None:
    clock = Clock(T0 + timedelta(days=1))
    # Something retrained 10 minutes ago: the cooldown (1 h) has not passed.
    store.write(events=[ControlEvent(kind="training_result", ts=clock.now - timedelta(minutes=10))])
    monitor = make(bus, mstore, topics, clock=clock, min_labels=20, retrain_cooldown_s=3600, followup_rounds=0)
    publish_scored(bus, topics, range(400))
    publish_scored(bus, topics, range(400, 700), SHIFTED)
    drain(monitor)
    [drift] = control(bus, topics)
    position = drift.payload["position"]
    assert monitor.pending["news"]["labels"] == 0

    # Labels of messages before the drift point do not count; 19 after it are not enough.
    for i in list(range(position - 30, position)) + list(range(position, position + 19)):
        bus.publish(topics.labels, label(f"m{i}", "negative"), key=f"m{i}")
    drain(monitor)
    assert monitor.pending["news"]["labels"] == 19
    assert [e.kind for e in control(bus, topics)] == ["drift"]

    bus.publish(topics.labels, label(f"m{position + 19}", "negative"), key="x")
    drain(monitor)
    assert monitor.pending["news"]["labels"] == 20
    assert [e.kind for e in control(bus, topics)] == ["drift"], "the cooldown has not passed"

    clock.now += timedelta(hours=1)
    publish_scored(bus, topics, range(700, 701), SHIFTED)  # any batch re-checks the pending request
    drain(monitor)
    kinds = [e.kind for e in control(bus, topics)]
    assert kinds == ["drift", "retrain_request"]
    request = control(bus, topics)[1]
    p = request.payload
    assert p["source"] == "news" and p["drift_event_id"] == drift.id and p["labeled"] == 20
    assert p["window"]["start"] == drift.payload["stream_ts"]
    assert datetime.fromisoformat(p["window"]["end"]) == T0 + timedelta(minutes=700, microseconds=1)
    assert (p["from_position"], p["to_position"]) == (position, 701)
    assert request.ts == clock.now and monitor.pending == {}
    assert [e.kind for e in mstore.events()] == ["retrain_request", "drift"]  # newest first
    # The trainer reads this payload as it is.
    from aet.pipeline.roles.trainer import parse_request

    parsed = parse_request(p)
    assert parsed.source == "news" and parsed.drift_event_id == drift.id
    assert parsed.window_start == datetime.fromisoformat(p["window"]["start"])


def test_an_episode_gets_follow_up_rounds_on_a_growing_window_until_two_are_rejected(
    bus: MemoryBus, topics: TopicSettings, mstore: MonitorStore, store: ResultStore
) -> None:
    monitor = make(bus, mstore, topics, min_labels=20, followup_rounds=5)
    publish_scored(bus, topics, range(400))
    publish_scored(bus, topics, range(400, 700), SHIFTED)
    drain(monitor)
    [drift] = control(bus, topics)
    position = drift.payload["position"]

    def label_next(n: int, start: int) -> int:
        for i in range(start, start + n):
            bus.publish(topics.labels, label(f"m{i}", "negative"), key=f"m{i}")
        drain(monitor)
        return start + n

    def requests() -> list[ControlEvent]:
        return [e for e in control(bus, topics) if e.kind == "retrain_request"]

    next_id = label_next(20, position)
    assert [r.payload["round"] for r in requests()] == [1]
    next_id = label_next(19, next_id)
    assert len(requests()) == 1, "a follow-up round waits for min_labels more labels"
    next_id = label_next(1, next_id)
    first, second = requests()
    assert second.payload["round"] == 2 and second.payload["drift_event_id"] == drift.id
    assert second.payload["window"]["start"] == first.payload["window"]["start"]  # the window grows
    assert second.payload["labeled"] == 20 and second.id != first.id  # the trainer handles each id once

    # Two rejected challengers of this episode end it; a rejection of another episode does not count.
    store.write(events=[ControlEvent(kind="rejection", payload={"drift_event_id": drift.id})])
    store.write(events=[ControlEvent(kind="rejection", payload={"drift_event_id": "another"})])
    next_id = label_next(20, next_id)
    assert [r.payload["round"] for r in requests()] == [1, 2, 3]
    store.write(events=[ControlEvent(kind="rejection", payload={"drift_event_id": drift.id})])
    label_next(40, next_id)
    assert len(requests()) == 3 and "news" not in monitor.pending


# ------------------------------------------------------------------ state, restarts, redelivery


def records_of(bus: MemoryBus, topic: str) -> list[BusRecord]:
    return list(bus.read_all(topic))


def test_state_survives_a_restart(bus: MemoryBus, topics: TopicSettings, db: Database, tmp_path) -> None:
    """Stopping after the first half and restarting gives the same detectors as one uninterrupted run."""
    publish_scored(bus, topics, range(300), text=None)
    kw = {
        "detectors": ["adwin_confidence", "page_hinkley_class_mix", "hotelling_embedding"],
        "embed_every": 1,
        "reference_size": 60,
        "embedding_window": 20,
    }
    first = make(bus, MonitorStore(db), topics, embedder=FakeEmbedder(), **kw)
    drain(first)
    publish_scored(bus, topics, range(300, 600), SHIFTED)
    second = make(bus, MonitorStore(db), topics, embedder=FakeEmbedder(), **kw)
    assert second.engine.source("news").position == 300
    drain(second)

    other = Database(f"sqlite:///{tmp_path / 'whole.db'}")
    try:
        whole = make(bus, MonitorStore(other), topics.model_copy(), embedder=FakeEmbedder(), **{**kw, "group": "whole"})
        drain(whole)
        a, b = second.engine.state(), whole.engine.state()
        assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
        assert [e.payload["position"] for e in second.raised] == [e.payload["position"] for e in whole.raised]
    finally:
        other.dispose()


def test_a_redelivered_batch_is_not_counted_twice(bus: MemoryBus, topics: TopicSettings, db: Database) -> None:
    publish_scored(bus, topics, range(10))
    bus.publish(topics.labels, label("m3"), key="m3")
    batch = records_of(bus, topics.scored) + records_of(bus, topics.labels)
    first = make(bus, MonitorStore(db), topics)
    out = first.handle(batch)
    first.store.write(events=out.events, dead_letters=out.dead_letters)  # stored, then the process dies uncommitted
    restarted = make(bus, MonitorStore(db), topics)
    assert restarted.engine.source("news").position == 10
    again = restarted.handle(batch)  # the bus delivers the same batch again
    assert again.events == [] and again.dead_letters == []
    assert restarted.engine.source("news").position == 10
    assert restarted.counts["skipped_redelivered"] == 11 and restarted.counts["joined"] == 1


# ------------------------------------------------------------------ live quality and the embedding signal


def test_live_quality_per_source_and_model_version_is_stored_and_exported(
    bus: MemoryBus, topics: TopicSettings, mstore: MonitorStore
) -> None:
    publish_scored(bus, topics, range(4))
    publish_scored(bus, topics, range(4, 6), source="chat", version="fake-v2")
    truth = {0: "neutral", 1: "neutral", 2: "neutral", 3: "positive", 4: "neutral", 5: "negative"}
    for i, value in truth.items():
        bus.publish(topics.labels, label(f"m{i}", value), key=f"m{i}")
    drain(make(bus, mstore, topics, quality_window=10))
    rows = {(q.source, q.model_version): q for q in mstore.quality()}
    assert set(rows) == {("news", "fake-v1"), ("chat", "fake-v2")}
    news, chat = rows["news", "fake-v1"], rows["chat", "fake-v2"]
    assert (news.labeled, news.correct, news.accuracy) == (4, 3, 0.75)
    assert (chat.labeled, chat.correct, chat.accuracy) == (2, 1, 0.5)
    # macro-F1 over the classes present: news has neutral (P 3/4, R 1) and positive (0): (6/7 + 0) / 2
    assert news.macro_f1 == pytest.approx((2 * 3 / (2 * 3 + 1 + 0) + 0.0) / 2)
    assert sample("aet_live_accuracy", source="news", model_version="fake-v1") == 0.75
    assert sample("aet_live_macro_f1", source="chat", model_version="fake-v2") == pytest.approx(chat.macro_f1)
    assert sample("aet_live_labeled", source="news", model_version="fake-v1") == 4


def test_label_free_embedding_detection_without_any_label(
    bus: MemoryBus, topics: TopicSettings, mstore: MonitorStore
) -> None:
    embedder = FakeEmbedder()
    publish_scored(bus, topics, range(300))
    for i in range(300, 600):
        bus.publish(topics.scored, scored(i, text=f"a tweet {i}"), key="$ACME")
    monitor = make(
        bus,
        mstore,
        topics,
        embedder=embedder,
        detectors=["hotelling_embedding"],
        embed_every=2,
        reference_size=60,
        embedding_window=20,
    )
    drain(monitor)
    [event] = control(bus, topics)
    assert event.payload["detector"] == "hotelling_embedding" and event.payload["signal"] == "embedding"
    assert 300 < event.payload["position"] < 400
    assert embedder.calls == monitor.batches  # one embedding call per batch
    assert monitor.counts["joined"] == 0


def test_messages_scored_by_another_model_are_not_embedded(
    bus: MemoryBus, topics: TopicSettings, mstore: MonitorStore
) -> None:
    embedder = FakeEmbedder()
    publish_scored(bus, topics, range(20), version="other")
    monitor = make(bus, mstore, topics, embedder=embedder, detectors=["hotelling_embedding"])
    drain(monitor)
    assert embedder.calls == 0 and monitor.engine.source("news").position == 20


def test_a_rescored_duplicate_on_the_bus_is_fed_once(
    bus: MemoryBus, topics: TopicSettings, mstore: MonitorStore
) -> None:
    publish_scored(bus, topics, range(5))
    publish_scored(bus, topics, range(3, 5))  # the scorer redelivered two after a crash
    monitor = make(bus, mstore, topics)
    drain(monitor)
    assert monitor.engine.source("news").position == 5 and monitor.counts["duplicate_scored"] == 2


class FakeModels:
    """A registry with one champion whose training data are plain (non-tweet) texts."""

    def __init__(self) -> None:
        self.loaded = 0

    def champion_version(self) -> str:
        return "fake-v1"

    def load(self, version: str) -> FakeEmbedder:
        self.loaded += 1
        return FakeEmbedder()

    def training_texts(self, version: str) -> dict[str, list[str]]:
        return {"news": [f"training sentence {i}" for i in range(200)], "chat": []}


def test_training_data_reference_flags_a_stream_unlike_the_training_data(
    bus: MemoryBus, topics: TopicSettings, mstore: MonitorStore
) -> None:
    """With ``embedding_reference: training`` the reference is the champion's training texts, not the stream."""
    for i in range(400):
        bus.publish(topics.scored, scored(i, text=f"a tweet {i}"), key="$ACME")
    kw = {"detectors": ["hotelling_embedding"], "embed_every": 1, "reference_size": 100, "embedding_window": 20}
    models = FakeModels()
    monitor = Monitor(bus, mstore, topics, settings(**kw, embedding_reference="training"), models=models)
    drain(monitor)
    assert models.loaded == 1 and monitor.embedder is not None  # the champion was loaded to embed with
    [event] = control(bus, topics)  # fixed reference: latched after the event, no burst
    assert event.payload["statistic"]["reference"] == "fixed" and event.payload["position"] <= 40

    other = MonitorStore(Database(f"sqlite:///{mstore.db.url.split('///')[1]}.stream"))
    try:
        stream_mode = Monitor(bus, other, topics, settings(**kw, group="stream"), models=FakeModels())
        drain(stream_mode)
        assert [e for e in stream_mode.raised if e.kind == "drift"] == []  # the same stream never changes
    finally:
        other.db.dispose()


def test_a_failing_embedder_does_not_stop_the_monitor(
    bus: MemoryBus, topics: TopicSettings, mstore: MonitorStore
) -> None:
    class Broken(FakeEmbedder):
        def embed(self, texts: Sequence[str]) -> np.ndarray:
            raise RuntimeError("CUDA out of memory (injected)")

    publish_scored(bus, topics, range(30))
    bus.publish(topics.labels, label("m3"), key="m3")
    monitor = make(bus, mstore, topics, embedder=Broken(), detectors=["hotelling_embedding", "adwin_error"])
    assert drain(monitor) == 31
    assert monitor.engine.source("news").position == 30 and monitor.counts["joined"] == 1


# ------------------------------------------------------------------ never-seen sources


def publish_labeled(
    bus: MemoryBus, topics: TopicSettings, ids: range, *, source: str, wrong_every: int, **kw: Any
) -> None:
    """Messages predicted neutral; one label in ``wrong_every`` says negative (so the prediction is wrong)."""
    publish_scored(bus, topics, ids, source=source, **kw)
    for i in ids:
        bus.publish(topics.labels, label(f"m{i}", "negative" if i % wrong_every == 0 else "neutral"), key=f"m{i}")


def drift_events(monitor: Monitor, source: str) -> list[ControlEvent]:
    return [e for e in monitor.raised if e.kind == "drift" and e.payload["source"] == source]


@pytest.mark.parametrize("check", [True, False])
def test_a_new_source_served_worse_than_the_others_raises_drift(
    bus: MemoryBus, topics: TopicSettings, mstore: MonitorStore, check: bool
) -> None:
    """A source's detectors learn its first messages as its normal, so a source that is poor from its first
    message never looks like a change to them; compared with the champion's accuracy elsewhere, it does."""
    publish_labeled(bus, topics, range(300), source="news", wrong_every=10)  # 90 % right
    publish_labeled(bus, topics, range(300, 600), source="chat", wrong_every=2)  # 50 % right from the start
    monitor = make(bus, mstore, topics, detectors=["adwin_error"], hold_messages=1000, new_source_check=check)
    drain(monitor)
    events = drift_events(monitor, "chat")
    if not check:
        assert events == []  # what the monitor did before the check existed
        return
    [event] = events
    stat = event.payload["statistic"]
    assert event.payload["detector"] == "new_source_accuracy" and stat["labeled"] == 30
    assert stat["accuracy"] == 0.5 and stat["reference_accuracy"] == 0.9 and stat["p"] < 0.01 / 4
    assert drift_events(monitor, "news") == []
    requests = [e for e in monitor.raised if e.kind == "retrain_request"]
    assert requests and {e.payload["source"] for e in requests} == {"chat"}


def test_a_new_source_served_as_well_as_the_others_raises_nothing(
    bus: MemoryBus, topics: TopicSettings, mstore: MonitorStore
) -> None:
    publish_labeled(bus, topics, range(300), source="news", wrong_every=10)
    publish_labeled(bus, topics, range(300, 600), source="chat", wrong_every=9)
    monitor = make(bus, mstore, topics, detectors=["adwin_error"], hold_messages=1000)
    drain(monitor)
    assert [e for e in monitor.raised if e.kind == "drift"] == []
    check = monitor.engine.source("chat").novel
    assert check is not None and check.done and check.last["labeled"] == 240  # every look taken, then retired
    assert monitor.engine.source("news").novel is None  # the first source is the champion's own


def test_the_new_source_check_survives_a_restart(bus: MemoryBus, topics: TopicSettings, db: Database) -> None:
    publish_labeled(bus, topics, range(300), source="news", wrong_every=10)
    publish_labeled(bus, topics, range(300, 320), source="chat", wrong_every=2)
    first = make(bus, MonitorStore(db), topics, detectors=["adwin_error"], hold_messages=1000)
    drain(first)
    assert first.engine.source("chat").novel is not None and drift_events(first, "chat") == []
    publish_labeled(bus, topics, range(320, 340), source="chat", wrong_every=2)
    second = make(bus, MonitorStore(db), topics, detectors=["adwin_error"], hold_messages=1000)
    drain(second)
    [event] = drift_events(second, "chat")  # 20 labels before the restart + 10 after: the first look
    assert event.payload["statistic"]["labeled"] == 30 and event.payload["statistic"]["reference_accuracy"] == 0.9


def test_a_never_seen_source_is_compared_with_the_training_data_without_labels(
    bus: MemoryBus, topics: TopicSettings, mstore: MonitorStore
) -> None:
    """The champion was trained on news only: chat's embeddings are compared with its training texts, whatever
    ``embedding_reference`` says, while news keeps its stream reference."""
    publish_scored(bus, topics, range(300), source="news")
    for i in range(300, 700):
        bus.publish(topics.scored, scored(i, source="chat", text=f"a tweet {i}"), key="$ACME")
    kw = {"detectors": ["hotelling_embedding"], "embed_every": 1, "reference_size": 100, "embedding_window": 20}
    monitor = Monitor(bus, mstore, topics, settings(**kw), models=FakeModels())
    drain(monitor)
    [event] = [e for e in monitor.raised if e.kind == "drift"]
    assert event.payload["source"] == "chat" and event.payload["statistic"]["reference"] == "fixed"
    assert monitor.engine.source("chat").novel is not None and monitor.engine.source("news").novel is None

    other = MonitorStore(Database(f"sqlite:///{mstore.db.url.split('///')[1]}.off"))
    try:
        off = Monitor(bus, other, topics, settings(**kw, group="off", new_source_check=False), models=FakeModels())
        drain(off)
        assert [e for e in off.raised if e.kind == "drift"] == []  # chat's first messages became its own normal
    finally:
        other.db.dispose()
