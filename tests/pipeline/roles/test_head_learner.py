"""The fast-path role: labels joined to the scorer's features, heads published only on evidence,
started afresh when the champion's weights change, and no bad record stopping it."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from aet.adapters.memory_bus import MemoryBus
from aet.pipeline.config import FastPathSettings, TopicSettings
from aet.pipeline.learning.heads import HeadSet, HeadWeights
from aet.pipeline.ports import ChampionChanged
from aet.pipeline.records import LABELS, ControlEvent, LabelRecord, Message, ScoredMessage, decode
from aet.pipeline.roles.head_learner import HeadLearner
from aet.pipeline.roles.scorer import to_scored

POOLED, MEAN = 4, 3
rng = np.random.default_rng(0)


class FakeRegistry:
    """Champion weights by name; every publish recorded (the real one is tested in tests/pipeline/test_runtime.py)."""

    def __init__(self, base: str = "v0001") -> None:
        self.base = base
        self.published: list[tuple[HeadSet, dict[str, Any]]] = []
        # The champion's own layer reads the first pooled feature only: class = sign of it, never neutral.
        weight = np.zeros((3, POOLED))
        weight[0, 0], weight[2, 0] = -3.0, 3.0
        self.layer = HeadWeights(weight, np.zeros(3))

    def champion_base(self) -> str | None:
        return self.base

    def own_head(self, base: str) -> HeadWeights:
        return self.layer

    def publish(self, heads: HeadSet, info: dict[str, Any]) -> ControlEvent:
        if heads.base != self.base:  # as the real registry does (tests/storage/test_registry.py)
            raise ChampionChanged(f"heads for {heads.base}, but {self.base} serve now")
        self.published.append((heads, info))
        return ControlEvent(kind="heads", model_version=f"{heads.base}.h{len(self.published)}", payload=info)


def features_for(label: int, *, shifted: bool, offset: float = 0.0) -> np.ndarray:
    """Before the shift the first pooled feature carries the class; after it, the second mean-pooled one does.
    ``offset`` moves the first mean-pooled feature: where a regime's messages sit, whatever their class."""
    x = rng.normal(0, 1, POOLED + MEAN)
    signal = (label - 1) * 2.0
    if shifted:
        x[POOLED + 1] += signal
    else:
        x[0] += signal
    x[POOLED] += offset
    return x


class Stream:
    def __init__(self, bus: MemoryBus, topics: TopicSettings) -> None:
        self.bus, self.topics, self.n = bus, topics, 0

    def send(
        self,
        label: int,
        *,
        shifted: bool,
        base: str = "v0001",
        source: str = "news",
        labeled: bool = True,
        offset: float = 0.0,
    ) -> str:
        self.n += 1
        message = Message(id=f"m{self.n}", text=f"message {self.n}", ts="2026-01-05T14:30:00+00:00", source=source)
        features = features_for(label, shifted=shifted, offset=offset)
        scored = to_scored(message, np.array([0.2, 0.6, 0.2]), base, features=features)
        self.bus.publish(self.topics.scored, scored.to_bytes(), key=message.id)
        if labeled:
            record = LabelRecord(message_id=message.id, label=LABELS[label], ts="2026-01-05T14:31:00+00:00")
            self.bus.publish(self.topics.labels, record.to_bytes(), key=message.id)
        return message.id


@pytest.fixture
def topics() -> TopicSettings:
    return TopicSettings()


def learner(bus: MemoryBus, topics: TopicSettings, registry: FakeRegistry, **settings: Any) -> HeadLearner:
    s = FastPathSettings(**{"scaler_messages": 32, "publish_every": 16, "min_labels": 16, **settings})
    return HeadLearner(bus, NoStore(), topics, s, registry)


class NoStore:
    def write(self, **kwargs: Any) -> None:
        pass


def drain(worker: HeadLearner) -> None:
    worker.run(threading.Event(), drain=True)


def shifted_stream(topics: TopicSettings, labels: int) -> tuple[MemoryBus, FakeRegistry, Stream]:
    """64 unlabeled messages of the champion's own regime (they fix the scaler), then ``labels`` shifted ones."""
    bus, registry = MemoryBus(partitions=1), FakeRegistry()
    stream = Stream(bus, topics)
    for i in range(64):
        stream.send(i % 3, shifted=False, labeled=False)
    for i in range(labels):
        stream.send(i % 3, shifted=True)
    return bus, registry, stream


