"""The ingest state store on SQLite and PostgreSQL: items, feeds, files, webhook events, retention."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from aet.pipeline.ports import FeedState, FileState
from aet.storage.db import Database
from aet.storage.ingest_store import MAX_IN, IngestStore


def test_feed_state_and_emitted_items_saved_together(database: Database) -> None:
    store = IngestStore(database)
    url = "http://127.0.0.1:8080/feed.xml"
    assert store.feed("rss", url) is None
    assert store.emitted("rss", ["a", "b"]) == set()
    retry = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
    store.save_feed(
        "rss",
        FeedState(url, etag='W/"abc"', last_modified="Mon, 02 Mar 2026 13:00:00 GMT", failures=2, retry_at=retry),
        emitted=["a", "b", "a"],
    )
    assert store.feed("rss", url) == FeedState(
        url, etag='W/"abc"', last_modified="Mon, 02 Mar 2026 13:00:00 GMT", failures=2, retry_at=retry
    )
    assert store.emitted("rss", ["a", "b", "c"]) == {"a", "b"}
    assert store.emitted("other", ["a"]) == set()  # per source
    store.save_feed("rss", FeedState(url, last_error="x" * 5000), emitted=["b", "c"])  # b again: no error
    saved = store.feed("rss", url)
    assert saved is not None and saved.etag is None and saved.last_error == "x" * 2000
    assert store.emitted("rss", ["a", "b", "c"]) == {"a", "b", "c"}


def test_emitted_with_more_keys_than_one_query_holds(database: Database) -> None:
    store = IngestStore(database)
    keys = [f"k{i}" for i in range(MAX_IN * 2 + 7)]
    store.save_feed("rss", FeedState("u"), emitted=keys[::2])
    assert store.emitted("rss", keys) == set(keys[::2])


def test_file_state_round_trips_and_updates(database: Database) -> None:
    store = IngestStore(database)
    assert store.file("files", "/in/a.jsonl") is None
    state = FileState("/in/a.jsonl", size=1234, mtime=1767225600.5, sha256="f" * 64, position=600)
    store.save_file("files", state)
    assert store.file("files", "/in/a.jsonl") == state
    done = FileState("/in/a.jsonl", size=1234, mtime=1767225600.5, sha256="f" * 64, position=1234, done=True)
    store.save_file("files", done)
    assert store.file("files", "/in/a.jsonl") == done
    assert store.file("other", "/in/a.jsonl") is None


def test_mark_seen_reports_only_new_event_ids(database: Database) -> None:
    store = IngestStore(database)
    assert store.mark_seen("slack", ["Ev1", "Ev2", "Ev1"]) == {"Ev1", "Ev2"}
    assert store.mark_seen("slack", ["Ev2", "Ev3"]) == {"Ev3"}
    assert store.seen_events("slack", ["Ev1", "Ev4"]) == {"Ev1"}
    assert store.mark_seen("discord", ["Ev1"]) == {"Ev1"}


def test_concurrent_deliveries_of_one_event_are_new_once(database: Database) -> None:
    store = IngestStore(database)
    results: list[set[str]] = []
    start = threading.Barrier(4)

    def deliver() -> None:
        start.wait(timeout=10)
        results.append(store.mark_seen("slack", ["EvRace"]))

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(len(r) for r in results) == [0, 0, 0, 1]


def test_purge_forgets_old_items_and_events(database: Database) -> None:
    store = IngestStore(database)
    store.save_feed("rss", FeedState("u"), emitted=["old"])
    store.mark_seen("slack", ["Ev-old"])
    assert store.purge(datetime.now(UTC) - timedelta(days=1)) == 0
    assert store.purge(datetime.now(UTC) + timedelta(seconds=1)) == 2
    assert store.emitted("rss", ["old"]) == set() and store.seen_events("slack", ["Ev-old"]) == set()
    assert store.feed("rss", "u") is not None  # a feed's validators are not purged
