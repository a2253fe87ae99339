"""The issue's "Done when" for drift, on the shared corpora with the session champion and river's detectors.

Messages are scored and embedded once per session by the real champion (one
forward pass each, cached in a session fixture); the streams are then replayed
through the monitor on a memory bus (the switch) or through the same drift
engine directly (the false-alarm runs). Every measured delay is printed and
asserted against a bound.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from aet.adapters.memory_bus import MemoryBus
from aet.pipeline.bench.drift import POST, PRE, Signals, load_corpus, replay_signals, signals_for
from aet.pipeline.config import MonitorSettings, TopicSettings
from aet.pipeline.drift import DriftConfig
from aet.pipeline.records import LABELS, ControlEvent, Probs, ScoredMessage, decode
from aet.pipeline.roles.monitor import Monitor
from aet.storage.db import Database
from aet.storage.drift_store import MonitorStore
from tests.conftest import SHARED_DATA, shared_corpus

pytestmark = pytest.mark.slow

SEED = 4
N_PRE, N_POST, N_STATIONARY = 1200, 1300, 5000
UNLABELED_BOUND = 1000  # messages after the switch (the target without labels)
LABELED_BOUND = 1000  # labels after the switch for ADWIN on the error alone (see docs/drift.md)
T0 = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.fixture(scope="session")
def corpora(champion_artifact: dict[str, str]) -> dict[str, Signals]:
    """A seeded sample of each corpus, scored and embedded by the session champion (once per session)."""
    shared_corpus(PRE)
    shared_corpus(POST)
    from aet.pipeline.model import SentimentModel

    model = SentimentModel.load(champion_artifact["artifact_path"], version="v0001", device="cpu", new_head=False)
    pre = load_corpus(SHARED_DATA, PRE, N_PRE, seed=SEED)
    post = load_corpus(SHARED_DATA, POST, N_STATIONARY, seed=SEED)
    return {PRE: signals_for(model, pre, PRE), POST: signals_for(model, post, POST)}


class CachedEmbedder:
    """The champion's embeddings, precomputed by the session fixture (same model, same numbers)."""

    version = "v0001"

    def __init__(self, signals: Sequence[Signals]) -> None:
        self.by_id = {i: s.embeddings[k] for s in signals for k, i in enumerate(s.ids)}
        self.texts: dict[str, str] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.by_id[self.texts[t]] for t in texts])


def switch_stream(corpora: dict[str, Signals]) -> tuple[Signals, int]:
    pre, post = corpora[PRE], corpora[POST]
    b = post.take(range(N_POST))
    return (
        Signals(
            "switch",
            pre.ids + b.ids,
            ["news"] * (len(pre) + len(b)),
            np.concatenate([pre.probs, b.probs]),
            np.concatenate([pre.embeddings, b.embeddings]),
            np.concatenate([pre.labels, b.labels]),
        ),
        len(pre),
    )


def scored_record(stream: Signals, i: int) -> ScoredMessage:
    p = [float(x) for x in stream.probs[i]]
    return ScoredMessage(
        id=stream.ids[i],
        source="news",
        channel="replay",
        text=f"text of {stream.ids[i]}",
        ts=T0 + timedelta(seconds=i),
        label=LABELS[int(np.argmax(p))],
        probs=Probs(negative=p[0], neutral=p[1], positive=p[2]),
        score=max(-1.0, min(1.0, p[2] - p[0])),
        model_version="v0001",
    )


def test_news_to_tweets_switch_is_detected_by_the_monitor_within_the_bound(
    corpora: dict[str, Signals], tmp_path: Any
) -> None:
    """The whole role on a bus: news sentences, then news-headline tweets, half of them labeled 200 messages late."""
    stream, switch = switch_stream(corpora)
    topics = TopicSettings()
    bus = MemoryBus(partitions=3)
    bus.create_topics(topics.all())
    db = Database(f"sqlite:///{tmp_path / 'drift.db'}")
    embedder = CachedEmbedder([stream])
    rng = np.random.default_rng(SEED)
    labeled = [i for i in range(len(stream)) if rng.random() < 0.5]
    due = {i + 200: i for i in labeled}
    for i in range(len(stream)):
        record = scored_record(stream, i)
        embedder.texts[record.text] = record.id
        bus.publish(topics.scored, record.to_bytes(), key=record.channel)
        if i in due:
            j = due[i]
            bus.publish(
                topics.labels,
                json.dumps(
                    {"message_id": stream.ids[j], "label": LABELS[int(stream.labels[j])], "annotator": "corpus"}
                ).encode(),
                key=stream.ids[j],
            )
    monitor = Monitor(bus, MonitorStore(db), topics, MonitorSettings(), embedder=embedder)
    try:
        monitor.run(threading.Event(), drain=True)
        events = [decode(ControlEvent, r.value) for r in bus.read_all(topics.control)]
        drifts = [e for e in events if e.kind == "drift"]
        assert drifts, "no drift event after the switch"
        assert all(e.payload["position"] > switch for e in drifts), [e.payload for e in drifts]
        first = drifts[0]
        delay = first.payload["position"] - switch
        print(
            f"\nnews->tweets switch: {first.payload['detector']} fired {delay} messages after the switch "
            f"(bound {UNLABELED_BOUND}); {len(drifts)} drift event(s); labels {monitor.counts}"
        )
        assert delay <= UNLABELED_BOUND
        assert len(drifts) == 1, "one drift, one event"
        assert [e.payload["position"] for e in MonitorStore(db).events(("drift",))] == [first.payload["position"]]
        assert monitor.counts["joined"] > 0 and monitor.counts["expired"] == 0
    finally:
        bus.close()
        db.dispose()


