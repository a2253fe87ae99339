"""What the analysts' page shows beyond the alerts: the evidence messages' text, and acknowledgements.

An alert names its evidence by message id (``example_ids``); the page shows those
messages as an analyst reads them (text, source, time, link), from ``scored_messages``.
An acknowledgement is stored per alert (``alert_acks``, the latest wins), so every
analyst's page shows who took it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from aet.pipeline.records import utcnow
from aet.storage.db import Database, upsert
from aet.storage.tables import AlertAckRow, AlertRow, ScoredMessageRow

CHUNK = 500


def _chunks(ids: Sequence[str]) -> list[Sequence[str]]:
    return [ids[i : i + CHUNK] for i in range(0, len(ids), CHUNK)]


class AnalystStore:
    """Evidence messages and acknowledgements (:class:`aet.pipeline.ports.AnalystNotes`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def evidence(self, message_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The scored messages among ``message_ids``: text, source, channel, time, link, label, by id."""
        out: dict[str, dict[str, Any]] = {}
        with self.db.session() as s:
            for chunk in _chunks(list(dict.fromkeys(message_ids))):
                for r in s.scalars(select(ScoredMessageRow).where(ScoredMessageRow.message_id.in_(chunk))):
                    meta = r.meta or {}
                    link = meta.get("url") or meta.get("link")
                    out[r.message_id] = {
                        "id": r.message_id,
                        "text": r.text,
                        "source": r.source,
                        "platform": meta.get("platform"),
                        "channel": r.channel,
                        "ts": r.ts.isoformat(),
                        "url": link if isinstance(link, str) else None,
                        "label": r.label,
                        "score": r.score,
                    }
        return out

    def has_alert(self, alert_id: str) -> bool:
        with self.db.session() as s:
            return s.scalar(select(AlertRow.id).where(AlertRow.id == alert_id)) is not None

    def acknowledge(self, alert_id: str, by: str, note: str = "") -> dict[str, Any]:
        """Store an acknowledgement of ``alert_id`` (replacing an earlier one) and return it."""
        now = utcnow()
        with self.db.session() as s, s.begin():
            row = {"alert_id": alert_id, "by": by, "note": note, "acked_at": now}
            upsert(s, AlertAckRow.__table__, [row], ["alert_id"])
        return {"alert_id": alert_id, "by": by, "note": note, "acked_at": now.isoformat()}

    def acks(self, alert_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The acknowledgements of those of ``alert_ids`` that have one, by alert id."""
        out: dict[str, dict[str, Any]] = {}
        with self.db.session() as s:
            for chunk in _chunks(list(dict.fromkeys(alert_ids))):
                for r in s.scalars(select(AlertAckRow).where(AlertAckRow.alert_id.in_(chunk))):
                    out[r.alert_id] = {
                        "alert_id": r.alert_id,
                        "by": r.by,
                        "note": r.note,
                        "acked_at": r.acked_at.isoformat(),
                    }
        return out
