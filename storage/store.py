"""Writes and reads of the pipeline's results: scored messages, labels, events, alerts, dead letters.

Every write is an upsert on the record's natural key, so replaying a batch
after a crash leaves one row per record.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import case, func, select

from aet.pipeline.records import Alert, ControlEvent, DeadLetter, LabelRecord, ScoredMessage, utcnow
from aet.storage.db import Database, upsert
from aet.storage.tables import AlertRow, ControlEventRow, DeadLetterRow, LabelRow, ScoredMessageRow


def scored_row(m: ScoredMessage) -> dict[str, Any]:
    return {
        "message_id": m.id,
        "source": m.source,
        "channel": m.channel,
        "text": m.text,
        "ts": m.ts,
        "entities": list(m.entities),
        "meta": dict(m.meta),
        "label": m.label,
        "p_negative": m.probs.negative,
        "p_neutral": m.probs.neutral,
        "p_positive": m.probs.positive,
        "score": m.score,
        "model_version": m.model_version,
        "scored_at": m.scored_at,
    }


def dead_letter_row(d: DeadLetter) -> dict[str, Any]:
    ident = hashlib.sha256(
        "\x1f".join(str(x) for x in (d.stage, d.topic, d.partition, d.offset, d.raw, d.raw_base64)).encode()
    ).hexdigest()
    return {
        "id": ident,
        "stage": d.stage,
        "reason": d.reason,
        "topic": d.topic,
        "partition": d.partition,
        "offset": d.offset,
        "raw": d.raw,
        "raw_base64": d.raw_base64,
        "created_at": d.ts,
    }


class ResultStore:
    """The pipeline's results in one database (the workers' :class:`~aet.pipeline.ports.BatchStore`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def write(
        self,
        *,
        scored: Sequence[ScoredMessage] = (),
        labels: Sequence[LabelRecord] = (),
        dead_letters: Sequence[DeadLetter] = (),
        events: Sequence[ControlEvent] = (),
        alerts: Sequence[Alert] = (),
    ) -> None:
        """Write one batch of results in a single transaction."""
        with self.db.session() as s, s.begin():
            upsert(s, ScoredMessageRow.__table__, [scored_row(m) for m in scored], ["message_id"])
            upsert(
                s,
                LabelRow.__table__,
                [
                    {
                        "message_id": label.message_id,
                        "label": label.label,
                        "ts": label.ts,
                        "annotator": label.annotator,
                        "received_at": utcnow(),
                    }
                    for label in labels
                ],
                ["message_id"],
            )
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
            upsert(
                s,
                AlertRow.__table__,
                [
                    {
                        "id": a.id,
                        "entity": a.entity,
                        "kind": a.kind,
                        "severity": a.severity,
                        "window_start": a.window_start,
                        "window_end": a.window_end,
                        "z": a.z,
                        "model_version": a.model_version,
                        "raised_at": a.raised_at,
                        "payload": a.model_dump(mode="json"),
                    }
                    for a in alerts
                ],
                ["id"],
            )

    def scored(self, message_id: str) -> ScoredMessageRow | None:
        with self.db.session() as s:
            return s.get(ScoredMessageRow, message_id)

    def scored_ids(self) -> list[str]:
        with self.db.session() as s:
            return list(s.scalars(select(ScoredMessageRow.message_id)))

    def count_scored(self) -> int:
        with self.db.session() as s:
            return s.scalar(select(func.count()).select_from(ScoredMessageRow)) or 0

    def dead_letters(self) -> list[DeadLetterRow]:
        with self.db.session() as s:
            return list(s.scalars(select(DeadLetterRow).order_by(DeadLetterRow.created_at)))

    def accuracy_by_version(self) -> dict[str, dict[str, Any]]:
        """Per model version that served, in the order they first served: labeled messages and accuracy."""
        with self.db.session() as s:
            rows = s.execute(
                select(
                    ScoredMessageRow.model_version,
                    func.count(),
                    func.sum(case((ScoredMessageRow.label == LabelRow.label, 1), else_=0)),
                    func.min(ScoredMessageRow.scored_at),
                )
                .join(LabelRow, LabelRow.message_id == ScoredMessageRow.message_id)
                .group_by(ScoredMessageRow.model_version)
                .order_by(func.min(ScoredMessageRow.scored_at))
            ).all()
        return {
            version: {"labeled": n, "accuracy": round((correct or 0) / n, 4) if n else None}
            for version, n, correct, _ in rows
        }

    def summary(self) -> dict[str, Any]:
        """Counts of scored messages by label, source and model version, accuracy where labels exist, dead letters."""
        with self.db.session() as s:

            def by(col: Any) -> dict[Any, int]:
                return dict(s.execute(select(col, func.count()).group_by(col)).all())

            joined = select(func.count(), func.sum(case((ScoredMessageRow.label == LabelRow.label, 1), else_=0))).join(
                LabelRow, LabelRow.message_id == ScoredMessageRow.message_id
            )
            n_labeled, n_correct = s.execute(joined).one()
            return {
                "scored": self.count_scored(),
                "labeled": {"n": n_labeled, "accuracy": (n_correct or 0) / n_labeled if n_labeled else None},
                "by_label": by(ScoredMessageRow.label),
                "by_source": by(ScoredMessageRow.source),
                "by_model_version": by(ScoredMessageRow.model_version),
                "labels": s.scalar(select(func.count()).select_from(LabelRow)) or 0,
                "dead_letters": dict(Counter(r.stage for r in s.scalars(select(DeadLetterRow)))),
            }