def test_label_free_detection_fires_with_no_labels(corpora: dict[str, Signals]) -> None:
    stream, switch = switch_stream(corpora)
    config = DriftConfig.from_settings(MonitorSettings())
    run = replay_signals(config, stream, label_fraction=0.0, label_delay=0, seed=SEED, switch_at=switch)
    assert run.labels == 0
    assert run.events and all(e["position"] > switch for e in run.events)
    delay = run.events[0]["position"] - switch
    print(
        f"\nlabel-free: {run.events[0]['detector']} fired {delay} messages after the switch (bound {UNLABELED_BOUND})"
    )
    assert delay <= UNLABELED_BOUND


def test_label_based_adwin_detects_the_switch_from_labels_alone(corpora: dict[str, Signals]) -> None:
    stream, switch = switch_stream(corpora)
    config = DriftConfig.from_settings(MonitorSettings(detectors=["adwin_error"]))
    run = replay_signals(config, stream, label_fraction=1.0, label_delay=0, seed=SEED, switch_at=switch)
    assert run.events and all(e["position"] > switch for e in run.events)
    labels = run.events[0]["labels_after_switch"]
    print(f"\nlabel-based: adwin_error fired after {labels} labels of post-switch messages (bound {LABELED_BOUND})")
    assert labels <= LABELED_BOUND


def test_a_shuffled_corpus_stays_within_the_false_alarm_budget(corpora: dict[str, Signals]) -> None:
    """At least 5,000 stationary messages (three shuffles of 5,000), every default detector, half labeled."""
    tweets = corpora[POST]
    assert len(tweets) >= 5000
    config = DriftConfig.from_settings(MonitorSettings())
    total, alarms = 0, []
    for r in range(3):
        order = np.random.default_rng(SEED + 100 + r).permutation(len(tweets))
        run = replay_signals(config, tweets.take(order), label_fraction=0.5, label_delay=200, seed=SEED + r)
        total += run.messages
        alarms += run.events
    budget = total / 10_000  # the target: at most 1 false alarm per 10,000 stationary messages
    print(
        f"\nstationary: {len(alarms)} false alarm(s) over {total} messages (budget {budget:.1f}; "
        f"configured expected run length {config.expected_run_length:.0f})"
    )
    assert len(alarms) <= budget, alarms


def test_embed_and_the_one_pass_helper_agree_with_predict_proba(champion_artifact: dict[str, str]) -> None:
    """``SentimentModel.embed`` (the monitor's signal) equals the benchmark's one-pass embeddings, and its
    probabilities equal ``predict_proba``: the cached signals are the monitor's."""
    from aet.pipeline.bench.drift import score_and_embed
    from aet.pipeline.model import SentimentModel

    model = SentimentModel.load(
        champion_artifact["artifact_path"], version="v0001", device="cpu", new_head=False, batch_size=4
    )
    texts = [
        "Shares of $ACME plunge after the profit warning.",
        "ok",
        "Operating profit rose to EUR 13.1 mn from "
        "EUR 8.7 mn in the corresponding period in 2007, representing 7.7 % of net sales.",
        "$TSLA to the moon",
    ]
    emb = model.embed(texts)
    probs, one_pass = score_and_embed(model, texts, batch_size=3)
    assert emb.shape == (4, model.model.config.hidden_size) and emb.dtype == np.float32
    np.testing.assert_allclose(one_pass, emb, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(probs, model.predict_proba(texts), rtol=1e-4, atol=1e-6)
    assert model.embed([]).shape == (0, model.model.config.hidden_size)
    assert not np.allclose(emb[0], emb[1])
