"""ResultStore: idempotent writes keyed by natural ids, UTC timestamps, summaries."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import StatementError

from aet.pipeline import metrics
from aet.pipeline.config import LimitsSettings
from aet.pipeline.records import Alert, ControlEvent, DeadLetter, LabelRecord, Message, Probs, ScoredMessage, decode
from aet.storage.store import ResultStore
from aet.storage.tables import AlertRow, ControlEventRow, LabelRow

UTC = UTC
ScoredFactory = Callable[..., ScoredMessage]  # the make_scored fixture of tests/storage/conftest.py


def _count(store: ResultStore, row: type) -> int:
    with store.db.session() as s:
        return s.scalar(select(func.count()).select_from(row)) or 0


def test_same_scored_message_twice_leaves_one_row(store: ResultStore, make_scored: ScoredFactory) -> None:
    """Replaying a batch after a crash does not duplicate scored messages."""
    m = make_scored("m-1")
    store.write(scored=[m])
    store.write(scored=[m])
    assert store.count_scored() == 1
    assert store.scored_ids() == ["m-1"]


def test_duplicate_ids_within_one_batch_leave_one_row(store: ResultStore, make_scored: ScoredFactory) -> None:
    """A batch that holds one message twice (redelivery) writes one row, the later one."""
    store.write(scored=[make_scored("m-1", model_version="v0001"), make_scored("m-1", model_version="v0002")])
    row = store.scored("m-1")
    assert store.count_scored() == 1
    assert row is not None and row.model_version == "v0002"


def test_rescore_overwrites_probs_and_model_version(store: ResultStore, make_scored: ScoredFactory) -> None:
    """A re-score by a newer model replaces label, probabilities, score and lineage."""
    store.write(scored=[make_scored("m-1")])
    later = datetime(2024, 3, 2, tzinfo=UTC)
    store.write(
        scored=[
            make_scored(
                "m-1",
                label="negative",
                probs=Probs(negative=0.8, neutral=0.15, positive=0.05),
                score=-0.75,
                model_version="v0002",
                scored_at=later,
            )
        ]
    )
    row = store.scored("m-1")
    assert row is not None
    assert (row.label, row.model_version, row.scored_at) == ("negative", "v0002", later)
    assert (row.p_negative, row.p_neutral, row.p_positive) == pytest.approx((0.8, 0.15, 0.05))
    assert row.score == pytest.approx(-0.75)
    assert store.count_scored() == 1


def test_scored_row_keeps_every_field(store: ResultStore, make_scored: ScoredFactory) -> None:
    """Text, channel, entities and meta come back as written."""
    m = make_scored("m-1", source="chat", channel="room-7", entities=["$A", "$B"], meta={"n": 1, "tags": ["x"]})
    store.write(scored=[m])
    row = store.scored("m-1")
    assert row is not None
    assert (row.source, row.channel, row.text) == ("chat", "room-7", m.text)
    assert row.entities == ["$A", "$B"]
    assert row.meta == {"n": 1, "tags": ["x"]}
    assert store.scored("missing") is None


def test_timestamps_come_back_aware_utc_and_equal(store: ResultStore, make_scored: ScoredFactory) -> None:
    """Event and scoring times given in other zones come back as the same instants, in UTC."""
    ts = datetime(2024, 3, 1, 18, 0, 1, 250001, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    scored_at = datetime(2024, 3, 1, 9, 0, 2, 7, tzinfo=timezone(timedelta(hours=-7)))
    store.write(scored=[make_scored("m-1", ts=ts, scored_at=scored_at)])
    row = store.scored("m-1")
    assert row is not None
    for got, want in ((row.ts, ts), (row.scored_at, scored_at)):
        assert got == want
        assert got.tzinfo is not None and got.utcoffset() == timedelta(0)


def test_labels_latest_write_wins(store: ResultStore) -> None:
    """One label row per message; a later label for the same message replaces the earlier one."""
    t1 = datetime(2024, 1, 1, 10, tzinfo=UTC)
    t2 = datetime(2024, 1, 1, 11, tzinfo=UTC)
    store.write(labels=[LabelRecord(message_id="m-1", label="positive", ts=t1, annotator="alice")])
    store.write(
        labels=[
            LabelRecord(message_id="m-1", label="negative", ts=t2, annotator="bob"),
            LabelRecord(message_id="m-2", label="neutral", ts=t2),
        ]
    )
    with store.db.session() as s:
        row = s.get(LabelRow, "m-1")
    assert row is not None
    assert (row.label, row.annotator, row.ts) == ("negative", "bob", t2)
    assert row.received_at.utcoffset() == timedelta(0)
    assert _count(store, LabelRow) == 2


def test_dead_letters_with_same_origin_are_deduplicated(store: ResultStore) -> None:
    """A refused input redelivered from the same topic position is stored once."""
    first = DeadLetter.of(b"not json", stage="ingest", reason="not JSON", topic="t", partition=1, offset=7)
    again = DeadLetter.of(b"not json", stage="ingest", reason="not JSON (again)", topic="t", partition=1, offset=7)
    store.write(dead_letters=[first])
    store.write(dead_letters=[again, again])
    rows = store.dead_letters()
    assert len(rows) == 1
    assert rows[0].reason == "not JSON"
    assert (rows[0].topic, rows[0].partition, rows[0].offset, rows[0].raw) == ("t", 1, 7, "not json")


def test_dead_letters_from_different_origins_are_kept(store: ResultStore) -> None:
    """Same bytes at another offset, or from another stage, are separate dead letters."""
    raw = b"\xff\xfe binary"
    store.write(
        dead_letters=[
            DeadLetter.of(raw, stage="ingest", reason="r", topic="t", partition=0, offset=1),
            DeadLetter.of(raw, stage="ingest", reason="r", topic="t", partition=0, offset=2),
            DeadLetter.of(raw, stage="scorer", reason="r", topic="t", partition=0, offset=1),
        ]
    )
    rows = store.dead_letters()
    assert len(rows) == 3
    assert all(r.raw is None and r.raw_base64 for r in rows)


def test_events_and_alerts_are_upserted_by_id(store: ResultStore) -> None:
    """Control events and alerts written twice leave one row each, the latest content."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    event = ControlEvent(id="e-1", kind="drift", model_version="v0001", payload={"stat": 1.5})
    alert = Alert(
        id="a-1",
        entity="$ACME",
        kind="negative_surge",
        window_start=start,
        window_end=start + timedelta(hours=1),
        counts={"negative": 9},
        shares={"negative": 0.9},
        baseline={"negative": 0.2},
        z=4.2,
        severity="warning",
        model_version="v0001",
    )
    store.write(events=[event], alerts=[alert])
    store.write(
        events=[event.model_copy(update={"payload": {"stat": 2.0}})],
        alerts=[alert.model_copy(update={"severity": "critical"})],
    )
    with store.db.session() as s:
        events = s.scalars(select(ControlEventRow)).all()
        alerts = s.scalars(select(AlertRow)).all()
    assert [(e.id, e.payload) for e in events] == [("e-1", {"stat": 2.0})]
    assert [(a.id, a.severity, a.window_end) for a in alerts] == [("a-1", "critical", start + timedelta(hours=1))]