def test_a_head_serves_once_it_beats_the_champions_layer_on_labels_it_had_not_seen(
    topics: TopicSettings,
) -> None:
    bus, registry, _ = shifted_stream(topics, 240)
    worker = learner(bus, topics, registry)
    drain(worker)
    assert worker.counts["labels"] == 240 and registry.published, "no heads were published after the shift"
    heads, info = registry.published[-1]
    assert heads.base == "v0001" and set(heads.heads) == {"news"}
    assert info["evidence"]["news"]["p_value"] <= 0.05
    # The published head classifies the shifted regime, which the champion's own layer cannot.
    labels = np.array([i % 3 for i in range(300)])
    x = np.stack([features_for(int(y), shifted=True) for y in labels])
    accuracy = (heads.proba(x, ["news"] * len(x), np.full((len(x), 3), 1 / 3)).argmax(axis=1) == labels).mean()
    own = (registry.layer.logits(x[:, :POOLED]).argmax(axis=1) == labels).mean()
    assert accuracy > 0.7 > 0.5 > own  # the Bayes rate of this regime is about 0.79
    events = [decode(ControlEvent, r.value) for r in bus.read_all(topics.control)]
    assert [e.kind for e in events] == ["heads"] * len(registry.published)


def test_a_drift_event_withdraws_the_serving_head_at_once(topics: TopicSettings) -> None:
    """The head's evidence belonged to the language that ended: the champion's layer serves from the next batch,
    not ``publish_every`` labels later."""
    bus, registry, stream = shifted_stream(topics, 240)
    worker = learner(bus, topics, registry, prior_shift=False)  # else the champion's layer may serve mix-corrected
    drain(worker)
    assert set(registry.published[-1][0].heads) == {"news"}
    drift = ControlEvent(kind="drift", model_version="v0001", payload={"source": "news"})
    bus.publish(topics.control, drift.to_bytes(), key="news")
    stream.send(0, shifted=False)  # one label of the new regime: far fewer than publish_every
    drain(worker)
    assert registry.published[-1][0].heads == {}, "the ended language's head still serves"


def test_a_stream_the_champion_already_predicts_publishes_nothing(topics: TopicSettings) -> None:
    bus, registry = MemoryBus(partitions=1), FakeRegistry()
    stream = Stream(bus, topics)
    for i in range(300):
        stream.send([0, 2][i % 2], shifted=False)  # the champion's own layer is right on these
    worker = learner(bus, topics, registry)
    drain(worker)
    assert worker.counts["labels"] == 300 and registry.published == []


def test_new_champion_weights_start_the_heads_afresh_and_old_features_are_not_learned(
    topics: TopicSettings,
) -> None:
    bus, registry, stream = shifted_stream(topics, 64)
    worker = learner(bus, topics, registry)
    drain(worker)
    assert worker.heads
    registry.base = "v0002"
    promotion = ControlEvent(kind="promotion", model_version="v0002")
    bus.publish(topics.control, promotion.to_bytes(), key="promotion")
    for i in range(20):
        stream.send(i % 3, shifted=True, base="v0001")  # in flight: scored by the old weights
    drain(worker)
    assert worker.base == "v0002" and worker.heads == {} and worker.counts["other_weights"] == 20


def test_heads_are_not_published_over_weights_promoted_before_their_event_arrived(topics: TopicSettings) -> None:
    """A shadow or a round promoted new weights; until the promotion event reaches the fast path, its heads (of
    the old weights) must not replace them: the publication is refused and the heads start afresh."""
    bus, registry, stream = shifted_stream(topics, 240)
    worker = learner(bus, topics, registry)
    drain(worker)
    published = len(registry.published)
    assert published and worker.base == "v0001"
    registry.base = "v0002"  # promoted elsewhere; no control event yet
    for i in range(64):
        stream.send(i % 3, shifted=True)
    drain(worker)
    assert len(registry.published) == published, "heads of the old weights replaced the new champion"
    assert worker.base == "v0002" and worker.heads == {}


