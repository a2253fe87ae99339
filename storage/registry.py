"""The model registry: which versions exist, where their artifacts are, and which one serves.

Exactly one version is the ``champion`` at a time. A version is registered
only after its artifact is complete on disk, so a crash never leaves a
registry row pointing at half a model.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from aet.pipeline.ports import ChampionChanged, ModelInfo, ModelStatus
from aet.pipeline.records import utcnow
from aet.storage.db import Database
from aet.storage.tables import ModelRow


class RegistryError(RuntimeError):
    """A registry operation refers to an unknown version or breaks an invariant."""


class ModelRegistry:
    """Model versions stored in the database (the :class:`~aet.pipeline.ports.Registry` of a deployment)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def next_version(self) -> str:
        """The next free version name (``v0001``, ``v0002``, ...): one past the highest in use."""
        with self.db.session() as s:
            versions = s.scalars(select(ModelRow.version)).all()
        numbers = [int(v[1:]) for v in versions if re.fullmatch(r"v\d+", v)]
        return f"v{max(numbers, default=0) + 1:04d}"

    def register(
        self,
        *,
        version: str,
        artifact_path: str,
        sha256: str,
        backbone: str,
        labels: list[str],
        status: ModelStatus = "challenger",
        parent: str | None = None,
        metrics: dict[str, Any] | None = None,
        info: dict[str, Any] | None = None,
    ) -> ModelInfo:
        """Add a version; registering it as ``champion`` retires the previous champion."""
        now = utcnow()
        row = ModelRow(
            version=version,
            parent=parent,
            status=status,
            artifact_path=artifact_path,
            sha256=sha256,
            backbone=backbone,
            labels=labels,
            metrics=metrics or {},
            info=info or {},
            created_at=now,
            promoted_at=now if status == "champion" else None,
        )
        with self.db.session() as s, s.begin():
            if parent is not None and s.get(ModelRow, parent) is None:
                raise RegistryError(f"unknown parent model version {parent!r}")
            if status == "champion":
                s.execute(update(ModelRow).where(ModelRow.status == "champion").values(status="retired"))
            if s.get(ModelRow, version) is not None:
                raise RegistryError(f"model version {version} already exists")
            s.add(row)
            try:
                s.flush()
            except IntegrityError as exc:
                raise RegistryError(f"cannot register {version}: {_conflict(exc)}") from exc
            return ModelInfo.model_validate(row)

    def get(self, version: str) -> ModelInfo:
        with self.db.session() as s:
            row = _existing(s, version)
            return ModelInfo.model_validate(row)

    def champion(self) -> ModelInfo | None:
        """The version that serves now, if any."""
        with self.db.session() as s:
            row = s.scalars(select(ModelRow).where(ModelRow.status == "champion")).first()
            return ModelInfo.model_validate(row) if row else None

    def promote(self, version: str, *, expect_weights: str | None = None) -> ModelInfo:
        """Make ``version`` the champion and retire the previous one.

        With ``expect_weights``, only while the champion serves those weights: a fast-path heads
        version sits on the weights it was learned for, and must not replace newer weights that
        were promoted meanwhile (:class:`ChampionChanged`, nothing changes).
        """
        with self.db.session() as s, s.begin():
            row = _existing(s, version)
            if expect_weights is not None:
                current = s.scalars(select(ModelRow).where(ModelRow.status == "champion").with_for_update()).first()
                serving = ModelInfo.model_validate(current).weights_version if current is not None else None
                if serving != expect_weights:
                    raise ChampionChanged(f"{version} is for the weights {expect_weights}, but {serving} serve now")
            s.execute(update(ModelRow).where(ModelRow.status == "champion").values(status="retired"))
            row.status = "champion"
            row.promoted_at = utcnow()
            try:
                s.flush()
            except IntegrityError as exc:
                raise RegistryError(f"cannot promote {version}: {_conflict(exc)}") from exc
            return ModelInfo.model_validate(row)

    def set_status(self, version: str, status: ModelStatus, *, note: dict[str, Any] | None = None) -> ModelInfo:
        """Change a version that does not serve (e.g. a challenger to ``rejected``); ``note`` is merged into its info.

        The champion changes only through :meth:`promote` and :meth:`rollback`.
        """
        if status == "champion":
            raise RegistryError("use promote() to make a version the champion")
        with self.db.session() as s, s.begin():
            row = _existing(s, version)
            if row.status == "champion":
                raise RegistryError(f"{version} is the champion; promote another version or roll back instead")
            row.status = status
            if note:
                row.info = {**(row.info or {}), **note}
            s.flush()
            return ModelInfo.model_validate(row)

    def rollback(self, to: str | None = None) -> tuple[ModelInfo, ModelInfo]:
        """Demote the champion to ``rolled_back`` and reinstate ``to``, by default the previous champion.

        The previous champion is the retired version promoted most recently
        before the current one. Returns (the demoted version, the new champion).
        """
        with self.db.session() as s, s.begin():
            current = s.scalars(select(ModelRow).where(ModelRow.status == "champion")).first()
            if current is None:
                raise RegistryError("no champion to roll back")
            target: ModelRow | None
            if to is not None:
                target = _existing(s, to)
                if target.version == current.version:
                    raise RegistryError(f"{to} is already the champion")
                if target.promoted_at is None:
                    raise RegistryError(f"{to} never served as champion (status {target.status}); promote it instead")
            else:
                q = select(ModelRow).where(
                    ModelRow.status == "retired", ModelRow.promoted_at.is_not(None), ModelRow.version != current.version
                )
                if current.promoted_at is not None:
                    q = q.where(ModelRow.promoted_at <= current.promoted_at)
                target = s.scalars(q.order_by(ModelRow.promoted_at.desc(), ModelRow.version.desc())).first()
                if target is None:
                    raise RegistryError(f"no previous champion to roll back to from {current.version}")
            current.status = "rolled_back"
            s.flush()
            target.status = "champion"
            target.promoted_at = utcnow()
            try:
                s.flush()
            except IntegrityError as exc:
                raise RegistryError(f"cannot roll back to {target.version}: {_conflict(exc)}") from exc
            return ModelInfo.model_validate(current), ModelInfo.model_validate(target)

    def find(self, **info: Any) -> list[ModelInfo]:
        """Versions whose ``info`` has every given key with the given value (e.g. ``request_id=...``), oldest first."""
        return [m for m in self.list() if all(m.info.get(k) == v for k, v in info.items())]

    def list(self) -> list[ModelInfo]:
        """Every version, oldest first."""
        with self.db.session() as s:
            rows = s.scalars(select(ModelRow).order_by(ModelRow.created_at, ModelRow.version)).all()
            return [ModelInfo.model_validate(r) for r in rows]


def _existing(session: Any, version: str) -> ModelRow:
    """The row of ``version``, or :class:`RegistryError` when there is none."""
    row = session.get(ModelRow, version)
    if row is None:
        raise RegistryError(f"unknown model version {version!r}")
    return row


def _conflict(exc: IntegrityError) -> str:
    """Explain a constraint violation: a concurrent champion, or a version taken meanwhile."""
    if "uq_models_one_champion" in str(exc.orig):
        return "another champion was promoted concurrently; retry"
    return "the version was registered concurrently; retry"
