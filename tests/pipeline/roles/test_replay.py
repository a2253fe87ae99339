"""Replay: event-time order, JSONL and CSV, synthetic times, corpus fields, delayed labels, bad lines, pacing."""

from __future__ import annotations

import csv
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import aet.pipeline.roles.replay as replay_mod
from aet.adapters.memory_bus import MemoryBus
from aet.pipeline.config import ReplaySettings, TopicSettings
from aet.pipeline.records import DeadLetter, LabelRecord, Message, decode
from aet.pipeline.roles.replay import SYNTHETIC_START, Replay, ReplayStats
from tests.pipeline.pipeline_fakes import RecordingBus

T0 = datetime(2026, 3, 2, 13, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def row(i: int | str, seconds: float | None = None, **fields: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"id": f"r{i}", "text": f"text of row {i}", "source": "news", "label": "neutral"}
    if seconds is not None:
        r["ts"] = at(seconds)
    r.update(fields)
    return r


def write_jsonl(path: Path, rows: list[dict[str, Any] | str]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def rbus() -> RecordingBus:
    b = RecordingBus(MemoryBus(partitions=3))
    yield b
    b.close()


def replay(bus: RecordingBus, path: Path, topics: TopicSettings | None = None, **settings: Any) -> ReplayStats:
    return Replay(bus, topics or TopicSettings(), ReplaySettings(**settings), max_text_chars=200).run(
        path, progress=False
    )


def messages(bus: RecordingBus) -> list[Message]:
    return [decode(Message, json.dumps(m)) for m in bus.on("aet.messages")]


def labels(bus: RecordingBus) -> list[LabelRecord]:
    return [decode(LabelRecord, json.dumps(m)) for m in bus.on("aet.labels")]


def dead(bus: RecordingBus) -> list[DeadLetter]:
    return [decode(DeadLetter, json.dumps(m)) for m in bus.on("aet.dlq")]


# -- order and formats -----------------------------------------------------------


def test_rows_are_published_in_event_time_order(tmp_path: Path, rbus: RecordingBus) -> None:
    seconds = [50, 0, 30, 10, 10, 90, 20]
    path = write_jsonl(tmp_path / "s.jsonl", [row(i, s) for i, s in enumerate(seconds)])
    stats = replay(rbus, path)
    out = messages(rbus)
    assert [m.ts for m in out] == sorted(T0 + timedelta(seconds=s) for s in seconds)
    assert [m.id for m in out] == ["r1", "r3", "r4", "r6", "r2", "r0", "r5"]  # ties keep file order
    assert stats.published == 7 and stats.rejected == 0 and stats.labels == 0
    assert rbus.inner.end_offsets("aet.messages") and sum(rbus.inner.end_offsets("aet.messages")) == 7


def test_mixed_offsets_and_dates_sort_as_instants(tmp_path: Path, rbus: RecordingBus) -> None:
    path = write_jsonl(
        tmp_path / "s.jsonl",
        [
            row("a", ts="2026-03-02T14:00:00+02:00"),  # 12:00 UTC
            row("b", ts="2026-03-02"),  # 00:00 UTC
            row("c", ts="2026-03-02T11:00:00"),  # naive: 11:00 UTC
        ],
    )
    replay(rbus, path)
    assert [m.id for m in messages(rbus)] == ["rb", "rc", "ra"]


def test_csv_input(tmp_path: Path, rbus: RecordingBus) -> None:
    path = tmp_path / "s.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["id", "text", "source", "ts", "label", "channel", "entities", "score"])
        w.writeheader()
        w.writerow(
            {
                "id": "c2",
                "text": "second, with a comma",
                "source": "chat",
                "ts": at(20),
                "label": "positive",
                "channel": "room",
                "entities": "$AAA, $BBB",
                "score": "0.5",
            }
        )
        w.writerow(
            {
                "id": "c1",
                "text": "first",
                "source": "news",
                "ts": at(10),
                "label": "negative",
                "channel": "",
                "entities": "",
                "score": "",
            }
        )
    stats = replay(rbus, path, label_fraction=1.0)
    out = messages(rbus)
    assert [m.id for m in out] == ["c1", "c2"]
    assert out[1].text == "second, with a comma" and out[1].source == "chat" and out[1].channel == "room"
    assert out[1].entities == ["$AAA", "$BBB"] and out[1].meta == {"score": "0.5"}
    assert out[0].entities == [] and out[0].meta == {} and out[0].channel == "replay"
    assert {(lab.message_id, lab.label) for lab in labels(rbus)} == {("c1", "negative"), ("c2", "positive")}
    assert stats.published == 2 and stats.labels == 2


def test_csv_bad_row_names_the_file_and_line(tmp_path: Path, rbus: RecordingBus) -> None:
    path = tmp_path / "s.csv"
    path.write_text("id,text,source,ts\nok,fine,news,2026-01-01\nbad,,news,2026-01-02\nts,x,news,never\n")
    stats = replay(rbus, path)
    assert [m.id for m in messages(rbus)] == ["ok"]
    reasons = sorted(d.reason for d in dead(rbus))
    assert reasons[0].startswith("s.csv line 3: ") and "text is empty" in reasons[0]
    assert reasons[1].startswith("s.csv line 4: ") and "unparsable timestamp" in reasons[1]
    assert stats.rejected == 2


def test_rows_without_ts_get_synthetic_increasing_times_after_the_timed_rows(tmp_path: Path) -> None:
    rbus = RecordingBus(MemoryBus())
    path = write_jsonl(tmp_path / "s.jsonl", [row("u1"), row("t1", 100), row("u2", ts=""), row("t2", 5), row("u3")])
    Replay(rbus, TopicSettings(), ReplaySettings(), synthetic_interval_s=2.0).run(path, progress=False)
    out = messages(rbus)
    assert [m.id for m in out] == ["rt2", "rt1", "ru1", "ru2", "ru3"]
    last_timed = T0 + timedelta(seconds=100)
    assert [m.ts for m in out[2:]] == [last_timed + timedelta(seconds=s) for s in (2, 4, 6)]
    assert all(m.meta.get("ts_synthetic") is True for m in out[2:])
    assert all("ts_synthetic" not in m.meta for m in out[:2])
    rbus.close()


def test_a_file_with_no_times_starts_at_the_synthetic_epoch(tmp_path: Path, rbus: RecordingBus) -> None:
    replay(rbus, write_jsonl(tmp_path / "s.jsonl", [row(1), row(2)]))
    out = messages(rbus)
    assert [m.ts for m in out] == [SYNTHETIC_START, SYNTHETIC_START + timedelta(seconds=1)]
    assert all(m.meta["ts_synthetic"] is True for m in out)


def test_corpus_fields_map_to_the_message(tmp_path: Path, rbus: RecordingBus) -> None:
    corpus_row = {
        "id": "semeval:train:1",
        "text": "out $NFLX -.35",
        "label": "negative",
        "source": "chat",
        "corpus": "semeval",
        "score": -0.494,
        "entity": "$NFLX",
        "ts": "2011-10-05T15:49:12+00:00",
        "ts_source": "created_at",
        "split": "train",
        "user_tag": None,
        "meta": {"kept": 1},
    }
    replay(rbus, write_jsonl(tmp_path / "s.jsonl", [corpus_row, row(2, entity="$X", entities=["$Y"], channel="c")]))
    m, other = messages(rbus)  # the timed corpus row first, the untimed one after it
    assert m.id == "semeval:train:1"
    assert m.entities == ["$NFLX"]
    assert m.channel == "semeval"  # no channel: the corpus name
    assert m.meta == {"kept": 1, "corpus": "semeval", "score": -0.494, "ts_source": "created_at", "split": "train"}
    assert "label" not in m.meta and "entity" not in m.meta and "user_tag" not in m.meta
    assert other.entities == ["$Y"] and other.channel == "c"  # explicit entities win over entity


# -- labels ------------------------------------------------------------------------


def test_labels_follow_their_message_by_the_event_time_delay(tmp_path: Path, rbus: RecordingBus) -> None:
    seconds = [70, 0, 45, 10, 130, 20, 50, 71, 200, 100]
    rows = [row(i, s, label=["negative", "neutral", "positive"][i % 3]) for i, s in enumerate(seconds)]
    replay(rbus, write_jsonl(tmp_path / "s.jsonl", rows), label_fraction=1.0, label_delay_s=30)
    sequence = [(t, json.loads(v)) for t, _, v in rbus.published if t in ("aet.messages", "aet.labels")]
    msg_ts = {m.id: m.ts for m in messages(rbus)}
    assert len(labels(rbus)) == len(rows)
    for pos, (topic, record) in enumerate(sequence):
        if topic != "aet.labels":
            continue
        lab = decode(LabelRecord, json.dumps(record))
        due = msg_ts[lab.message_id] + timedelta(seconds=30)
        assert lab.ts == due
        before = {r["id"] for t, r in sequence[:pos] if t == "aet.messages"}
        after = {r["id"] for t, r in sequence[pos + 1 :] if t == "aet.messages"}
        # every message earlier than the label's time was published before it, none at or after that time
        assert before == {i for i, ts in msg_ts.items() if ts < due}
        assert after == {i for i, ts in msg_ts.items() if ts >= due}
    expected = {f"r{i}": ["negative", "neutral", "positive"][i % 3] for i in range(len(rows))}
    assert {lab.message_id: lab.label for lab in labels(rbus)} == expected
    assert {lab.annotator for lab in labels(rbus)} == {"replay:s.jsonl"}
    assert {r.key for r in rbus.inner.read_all("aet.labels")} == set(expected)  # keyed by message id


def test_label_fraction_is_seeded_and_roughly_respected(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "s.jsonl", [row(i, i) for i in range(400)])

    def sampled(seed: int) -> set[str]:
        bus = RecordingBus(MemoryBus())
        stats = replay(bus, path, label_fraction=0.3, seed=seed)
        ids = {lab.message_id for lab in labels(bus)}
        assert stats.labels == len(ids) and stats.published == 400
        bus.close()
        return ids

    first, again, other = sampled(7), sampled(7), sampled(8)
    assert first == again  # deterministic for a seed
    assert 0.22 * 400 <= len(first) <= 0.38 * 400
    assert first != other


def test_label_fraction_zero_publishes_no_labels(tmp_path: Path, rbus: RecordingBus) -> None:
    stats = replay(rbus, write_jsonl(tmp_path / "s.jsonl", [row(i, i) for i in range(20)]), label_fraction=0.0)
    assert labels(rbus) == [] and stats.labels == 0 and stats.published == 20


def test_rows_without_label_get_none(tmp_path: Path, rbus: RecordingBus) -> None:
    rows = [row(1, 1, label=None), row(2, 2, label=""), row(3, 3)]
    stats = replay(rbus, write_jsonl(tmp_path / "s.jsonl", rows), label_fraction=1.0)
    assert [lab.message_id for lab in labels(rbus)] == ["r3"] and stats.labels == 1 and stats.rejected == 0


# -- bad lines ---------------------------------------------------------------------


def test_bad_lines_go_to_the_dlq_naming_file_and_line_and_the_rest_is_published(
    tmp_path: Path, rbus: RecordingBus
) -> None:
    lines: list[dict[str, Any] | str] = [
        row("ok1", 1),  # line 1
        "{this is not json",  # line 2
        "[1, 2, 3]",  # line 3
        row("empty", 2, text="   "),  # line 4
        row("badts", ts="the day after"),  # line 5
        row("badlabel", 3, label="bullish"),  # line 6
        row("badmeta", 4, meta="not an object"),  # line 7
        row("nosource", 5, source=None),  # line 8
        row("long", 6, text="x" * 201),  # line 9 (limit 200)
        row("ok2", 7),  # line 10
    ]
    path = write_jsonl(tmp_path / "stream.jsonl", lines)
    stats = replay(rbus, path)  # label_fraction 0: a bad label is still reported
    published = [m.id for m in messages(rbus)]
    assert published == ["rok1", "rbadlabel", "rok2"]  # the message of a bad label is still usable
    letters = {int(d.reason.split(" line ")[1].split(":")[0]): d for d in dead(rbus)}
    assert sorted(letters) == [2, 3, 4, 5, 6, 7, 8, 9]
    for line, d in letters.items():
        assert d.reason.startswith(f"stream.jsonl line {line}: "), d.reason
        assert d.stage == "replay"
    assert "not JSON" in letters[2].reason
    assert "not a JSON object" in letters[3].reason
    assert "text is empty" in letters[4].reason
    assert "unparsable timestamp" in letters[5].reason
    assert "unknown label 'bullish'" in letters[6].reason
    assert "meta" in letters[7].reason
    assert "source" in letters[8].reason
    assert "over the limit of 200" in letters[9].reason
    assert letters[2].raw == "{this is not json"
    assert json.loads(letters[6].raw)["id"] == "rbadlabel"
    assert stats.published == 3 and stats.rejected == 8 and sum(stats.reasons.values()) == 8


def test_unknown_labels_do_not_shift_the_seeded_sample(tmp_path: Path) -> None:
    good = [row(i, i) for i in range(60)]
    with_bad = [dict(r, label="bullish") if i % 5 == 0 else r for i, r in enumerate(good)]

    def sampled(rows: list[dict[str, Any]]) -> set[str]:
        bus = RecordingBus(MemoryBus())
        replay(bus, write_jsonl(tmp_path / "s.jsonl", rows), label_fraction=0.5, seed=3)
        bus.close()
        return {lab.message_id for lab in labels(bus)}

    clean, dirty = sampled(good), sampled(with_bad)
    assert dirty == {i for i in clean if int(i[1:]) % 5 != 0}


def test_non_utf8_line_is_kept_exactly(tmp_path: Path, rbus: RecordingBus) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(json.dumps(row(1, 1)).encode() + b"\n\xff\xfe{broken\n")
    replay(rbus, path)
    [d] = dead(rbus)
    assert d.reason.startswith("s.jsonl line 2: not JSON")
    assert d.raw is None and d.raw_base64 is not None


def test_missing_file_raises(tmp_path: Path, rbus: RecordingBus) -> None:
    with pytest.raises(FileNotFoundError, match="stream file not found"):
        replay(rbus, tmp_path / "absent.jsonl")


def test_limit_and_empty_file(tmp_path: Path, rbus: RecordingBus) -> None:
    stats = Replay(rbus, TopicSettings(), ReplaySettings()).run(
        write_jsonl(tmp_path / "s.jsonl", [row(i, 10 - i) for i in range(5)]), progress=False, limit=2
    )
    assert [m.id for m in messages(rbus)] == ["r4", "r3"] and stats.published == 2
    (tmp_path / "empty.jsonl").write_text("\n\n")
    assert replay(rbus, tmp_path / "empty.jsonl") == ReplayStats()


def test_custom_topic_names(tmp_path: Path, rbus: RecordingBus) -> None:
    topics = TopicSettings(messages="x.msgs", labels="x.labels", dlq="x.dlq")
    replay(rbus, write_jsonl(tmp_path / "s.jsonl", [row(1, 1), "nope"]), topics, label_fraction=1.0)
    assert {t for t, _, _ in rbus.published} == {"x.msgs", "x.labels", "x.dlq"}


# -- pacing ------------------------------------------------------------------------


class FakeClock:
    """A monotonic clock that only moves when the replay sleeps (or a test advances it)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    c = FakeClock()
    monkeypatch.setattr(replay_mod, "time", SimpleNamespace(monotonic=c.monotonic, sleep=c.sleep))
    return c


PACED = [row(i, s) for i, s in enumerate([0, 10, 30, 31, 31])]


def test_paced_replay_waits_event_time_divided_by_speed(tmp_path: Path, rbus: RecordingBus, clock: FakeClock) -> None:
    replay(rbus, write_jsonl(tmp_path / "s.jsonl", random.Random(1).sample(PACED, len(PACED))), speed=10)
    assert clock.sleeps == pytest.approx([1.0, 2.0, 0.1])
    assert clock.now == pytest.approx(1003.1)
    assert len(messages(rbus)) == 5


def test_pacing_subtracts_time_already_spent(tmp_path: Path, clock: FakeClock) -> None:
    class SlowBus(RecordingBus):
        def publish(self, topic: str, value: bytes, key: str | None = None) -> None:
            super().publish(topic, value, key)
            clock.now += 0.5  # each publish takes half a second of wall time

    bus = SlowBus(MemoryBus())
    replay(bus, write_jsonl(tmp_path / "s.jsonl", PACED), speed=10)
    # due at 0, 1.0, 3.0, 3.1, 3.1 s; publishing has already used part (or all) of each wait
    assert clock.sleeps == pytest.approx([0.5, 1.5])
    bus.close()


def test_speed_zero_never_sleeps(tmp_path: Path, rbus: RecordingBus, clock: FakeClock) -> None:
    replay(rbus, write_jsonl(tmp_path / "s.jsonl", PACED), speed=0)
    assert clock.sleeps == [] and len(messages(rbus)) == 5


def test_a_rate_limit_spaces_messages_and_combines_with_the_speed(
    tmp_path: Path, rbus: RecordingBus, clock: FakeClock
) -> None:
    replay(rbus, write_jsonl(tmp_path / "s.jsonl", PACED), rate=2)  # at most 2 a second: due at 0, .5, 1, 1.5, 2
    assert clock.sleeps == pytest.approx([0.5] * 4)
    clock.sleeps.clear()
    # The later of the two dues: event time / 20 is due at 0, .5, 1.5, 1.55, 1.55 s, the rate at 0, .5, 1, 1.5, 2.
    replay(rbus, write_jsonl(tmp_path / "t.jsonl", PACED), rate=2, speed=20)
    assert clock.sleeps == pytest.approx([0.5, 1.0, 0.05, 0.45])
