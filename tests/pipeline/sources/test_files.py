"""The file source on real files: JSONL/CSV in a watched directory, restarts, a kill mid-file, Slack and Discord
exports (fixtures written for this project in the layouts those tools export)."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from aet.pipeline.config import FilesSourceSettings
from aet.pipeline.ports import FileState
from aet.pipeline.records import DeadLetter, Message
from aet.pipeline.sources.emit import Emitter
from aet.pipeline.sources.files import FileSource
from aet.storage.ingest_store import IngestStore

NEWS = [
    {"id": "n-1", "text": "Acme beats estimates, $ACME up 4%", "ts": "2026-03-02T13:05:00Z", "source": "news"},
    {"id": "n-2", "text": "Globex cuts guidance", "ts": "2026-03-02T13:40:00Z", "channel": "wire", "desk": "eq"},
    {"id": "n-3", "text": "Initech names new CFO", "ts": "2026-03-02T14:00:00Z", "entities": ["$INTC"]},
]


def write_jsonl(path: Path, rows: list[Any], *, extra_lines: tuple[str, ...] = ()) -> Path:
    lines = [json.dumps(r) for r in rows] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def make_source(ingest_store: IngestStore, emitter: Emitter) -> Callable[..., FileSource]:
    def make(*paths: Path, store: Any = None, **overrides: Any) -> FileSource:
        settings = FilesSourceSettings(paths=list(paths), settle_s=0, **overrides)
        return FileSource(settings, store or ingest_store, emitter)

    return make


def test_directory_of_jsonl_and_csv_read_once_across_restarts(
    tmp_path: Path,
    make_source: Callable[..., FileSource],
    published: Callable[[], list[Message]],
    dead_letters: Callable[[], list[DeadLetter]],
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_jsonl(inbox / "a.jsonl", NEWS, extra_lines=("{not json", "[1, 2]", '{"id": "e", "text": ""}'))
    (inbox / "b.csv").write_text(
        'id,text,ts,source,entity\nc-1,"Hooli, Inc. misses",2026-03-02T15:00:00Z,chat,$HOOL\n'
        "c-2,Stocks drift,not-a-time,chat,\n",
        encoding="utf-8",
    )
    (inbox / "notes.txt").write_text("ignored: not a pattern of the source")
    source = make_source(inbox)
    source.scan_once()
    got = {m.id: m for m in published()}
    assert set(got) == {"files:n-1", "files:n-2", "files:n-3", "files:c-1"}
    assert got["files:n-1"].source == "news" and got["files:n-1"].entities == ["$ACME"]
    assert got["files:n-2"].source == "chat" and got["files:n-2"].meta == {"desk": "eq", "platform": "files"}
    assert got["files:n-3"].entities == ["$INTC"]
    assert got["files:c-1"].entities == ["$HOOL"] and got["files:c-1"].text == "Hooli, Inc. misses"
    reasons = sorted(d.reason for d in dead_letters())
    assert [r.split(":")[0] for r in reasons] == ["a.jsonl line 4", "a.jsonl line 5", "a.jsonl", "b.csv"]
    assert any("not JSON" in r for r in reasons) and any("not a JSON object" in r for r in reasons)
    assert any("text is empty" in r for r in reasons) and any("unparsable timestamp" in r for r in reasons)
    assert all(d.stage == "ingest:files" for d in dead_letters())

    restarted = make_source(inbox)  # a new process on the same database: nothing again
    restarted.scan_once()
    assert restarted.stats.published == 0 and restarted.stats.skipped == 2
    os.utime(inbox / "a.jsonl")  # touched, not changed: still nothing
    restarted.scan_once()
    write_jsonl(inbox / "c.jsonl", [{"id": "n-4", "text": "New file arrives", "ts": "2026-03-02T16:00:00Z"}])
    restarted.scan_once()
    assert sorted(m.id for m in published()) == sorted([*got, "files:n-4"])
    assert len(dead_letters()) == 4


def test_a_file_still_being_written_waits_until_it_settles(
    tmp_path: Path, ingest_store: IngestStore, emitter: Emitter, published: Callable[[], list[Message]]
) -> None:
    path = write_jsonl(tmp_path / "live.jsonl", NEWS[:1])
    now = [path.stat().st_mtime + 1.0]
    source = FileSource(
        FilesSourceSettings(paths=[tmp_path], settle_s=5), ingest_store, emitter, wall_clock=lambda: now[0]
    )
    source.scan_once()
    assert published() == []
    now[0] += 5
    source.scan_once()
    assert [m.id for m in published()] == ["files:n-1"]


class CrashAfterPublish:
    """The state store of a process killed between the bus's acknowledgement and the state save."""

    def __init__(self, store: IngestStore, crash_at: int) -> None:
        self.store = store
        self.crash_at = crash_at
        self.saves = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def save_file(self, source: str, state: FileState) -> None:
        self.saves += 1
        if self.saves == self.crash_at:
            raise KeyboardInterrupt("killed between publish and save")
        self.store.save_file(source, state)


