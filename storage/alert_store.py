"""Reads and writes of the alert side: engine state, the sinks' outbox, and the analysts' queries.

- the alert engine's state (:class:`aet.pipeline.ports.AlertState`): entity baselines,
  per-entity sentiment buckets, and recent alerts to restore cooldowns after a restart;
- the outbox of the alert sinks (``alert_deliveries``): the alerts table itself is
  the durable queue; a sink enqueues the alerts it has no row for, claims due
  rows with a short lease (renewed row by row, compare-and-set on the lease),
  records delivery or the error and next attempt, marks rows that waited too long
  ``failed`` and purges finished rows after the retention;
- queries for ``aet alerts`` and ``aet serve``: alerts (newest first, or since a
  time), an entity's sentiment over time, the busiest entities, model versions and
  control events (drift, promotion, rollback).

Alerts themselves are written by :class:`aet.storage.store.ResultStore` with the batch
that raised them. Loading the engine's state takes its fence (storage/fencing.py) and
saving it checks the fence: of two alert engines, the one that started last owns the
state, and the other's saves are refused instead of overwriting it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, and_, delete, desc, func, or_, select, update

from aet.pipeline.ports import BaselineSnapshot, BucketSnapshot, Delivery
from aet.pipeline.records import Alert, utcnow
from aet.storage import fencing
from aet.storage.db import Database, upsert
from aet.storage.tables import (
    AlertDeliveryRow,
    AlertRow,
    ControlEventRow,
    EntityBaselineRow,
    EntitySentimentRow,
    ModelRow,
)

FINISHED = ("delivered", "rejected", "failed")  # outbox rows no dispatcher will touch again


def _rowcount(result: Any) -> int:
    return cast("CursorResult[Any]", result).rowcount  # an UPDATE's or DELETE's result counts its rows


def _alert(row: AlertRow) -> Alert:
    return Alert.model_validate(row.payload)


class AlertStore:
    """The alert side of one database."""

    FENCE = "alert-engine"

    def __init__(self, db: Database) -> None:
        self.db = db
        self.owner = fencing.owner_id()
        self._epoch: int | None = None  # the fencing epoch of the engine state this store holds

    # -- engine state -------------------------------------------------------------

    def load_baselines(self) -> list[BaselineSnapshot]:
        """The entity baselines, loaded to be saved by this store from now on: takes the engine state's fence."""
        with self.db.session() as s, s.begin():
            self._epoch = fencing.take(s, self.FENCE, self.owner)
            return [
                BaselineSnapshot(r.entity, r.kind, r.mean, r.var, r.noise, r.windows, r.through)
                for r in s.scalars(select(EntityBaselineRow))
            ]

    def recent_alerts(self, within_s: float) -> list[Alert]:
        """Alerts whose window ended within ``within_s`` (event time) of the newest alert's."""
        with self.db.session() as s:
            newest = s.scalar(select(func.max(AlertRow.window_end)))
            if newest is None:
                return []
            rows = s.scalars(select(AlertRow).where(AlertRow.window_end >= newest - timedelta(seconds=within_s)))
            return [_alert(r) for r in rows]

    def save_state(self, baselines: Sequence[BaselineSnapshot], buckets: Sequence[BucketSnapshot]) -> None:
        """Upsert changed baselines and buckets in one transaction (the last snapshot of a key wins)."""
        now = utcnow()
        base_rows = {
            (b.entity, b.kind): {
                "entity": b.entity,
                "kind": b.kind,
                "mean": b.mean,
                "var": b.var,
                "noise": b.noise,
                "windows": b.windows,
                "through": b.through,
                "updated_at": now,
            }
            for b in baselines
        }
        bucket_rows = {
            (b.entity, b.start): {
                "entity": b.entity,
                "bucket_start": b.start,
                "bucket_end": b.end,
                "n": b.n,
                "negative": b.negative,
                "neutral": b.neutral,
                "positive": b.positive,
                "score_sum": b.score_sum,
                "updated_at": now,
            }
            for b in buckets
        }
        with self.db.session() as s, s.begin():
            if self._epoch is None:  # saving without having loaded: take the state now
                self._epoch = fencing.take(s, self.FENCE, self.owner)
            fencing.check(s, self.FENCE, self._epoch, self.owner)
            upsert(s, EntityBaselineRow.__table__, list(base_rows.values()), ["entity", "kind"])
            rows = list(bucket_rows.values())
            for i in range(0, len(rows), 2000):
                upsert(s, EntitySentimentRow.__table__, rows[i : i + 2000], ["entity", "bucket_start"])

    # -- the sinks' outbox ----------------------------------------------------------

    def enqueue_missing(self, sink: str, since: datetime, limit: int = 500) -> int:
        """Give ``sink`` a pending row for each alert raised since ``since`` that it has none for."""
        with self.db.session() as s, s.begin():
            ids = list(
                s.scalars(
                    select(AlertRow.id)
                    .outerjoin(
                        AlertDeliveryRow, and_(AlertDeliveryRow.alert_id == AlertRow.id, AlertDeliveryRow.sink == sink)
                    )
                    .where(AlertDeliveryRow.alert_id.is_(None), AlertRow.raised_at >= since)
                    .order_by(AlertRow.raised_at)
                    .limit(limit)
                )
            )
            now = utcnow()
            upsert(
                s,
                AlertDeliveryRow.__table__,
                [
                    {
                        "alert_id": i,
                        "sink": sink,
                        "status": "pending",
                        "attempts": 0,
                        "next_attempt_at": now,
                        "claimed_until": None,
                        "last_error": None,
                        "created_at": now,
                        "delivered_at": None,
                    }
                    for i in ids
                ],
                ["alert_id", "sink"],
                update=False,
            )
            return len(ids)

    def claim_due(self, sink: str, *, limit: int = 20, lease_s: float = 60.0) -> list[Delivery]:
        """Claim up to ``limit`` pending deliveries that are due, oldest first, for ``lease_s`` seconds."""
        now = utcnow()
        claimable = and_(
            AlertDeliveryRow.sink == sink,
            AlertDeliveryRow.status == "pending",
            AlertDeliveryRow.next_attempt_at <= now,
            or_(AlertDeliveryRow.claimed_until.is_(None), AlertDeliveryRow.claimed_until < now),
        )
        out: list[Delivery] = []
        lease = now + timedelta(seconds=lease_s)
        with self.db.session() as s, s.begin():
            due = s.execute(
                select(AlertDeliveryRow.alert_id, AlertDeliveryRow.attempts, AlertRow)
                .join(AlertRow, AlertRow.id == AlertDeliveryRow.alert_id)
                .where(claimable)
                .order_by(AlertDeliveryRow.next_attempt_at, AlertRow.raised_at)
                .limit(limit)
            ).all()
            for alert_id, attempts, row in due:
                claim = s.execute(
                    update(AlertDeliveryRow)
                    .where(AlertDeliveryRow.alert_id == alert_id, claimable)
                    .values(claimed_until=lease)
                )
                if _rowcount(claim) == 1:
                    out.append(Delivery(_alert(row), sink, attempts, lease))
        return out

    def renew(self, delivery: Delivery, *, lease_s: float) -> Delivery | None:
        """Extend ``delivery``'s lease if it still holds it (its ``claimed_until`` unchanged and not yet past)."""
        now = utcnow()
        if delivery.lease is None or delivery.lease <= now:
            return None
        lease = now + timedelta(seconds=lease_s)
        with self.db.session() as s, s.begin():
            renewed = s.execute(
                update(AlertDeliveryRow)
                .where(
                    AlertDeliveryRow.alert_id == delivery.alert.id,
                    AlertDeliveryRow.sink == delivery.sink,
                    AlertDeliveryRow.status == "pending",
                    AlertDeliveryRow.claimed_until == delivery.lease,
                )
                .values(claimed_until=lease)
            )
            return replace(delivery, lease=lease) if _rowcount(renewed) == 1 else None

    def mark_delivered(self, alert_id: str, sink: str, attempts: int) -> None:
        with self.db.session() as s, s.begin():
            s.execute(
                update(AlertDeliveryRow)
                .where(AlertDeliveryRow.alert_id == alert_id, AlertDeliveryRow.sink == sink)
                .values(
                    status="delivered", attempts=attempts, delivered_at=utcnow(), claimed_until=None, last_error=None
                )
            )

    def mark_failed(
        self,
        alert_id: str,
        sink: str,
        attempts: int,
        error: str,
        *,
        retry_at: datetime | None,
        status: str = "rejected",
    ) -> None:
        """Record a failed attempt: retry at ``retry_at``, or give up with ``status`` (``rejected`` or ``failed``)."""
        values: dict[str, Any] = {"attempts": attempts, "last_error": error[:2000], "claimed_until": None}
        if retry_at is None:
            values["status"] = status
        else:
            values["next_attempt_at"] = retry_at
        with self.db.session() as s, s.begin():
            s.execute(
                update(AlertDeliveryRow)
                .where(AlertDeliveryRow.alert_id == alert_id, AlertDeliveryRow.sink == sink)
                .values(**values)
            )

    def expire(self, sink: str, created_before: datetime, reason: str) -> int:
        """Give up on pending rows of ``sink`` created before ``created_before`` (status ``failed``)."""
        with self.db.session() as s, s.begin():
            return _rowcount(
                s.execute(
                    update(AlertDeliveryRow)
                    .where(
                        AlertDeliveryRow.sink == sink,
                        AlertDeliveryRow.status == "pending",
                        AlertDeliveryRow.created_at < created_before,
                    )
                    .values(status="failed", last_error=reason[:2000], claimed_until=None)
                )
            )

    def purge(self, sink: str, created_before: datetime) -> int:
        """Delete the finished rows of ``sink`` created before ``created_before`` (the outbox's retention)."""
        with self.db.session() as s, s.begin():
            return _rowcount(
                s.execute(
                    delete(AlertDeliveryRow).where(
                        AlertDeliveryRow.sink == sink,
                        AlertDeliveryRow.status.in_(FINISHED),
                        AlertDeliveryRow.created_at < created_before,
                    )
                )
            )

    def deliveries(self, sink: str | None = None) -> list[AlertDeliveryRow]:
        with self.db.session() as s:
            q = select(AlertDeliveryRow).order_by(AlertDeliveryRow.created_at)
            if sink is not None:
                q = q.where(AlertDeliveryRow.sink == sink)
            return list(s.scalars(q))

    # -- the analysts' queries ------------------------------------------------------

    def list_alerts(
        self, *, limit: int = 50, entity: str | None = None, severity: str | None = None, since: datetime | None = None
    ) -> list[Alert]:
        """Alerts, newest raised first."""
        q = select(AlertRow).order_by(desc(AlertRow.raised_at), AlertRow.id).limit(limit)
        if entity:
            q = q.where(AlertRow.entity == entity)
        if severity:
            q = q.where(AlertRow.severity == severity)
        if since is not None:
            q = q.where(AlertRow.raised_at >= since)
        with self.db.session() as s:
            return [_alert(r) for r in s.scalars(q)]

    def alerts_raised_since(self, since: datetime, limit: int = 500) -> list[Alert]:
        """Alerts raised at or after ``since``, oldest first (for feeds that follow the table)."""
        with self.db.session() as s:
            rows = s.scalars(
                select(AlertRow)
                .where(AlertRow.raised_at >= since)
                .order_by(AlertRow.raised_at, AlertRow.id)
                .limit(limit)
            )
            return [_alert(r) for r in rows]

    def count_alerts(self) -> int:
        with self.db.session() as s:
            return s.scalar(select(func.count()).select_from(AlertRow)) or 0

    def sentiment(self, entity: str, limit: int = 2000) -> list[dict[str, Any]]:
        """The entity's buckets, oldest first: counts, shares and mean score."""
        with self.db.session() as s:
            rows = list(
                s.scalars(
                    select(EntitySentimentRow)
                    .where(EntitySentimentRow.entity == entity)
                    .order_by(desc(EntitySentimentRow.bucket_start))
                    .limit(limit)
                )
            )
        return [
            {
                "start": r.bucket_start.isoformat(),
                "end": r.bucket_end.isoformat(),
                "n": r.n,
                "negative": r.negative,
                "neutral": r.neutral,
                "positive": r.positive,
                "negative_share": r.negative / r.n if r.n else 0.0,
                "positive_share": r.positive / r.n if r.n else 0.0,
                "mean_score": r.score_sum / r.n if r.n else 0.0,
            }
            for r in reversed(rows)
        ]

    def top_entities(self, limit: int = 20) -> list[dict[str, Any]]:
        """Entities with alerts first (most recent first), then the busiest by message count."""
        with self.db.session() as s:
            alerted = s.execute(
                select(AlertRow.entity, func.count(), func.max(AlertRow.raised_at))
                .group_by(AlertRow.entity)
                .order_by(desc(func.max(AlertRow.raised_at)))
            ).all()
            busy = s.execute(
                select(EntitySentimentRow.entity, func.sum(EntitySentimentRow.n))
                .group_by(EntitySentimentRow.entity)
                .order_by(desc(func.sum(EntitySentimentRow.n)))
                .limit(limit)
            ).all()
        counts = dict(busy)
        out: dict[str, dict[str, Any]] = {}
        for entity, n_alerts, _ in alerted:
            out[entity] = {"entity": entity, "alerts": n_alerts, "messages": int(counts.get(entity) or 0)}
        for entity, n in busy:
            out.setdefault(entity, {"entity": entity, "alerts": 0, "messages": int(n or 0)})
        return list(out.values())[:limit]

    def model_history(self) -> dict[str, Any]:
        """Model versions (oldest first) and the control events that explain them (drift, promotions, ...)."""
        with self.db.session() as s:
            models = list(s.scalars(select(ModelRow).order_by(ModelRow.created_at)))
            events = list(s.scalars(select(ControlEventRow).order_by(ControlEventRow.ts).limit(1000)))
        return {
            "models": [
                {
                    "version": m.version,
                    "status": m.status,
                    "parent": m.parent,
                    "created_at": m.created_at.isoformat(),
                    "promoted_at": m.promoted_at.isoformat() if m.promoted_at else None,
                    "macro_f1": (m.metrics.get("validation") or {}).get("macro_f1"),
                }
                for m in models
            ],
            "events": [
                {
                    "id": e.id,
                    "kind": e.kind,
                    "ts": e.ts.isoformat(),
                    "model_version": e.model_version,
                    "detector": (e.payload or {}).get("detector"),
                    "signal": (e.payload or {}).get("signal"),
                }
                for e in events
            ],
        }
