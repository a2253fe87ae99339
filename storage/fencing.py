"""Fencing tokens: one owner at a time for a role's persisted state.

Two monitors of one consumer group (or two alert engines) each keep the state
of the whole role in the same rows, so each would overwrite the other's. The
fence makes ownership explicit: loading the state takes the fence — the row of
``state_fences`` for that state gets the next ``epoch`` — and every write of
the state checks, in its own transaction, that the epoch is still the one it
took (a compare-and-set). The newest instance wins; a stale one's write is
refused, logged and raised as :class:`~aet.pipeline.ports.StateFenced`, which
stops it with its batch uncommitted.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from aet.pipeline.ports import StateFenced
from aet.pipeline.records import utcnow
from aet.storage.db import upsert
from aet.storage.tables import StateFenceRow

log = logging.getLogger(__name__)


def owner_id() -> str:
    """Who takes a fence: host, process and a random part (two stores in one process are two owners)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def take(session: Session, name: str, owner: str) -> int:
    """Take the fence of ``name`` for ``owner`` (in the session's transaction); returns the new epoch."""
    now = utcnow()
    row = {"name": name, "epoch": 0, "owner": owner, "acquired_at": now, "written_at": None}
    upsert(session, StateFenceRow.__table__, [row], ["name"], update=False)  # the first owner starts from 0
    session.execute(
        update(StateFenceRow)
        .where(StateFenceRow.name == name)
        .values(epoch=StateFenceRow.epoch + 1, owner=owner, acquired_at=now)
    )  # the row stays locked until the transaction ends: concurrent takers get consecutive epochs
    epoch = session.scalar(select(StateFenceRow.epoch).where(StateFenceRow.name == name))
    assert epoch is not None
    return int(epoch)


def check(session: Session, name: str, epoch: int, owner: str) -> None:
    """Raise :class:`StateFenced` unless ``epoch`` still holds the fence of ``name`` (in the write's transaction)."""
    held = session.execute(
        update(StateFenceRow)
        .where(StateFenceRow.name == name, StateFenceRow.epoch == epoch)
        .values(written_at=utcnow())
    )
    if cast("CursorResult[Any]", held).rowcount == 1:
        return
    current = session.execute(
        select(StateFenceRow.epoch, StateFenceRow.owner).where(StateFenceRow.name == name)
    ).one_or_none()
    now_held = f"epoch {current.epoch} by {current.owner}" if current is not None else "nobody"
    message = (
        f"write of {name!r} refused: this instance ({owner}) holds epoch {epoch}, the state is now held at "
        f"{now_held}; another instance took it over, so this one stops instead of overwriting it"
    )
    log.error("%s", message)
    raise StateFenced(message)
