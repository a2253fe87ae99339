"""What the ingest sources keep in the database (tables ``ingest_*``, migration 0007).

Every write describes a batch the bus has already acknowledged (the sources emit,
then save), so a crash between the two re-emits that one batch, with the same ids,
and the result store keeps each message once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute

from aet.pipeline.ports import FeedState, FileState
from aet.pipeline.records import REASON_CHARS, utcnow
from aet.storage.db import Database, upsert
from aet.storage.tables import IngestFeedRow, IngestFileRow, IngestItemRow, IngestSeenEventRow

MAX_IN = 500  # keys per IN (...) query


def _chunks(keys: Sequence[str]) -> Iterable[Sequence[str]]:
    unique = list(dict.fromkeys(keys))
    for i in range(0, len(unique), MAX_IN):
        yield unique[i : i + MAX_IN]


class IngestStore:
    """SQL implementation of :class:`~aet.pipeline.ports.IngestState` (and so of ``SeenEvents``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- items

    def emitted(self, source: str, keys: Sequence[str]) -> set[str]:
        return self._present(IngestItemRow.source, IngestItemRow.item_key, source, keys)

    def _present(
        self,
        source_column: InstrumentedAttribute[str],
        key_column: InstrumentedAttribute[str],
        source: str,
        keys: Sequence[str],
    ) -> set[str]:
        """Which of ``keys`` the table of ``key_column`` holds for ``source``."""
        found: set[str] = set()
        with self.db.session() as s:
            for chunk in _chunks(keys):
                found.update(s.scalars(select(key_column).where(source_column == source, key_column.in_(chunk))))
        return found

    # -- feeds

    def feed(self, source: str, url: str) -> FeedState | None:
        with self.db.session() as s:
            row = s.get(IngestFeedRow, (source, url))
            if row is None:
                return None
            return FeedState(
                url=row.url,
                etag=row.etag,
                last_modified=row.last_modified,
                failures=row.failures,
                retry_at=row.retry_at,
                last_error=row.last_error,
            )

    def save_feed(self, source: str, state: FeedState, emitted: Sequence[str] = ()) -> None:
        now = utcnow()
        row: dict[str, Any] = {
            "source": source,
            "url": state.url,
            "etag": state.etag,
            "last_modified": state.last_modified,
            "failures": state.failures,
            "retry_at": state.retry_at,
            "last_error": state.last_error[:REASON_CHARS] if state.last_error else None,
            "updated_at": now,
        }
        with self.db.session() as s, s.begin():
            upsert(s, IngestFeedRow.__table__, [row], ["source", "url"])
            items = [{"source": source, "item_key": k, "emitted_at": now} for k in dict.fromkeys(emitted)]
            upsert(s, IngestItemRow.__table__, items, ["source", "item_key"], update=False)

    # -- files

    def file(self, source: str, path: str) -> FileState | None:
        with self.db.session() as s:
            row = s.get(IngestFileRow, (source, path))
            if row is None:
                return None
            return FileState(
                path=row.path, size=row.size, mtime=row.mtime, sha256=row.sha256, position=row.position, done=row.done
            )

    def save_file(self, source: str, state: FileState) -> None:
        row = {
            "source": source,
            "path": state.path,
            "size": state.size,
            "mtime": state.mtime,
            "sha256": state.sha256,
            "position": state.position,
            "done": state.done,
            "updated_at": utcnow(),
        }
        with self.db.session() as s, s.begin():
            upsert(s, IngestFileRow.__table__, [row], ["source", "path"])

    # -- webhook events

    def seen_events(self, source: str, event_ids: Sequence[str]) -> set[str]:
        return self._present(IngestSeenEventRow.source, IngestSeenEventRow.event_id, source, event_ids)

    def mark_seen(self, source: str, event_ids: Sequence[str]) -> set[str]:
        now = utcnow()
        new: set[str] = set()
        with self.db.session() as s, s.begin():
            insert = postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert
            for chunk in _chunks(event_ids):
                # INSERT ... ON CONFLICT DO NOTHING RETURNING: only the rows this call inserted come back, so of two
                # concurrent deliveries of one event exactly one is told it is new.
                stmt = (
                    insert(IngestSeenEventRow)
                    .values([{"source": source, "event_id": e, "seen_at": now} for e in chunk])
                    .on_conflict_do_nothing(index_elements=["source", "event_id"])
                    .returning(IngestSeenEventRow.event_id)
                )
                new.update(s.scalars(stmt))
        return new

    # -- retention

    def purge(self, before: datetime) -> int:
        with self.db.session() as s, s.begin():
            items = s.execute(delete(IngestItemRow).where(IngestItemRow.emitted_at < before))
            events = s.execute(delete(IngestSeenEventRow).where(IngestSeenEventRow.seen_at < before))
            return int(cast("CursorResult[Any]", items).rowcount) + int(cast("CursorResult[Any]", events).rowcount)
