"""Writes and reads of the pipeline's results: scored messages, labels, events, alerts, dead letters.

Every write is an upsert on the record's natural key, so replaying a batch
after a crash leaves one row per record. A scored message whose id is already
stored with a different text is a conflict: the first text is kept, and the
write returns the conflict as a dead letter for the worker to publish (the
same id with the same text is a redelivery or a re-score, and overwrites).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from aet.pipeline import metrics
from aet.pipeline.records import Alert, ControlEvent, DeadLetter, LabelRecord, Message, ScoredMessage, utcnow
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


def dead_letter_id(d: DeadLetter) -> str:
    """The key of a dead letter: a digest of the stage, where the input was read, and the whole input.

    The same refusal redelivered, or stored both by the stage that refused it and by the dead-letter recorder,
    is one row.
    """
    content = d.raw_sha256 or f"{d.raw}\x1f{d.raw_base64}"
    return hashlib.sha256(
        "\x1f".join(str(x) for x in (d.stage, d.topic, d.partition, d.offset, content)).encode()
    ).hexdigest()


def dead_letter_row(d: DeadLetter) -> dict[str, Any]:
    return {
        "id": dead_letter_id(d),
        "stage": d.stage,
        "reason": d.reason,
        "topic": d.topic,
        "partition": d.partition,
        "offset": d.offset,
        "key": d.key,
        "raw": d.raw,
        "raw_base64": d.raw_base64,
        "raw_size": d.raw_size,
        "raw_sha256": d.raw_sha256,
        "truncated": d.truncated,
        "created_at": d.ts,
    }


def dead_letter_of_row(row: DeadLetterRow) -> DeadLetter:
    """A stored dead letter as the record it was (to show or re-publish it)."""
    return DeadLetter(
        stage=row.stage,
        reason=row.reason,
        topic=row.topic,
        partition=row.partition,
        offset=row.offset,
        key=row.key,
        raw=row.raw,
        raw_base64=row.raw_base64,
        raw_size=row.raw_size,
        raw_sha256=row.raw_sha256,
        truncated=row.truncated,
        ts=row.created_at,
    )


def conflict_dead_letter(kept_text: str, incoming: ScoredMessage) -> DeadLetter:
    """The dead letter of a message whose id is stored with another text: the message as it came in."""
    message = Message.model_validate(incoming.model_dump(include=set(Message.model_fields)))
    return DeadLetter.of(
        message.to_bytes(),
        stage="store",
        reason=(
            f"conflict: message id {incoming.id!r} is stored with a different text "
            f"({len(kept_text)} characters, kept); this one ({len(incoming.text)} characters) was not stored"
        ),
        key=message.key,
    )


def _upsert_same_text(s: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert scored rows; an existing row is overwritten only when it holds the same text (a re-score)."""
    if not rows:
        return
    table = cast(Table, ScoredMessageRow.__table__)
    stmt: postgresql.Insert | sqlite.Insert = (
        postgresql.insert(table) if s.get_bind().dialect.name == "postgresql" else sqlite.insert(table)
    )
    columns = {c.name: stmt.excluded[c.name] for c in table.columns if c.name != "message_id"}
    stmt = stmt.on_conflict_do_update(
        index_elements=["message_id"], set_=columns, where=table.c.text == stmt.excluded.text
    )
    s.execute(stmt, list(rows))


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
    ) -> list[DeadLetter]:
        """Write one batch of results in a single transaction; returns the conflicts it refused, as dead letters.

        A scored message whose id is stored (or earlier in this batch) with a different text is not written:
        the first text is kept, the conflict counted (``aet_conflicts_total``) and stored as a dead letter.
        The check reads before it writes; the write itself overwrites only a row with the same text, so two
        scorers that write the same new id with different texts at the same moment keep the first to commit
        (the other is then not counted as a conflict).
        """
        with self.db.session() as s, s.begin():
            accepted, conflicts = self._without_conflicts(s, scored)
            _upsert_same_text(s, [scored_row(m) for m in accepted])
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
            upsert(
                s,
                DeadLetterRow.__table__,
                [dead_letter_row(d) for d in [*dead_letters, *conflicts]],
                ["id"],
                update=False,
            )
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
        if conflicts:
            metrics.CONFLICTS.inc(len(conflicts))
        return conflicts

    @staticmethod
    def _without_conflicts(s: Session, scored: Sequence[ScoredMessage]) -> tuple[list[ScoredMessage], list[DeadLetter]]:
        """Split a batch into the messages to write and the conflicts (an id already taken by another text)."""
        if not scored:
            return [], []
        ids = list({m.id for m in scored})
        texts: dict[str, str] = {}
        for i in range(0, len(ids), 500):
            rows = s.execute(
                select(ScoredMessageRow.message_id, ScoredMessageRow.text).where(
                    ScoredMessageRow.message_id.in_(ids[i : i + 500])
                )
            )
            texts.update(dict(rows.all()))
        accepted: list[ScoredMessage] = []
        conflicts: list[DeadLetter] = []
        for m in scored:
            kept = texts.setdefault(m.id, m.text)
            if kept == m.text:
                accepted.append(m)
            else:
                conflicts.append(conflict_dead_letter(kept, m))
        return accepted, conflicts

    # -- dead letters (aet dlq) ------------------------------------------------

    def list_dead_letters(
        self,
        *,
        stage: str | None = None,
        reason: str | None = None,
        since: datetime | None = None,
        limit: int | None = 50,
        replayed: bool | None = None,
    ) -> list[DeadLetterRow]:
        """Dead letters, newest first: of one ``stage``, whose reason contains ``reason``, created at or after
        ``since``; ``replayed`` False/True keeps those not yet / already re-published."""
        query = select(DeadLetterRow).order_by(DeadLetterRow.created_at.desc(), DeadLetterRow.id)
        if stage is not None:
            query = query.where(DeadLetterRow.stage == stage)
        if reason is not None:
            query = query.where(DeadLetterRow.reason.contains(reason, autoescape=True))
        if since is not None:
            query = query.where(DeadLetterRow.created_at >= since)
        if replayed is not None:
            column = DeadLetterRow.replayed_at
            query = query.where(column.is_not(None) if replayed else column.is_(None))
        if limit is not None:
            query = query.limit(limit)
        with self.db.session() as s:
            return list(s.scalars(query))

    def find_dead_letters(self, prefix: str) -> list[DeadLetterRow]:
        """Dead letters whose id starts with ``prefix`` (``aet dlq show`` takes a short id)."""
        with self.db.session() as s:
            query = select(DeadLetterRow).where(DeadLetterRow.id.startswith(prefix, autoescape=True)).limit(2)
            return list(s.scalars(query))

    def mark_replayed(self, ids: Sequence[str], at: datetime | None = None) -> None:
        """Record that these dead letters were re-published."""
        if not ids:
            return
        with self.db.session() as s, s.begin():
            s.execute(update(DeadLetterRow).where(DeadLetterRow.id.in_(list(ids))).values(replayed_at=at or utcnow()))

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
