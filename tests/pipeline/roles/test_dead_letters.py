"""The dead-letter recorder: every dead letter on aet.dlq stored once, whichever stage wrote it."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from aet.adapters.memory_bus import MemoryBus
from aet.pipeline.config import DeadLetterSettings, ReplaySettings, TopicSettings
from aet.pipeline.records import DeadLetter
from aet.pipeline.roles.dead_letters import DeadLetterRecorder
from aet.pipeline.roles.label_recorder import LabelRecorder
from aet.pipeline.roles.replay import Replay
from aet.storage.store import ResultStore


def drain(worker: DeadLetterRecorder | LabelRecorder) -> int:
    return worker.run(threading.Event(), drain=True)


def test_dead_letters_of_replay_are_stored(
    bus: MemoryBus, topics: TopicSettings, store: ResultStore, tmp_path: Path
) -> None:
    """Replay has no store: before the recorder, its dead letters were only on aet.dlq and never stored."""
    stream = tmp_path / "s.jsonl"
    stream.write_bytes(
        b'{"id": "ok", "text": "Acme beats", "source": "news", "ts": "2026-03-02T10:00:00Z"}\n'
        b"not json at all\n"
        b'{"id": "far", "text": "from the future", "source": "news", "ts": "9999-12-31T23:59:59Z"}\n'
    )
    stats = Replay(bus, topics, ReplaySettings()).run(stream, progress=False)
    assert (stats.published, stats.rejected) == (1, 2)
    recorder = DeadLetterRecorder(bus, store, topics)
    assert drain(recorder) == 2
    rows = store.list_dead_letters()
    assert sorted(r.stage for r in rows) == ["replay", "replay"]
    reasons = " | ".join(r.reason for r in rows)
    assert "not JSON" in reasons and "in the future" in reasons
    assert bus.group_lag(recorder.group, [topics.dlq]) == 0


def test_a_dead_letter_stored_by_its_stage_and_by_the_recorder_is_one_row(
    bus: MemoryBus, topics: TopicSettings, store: ResultStore
) -> None:
    bus.publish(topics.labels, b"\xff not a label", key="k")
    assert drain(LabelRecorder(bus, store, topics)) == 1  # stores its dead letter and publishes it to aet.dlq
    assert len(store.list_dead_letters()) == 1
    assert drain(DeadLetterRecorder(bus, store, topics)) == 1
    rows = store.list_dead_letters()
    assert len(rows) == 1 and rows[0].stage == "labels" and rows[0].raw_size == len(b"\xff not a label")


def test_garbage_on_the_dead_letter_topic_is_stored_and_not_published_again(
    bus: MemoryBus, topics: TopicSettings, store: ResultStore
) -> None:
    bus.publish(topics.dlq, b"\x00\x01 garbage", key="g")
    bus.publish(topics.dlq, DeadLetter.of(b"x", stage="score", reason="why", topic="aet.messages").to_bytes())
    assert drain(DeadLetterRecorder(bus, store, topics)) == 2
    rows = {r.stage: r for r in store.list_dead_letters()}
    assert set(rows) == {"dlq", "score"}
    assert rows["dlq"].reason.startswith("not a dead letter: not JSON")
    assert rows["dlq"].raw is None and rows["dlq"].raw_base64  # NUL bytes are kept as base64 (PostgreSQL text)
    assert len(bus.read_all(topics.dlq)) == 2  # nothing went round again


def _line(**fields: object) -> bytes:
    row = {"source": "news", "ts": "2026-03-02T10:00:00Z", "entities": ["$ACME"], **fields}
    return json.dumps(row).encode() + b"\n"


@pytest.mark.slow  # scores with the session champion
def test_an_embedded_run_survives_a_hostile_stream_and_stores_every_dead_letter(
    app_with_champion: Any, tmp_path: Path
) -> None:
    """Issue 13: `...9999-12-31T23:59:59Z` stopped replay (`aet run` exited 1), NUL failed PostgreSQL forever, a
    lone surrogate failed serialization, and replay's dead letters were never stored."""
    from aet.pipeline.runtime import run_embedded  # loads the model stack: only for this test

    app = app_with_champion
    good = [_line(id=f"g{i}", text=f"Acme reports quarter number {i}") for i in range(6)]
    hostile = [
        _line(id="nul", text="a\x00b"),
        _line(id="surrogate", text="a\ud800b"),
        _line(id="far", text="from the future", ts="9999-12-31T23:59:59Z"),
        _line(id="year-one", text="before year one", ts="0001-01-01T00:00:00+01:00"),
        _line(id="entity", text="long entity", entities=["$" + "X" * 300]),
        _line(id="meta", text="big meta", meta={"blob": "m" * 30_000}),
        _line(id="big", text="t" * 2_000_000),
        b"not json\n",
        _line(id="g0", text="the same id with another text"),
    ]
    stream = tmp_path / "hostile.jsonl"
    stream.write_bytes(b"".join(good[:3] + hostile[:5] + good[3:] + hostile[5:]))
    summary = run_embedded(app, stream, progress=False)
    assert summary["replay"]["published"] == 7 and summary["replay"]["rejected"] == 8
    assert sorted(app.store.scored_ids()) == [f"g{i}" for i in range(6)]
    assert app.store.scored("g0").text == "Acme reports quarter number 0"  # the first text is kept
    rows = app.store.list_dead_letters(limit=None)
    assert sorted(r.stage for r in rows) == ["replay"] * 8 + ["store"]
    big = next(r for r in rows if r.raw_size and r.raw_size > 2_000_000)
    assert big.truncated and len(big.raw or "") <= app.settings.dead_letters.raw_bytes
    assert summary["store"]["dead_letters"] == {"replay": 8, "store": 1}


def test_an_oversized_dead_letter_of_an_older_producer_is_stored_bounded(
    bus: MemoryBus, topics: TopicSettings, store: ResultStore
) -> None:
    raw = b"y" * 50_000
    old_style = DeadLetter(stage="replay", reason="text too long", raw=raw.decode())  # no size, digest or limit
    bus.publish(topics.dlq, old_style.to_bytes())
    assert drain(DeadLetterRecorder(bus, store, topics, DeadLetterSettings(raw_bytes=1024))) == 1
    [row] = store.list_dead_letters()
    assert len(row.raw or "") == 1024 and row.truncated
    assert row.raw_size == 50_000 and row.raw_sha256 == hashlib.sha256(raw).hexdigest()
