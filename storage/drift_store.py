"""What the drift monitor keeps in the database: its state, the delayed-label ledger, live quality, events.

A monitor batch is written in one transaction (events, dead letters, ledger rows,
quality rows and the detector state together), so a crash leaves either the
whole batch or none of it; the state carries the identity of the batch it
includes, so a redelivered batch is recognised and not counted twice.

Loading the state takes its fence (storage/fencing.py), and every batch checks
it in its transaction: of two monitors in one group, the one that started last
owns the state, and the other's writes are refused instead of overwriting it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select

from aet.pipeline.ports import MonitorBatch, StoredPrediction
from aet.pipeline.records import ControlEvent, DeadLetter, utcnow
from aet.storage import fencing
from aet.storage.db import Database, upsert
from aet.storage.store import dead_letter_row
from aet.storage.tables import (
    ControlEventRow,
    DeadLetterRow,
    DetectorStateRow,
    LabelJoinRow,
    LiveQualityRow,
    ScoredMessageRow,
)

MAX_IN = 500  # ids per IN (...) query


def _chunks(ids: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(ids), MAX_IN):
        yield ids[i : i + MAX_IN]


class MonitorStore:
    """The drift monitor's reads and writes (its :class:`~aet.pipeline.ports.MonitorLedger`), and ``aet drift``'s."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.owner = fencing.owner_id()
        self._epochs: dict[str, int] = {}  # monitor name -> the fencing epoch this store holds

    def write_batch(
        self,
        name: str,
        batch: MonitorBatch,
        *,
        events: Sequence[ControlEvent] = (),
        dead_letters: Sequence[DeadLetter] = (),
    ) -> None:
        """Everything one monitor batch produced, in one transaction (refused if another instance took the state)."""
        now = utcnow()
        with self.db.session() as s, s.begin():
            if name not in self._epochs:  # writing without having loaded: take the state now
                self._epochs[name] = fencing.take(s, f"monitor:{name}", self.owner)
            fencing.check(s, f"monitor:{name}", self._epochs[name], self.owner)
            upsert(s, DeadLetterRow.__table__, [dead_letter_row(d) for d in dead_letters], ["id"], update=False)
            upsert(
                s,
                ControlEventRow.__table__,
                [
                    {"id": e.id, "kind": e.kind, "ts": e.ts, "model_version": e.model_version, "payload": e.payload}
                    for e in events
                ],
                ["id"],
            )
            if batch.drop_joins:
                for chunk in _chunks(batch.drop_joins):
                    s.execute(
                        delete(LabelJoinRow).where(LabelJoinRow.message_id.in_(chunk), LabelJoinRow.status == "held")
                    )
            upsert(s, LabelJoinRow.__table__, [{**j, "updated_at": now} for j in batch.joins], ["message_id"])
            upsert(
                s,
                LiveQualityRow.__table__,
                [{**q, "updated_at": now} for q in batch.quality],
                ["source", "model_version"],
            )
            if batch.state is not None:
                upsert(
                    s, DetectorStateRow.__table__, [{"name": name, "state": batch.state, "updated_at": now}], ["name"]
                )

    def load_state(self, name: str) -> dict[str, Any] | None:
        """The monitor's state, loaded to be written by this store from now on: takes the state's fence."""
        with self.db.session() as s, s.begin():
            self._epochs[name] = fencing.take(s, f"monitor:{name}", self.owner)
            row = s.get(DetectorStateRow, name)
            return dict(row.state) if row is not None else None

    def held_labels(self) -> list[LabelJoinRow]:
        """Labels waiting for their message, oldest first."""
        with self.db.session() as s:
            return list(
                s.scalars(
                    select(LabelJoinRow)
                    .where(LabelJoinRow.status == "held")
                    .order_by(LabelJoinRow.held_at, LabelJoinRow.message_id)
                )
            )

    def joined(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` already have a joined label."""
        out: set[str] = set()
        with self.db.session() as s:
            for chunk in _chunks(list(ids)):
                out.update(
                    s.scalars(
                        select(LabelJoinRow.message_id).where(
                            LabelJoinRow.message_id.in_(chunk), LabelJoinRow.status == "joined"
                        )
                    )
                )
        return out

    def predictions(self, ids: Sequence[str]) -> dict[str, StoredPrediction]:
        """Stored predictions of ``ids`` (those the scorer has written)."""
        out: dict[str, StoredPrediction] = {}
        with self.db.session() as s:
            for chunk in _chunks(list(ids)):
                rows = s.execute(
                    select(
                        ScoredMessageRow.message_id,
                        ScoredMessageRow.source,
                        ScoredMessageRow.label,
                        ScoredMessageRow.model_version,
                        ScoredMessageRow.ts,
                    ).where(ScoredMessageRow.message_id.in_(chunk))
                )
                for r in rows:
                    out[r.message_id] = StoredPrediction(r.message_id, r.source, r.label, r.model_version, r.ts)
        return out

    def latest_control_ts(self, kinds: Sequence[str]) -> datetime | None:
        """Time of the newest control event of these kinds (e.g. the last retrain request or promotion)."""
        with self.db.session() as s:
            return s.scalar(select(func.max(ControlEventRow.ts)).where(ControlEventRow.kind.in_(list(kinds))))

    def count_control(self, kind: str, **payload: str) -> int:
        """Control events of ``kind`` whose payload has these values (e.g. rejections of one drift episode)."""
        with self.db.session() as s:
            rows = s.scalars(select(ControlEventRow.payload).where(ControlEventRow.kind == kind)).all()
        return sum(1 for p in rows if all((p or {}).get(k) == v for k, v in payload.items()))

    def events(
        self,
        kinds: Sequence[str] = ("drift", "retrain_request"),
        *,
        limit: int | None = None,
        source: str | None = None,
    ) -> list[ControlEventRow]:
        """Control events of ``kinds``, newest first (``source`` filters on the payload's source)."""
        with self.db.session() as s:
            q = (
                select(ControlEventRow)
                .where(ControlEventRow.kind.in_(list(kinds)))
                .order_by(ControlEventRow.ts.desc(), ControlEventRow.id)
            )
            rows = list(s.scalars(q))
        if source is not None:
            rows = [r for r in rows if (r.payload or {}).get("source") == source]
        return rows[:limit] if limit is not None else rows

    def quality(self) -> list[LiveQualityRow]:
        with self.db.session() as s:
            return list(s.scalars(select(LiveQualityRow).order_by(LiveQualityRow.source, LiveQualityRow.model_version)))

    def label_joins(self) -> list[LabelJoinRow]:
        with self.db.session() as s:
            return list(s.scalars(select(LabelJoinRow).order_by(LabelJoinRow.message_id)))