def test_unjoined_bad_and_foreign_records_are_counted_and_skipped(topics: TopicSettings) -> None:
    bus, registry = MemoryBus(partitions=1), FakeRegistry()
    stream = Stream(bus, topics)
    stream.send(0, shifted=False)
    good = decode(ScoredMessage, bus.read_all(topics.scored)[0].value)
    bus.publish(topics.labels, LabelRecord(message_id="never-scored", label="negative").to_bytes(), key="x")
    bus.publish(topics.scored, b"\xff\x00 not json", key="y")
    for bad in ("!!!not-base64!!!", "AAAA", "APw="):  # garbage, a wrong length, an infinity
        bus.publish(topics.scored, good.model_copy(update={"id": f"bad-{bad}", "features": bad}).to_bytes(), key="z")
    worker = learner(bus, topics, registry)
    drain(worker)
    assert list(worker.held) == ["never-scored"] and worker.counts["labels"] == 1
    assert worker.counts["invalid"] == 4
    assert bus.group_lag(worker.group, [topics.scored, topics.labels]) == 0


def test_a_changed_class_mix_is_corrected_before_any_label(topics: TopicSettings) -> None:
    """The home regime is a uniform mix; then the source sends mostly negative messages, unlabeled: EM sees the
    mix move and the champion's own layer, with its bias corrected, serves the source."""
    bus, registry = MemoryBus(partitions=1), FakeRegistry()
    stream = Stream(bus, topics)
    for i in range(256):
        stream.send(i % 3, shifted=False, labeled=False)
    for i in range(256):
        stream.send(0 if i % 8 else 1, shifted=False, labeled=False, source="chat")
    worker = learner(bus, topics, registry, prior_window=128)
    drain(worker)
    assert worker.counts["labels"] == 0 and registry.published, "nothing was published for the changed mix"
    heads, info = registry.published[-1]
    assert set(heads.heads) == {"chat"}  # news keeps its home mix: nothing to correct
    assert "mix_offset" not in info["evidence"].get("news", {})
    offset = np.asarray(info["evidence"]["chat"]["mix_offset"])
    assert offset[0] > 0 > offset[2]  # more negative messages, fewer positive ones than at home
    assert np.allclose(heads.heads["chat"].weight, worker.prior.weight)  # the champion's layer, only its bias moved

    off = MemoryBus(partitions=1)
    replay = Stream(off, topics)
    for i in range(256):
        replay.send(i % 3, shifted=False, labeled=False)
    for i in range(256):
        replay.send(0 if i % 8 else 1, shifted=False, labeled=False, source="chat")
    plain = FakeRegistry()
    drain(learner(off, topics, plain, prior_window=128, prior_shift=False))
    assert plain.published == []  # without the correction nothing serves before labels


def news_then_drift_then_another_language(topics: TopicSettings, regimes: int) -> tuple[HeadLearner, FakeRegistry]:
    """160 unlabeled news messages, a drift event of news, 240 labeled messages of a language that sits elsewhere."""
    bus, registry = MemoryBus(partitions=1), FakeRegistry()
    stream = Stream(bus, topics)
    worker = learner(bus, topics, registry, regimes=regimes)
    for i in range(160):
        stream.send(i % 3, shifted=False, labeled=False)
    drain(worker)
    drift = ControlEvent(kind="drift", model_version="v0001", payload={"source": "news"})
    bus.publish(topics.control, drift.to_bytes(), key="news")
    drain(worker)
    for i in range(240):
        stream.send(i % 3, shifted=True, offset=4.0)
    drain(worker)
    return worker, registry


def test_an_earlier_regime_is_served_by_its_own_head_when_its_language_returns(topics: TopicSettings) -> None:
    """News, a drift to another language (elsewhere in feature space) with its own head, then news again: the
    published gate sends news-like messages to what served the news (the champion's own layer) at once."""
    worker, registry = news_then_drift_then_another_language(topics, regimes=3)
    assert worker.counts["regimes"] == 1
    heads, info = registry.published[-1]
    gate = heads.gates["news"]
    assert gate.heads == (None,) and info["evidence"]["news"]["regimes"] == 2 and "news" in heads.heads
    labels = np.array([i % 3 for i in range(300)])
    news = np.stack([features_for(int(y), shifted=False) for y in labels])
    chat = np.stack([features_for(int(y), shifted=True, offset=4.0) for y in labels])
    earlier = lambda x: float(gate.posterior(heads.scaler(x)[:, POOLED:])[:, 0].mean())
    assert earlier(news) > 0.85 and earlier(chat) < 0.15  # news rows: mostly answered as the model's own layer does


def test_regimes_off_publishes_no_gate(topics: TopicSettings) -> None:
    worker, registry = news_then_drift_then_another_language(topics, regimes=0)
    assert worker.counts["regimes"] == 0
    assert registry.published and all(not heads.gates for heads, _ in registry.published)
