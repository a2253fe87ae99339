"""``aet dlq``: list, show and re-publish stored dead letters; a truncated copy is refused with a reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aet.adapters.memory_bus import MemoryBus
from aet.pipeline.records import DeadLetter
from aet.storage.db import Database
from aet.storage.store import ResultStore


def invoke(home: Path, journal: Path, *args: str) -> Any:
    from typer.testing import CliRunner

    from aet.pipeline.cli.main import app

    return CliRunner().invoke(app, ["--home", str(home), "--bus-journal", str(journal), *args])


def seed(home: Path) -> ResultStore:
    db = Database(f"sqlite:///{(home / 'aet.db').resolve()}")
    store = ResultStore(db)
    store.write(
        dead_letters=[
            DeadLetter.of(b'{"id": "m1"}', stage="score", reason="ts: missing field", topic="aet.messages", key="k1"),
            DeadLetter.of(b"x" * 10_000, stage="score", reason="text too long", topic="aet.messages", partition=1),
            DeadLetter.of(b"row", stage="replay", reason="s.jsonl line 3: not JSON"),
        ]
    )
    return store


def test_list_filters_and_show(tmp_path: Path) -> None:
    home, journal = tmp_path / "home", tmp_path / "journal"
    home.mkdir()
    seed(home)
    listed = invoke(home, journal, "dlq", "list", "--stage", "score")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert sorted(r["reason"] for r in rows) == ["text too long", "ts: missing field"]
    assert "raw" not in rows[0]
    [missing] = json.loads(invoke(home, journal, "dlq", "list", "--reason", "missing").output)
    shown = json.loads(invoke(home, journal, "dlq", "show", missing["id"][:10]).output)
    assert shown["raw"] == '{"id": "m1"}' and shown["key"] == "k1" and shown["truncated"] is False
    assert invoke(home, journal, "dlq", "show", "nope").exit_code == 2


def test_replay_republishes_complete_copies_and_refuses_truncated_ones(tmp_path: Path) -> None:
    home, journal = tmp_path / "home", tmp_path / "journal"
    home.mkdir()
    store = seed(home)
    [truncated] = store.list_dead_letters(reason="too long")
    refused = invoke(home, journal, "dlq", "replay", truncated.id)
    assert refused.exit_code == 1 and "truncated" in refused.output
    result = invoke(home, journal, "dlq", "replay", "--all-matching", "--stage", "score")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert len(report["published"]) == 1 and list(report["refused"]) == [truncated.id]
    bus = MemoryBus(journal_dir=journal)
    try:
        [record] = bus.read_all("aet.messages")
    finally:
        bus.close()
    assert (record.value, record.key) == (b'{"id": "m1"}', "k1")
    assert [r.reason for r in store.list_dead_letters(replayed=True)] == ["ts: missing field"]
    again = json.loads(invoke(home, journal, "dlq", "replay", "--all-matching", "--stage", "score").output)
    assert again["published"] == []  # a replayed dead letter is not published twice
    no_topic = invoke(home, journal, "dlq", "replay", "--all-matching", "--stage", "replay")
    assert "pass --topic" in no_topic.output
