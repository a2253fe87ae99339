"""Lineage of a model version: where it came from and what it did (``aet models show``)."""

from __future__ import annotations

from typing import Any

from aet.pipeline.ports import RegistryReader
from aet.storage.training_store import TrainingStore

TRAINING_KEYS = (
    "mode",
    "objective",
    "weights",
    "learning_rate",
    "epochs",
    "batch_size",
    "seed",
    "best_epoch",
    "stopped",
    "trainable_parameters",
    "samples_per_s",
    "seconds",
    "counts",
    "fisher",
    "device",
    "examples",
    "history",
    "n_train",
    "n_validation",
    "train_seconds",
    "trained_on",
)


def lineage(registry: RegistryReader, store: TrainingStore, version: str) -> dict[str, Any]:
    """The registry row of ``version`` with its parent chain, the drift event and request behind it,
    its data window, metrics, gate decisions, promotions/rollbacks, and the alerts it produced."""
    info = registry.get(version)
    facts = dict(info.info)
    run = store.run_for_version(version)
    request_id = facts.get("request_id") or (run or {}).get("request_id")
    request_event = store.control_event(request_id) if request_id else None
    request_payload = (request_event or {}).get("payload") or (run or {}).get("request")
    drift_id = facts.get("drift_event_id") or (request_payload or {}).get("drift_event_id")
    drift_event = store.control_event(drift_id) if drift_id else None
    models = {m.version: m for m in registry.list()}
    ancestors, cursor = [], info.parent
    while cursor is not None and cursor not in ancestors:
        ancestors.append(cursor)
        cursor = models[cursor].parent if cursor in models else None
    n_alerts, alerts = store.alerts_for_model(version)
    return {
        "version": info.version,
        "status": info.status,
        "created_at": info.created_at,
        "promoted_at": info.promoted_at,
        "artifact": {"path": info.artifact_path, "sha256": info.sha256},
        "backbone": info.backbone,
        "origin": facts.get("origin"),
        "parent": info.parent,
        "ancestors": ancestors,
        "children": sorted(v for v, m in models.items() if m.parent == version),
        "drift_event": drift_event if drift_event else ({"id": drift_id, "stored": False} if drift_id else None),
        "training_request": (
            {"id": request_id, "stored": request_event is not None, "payload": request_payload} if request_id else None
        ),
        "data_window": {"window": facts.get("window"), "source": facts.get("source"), "data": facts.get("data")},
        "training": {k: facts[k] for k in TRAINING_KEYS if k in facts},
        "metrics": info.metrics,
        "decisions": store.events_for_model(version),
        "alerts": {"count": n_alerts, "latest": alerts},
        "scored_messages": store.scored_by_model(version),
    }
