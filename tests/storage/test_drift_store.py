"""The drift monitor's store on SQLite and PostgreSQL: one-transaction batches, the label ledger, state, events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from aet.pipeline.records import ControlEvent, DeadLetter, Probs, ScoredMessage
from aet.storage.db import Database
from aet.storage.drift_store import MonitorBatch, MonitorStore
from aet.storage.store import ResultStore

T0 = datetime(2026, 3, 2, 12, tzinfo=UTC)


def join_row(mid: str, status: str = "joined", **kw: object) -> dict[str, object]:
    row: dict[str, object] = {
        "message_id": mid,
        "status": status,
        "label": "neutral",
        "annotator": "a",
        "label_ts": T0,
        "source": "news",
        "model_version": "v1",
        "predicted": "neutral",
        "message_ts": T0,
        "position": 1,
        "held_at": None,
    }
    row.update(kw)
    return row


def test_a_batch_is_written_in_one_transaction_and_read_back(database: Database) -> None:
    store = MonitorStore(database)
    drift = ControlEvent(kind="drift", ts=T0, payload={"source": "news", "position": 7})
    request = ControlEvent(kind="retrain_request", ts=T0 + timedelta(minutes=5), payload={"source": "chat"})
    letter = DeadLetter(stage="monitor", reason="bad", raw="x")
    batch = MonitorBatch(
        joins=[
            join_row("m1"),
            join_row(
                "m2", "held", source=None, model_version=None, predicted=None, message_ts=None, position=None, held_at=3
            ),
        ],
        quality=[
            {
                "source": "news",
                "model_version": "v1",
                "labeled": 1,
                "correct": 1,
                "window": 1,
                "accuracy": 1.0,
                "macro_f1": 1.0,
                "confusion": [[0, 0, 0], [0, 1, 0], [0, 0, 0]],
            }
        ],
        state={"version": 1, "engine": {"sources": {}}, "nested": [1.5, None, "x"]},
    )
    store.write_batch("mon", batch, events=[drift, request], dead_letters=[letter])
    assert store.load_state("mon") == batch.state and store.load_state("other") is None
    assert [r.message_id for r in store.held_labels()] == ["m2"]
    assert store.joined(["m1", "m2", "m3"]) == {"m1"}
    assert [e.kind for e in store.events()] == ["retrain_request", "drift"]
    assert [e.id for e in store.events(("drift",), source="news")] == [drift.id]
    assert store.events(source="nowhere") == []
    assert store.latest_control_ts(["drift", "retrain_request"]) == T0 + timedelta(minutes=5)
    assert store.latest_control_ts(["promotion"]) is None
    [q] = store.quality()
    assert (q.source, q.model_version, q.confusion[1][1]) == ("news", "v1", 1)

    # The held label expires: its row is dropped; writing the same batch again changes nothing else.
    store.write_batch("mon", MonitorBatch(drop_joins=["m2", "m1"], state={"version": 2}), events=[drift])
    assert [r.message_id for r in store.label_joins()] == ["m1"]  # only held rows are dropped
    assert store.load_state("mon") == {"version": 2}
    assert len(store.events()) == 2


def test_a_failing_batch_leaves_nothing(database: Database) -> None:
    store = MonitorStore(database)
    with pytest.raises(IntegrityError):
        store.write_batch(
            "mon",
            MonitorBatch(joins=[join_row("m1", label=None)], state={"v": 1}),
            events=[ControlEvent(kind="drift", ts=T0)],
        )
    assert store.load_state("mon") is None and store.events() == [] and store.label_joins() == []


def test_predictions_are_read_from_the_scored_messages(database: Database) -> None:
    m = ScoredMessage(
        id="m1",
        source="chat",
        text="t",
        ts=T0,
        label="positive",
        probs=Probs(negative=0.1, neutral=0.2, positive=0.7),
        score=0.6,
        model_version="v3",
    )
    ResultStore(database).write(scored=[m])
    found = MonitorStore(database).predictions(["m1", "nope"])
    assert set(found) == {"m1"}
    p = found["m1"]
    assert (p.source, p.label, p.model_version, p.ts) == ("chat", "positive", "v3", T0)