def test_a_kill_mid_file_re_emits_one_batch_with_the_same_ids(
    tmp_path: Path,
    ingest_store: IngestStore,
    make_source: Callable[..., FileSource],
    published: Callable[[], list[Message]],
) -> None:
    rows = [{"id": f"r-{i:02}", "text": f"row {i}", "ts": "2026-03-02T12:00:00Z"} for i in range(10)]
    path = write_jsonl(tmp_path / "big.jsonl", rows)
    with pytest.raises(KeyboardInterrupt):
        make_source(path, store=CrashAfterPublish(ingest_store, crash_at=2), batch_size=4).scan_once()
    assert len(published()) == 8  # two batches out, the second not saved
    make_source(path, batch_size=4).scan_once()
    counts = Counter(m.id for m in published())
    assert set(counts) == {f"files:r-{i:02}" for i in range(10)}
    assert sorted(i for i, n in counts.items() if n > 1) == [f"files:r-{i:02}" for i in range(4, 8)]
    assert max(counts.values()) == 2
    make_source(path, batch_size=4).scan_once()
    assert sum(Counter(m.id for m in published()).values()) == 14


def test_a_growing_file_emits_only_its_new_lines(
    tmp_path: Path, make_source: Callable[..., FileSource], published: Callable[[], list[Message]]
) -> None:
    path = write_jsonl(tmp_path / "log.jsonl", NEWS[:1])
    make_source(path).scan_once()
    with open(path, "a", encoding="utf-8") as f:  # a log appended to
        f.write(json.dumps(NEWS[1]) + "\n" + json.dumps(NEWS[2]) + "\n")
    restarted = make_source(path)
    restarted.scan_once()
    assert restarted.stats.published == 2
    assert sorted(m.id for m in published()) == ["files:n-1", "files:n-2", "files:n-3"]


def test_a_rewritten_file_is_read_again_and_its_unchanged_rows_keep_their_ids(
    tmp_path: Path, make_source: Callable[..., FileSource], published: Callable[[], list[Message]]
) -> None:
    path = write_jsonl(tmp_path / "day.jsonl", NEWS[1:])
    make_source(path).scan_once()
    write_jsonl(path, NEWS)  # a row put in front: not an append
    make_source(path).scan_once()
    counts = Counter(m.id for m in published())
    assert counts == {"files:n-1": 1, "files:n-2": 2, "files:n-3": 2}


def slack_export(root: Path) -> Path:
    """A Slack workspace export: users.json, channels.json, a directory per channel with a file per day."""
    (root / "markets").mkdir(parents=True)
    (root / "random").mkdir()
    (root / "users.json").write_text(
        json.dumps(
            [
                {"id": "U024BE7LH", "name": "ana", "real_name": "Ana Trader", "profile": {"display_name": "ana.t"}},
                {"id": "U0G9QF9C6", "name": "bo", "real_name": "Bo Quant", "profile": {"display_name": ""}},
            ]
        )
    )
    (root / "channels.json").write_text(json.dumps([{"id": "C024BE91L", "name": "markets"}]))
    day = [
        {"type": "message", "subtype": "channel_join", "user": "U0G9QF9C6", "text": "<@U0G9QF9C6> has joined"},
        {
            "type": "message",
            "user": "U024BE7LH",
            "text": "<@U0G9QF9C6> $tsla gapping up, see <https://news.example.test/t|the wire> "
            "&amp; <#C024BE91L|markets>",
            "ts": "1772456400.000200",
            "client_msg_id": "5f2c",
            "reactions": [{"name": "rocket", "users": ["U0G9QF9C6"], "count": 1}],
        },
        {"type": "message", "user": "U0G9QF9C6", "text": "", "ts": "1772456460.000300", "files": [{"id": "F1"}]},
        {
            "type": "message",
            "user": "U0G9QF9C6",
            "text": "agreed, <!here> watch $NVDA too",
            "ts": "1772456520.000400",
            "thread_ts": "1772456400.000200",
        },
        {"type": "message", "user": "U0G9QF9C6", "text": "bad ts", "ts": "yesterday"},
    ]
    (root / "markets" / "2026-03-02.json").write_text(json.dumps(day))
    (root / "random" / "2026-03-01.json").write_text(
        json.dumps([{"type": "message", "user": "U024BE7LH", "text": "lunch?", "ts": "1772370000.000100"}])
    )
    return root