def test_a_failing_batch_writes_nothing(store: ResultStore, make_scored: ScoredFactory) -> None:
    """write() is one transaction: if any row fails, no row of the batch is stored."""
    bad = LabelRecord.model_construct(message_id="m-1", label="neutral", ts=datetime(2024, 1, 1), annotator="x")
    with pytest.raises(StatementError):
        store.write(scored=[make_scored("m-1")], labels=[bad])
    assert store.count_scored() == 0
    assert _count(store, LabelRow) == 0


def test_summary_counts(store: ResultStore, make_scored: ScoredFactory) -> None:
    """summary() counts scored messages by label, source and model, labels, and dead letters by stage."""
    store.write(
        scored=[
            make_scored("a", label="positive"),
            make_scored("b", label="positive", source="chat", model_version="v0002"),
            make_scored("c", label="negative", probs=Probs(negative=0.9, neutral=0.05, positive=0.05), score=-0.85),
        ],
        labels=[
            LabelRecord(message_id="a", label="positive"),
            LabelRecord(message_id="b", label="negative"),
            LabelRecord(message_id="not-scored", label="neutral"),
        ],
        dead_letters=[
            DeadLetter.of(b"x", stage="ingest", reason="r", offset=1),
            DeadLetter.of(b"y", stage="ingest", reason="r", offset=2),
            DeadLetter.of(b"z", stage="scorer", reason="r", offset=3),
        ],
    )
    summary = store.summary()
    assert summary["scored"] == 3
    assert summary["by_label"] == {"positive": 2, "negative": 1}
    assert summary["by_source"] == {"news": 2, "chat": 1}
    assert summary["by_model_version"] == {"v0001": 2, "v0002": 1}
    assert summary["labels"] == 3
    assert summary["dead_letters"] == {"ingest": 2, "scorer": 1}
    assert summary["labeled"] == {"n": 2, "accuracy": pytest.approx(0.5)}


def test_summary_of_empty_store(store: ResultStore) -> None:
    """An empty store reports zero counts, empty breakdowns and no accuracy."""
    summary = store.summary()
    assert (summary["scored"], summary["labels"]) == (0, 0)
    assert summary["by_label"] == summary["by_source"] == summary["by_model_version"] == {}
    assert summary["dead_letters"] == {}
    assert summary["labeled"] == {"n": 0, "accuracy": None}


