"""WriteLog: a trigger counts every write of a scored row, where the primary key hides re-writes."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from aet.pipeline.records import ScoredMessage
from aet.storage.store import ResultStore, scored_row
from aet.storage.tables import ScoredMessageRow
from aet.storage.write_log import RowWrite, WriteLog

ScoredFactory = Callable[..., ScoredMessage]  # the make_scored fixture of tests/storage/conftest.py


def test_a_rewritten_row_counts_twice_although_the_table_holds_it_once(
    store: ResultStore, make_scored: ScoredFactory
) -> None:
    log = WriteLog(store.db).install()
    store.write(scored=[make_scored("m-1"), make_scored("m-2")])
    store.write(scored=[make_scored("m-1", model_version="v0002")])

    assert store.count_scored() == 2
    assert log.counts() == {"m-1": 2, "m-2": 1}
    assert [w for w in log.writes() if w.message_id == "m-1"] == [
        RowWrite("m-1", "INSERT", "positive", "v0001", 0.6),
        RowWrite("m-1", "UPDATE", "positive", "v0002", 0.6),
    ]


def test_a_rolled_back_write_leaves_no_line_and_install_is_idempotent(
    store: ResultStore, make_scored: ScoredFactory
) -> None:
    log = WriteLog(store.db).install()
    WriteLog(store.db).install()
    with pytest.raises(ValueError, match="roll back"), store.db.session() as s, s.begin():
        s.add(ScoredMessageRow(**scored_row(make_scored("m-1"))))
        s.flush()  # the insert runs (and fires the trigger) inside the transaction
        raise ValueError("roll back")
    assert store.count_scored() == 0
    assert log.counts() == {}
    store.write(scored=[make_scored("m-1")])
    assert log.counts() == {"m-1": 1}, "installed twice, still one line per write"
