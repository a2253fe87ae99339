"""The label recorder: valid labels stored (one row per message, latest wins), bad ones dead-lettered."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

from aet.adapters.memory_bus import MemoryBus
from aet.pipeline.config import TopicSettings
from aet.pipeline.records import DeadLetter, decode
from aet.pipeline.roles.label_recorder import LabelRecorder
from aet.storage.db import Database
from aet.storage.store import ResultStore
from tests.pipeline.pipeline_fakes import RecordingStore, dead_letter_rows, label_rows


def label(message_id: str, value: Any, ts: str = "2026-03-02T13:00:00+00:00", annotator: str = "ana") -> bytes:
    return json.dumps({"message_id": message_id, "label": value, "ts": ts, "annotator": annotator}).encode()


def drain(recorder: LabelRecorder) -> int:
    return recorder.run(threading.Event(), drain=True)


def test_valid_labels_are_stored(bus: MemoryBus, topics: TopicSettings, store: ResultStore, db: Database) -> None:
    for mid, value in [("m1", "negative"), ("m2", "neutral"), ("m3", "positive")]:
        bus.publish(topics.labels, label(mid, value, ts="2026-03-02"), key=mid)
    rec = LabelRecorder(bus, store, topics)
    assert drain(rec) == 3
    rows = label_rows(db)
    assert [(r.message_id, r.label, r.annotator) for r in rows] == [
        ("m1", "negative", "ana"),
        ("m2", "neutral", "ana"),
        ("m3", "positive", "ana"),
    ]
    assert all(r.ts == datetime(2026, 3, 2, tzinfo=UTC) for r in rows)
    assert all(r.received_at is not None for r in rows)
    assert bus.group_lag(rec.group, [topics.labels]) == 0
    assert bus.read_all(topics.dlq) == []


def test_unknown_label_goes_to_the_dlq_with_a_reason(
    bus: MemoryBus, topics: TopicSettings, store: ResultStore, db: Database
) -> None:
    bad = [
        label("m1", "bullish"),
        b"not json at all",
        json.dumps({"label": "neutral"}).encode(),
        label("m4", "neutral", ts="someday"),
    ]
    for raw in bad:
        bus.publish(topics.labels, raw, key="k")
    bus.publish(topics.labels, label("m5", "positive"), key="k")
    rec = LabelRecorder(bus, store, topics)
    assert drain(rec) == 5
    assert [r.message_id for r in label_rows(db)] == ["m5"]  # the good label of the same batch is kept
    letters = [decode(DeadLetter, r.value) for r in bus.read_all(topics.dlq)]
    assert [d.raw.encode() for d in letters] == bad
    reasons = [d.reason for d in letters]
    assert reasons[0].startswith("label: Input should be 'negative', 'neutral' or 'positive'")
    assert reasons[1].startswith("not JSON")
    assert reasons[2] == "message_id: missing field"
    assert reasons[3].startswith("ts: unparsable timestamp")
    assert {d.stage for d in letters} == {"labels"} and {d.topic for d in letters} == {topics.labels}
    assert sorted(r.reason for r in dead_letter_rows(db)) == sorted(reasons)
    assert bus.group_lag(rec.group, [topics.labels]) == 0


def test_the_same_message_labelled_twice_in_one_batch_keeps_the_latest(
    bus: MemoryBus, topics: TopicSettings, store: ResultStore, db: Database
) -> None:
    bus.publish(topics.labels, label("m1", "negative", annotator="first"), key="m1")
    bus.publish(topics.labels, label("m2", "neutral"), key="m2")
    bus.publish(topics.labels, label("m1", "positive", annotator="second"), key="m1")
    recording = RecordingStore(store)
    rec = LabelRecorder(bus, recording, topics)
    assert drain(rec) == 3
    assert rec.batches == 1
    [write] = recording.writes
    assert sorted(lab.message_id for lab in write["labels"]) == ["m1", "m2"]  # deduplicated before the store
    rows = {r.message_id: r for r in label_rows(db)}
    assert set(rows) == {"m1", "m2"}
    assert (rows["m1"].label, rows["m1"].annotator) == ("positive", "second")


def test_a_later_batch_overwrites_an_earlier_label(
    bus: MemoryBus, topics: TopicSettings, store: ResultStore, db: Database
) -> None:
    rec = LabelRecorder(bus, store, topics)
    bus.publish(topics.labels, label("m1", "negative", annotator="first"), key="m1")
    assert drain(rec) == 1
    assert [(r.label, r.annotator) for r in label_rows(db)] == [("negative", "first")]
    bus.publish(topics.labels, label("m1", "neutral", ts="2026-03-03T00:00:00Z", annotator="second"), key="m1")
    assert drain(LabelRecorder(bus, store, topics)) == 1
    [row] = label_rows(db)
    assert (row.message_id, row.label, row.annotator) == ("m1", "neutral", "second")
    assert row.ts == datetime(2026, 3, 3, tzinfo=UTC)


def test_redelivered_labels_do_not_duplicate(
    bus: MemoryBus, topics: TopicSettings, store: ResultStore, db: Database
) -> None:
    for _ in range(2):  # at-least-once delivery: the same record twice
        bus.publish(topics.labels, label("m1", "positive"), key="m1")
        drain(LabelRecorder(bus, store, topics))
    assert len(label_rows(db)) == 1
