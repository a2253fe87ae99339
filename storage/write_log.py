"""An audit of every row write to ``scored_messages``, kept by a database trigger.

``message_id`` is the primary key of ``scored_messages``, so counting its rows
can never show a message stored twice: a batch re-delivered after a crash
overwrites its rows. To prove "exactly once" the fault-injection tests and
``aet bench soak`` count *writes* instead: this trigger appends one line to
``aet_write_log`` for each insert and each update of a row, inside the same
transaction (a rolled-back write leaves no line). SQLite and PostgreSQL both.

The log is instrumentation, not part of the schema: it is created on demand
(:meth:`WriteLog.install`) in a scratch or test database, never by a migration.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import text

from aet.storage.db import Database

TABLE = "aet_write_log"

_SQLITE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (seq INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT NOT NULL, "
    "op TEXT NOT NULL, label TEXT, model_version TEXT, score REAL)",
    *(
        f"CREATE TRIGGER IF NOT EXISTS {TABLE}_{op.lower()} AFTER {op} ON scored_messages BEGIN "
        f"INSERT INTO {TABLE} (message_id, op, label, model_version, score) "
        f"VALUES (NEW.message_id, '{op}', NEW.label, NEW.model_version, NEW.score); END"
        for op in ("INSERT", "UPDATE")
    ),
)

_POSTGRESQL = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (seq BIGSERIAL PRIMARY KEY, message_id TEXT NOT NULL, "
    "op TEXT NOT NULL, label TEXT, model_version TEXT, score DOUBLE PRECISION)",
    f"CREATE OR REPLACE FUNCTION {TABLE}_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    f"INSERT INTO {TABLE} (message_id, op, label, model_version, score) "
    "VALUES (NEW.message_id, TG_OP, NEW.label, NEW.model_version, NEW.score); RETURN NULL; END $$",
    f"CREATE OR REPLACE TRIGGER {TABLE}_row AFTER INSERT OR UPDATE ON scored_messages "
    f"FOR EACH ROW EXECUTE FUNCTION {TABLE}_row()",
)


@dataclass(frozen=True)
class RowWrite:
    """One insert or update of a scored message's row, with what it wrote."""

    message_id: str
    op: str  # INSERT or UPDATE
    label: str
    model_version: str
    score: float


class WriteLog:
    """Counts the writes of each ``scored_messages`` row of ``db`` (after :meth:`install`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def install(self) -> WriteLog:
        """Create the log table and its triggers (idempotent); writes from now on are logged."""
        statements = _SQLITE if self.db.engine.dialect.name == "sqlite" else _POSTGRESQL
        with self.db.engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
        return self

    def writes(self) -> list[RowWrite]:
        """Every logged write, oldest first."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                text(f"SELECT message_id, op, label, model_version, score FROM {TABLE} ORDER BY seq")
            ).all()
        return [RowWrite(*row) for row in rows]

    def counts(self) -> Counter[str]:
        """Row writes per message id (a message written once counts 1)."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(text(f"SELECT message_id, COUNT(*) FROM {TABLE} GROUP BY message_id")).all()
        return Counter(dict(rows))
