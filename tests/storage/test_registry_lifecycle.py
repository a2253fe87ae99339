"""ModelRegistry status changes: rejecting challengers, rolling back champions, finding a request's version."""

from __future__ import annotations

from typing import Any

import pytest

from aet.storage.registry import ModelRegistry, RegistryError


def _statuses(registry: ModelRegistry) -> dict[str, str]:
    return {m.version: m.status for m in registry.list()}


def test_set_status_rejects_a_challenger_and_keeps_a_note(
    registry: ModelRegistry, model_fields: dict[str, Any]
) -> None:
    registry.register(version="v0001", status="champion", **model_fields)
    registry.register(version="v0002", parent="v0001", info={"request_id": "r1"}, **model_fields)
    info = registry.set_status("v0002", "rejected", note={"rejection": {"reasons": ["too little gain"]}})
    assert info.status == "rejected"
    assert info.info == {"request_id": "r1", "rejection": {"reasons": ["too little gain"]}}
    assert _statuses(registry) == {"v0001": "champion", "v0002": "rejected"}


def test_set_status_cannot_touch_the_champion(registry: ModelRegistry, model_fields: dict[str, Any]) -> None:
    registry.register(version="v0001", status="champion", **model_fields)
    registry.register(version="v0002", **model_fields)
    with pytest.raises(RegistryError, match="is the champion"):
        registry.set_status("v0001", "retired")
    with pytest.raises(RegistryError, match="use promote"):
        registry.set_status("v0002", "champion")
    with pytest.raises(RegistryError, match="unknown model version"):
        registry.set_status("v0009", "rejected")


def test_rollback_reinstates_the_previous_champion(registry: ModelRegistry, model_fields: dict[str, Any]) -> None:
    registry.register(version="v0001", status="champion", **model_fields)
    registry.register(version="v0002", parent="v0001", **model_fields)
    registry.register(version="v0003", parent="v0002", **model_fields)
    registry.promote("v0002")
    registry.promote("v0003")
    demoted, champion = registry.rollback()
    assert (demoted.version, demoted.status, champion.version, champion.status) == (
        "v0003",
        "rolled_back",
        "v0002",
        "champion",
    )
    # A second rollback goes one further back; the rolled-back version is never chosen again.
    demoted, champion = registry.rollback()
    assert (demoted.version, champion.version) == ("v0002", "v0001")
    assert _statuses(registry) == {"v0001": "champion", "v0002": "rolled_back", "v0003": "rolled_back"}
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback()


def test_rollback_to_a_named_version(registry: ModelRegistry, model_fields: dict[str, Any]) -> None:
    registry.register(version="v0001", status="champion", **model_fields)
    registry.register(version="v0002", **model_fields)
    registry.register(version="v0003", **model_fields)
    registry.promote("v0002")
    registry.promote("v0003")
    _, champion = registry.rollback(to="v0001")
    assert champion.version == "v0001"
    assert _statuses(registry) == {"v0001": "champion", "v0002": "retired", "v0003": "rolled_back"}
    with pytest.raises(RegistryError, match="already the champion"):
        registry.rollback(to="v0001")
    registry.register(version="v0004", **model_fields)
    with pytest.raises(RegistryError, match="never served"):
        registry.rollback(to="v0004")


def test_rollback_without_champion(registry: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="no champion"):
        registry.rollback()


def test_find_by_info(registry: ModelRegistry, model_fields: dict[str, Any]) -> None:
    registry.register(version="v0001", status="champion", info={"origin": "bootstrap"}, **model_fields)
    registry.register(version="v0002", info={"origin": "retrain", "request_id": "abc"}, **model_fields)
    assert [m.version for m in registry.find(request_id="abc")] == ["v0002"]
    assert registry.find(request_id="nope") == []
