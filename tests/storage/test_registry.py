"""ModelRegistry: version names, registration, exactly one champion, promotion, ordering."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from aet.pipeline.ports import ChampionChanged
from aet.storage.registry import ModelRegistry, RegistryError


def _statuses(registry: ModelRegistry) -> dict[str, str]:
    return {m.version: m.status for m in registry.list()}


def test_next_version_counts_up(registry: ModelRegistry, model_fields: dict[str, Any]) -> None:
    """An empty registry starts at v0001; each registration moves the next name on."""
    assert registry.next_version() == "v0001"
    registry.register(version="v0001", **model_fields)
    assert registry.next_version() == "v0002"
    registry.register(version=registry.next_version(), **model_fields)
    assert registry.next_version() == "v0003"


def test_next_version_is_always_free(registry: ModelRegistry, model_fields: dict[str, Any]) -> None:
    """With a gap in the numbering, the next name is still one no row uses."""
    registry.register(version="v0001", **model_fields)
    registry.register(version="v0003", **model_fields)
    nxt = registry.next_version()
    assert nxt not in _statuses(registry)
    registry.register(version=nxt, **model_fields)  # must not collide


def test_register_returns_the_stored_row(registry: ModelRegistry, model_fields: dict[str, Any]) -> None:
    """register() stores every field; get() returns the same snapshot with aware UTC times."""
    info = registry.register(
        version="v0001",
        metrics={"macro_f1": 0.8},
        info={"origin": "test"},
        **model_fields,
    )
    got = registry.get("v0001")
    assert got == info
    assert (got.status, got.parent, got.metrics, got.info) == (
        "challenger",
        None,
        {"macro_f1": 0.8},
        {"origin": "test"},
    )
    assert got.labels == model_fields["labels"]
    assert got.created_at.utcoffset() == timedelta(0)
    assert got.promoted_at is None


def test_empty_registry_has_no_champion(registry: ModelRegistry) -> None:
    """champion() is None until a champion is registered or promoted."""
    assert registry.champion() is None
    assert registry.list() == []


def test_registering_a_champion_retires_the_old_one(registry: ModelRegistry, model_fields: dict[str, Any]) -> None:
    """There is exactly one champion after each champion registration."""
    registry.register(version="v0001", status="champion", **model_fields)
    registry.register(version="v0002", status="challenger", parent="v0001", **model_fields)
    new = registry.register(version="v0003", status="champion", parent="v0001", **model_fields)
    assert _statuses(registry) == {"v0001": "retired", "v0002": "challenger", "v0003": "champion"}
    champion = registry.champion()
    assert champion is not None and champion.version == "v0003"
    assert new.promoted_at is not None and new.promoted_at.utcoffset() == timedelta(0)


def test_promote_makes_exactly_one_champion(registry: ModelRegistry, model_fields: dict[str, Any]) -> None:
    """promote() turns a challenger into the champion and retires the previous champion."""
    registry.register(version="v0001", status="champion", **model_fields)
    registry.register(version="v0002", parent="v0001", **model_fields)
    promoted = registry.promote("v0002")
    assert promoted.status == "champion"
    assert promoted.promoted_at is not None
    assert registry.get("v0002").promoted_at == promoted.promoted_at
    assert _statuses(registry) == {"v0001": "retired", "v0002": "champion"}
    assert [m.version for m in registry.list() if m.status == "champion"] == ["v0002"]


def test_promoting_the_champion_keeps_it(registry: ModelRegistry, model_fields: dict[str, Any]) -> None:
    """Promoting the version that already serves leaves it the (only) champion."""
    registry.register(version="v0001", status="champion", **model_fields)
    registry.promote("v0001")
    assert _statuses(registry) == {"v0001": "champion"}


def test_a_heads_version_is_promoted_only_while_the_weights_it_was_learned_for_serve(
    registry: ModelRegistry, model_fields: dict[str, Any]
) -> None:
    """New weights promoted meanwhile win: heads of the old weights must not bring those back."""
    registry.register(version="v0001", status="champion", **model_fields)
    heads = {"kind": "heads", "base": "v0001"}
    registry.register(version="v0001.h1", parent="v0001", info=heads, **model_fields)
    assert registry.promote("v0001.h1", expect_weights="v0001").status == "champion"
    registry.register(version="v0001.h2", parent="v0001", info=heads, **model_fields)
    assert registry.promote("v0001.h2", expect_weights="v0001").status == "champion"  # heads on heads: same weights
    registry.register(version="v0002", parent="v0001", **model_fields)
    registry.promote("v0002")
    registry.register(version="v0001.h3", parent="v0001", info=heads, **model_fields)
    with pytest.raises(ChampionChanged, match="v0002 serve now"):
        registry.promote("v0001.h3", expect_weights="v0001")
    champion = registry.champion()
    assert champion is not None and champion.version == "v0002"
    assert registry.get("v0001.h3").status == "challenger"


def test_unknown_version_raises(registry: ModelRegistry, model_fields: dict[str, Any]) -> None:
    """get() and promote() of a version that was never registered raise RegistryError."""
    registry.register(version="v0001", status="champion", **model_fields)
    with pytest.raises(RegistryError, match="v0009"):
        registry.get("v0009")
    with pytest.raises(RegistryError, match="v0009"):
        registry.promote("v0009")
    assert _statuses(registry) == {"v0001": "champion"}


def test_duplicate_version_raises_and_changes_nothing(registry: ModelRegistry, model_fields: dict[str, Any]) -> None:
    """Registering an existing version fails and does not retire the serving champion."""
    registry.register(version="v0001", status="champion", **model_fields)
    with pytest.raises(RegistryError, match="already exists"):
        registry.register(version="v0001", **model_fields)
    with pytest.raises(RegistryError, match="already exists"):
        registry.register(version="v0001", status="champion", **{**model_fields, "sha256": "f" * 64})
    champion = registry.champion()
    assert champion is not None and champion.version == "v0001"
    assert champion.sha256 == model_fields["sha256"]
    assert len(registry.list()) == 1


def test_unknown_parent_raises(registry: ModelRegistry, model_fields: dict[str, Any]) -> None:
    """A parent that is not registered is refused (lineage must point at a real model)."""
    registry.register(version="v0001", status="champion", **model_fields)
    with pytest.raises(RegistryError, match="parent"):
        registry.register(version="v0002", parent="v0042", status="champion", **model_fields)
    assert _statuses(registry) == {"v0001": "champion"}


def test_list_is_oldest_first(registry: ModelRegistry, model_fields: dict[str, Any]) -> None:
    """list() returns versions in registration order, whatever their names."""
    for version in ("v0002", "v0010", "v0001", "finbert-import"):
        registry.register(version=version, **model_fields)
    assert [m.version for m in registry.list()] == ["v0002", "v0010", "v0001", "finbert-import"]


def test_database_refuses_a_second_champion(registry: ModelRegistry, model_fields: dict[str, Any]) -> None:
    """Two writers that each retire "the" champion and add their own cannot both win."""
    from sqlalchemy.exc import IntegrityError

    from aet.pipeline.records import utcnow
    from aet.storage.tables import ModelRow

    registry.register(version="v0001", status="champion", **model_fields)
    with registry.db.session() as s:
        s.add(ModelRow(version="v0002", status="champion", metrics={}, info={}, created_at=utcnow(), **model_fields))
        with pytest.raises(IntegrityError):
            s.commit()
    assert _statuses(registry) == {"v0001": "champion"}