def test_slack_export_backfill(
    tmp_path: Path,
    make_source: Callable[..., FileSource],
    published: Callable[[], list[Message]],
    dead_letters: Callable[[], list[DeadLetter]],
) -> None:
    root = slack_export(tmp_path / "export")
    source = make_source(root, format="slack_export", name="slack-backfill")
    source.scan_once()
    got = {m.id: m for m in published()}
    assert set(got) == {
        "slack-backfill:markets/1772456400.000200",
        "slack-backfill:markets/1772456520.000400",
        "slack-backfill:random/1772370000.000100",
    }
    first = got["slack-backfill:markets/1772456400.000200"]
    assert first.text == "@Bo Quant $tsla gapping up, see the wire & #markets"
    assert first.entities == ["$TSLA"] and first.source == "chat" and first.channel == "markets"
    assert first.ts == datetime(2026, 3, 2, 13, 0, 0, 200, tzinfo=UTC)  # Slack ts: seconds.micros
    assert first.meta["platform"] == "slack" and first.meta["user_name"] == "ana.t"
    assert first.meta["reactions"] == [{"name": "rocket", "count": 1}]
    reply = got["slack-backfill:markets/1772456520.000400"]
    assert reply.text == "agreed, @here watch $NVDA too" and reply.meta["thread_ts"] == "1772456400.000200"
    [dead] = dead_letters()
    assert "markets/2026-03-02.json message 4" in dead.reason and "not a Slack timestamp" in dead.reason
    again = make_source(root, format="slack_export", name="slack-backfill")
    again.scan_once()
    assert again.stats.published == 0 and len(published()) == 3


def test_discord_chat_exporter_backfill(
    tmp_path: Path, make_source: Callable[..., FileSource], published: Callable[[], list[Message]]
) -> None:
    export = {
        "guild": {"id": "880000000000000001", "name": "Trading Floor", "iconUrl": "https://cdn.example.test/i.png"},
        "channel": {"id": "880000000000000002", "type": "GuildTextChat", "category": "Desks", "name": "options"},
        "dateRange": {"after": None, "before": None},
        "exportedAt": "2026-03-03T08:00:00+00:00",
        "messages": [
            {
                "id": "1213000000000000001",
                "type": "Default",
                "timestamp": "2026-03-02T14:31:00.123+00:00",
                "timestampEdited": None,
                "isPinned": False,
                "content": "**$AMD** calls printing",
                "author": {"id": "7001", "name": "vol_surfer", "nickname": "Vol", "isBot": False},
                "attachments": [],
                "embeds": [],
                "reactions": [{"emoji": {"id": "", "name": "🔥"}, "count": 3}],
                "mentions": [],
            },
            {
                "id": "1213000000000000002",
                "type": "ChannelPinnedMessage",
                "timestamp": "2026-03-02T14:32:00+00:00",
                "content": "Vol pinned a message.",
                "author": {"id": "7001", "name": "vol_surfer"},
            },
            {
                "id": "1213000000000000003",
                "type": "Reply",
                "timestamp": "2026-03-02T16:00:00+01:00",
                "content": "sold half",
                "author": {"id": "7002", "name": "theta_gang", "nickname": None, "isBot": False},
                "reference": {"messageId": "1213000000000000001", "channelId": "880000000000000002"},
            },
        ],
        "messageCount": 3,
    }
    (tmp_path / "Trading Floor - options [880000000000000002].json").write_text(json.dumps(export))
    make_source(tmp_path, format="discord_export", name="discord").scan_once()
    got = {m.id: m for m in published()}
    assert set(got) == {"discord:1213000000000000001", "discord:1213000000000000003"}
    calls = got["discord:1213000000000000001"]
    assert calls.entities == ["$AMD"] and calls.channel == "options" and calls.source == "chat"
    assert calls.meta["guild"] == "Trading Floor" and calls.meta["author"] == "Vol"
    assert calls.meta["reactions"] == [{"emoji": "🔥", "count": 3}]
    reply = got["discord:1213000000000000003"]
    assert reply.ts == datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    assert reply.meta["reply_to"] == "1213000000000000001" and reply.meta["author"] == "theta_gang"
