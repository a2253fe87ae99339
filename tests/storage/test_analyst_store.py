"""The analysts' page store on SQLite and PostgreSQL: evidence messages by id, acknowledgements."""

from __future__ import annotations

from datetime import UTC, datetime

from aet.pipeline.records import Alert
from aet.storage.analyst_store import AnalystStore
from aet.storage.db import Database
from aet.storage.store import ResultStore
from tests.storage.conftest import ScoredFactory


def test_evidence_by_id_with_link(database: Database, make_scored: ScoredFactory) -> None:
    linked = make_scored("ev-1", text="$ACME halts trading", meta={"url": "https://news.example/1", "platform": "rss"})
    ResultStore(database).write(scored=[linked, make_scored("ev-2", text="no link here")])
    found = AnalystStore(database).evidence(["ev-2", "ev-1", "missing", "ev-1"])
    assert set(found) == {"ev-1", "ev-2"}
    assert found["ev-1"]["text"] == "$ACME halts trading" and found["ev-1"]["url"] == "https://news.example/1"
    assert found["ev-1"]["platform"] == "rss" and found["ev-2"]["url"] is None


def test_acknowledgement_is_stored_and_the_latest_wins(database: Database) -> None:
    end = datetime(2026, 3, 3, 13, tzinfo=UTC)
    alert = Alert(
        id="al-ack",
        entity="$ACME",
        kind="negative_surge",
        window_start=datetime(2026, 3, 3, 12, tzinfo=UTC),
        window_end=end,
        counts={"total": 12, "negative": 10},
        shares={"negative": 10 / 12},
        baseline={"mean": 0.3},
        z=4.2,
        severity="warning",
        model_version="v0001",
    )
    ResultStore(database).write(alerts=[alert])
    notes = AnalystStore(database)
    assert notes.has_alert("al-ack") and not notes.has_alert("al-none")
    assert notes.acks(["al-ack"]) == {}
    notes.acknowledge("al-ack", "dana", "looking")
    notes.acknowledge("al-ack", "lee")
    (ack,) = notes.acks(["al-ack", "al-none"]).values()
    assert ack["by"] == "lee" and ack["note"] == ""