# -- conflicts and dead letters (issue 13) ---------------------------------------


def test_same_id_with_another_text_is_a_conflict_and_the_first_is_kept(
    store: ResultStore, make_scored: ScoredFactory
) -> None:
    """Before: the second text silently overwrote the first in the store while the monitor kept the first label."""
    first = make_scored("m-1", text="Acme beats estimates")
    assert store.write(scored=[first]) == []
    before = metrics.CONFLICTS._value.get()
    [conflict] = store.write(scored=[make_scored("m-1", text="Acme misses estimates", model_version="v0002")])
    row = store.scored("m-1")
    assert row is not None and (row.text, row.model_version) == ("Acme beats estimates", "v0001")
    assert conflict.stage == "store" and "stored with a different text" in conflict.reason
    assert decode(Message, conflict.kept).text == "Acme misses estimates"  # the refused message, as it came in
    assert [r.stage for r in store.dead_letters()] == ["store"]
    assert metrics.CONFLICTS._value.get() == before + 1
    assert store.write(scored=[first]) == []  # the same text again is an idempotent redelivery
    assert len(store.dead_letters()) == 1


def test_a_conflict_within_one_batch_keeps_the_first(store: ResultStore, make_scored: ScoredFactory) -> None:
    conflicts = store.write(scored=[make_scored("m-1", text="first"), make_scored("m-1", text="second")])
    assert len(conflicts) == 1 and store.scored("m-1").text == "first"  # type: ignore[union-attr]


def test_records_at_every_limit_are_stored(store: ResultStore, make_scored: ScoredFactory) -> None:
    """What decode lets through fits the columns on SQLite and PostgreSQL (which enforces String lengths)."""
    payload = {
        "id": "i" * 256,
        "source": "chat",
        "channel": "c" * 256,
        "text": "t" * 5000,
        "ts": "2026-03-02T10:00:00Z",
        "entities": ["e" * 256] * LimitsSettings().max_entities,
        "meta": {"m": "x" * (LimitsSettings().max_meta_chars - 20)},
    }
    m = decode(Message, payload)
    scored = make_scored(m.id, **m.model_dump(exclude={"id"}), model_version="v" * 64)
    label = decode(LabelRecord, {"message_id": m.id, "label": "neutral", "annotator": "a" * 128})
    dead = DeadLetter.of(b"\x00" * 10_000, stage="s" * 64, reason="r" * 5000, topic="t" * 256, key="k" * 300)
    assert store.write(scored=[scored], labels=[label], dead_letters=[dead]) == []
    assert store.scored(m.id) is not None and store.dead_letters()[0].raw_size == 10_000


def test_dead_letters_are_listed_found_and_marked_replayed(store: ResultStore) -> None:
    store.write(
        dead_letters=[
            DeadLetter.of(b"a", stage="score", reason="text is empty", topic="aet.messages", partition=0, offset=1),
            DeadLetter.of(b"b", stage="labels", reason="unknown label", topic="aet.labels", partition=0, offset=2),
            DeadLetter.of(b"c", stage="score", reason="not JSON", topic="aet.messages", partition=0, offset=3),
        ]
    )
    assert {r.raw for r in store.list_dead_letters(stage="score")} == {"a", "c"}
    assert [r.raw for r in store.list_dead_letters(reason="label")] == ["b"]
    assert len(store.list_dead_letters(limit=2)) == 2
    assert store.list_dead_letters(since=datetime(2999, 1, 1, tzinfo=UTC)) == []
    first = store.list_dead_letters(stage="labels")[0]
    [found] = store.find_dead_letters(first.id[:12])
    assert found.id == first.id and store.find_dead_letters("zz") == []
    store.mark_replayed([first.id])
    assert [r.raw for r in store.list_dead_letters(replayed=True)] == ["b"]
    assert {r.raw for r in store.list_dead_letters(replayed=False)} == {"a", "c"}


def test_the_write_itself_never_overwrites_another_text(store: ResultStore, make_scored: ScoredFactory) -> None:
    """Even a write that skipped the conflict check (two scorers at once) leaves the first text in place."""
    from aet.storage.store import _upsert_same_text, scored_row

    store.write(scored=[make_scored("m-1", text="first", model_version="v0001")])
    with store.db.session() as s, s.begin():
        _upsert_same_text(
            s,
            [
                scored_row(make_scored("m-1", text="second", model_version="v0002")),
                scored_row(make_scored("m-2", text="new")),
            ],
        )
    assert store.scored("m-1").text == "first" and store.scored("m-1").model_version == "v0001"  # type: ignore[union-attr]
    assert store.scored("m-2") is not None
    store.write(scored=[make_scored("m-1", text="first", model_version="v0003")])  # the same text: a re-score
    assert store.scored("m-1").model_version == "v0003"  # type: ignore[union-attr]
