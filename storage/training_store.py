"""What the trainer reads and writes: labeled windows, the rehearsal reservoir, its run log, and lineage lookups.

The sampling decisions of the reservoir are made in pipeline/learning/rehearsal.py;
this module only keeps its rows, inside one transaction per batch of
additions so that concurrent writers cannot lose an update.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select

from aet.pipeline.ports import SlotChooser
from aet.pipeline.records import utcnow
from aet.storage.db import Database
from aet.storage.tables import (
    AlertRow,
    ControlEventRow,
    LabelRow,
    ReservoirExampleRow,
    ReservoirStratumRow,
    ScoredMessageRow,
    TrainingRunRow,
)


def _row_dict(row: Any) -> dict[str, Any]:
    return {c.name: getattr(row, c.key) for c in row.__table__.columns}


class TrainingStore:
    """The trainer's tables in one database: a :class:`~aet.pipeline.ports.TrainerStore` and
    :class:`~aet.pipeline.ports.ReservoirStore`, plus the lineage lookups of ``aet models show``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------ labeled data

    def labeled_examples(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        source: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Labeled messages (a label joined to its stored message text) with ``start <= ts < end``, oldest first.

        With ``limit``, the most recent ``limit`` of them.
        """
        q = select(
            ScoredMessageRow.message_id,
            ScoredMessageRow.text,
            ScoredMessageRow.source,
            ScoredMessageRow.ts,
            LabelRow.label,
        ).join(LabelRow, LabelRow.message_id == ScoredMessageRow.message_id)
        conditions = []
        if start is not None:
            conditions.append(ScoredMessageRow.ts >= start)
        if end is not None:
            conditions.append(ScoredMessageRow.ts < end)
        if source is not None:
            conditions.append(ScoredMessageRow.source == source)
        if conditions:
            q = q.where(and_(*conditions))
        q = q.order_by(ScoredMessageRow.ts.desc(), ScoredMessageRow.message_id.desc())
        if limit is not None:
            q = q.limit(limit)
        with self.db.session() as s:
            rows = [dict(r._mapping) for r in s.execute(q)]
        return rows[::-1]

    # ------------------------------------------------------------------ reservoir

    def reservoir_add(self, items: Sequence[dict[str, Any]], capacity: int, choose: SlotChooser) -> dict[str, int]:
        """Offer ``items`` (``id``, ``text``, ``label``, ``source``, optional ``ts``) to the reservoir, in order.

        An item whose id is already held in its stratum is skipped and not
        counted. Returns counts of ``kept`` (into a free slot), ``replaced``,
        ``dropped`` and ``duplicate`` items.
        """
        stats = {"kept": 0, "replaced": 0, "dropped": 0, "duplicate": 0}
        now = utcnow()
        with self.db.session() as s, s.begin():
            strata: dict[tuple[str, str], ReservoirStratumRow] = {}
            held: dict[tuple[str, str], dict[int, ReservoirExampleRow]] = {}
            for item in items:
                key = (item["source"], item["label"])
                if key not in strata:
                    row = s.get(ReservoirStratumRow, key, with_for_update=True)
                    if row is None:
                        row = ReservoirStratumRow(source=key[0], label=key[1], seen=0)
                        s.add(row)
                    strata[key] = row
                    held[key] = {
                        r.slot: r
                        for r in s.scalars(
                            select(ReservoirExampleRow).where(
                                ReservoirExampleRow.source == key[0], ReservoirExampleRow.label == key[1]
                            )
                        )
                    }
                slots = held[key]
                if any(r.example_id == item["id"] for r in slots.values()):
                    stats["duplicate"] += 1
                    continue
                stratum = strata[key]
                stratum.seen += 1
                slot = choose(key[0], key[1], stratum.seen, capacity)
                if slot is None:
                    stats["dropped"] += 1
                    continue
                if not 0 <= slot < capacity:
                    raise ValueError(f"reservoir slot {slot} outside 0..{capacity - 1}")
                existing = slots.get(slot)
                if existing is None:
                    existing = ReservoirExampleRow(source=key[0], label=key[1], slot=slot)
                    s.add(existing)
                    slots[slot] = existing
                    stats["kept"] += 1
                else:
                    stats["replaced"] += 1
                existing.example_id = item["id"]
                existing.text = item["text"]
                existing.ts = item.get("ts")
                existing.added_at = now
        return stats

    def reservoir_rows(self, source: str | None = None) -> list[dict[str, Any]]:
        """Every reservoir slot (source, label, slot, example_id, text, ts), in slot order."""
        q = select(ReservoirExampleRow).order_by(
            ReservoirExampleRow.source, ReservoirExampleRow.label, ReservoirExampleRow.slot
        )
        if source is not None:
            q = q.where(ReservoirExampleRow.source == source)
        with self.db.session() as s:
            return [_row_dict(r) for r in s.scalars(q)]

    def reservoir_seen(self) -> dict[tuple[str, str], int]:
        with self.db.session() as s:
            return {(r.source, r.label): r.seen for r in s.scalars(select(ReservoirStratumRow))}

    # ------------------------------------------------------------------ training runs

    def begin_run(self, request_id: str, request: dict[str, Any]) -> dict[str, Any]:
        """Count one more attempt at ``request_id`` (creating its row); returns the row after the update."""
        now = utcnow()
        with self.db.session() as s, s.begin():
            row = s.get(TrainingRunRow, request_id, with_for_update=True)
            if row is None:
                row = TrainingRunRow(
                    request_id=request_id,
                    status="running",
                    attempts=0,
                    request=request,
                    result={},
                    started_at=now,
                    updated_at=now,
                )
                s.add(row)
            if row.status == "running":
                row.attempts += 1
                row.updated_at = now
            s.flush()
            return _row_dict(row)

    def get_run(self, request_id: str) -> dict[str, Any] | None:
        with self.db.session() as s:
            row = s.get(TrainingRunRow, request_id)
            return _row_dict(row) if row is not None else None

    def run_for_version(self, version: str) -> dict[str, Any] | None:
        with self.db.session() as s:
            row = s.scalars(select(TrainingRunRow).where(TrainingRunRow.version == version)).first()
            return _row_dict(row) if row is not None else None

    def note_failure(self, request_id: str, error: str) -> None:
        with self.db.session() as s, s.begin():
            row = s.get(TrainingRunRow, request_id)
            if row is not None:
                row.last_error = error[:4000]
                row.updated_at = utcnow()

    def forget_attempt(self, request_id: str) -> None:
        """Do not count the current attempt (it was stopped on purpose, not a failure)."""
        with self.db.session() as s, s.begin():
            row = s.get(TrainingRunRow, request_id)
            if row is not None and row.attempts > 0:
                row.attempts -= 1
                row.updated_at = utcnow()

    def finish_run(
        self, request_id: str, *, status: str, version: str | None, result: dict[str, Any], error: str | None = None
    ) -> None:
        with self.db.session() as s, s.begin():
            row = s.get(TrainingRunRow, request_id)
            if row is None:
                raise KeyError(f"no training run {request_id!r}")
            row.status, row.version, row.result = status, version, result
            if error is not None:
                row.last_error = error[:4000]
            row.updated_at = utcnow()

    # ------------------------------------------------------------------ lineage

    def control_event(self, event_id: str) -> dict[str, Any] | None:
        with self.db.session() as s:
            row = s.get(ControlEventRow, event_id)
            return _row_dict(row) if row is not None else None

    def events_for_model(self, version: str) -> list[dict[str, Any]]:
        """Control events that name ``version`` (training result, promotion, rollback, rejection), oldest first."""
        with self.db.session() as s:
            rows = s.scalars(
                select(ControlEventRow).where(ControlEventRow.model_version == version).order_by(ControlEventRow.ts)
            )
            return [_row_dict(r) for r in rows]

    def alerts_for_model(self, version: str, limit: int = 20) -> tuple[int, list[dict[str, Any]]]:
        """How many alerts ``version`` produced, and the latest ``limit`` of them."""
        with self.db.session() as s:
            n = s.scalar(select(func.count()).select_from(AlertRow).where(AlertRow.model_version == version)) or 0
            rows = s.scalars(
                select(AlertRow)
                .where(AlertRow.model_version == version)
                .order_by(AlertRow.window_end.desc())
                .limit(limit)
            )
            return n, [
                {
                    "id": r.id,
                    "entity": r.entity,
                    "kind": r.kind,
                    "severity": r.severity,
                    "z": r.z,
                    "window_start": r.window_start,
                    "window_end": r.window_end,
                }
                for r in rows
            ]

    def scored_by_model(self, version: str) -> int:
        with self.db.session() as s:
            return (
                s.scalar(
                    select(func.count()).select_from(ScoredMessageRow).where(ScoredMessageRow.model_version == version)
                )
                or 0
            )
