"""Engine setup, Alembic migrations and the upsert helper, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select
from sqlalchemy.exc import StatementError

from aet.storage.db import Database, alembic_config, migrate, upsert
from aet.storage.tables import Base, LabelRow


@pytest.fixture
def bare(db_url: str) -> Iterator[Database]:
    """A database opened without migrating: the schema is empty."""
    db = Database(db_url, migrate_schema=False)
    yield db
    db.dispose()


def _head(db: Database) -> str:
    head = ScriptDirectory.from_config(alembic_config(db.engine)).get_current_head()
    assert head is not None
    return head


def _current(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _diffs(db: Database) -> list[object]:
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return list(compare_metadata(ctx, Base.metadata))


def test_empty_database_has_no_schema(bare: Database) -> None:
    """Opening with migrate_schema=False touches nothing."""
    assert inspect(bare.engine).get_table_names() == []
    assert _current(bare) is None


def test_migrate_brings_empty_database_to_head(bare: Database) -> None:
    """migrate() creates every table of the metadata and stamps the head revision."""
    migrate(bare.engine)
    assert _current(bare) == _head(bare)
    tables = set(inspect(bare.engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert tables - set(Base.metadata.tables) == {"alembic_version"}


def test_migrated_schema_matches_table_metadata(database: Database) -> None:
    """Autogenerate finds no difference between the migrations and aet.storage.tables."""
    assert _diffs(database) == []


def test_schema_comparison_notices_drift(database: Database) -> None:
    """The comparison above is not vacuous: a column missing from the database is reported."""
    from sqlalchemy import Column, Integer, MetaData

    drifted = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(drifted)
    drifted.tables["labels"].append_column(Column("confidence", Integer, nullable=True))
    with database.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), drifted)
    assert [d[0] for d in diffs] == ["add_column"]
    assert diffs[0][3].name == "confidence"


def test_migrating_twice_is_a_noop(database: Database) -> None:
    """A second migrate() keeps the revision, the schema and the data."""
    now = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    with database.session() as s, s.begin():
        s.add(LabelRow(message_id="m", label="neutral", ts=now, annotator="a", received_at=now))
    revision = _current(database)

    migrate(database.engine)
    again = Database(database.url)  # opening runs the migrations once more
    try:
        assert _current(again) == revision == _head(again)
        assert _diffs(again) == []
        with again.session() as s:
            assert s.scalars(select(LabelRow.message_id)).all() == ["m"]
    finally:
        again.dispose()


def test_utc_column_refuses_naive_datetimes(database: Database) -> None:
    """A naive datetime cannot be written to a UTC column (its zone would be a guess)."""
    naive = datetime(2024, 1, 1, 0, 0)
    with pytest.raises(StatementError, match="naive datetime"), database.session() as s, s.begin():
        s.add(LabelRow(message_id="m", label="neutral", ts=naive, annotator="a", received_at=naive))


def test_utc_column_round_trips_other_offsets_as_utc(database: Database) -> None:
    """An aware datetime in another zone comes back as the same instant, in UTC."""
    from datetime import timedelta

    tokyo = datetime(2024, 6, 30, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=9)))
    with database.session() as s, s.begin():
        s.add(LabelRow(message_id="m", label="neutral", ts=tokyo, annotator="a", received_at=tokyo))
    with database.session() as s:
        row = s.get(LabelRow, "m")
    assert row is not None
    assert row.ts == tokyo
    assert row.ts.utcoffset() == timedelta(0)
    assert row.ts.tzinfo == UTC


def _label(message_id: str, label: str) -> dict[str, object]:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    return {"message_id": message_id, "label": label, "ts": now, "annotator": "a", "received_at": now}


def test_upsert_overwrites_or_keeps(database: Database) -> None:
    """upsert(update=True) overwrites an existing key; update=False keeps the first row."""
    table = LabelRow.__table__
    with database.session() as s, s.begin():
        upsert(s, table, [_label("a", "neutral"), _label("b", "neutral")], ["message_id"])
    with database.session() as s, s.begin():
        upsert(s, table, [_label("a", "positive")], ["message_id"])
        upsert(s, table, [_label("b", "negative")], ["message_id"], update=False)
        upsert(s, table, [], ["message_id"])  # nothing to do
    with database.session() as s:
        labels = dict(s.execute(select(LabelRow.message_id, LabelRow.label)).all())
    assert labels == {"a": "positive", "b": "neutral"}
