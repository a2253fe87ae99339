"""The scorer role: dynamic batches, outputs on aet.scored and in the store with the model version,
bad input dead-lettered with a reason while the rest of the batch is scored."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from aet.adapters.memory_bus import MemoryBus
from aet.pipeline.config import ScorerSettings, TopicSettings
from aet.pipeline.records import LABELS, DeadLetter, Message, ScoredMessage, decode
from aet.pipeline.roles.scorer import Scorer, to_scored
from aet.storage.db import Database
from aet.storage.store import ResultStore
from tests.pipeline.pipeline_fakes import (
    FakeModel,
    RecordingStore,
    Running,
    dead_letter_rows,
    encode,
    message_payload,
    scored_rows,
)


def make_scorer(bus: Any, store: Any, model: Any, topics: TopicSettings, **settings: Any) -> Scorer:
    return Scorer(bus, store, model, topics, ScorerSettings(**{"max_batch": 64, "max_wait_ms": 20, **settings}))


def drain(worker: Scorer) -> int:
    return worker.run(threading.Event(), drain=True)


def dlq(bus: MemoryBus, topics: TopicSettings) -> list[DeadLetter]:
    return [decode(DeadLetter, r.value) for r in bus.read_all(topics.dlq)]


def scored(bus: MemoryBus, topics: TopicSettings) -> list[ScoredMessage]:
    return [decode(ScoredMessage, r.value) for r in bus.read_all(topics.scored)]


# -- to_scored -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("probs", "label", "score"),
    [
        ([0.7, 0.2, 0.1], "negative", -0.6),
        ([0.1, 0.8, 0.1], "neutral", 0.0),
        ([0.05, 0.15, 0.8], "positive", 0.75),
        ([0.0, 0.0, 1.0], "positive", 1.0),
        ([1.0, 0.0, 0.0], "negative", -1.0),
    ],
)
def test_to_scored_attaches_label_probs_score_and_version(probs: list[float], label: str, score: float) -> None:
    message = decode(Message, message_payload(1))
    s = to_scored(message, np.array(probs, dtype=np.float32), "v0042")
    assert s.label == label and s.score == pytest.approx(score, abs=1e-6)
    assert (s.probs.negative, s.probs.neutral, s.probs.positive) == pytest.approx(probs)
    assert s.model_version == "v0042"
    assert (s.id, s.text, s.ts, s.entities) == (message.id, message.text, message.ts, message.entities)
    assert -1.0 <= s.score <= 1.0
    assert decode(ScoredMessage, s.to_bytes()) == s


# -- batching ------------------------------------------------------------------


def test_batches_are_capped_at_max_batch(topics: TopicSettings, store: ResultStore) -> None:
    bus = MemoryBus(partitions=1)
    for i in range(10):
        bus.publish(topics.messages, encode(message_payload(i)), key="k")
    model = FakeModel()
    assert drain(make_scorer(bus, store, model, topics, max_batch=4, max_wait_ms=50)) == 10
    assert model.batch_sizes == [4, 4, 2]
    # Records of a partition are scored in offset order.
    assert [t for call in model.calls for t in call] == [f"message number {i}" for i in range(10)]
    bus.close()


def test_a_partial_batch_is_scored_after_max_wait(bus: MemoryBus, topics: TopicSettings, store: ResultStore) -> None:
    for i in range(3):
        bus.publish(topics.messages, encode(message_payload(i)), key="k")
    entered, release = threading.Event(), threading.Event()
    model = FakeModel(gate=(entered, release))
    run = Running(make_scorer(bus, store, model, topics, max_batch=1000, max_wait_ms=30))
    try:
        assert entered.wait(5)  # 3 of 1000 records: the batch went to the model after max_wait_ms
        for i in range(3, 5):  # arrive while the first batch is being scored
            bus.publish(topics.messages, encode(message_payload(i)), key="k")
        release.set()
        run.wait_committed(bus, [topics.messages], timeout_s=5)
        assert model.batch_sizes == [3, 2]
    finally:
        release.set()
        run.finish()
    assert run.error is None and run.result == 5 and store.count_scored() == 5


# -- outputs -------------------------------------------------------------------


def test_scored_outputs_are_published_stored_and_name_the_model(
    bus: MemoryBus, topics: TopicSettings, store: ResultStore, db: Database
) -> None:
    texts = {"a": "Acme shares soar on record profit", "b": "Acme shares plunge on fraud probe", "c": "Acme holds AGM"}
    for mid, text in texts.items():
        p = message_payload(mid, text, id=mid, entities=[f"${mid.upper()}"], meta={"corpus": "t"})
        bus.publish(topics.messages, encode(p), key=p["entities"][0])
    assert drain(make_scorer(bus, store, FakeModel("v0009"), topics)) == 3

    out = {s.id: s for s in scored(bus, topics)}
    assert set(out) == set(texts)
    assert {s.model_version for s in out.values()} == {"v0009"}
    assert (out["a"].label, out["b"].label, out["c"].label) == ("positive", "negative", "neutral")
    assert out["a"].score == pytest.approx(0.6) and out["b"].score == pytest.approx(-0.6)
    assert out["a"].meta == {"corpus": "t"} and out["a"].entities == ["$A"]
    # Keyed like the input (entity), so one entity stays ordered downstream.
    assert {r.key for r in bus.read_all(topics.scored)} == {"$A", "$B", "$C"}

    rows = {r.message_id: r for r in scored_rows(db)}
    assert set(rows) == set(texts)
    assert {r.model_version for r in rows.values()} == {"v0009"}
    assert rows["b"].label == "negative" and rows["b"].p_negative == pytest.approx(0.7)
    assert rows["a"].text == texts["a"] and rows["a"].ts == out["a"].ts
    assert dlq(bus, topics) == [] and dead_letter_rows(db) == []


def test_the_same_message_twice_in_a_batch_is_stored_once(
    bus: MemoryBus, topics: TopicSettings, store: ResultStore
) -> None:
    for text in ["first version", "corrected version"]:
        bus.publish(topics.messages, encode(message_payload(1, text)), key="k")
    drain(make_scorer(bus, store, FakeModel(), topics))
    assert store.scored_ids() == ["m1"]
    # Another text under the same id is a conflict: the first is kept and the second dead-lettered (issue 13).
    assert store.scored("m1").text == "first version"
    assert [d.stage for d in store.dead_letters()] == ["store"]


# -- bad input -----------------------------------------------------------------

GOOD = [message_payload(i, f"good message {i}") for i in range(3)]
BAD: list[tuple[bytes, str]] = [
    (b"{this is not json", "not JSON"),
    (b"\xff\xfe\x00garbage", "not JSON"),
    (b'["a", "list"]', "not a JSON object"),
    (encode({k: v for k, v in message_payload("nt").items() if k != "text"}), "text: missing field"),
    (encode({k: v for k, v in message_payload("nid").items() if k != "id"}), "id: missing field"),
    (encode(message_payload("num", text=None) | {"text": 12345}), "text: Input should be a valid string"),
    (encode(message_payload("ent", entities="$ACME")), "entities: Input should be a valid list"),
    (encode(message_payload("empty") | {"text": "   "}), "text: text is empty"),
    (encode(message_payload("long", "x" * 81)), "over the limit of 80"),
    (encode(message_payload("ts", ts="not-a-time")), "ts: unparsable timestamp"),
    (encode(message_payload("ver", schema_version=9)), "unsupported schema_version 9"),
]


def test_bad_input_is_dead_lettered_and_the_good_records_of_the_batch_scored(
    bus: MemoryBus, topics: TopicSettings, store: ResultStore, db: Database
) -> None:
    raw_in = (
        [encode(GOOD[0])]
        + [raw for raw, _ in BAD[:6]]
        + [encode(GOOD[1])]
        + [raw for raw, _ in BAD[6:]]
        + [encode(GOOD[2])]
    )
    for raw in raw_in:
        bus.publish(topics.messages, raw, key="same-partition")
    model = FakeModel()
    w = make_scorer(bus, store, model, topics, max_text_chars=80)
    assert drain(w) == len(raw_in)
    assert w.batches == 1  # everything arrived in one batch ...
    assert model.calls == [[g["text"] for g in GOOD]]  # ... and the model saw only the good records
    assert sorted(store.scored_ids()) == ["m0", "m1", "m2"]
    assert bus.group_lag(w.group, [topics.messages]) == 0

    letters = dlq(bus, topics)
    assert len(letters) == len(BAD)
    by_raw = {(d.raw.encode() if d.raw is not None else base64.b64decode(d.raw_base64)): d for d in letters}
    for raw, needle in BAD:
        d = by_raw[raw]  # the raw input, exactly
        assert needle in d.reason, (raw, d.reason)
        assert d.stage == "score" and d.topic == topics.messages and d.offset is not None
    rows = dead_letter_rows(db)
    assert sorted(r.reason for r in rows) == sorted(d.reason for d in letters)
    assert {r.stage for r in rows} == {"score"}


def test_a_message_that_breaks_the_model_is_dead_lettered_and_the_others_scored(
    bus: MemoryBus, topics: TopicSettings, store: ResultStore, db: Database
) -> None:
    payloads = [
        message_payload(0, "fine one"),
        message_payload(1, "contains POISON here"),
        message_payload(2, "fine two"),
    ]
    raws = [encode(p) for p in payloads]
    for raw in raws:
        bus.publish(topics.messages, raw, key="k")
    model = FakeModel("v3", poison="POISON")
    w = make_scorer(bus, store, model, topics)
    assert drain(w) == 3
    assert sorted(store.scored_ids()) == ["m0", "m2"]
    assert model.calls[0] == [p["text"] for p in payloads]  # the batch first, then one by one
    assert model.calls[1:] == [[p["text"]] for p in payloads]
    [letter] = dlq(bus, topics)
    assert "model failed on this input" in letter.reason and "POISON" in letter.reason
    assert letter.stage == "score"
    assert letter.raw is not None and letter.raw.encode() == raws[1]  # the raw input, not a re-encoding
    assert (letter.topic, letter.offset) == (topics.messages, 1)
    assert [r.reason for r in dead_letter_rows(db)] == [letter.reason]
    assert {s.model_version for s in scored(bus, topics)} == {"v3"}
    assert bus.group_lag(w.group, [topics.messages]) == 0


class ShortModel(FakeModel):
    """Returns one row too few for a batch (a broken model must not make a message vanish)."""

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        out = super().predict_proba(texts)
        return out[:-1] if len(texts) > 1 else out


class NanModel(FakeModel):
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        out = super().predict_proba(texts)
        out[[i for i, t in enumerate(texts) if "nan" in t]] = np.nan
        return out


def test_model_output_of_the_wrong_shape_does_not_drop_messages(
    bus: MemoryBus, topics: TopicSettings, store: ResultStore
) -> None:
    for i in range(4):
        bus.publish(topics.messages, encode(message_payload(i)), key="k")
    model = ShortModel()
    assert drain(make_scorer(bus, store, model, topics)) == 4
    assert sorted(store.scored_ids()) == ["m0", "m1", "m2", "m3"]
    assert model.batch_sizes == [4, 1, 1, 1, 1]


def test_invalid_probabilities_are_dead_lettered_not_fatal(
    bus: MemoryBus, topics: TopicSettings, store: ResultStore
) -> None:
    for i, text in enumerate(["fine", "gives nan", "also fine"]):
        bus.publish(topics.messages, encode(message_payload(i, text)), key="k")
    w = make_scorer(bus, store, NanModel(), topics)
    assert drain(w) == 3
    assert sorted(store.scored_ids()) == ["m0", "m2"]
    [letter] = dlq(bus, topics)
    assert "model failed on this input" in letter.reason and json.loads(letter.raw)["id"] == "m1"


def test_a_batch_of_only_bad_records_never_calls_the_model(
    bus: MemoryBus, topics: TopicSettings, store: ResultStore
) -> None:
    for raw, _ in BAD[:3]:
        bus.publish(topics.messages, raw, key="k")
    model = FakeModel()
    assert drain(make_scorer(bus, store, model, topics)) == 3
    assert model.calls == [] and len(dlq(bus, topics)) == 3 and store.count_scored() == 0


def test_recording_store_sees_one_write_per_batch(bus: MemoryBus, topics: TopicSettings, store: ResultStore) -> None:
    for i in range(5):
        bus.publish(topics.messages, encode(message_payload(i)), key="k")
    bus.publish(topics.messages, b"oops", key="k")
    recording = RecordingStore(store)
    drain(make_scorer(bus, recording, FakeModel(), topics))
    [write] = recording.writes
    assert len(write["scored"]) == 5 and len(write["dead_letters"]) == 1
    assert write["labels"] == [] and write["alerts"] == [] and write["events"] == []


# -- the real model ------------------------------------------------------------


@pytest.mark.slow
def test_real_model_scores_example_messages(app_with_champion: Any) -> None:
    from tests.conftest import EXAMPLES

    app = app_with_champion
    champion = app.registry.champion()
    model = app.load_model(champion)
    topics = app.settings.topics
    lines = (EXAMPLES / "stream.jsonl").read_text().splitlines()[:12]
    payloads = [json.loads(line) for line in lines]
    for p in payloads:
        app.bus.publish(topics.messages, json.dumps(p).encode(), key="k")
    app.bus.publish(topics.messages, b'{"id": "broken"}', key="k")
    w = app.scorer(model)
    assert w.run(threading.Event(), drain=True) == len(payloads) + 1
    assert sorted(app.store.scored_ids()) == sorted(p["id"] for p in payloads)
    for p in payloads:
        row = app.store.scored(p["id"])
        assert row.model_version == champion.version == "v0001"
        assert row.p_negative + row.p_neutral + row.p_positive == pytest.approx(1.0, abs=1e-3)
        assert row.label in LABELS
        assert row.score == pytest.approx(row.p_positive - row.p_negative, abs=1e-6)
    [letter] = [decode(DeadLetter, r.value) for r in app.bus.read_all(topics.dlq)]
    assert "missing field" in letter.reason


def test_scorers_attach_features_only_while_the_fast_path_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from aet.pipeline.config import load_settings
    from aet.pipeline.runtime import App

    for enabled in (True, False):
        app = App(load_settings(home=tmp_path / str(enabled), fast_path={"enabled": enabled}))
        try:
            assert app.scorer(FakeModel()).emit_features is enabled  # type: ignore[arg-type]
        finally:
            app.close()


# -- the score cache -------------------------------------------------------------


def test_a_repeated_text_is_scored_once_per_model_version_and_served_from_the_cache(
    bus: MemoryBus, topics: TopicSettings, store: ResultStore
) -> None:
    headline = "Acme shares soar on record profit"
    for i, text in enumerate([headline, f"  {headline} ", "Acme holds AGM", headline]):
        bus.publish(topics.messages, encode(message_payload(i, text, id=f"a{i}")), key="k")
    model = FakeModel("v0001")
    scorer = make_scorer(bus, store, model, topics, max_batch=2)
    assert drain(scorer) == 4
    assert sorted(t for call in model.calls for t in call) == sorted([headline, "Acme holds AGM"])
    assert scorer.cache.stats.hits == 2  # the same headline from two more outlets (one with other spacing)
    labels = {s.id: s.label for s in scored(bus, topics)}
    assert labels == {"a0": "positive", "a1": "positive", "a2": "neutral", "a3": "positive"}


class StubSwapper:
    """Hands the scorer one model to swap to, as a ModelSwapper would once it has verified and warmed it up."""

    def __init__(self, new: Any) -> None:
        self.new: Any = new
        self.retired: list[Any] = []

    def take(self) -> Any:
        new, self.new = self.new, None
        return new

    def retire(self, model: Any) -> None:
        self.retired.append(model)


class FlippedModel(FakeModel):
    """Another version that reads every text the other way round."""

    @staticmethod
    def probs_for(text: str) -> list[float]:
        return FakeModel.probs_for(text)[::-1]


def test_a_swap_never_serves_a_score_of_the_model_it_replaced(
    bus: MemoryBus, topics: TopicSettings, store: ResultStore
) -> None:
    headline = "Acme shares soar on record profit"
    scorer = make_scorer(bus, store, FakeModel("v0001"), topics)
    bus.publish(topics.messages, encode(message_payload(0, headline, id="before")), key="k")
    drain(scorer)
    assert len(scorer.cache) == 1
    new = FlippedModel("v0002")
    scorer.swapper = StubSwapper(new)  # type: ignore[assignment]
    bus.publish(topics.messages, encode(message_payload(1, headline, id="after")), key="k")
    drain(scorer)
    out = {s.id: s for s in scored(bus, topics)}
    assert (out["before"].label, out["before"].model_version) == ("positive", "v0001")
    assert (out["after"].label, out["after"].model_version) == ("negative", "v0002")
    assert new.calls == [[headline]] and len(scorer.cache) == 1  # scored by the new version; the old rows dropped


def test_cache_size_zero_scores_every_message(bus: MemoryBus, topics: TopicSettings, store: ResultStore) -> None:
    for i in range(3):
        bus.publish(topics.messages, encode(message_payload(i, "same text", id=f"s{i}")), key="k")
    model = FakeModel()
    scorer = make_scorer(bus, store, model, topics, cache_size=0)
    assert drain(scorer) == 3
    assert sum(len(c) for c in model.calls) == 3 and len(scorer.cache) == 0
