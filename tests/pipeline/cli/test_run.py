"""``aet run``'s summary of the adaptation loop: rounds trained, gate decisions, accuracy after a drift."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aet.pipeline.cli.run import after_drift, after_drift_lines, model_event_lines, model_events
from aet.pipeline.records import ControlEvent
from aet.storage.db import Database
from aet.storage.drift_store import MonitorBatch, MonitorStore

T0 = datetime(2026, 3, 4, 13, 30, tzinfo=UTC)


@pytest.fixture
def monitor_store(tmp_path: Path):
    db = Database(f"sqlite:///{tmp_path / 'aet.db'}")
    yield MonitorStore(db)
    db.dispose()


def _join(i: int, version: str, predicted: str, label: str, source: str = "chat") -> dict:
    return {
        "message_id": f"m{i}",
        "status": "joined",
        "label": label,
        "annotator": "replay",
        "label_ts": T0 + timedelta(seconds=i),
        "source": source,
        "model_version": version,
        "predicted": predicted,
        "message_ts": T0 + timedelta(seconds=i),
        "position": i,
        "held_at": None,
    }


def test_after_drift_compares_the_weights_before_and_after_the_swap_on_the_drifted_source(monitor_store) -> None:
    joins = [_join(i, "v0001", "neutral", "negative") for i in range(10)]  # before the drift: not counted
    joins += [
        _join(10 + i, "v0001" if i < 4 else "v0001.h2", "negative", ["negative", "positive"][i % 2]) for i in range(8)
    ]
    joins += [_join(18 + i, "v0002.h1" if i >= 3 else "v0002", "positive", "positive") for i in range(5)]
    joins.append(_join(30, "v0002", "neutral", "negative", source="news"))  # another source: not counted
    monitor_store.write_batch("aet-monitor", MonitorBatch(joins=joins))
    drift = {"kind": "drift", "id": "d1", "source": "chat", "position": 10, "detector": "hotelling_embedding"}
    episodes = after_drift(monitor_store, [drift, {"kind": "retrain_request", "source": "chat", "position": 17}])
    assert [(g["weights"], g["labeled"], g["accuracy"], g["heads"]) for g in episodes[0]["by_weights"]] == [
        ("v0001", 8, 0.5, True),
        ("v0002", 5, 1.0, True),
    ]
    lines = after_drift_lines(episodes)
    assert lines[0].startswith("  after the drift   chat@10 (hotelling_embedding)")
    assert "v0001 + fast-path heads" in lines[1] and "0.500 on 8 labeled" in lines[1]
    assert "v0002 + fast-path heads" in lines[2] and "1.000 on 5 labeled" in lines[2]


def test_model_events_lists_this_runs_rounds_and_gate_decisions_in_order(monitor_store) -> None:
    now = datetime.now(UTC)
    old = ControlEvent(kind="promotion", ts=now - timedelta(days=1), model_version="v0002", payload={})
    trained = ControlEvent(
        kind="training_result", ts=now, model_version="v0003", payload={"mode": "attention", "train_seconds": 41.2}
    )
    gate = {"reasons": ["recent macro-F1 0.550 -> 0.800 (+0.250), at least +0.010", "older macro-F1 within"]}
    promoted = ControlEvent(
        kind="promotion",
        ts=now + timedelta(seconds=1),
        model_version="v0003",
        payload={"previous": "v0002.h4", "gate": gate, "reason": "passed the champion/challenger gate"},
    )
    heads = ControlEvent(kind="heads", ts=now, model_version="v0003.h1", payload={})
    monitor_store.write_batch("aet-monitor", MonitorBatch(), events=[old, trained, promoted, heads])
    events = model_events(monitor_store, now - timedelta(seconds=1))
    assert [(e["kind"], e["version"]) for e in events] == [("training_result", "v0003"), ("promotion", "v0003")]
    lines = model_event_lines(events)
    assert lines[0] == "  retraining        1 rounds trained this run"
    assert lines[1] == "    v0003 trained (attention, 41 s)"
    assert lines[2].startswith("    v0003 promoted over v0002.h4: recent macro-F1 0.550 -> 0.800")
    assert model_event_lines([]) == []
