"""``aet run``'s summary of the adaptation loop, and the README demo's inputs (examples/) that it runs on.

The demo itself takes minutes (it trains a champion and a retraining round), so it is not run here;
these tests keep its stream and settings consistent with what the README says they show.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aet.pipeline.cli.run import after_drift, after_drift_lines, drift_line, model_event_lines, model_events
from aet.pipeline.config import load_settings
from aet.pipeline.records import LABELS, ControlEvent, Message, decode
from aet.pipeline.roles.replay import ordered_rows, to_message_payload
from aet.storage.db import Database
from aet.storage.drift_store import MonitorBatch, MonitorStore
from tests.conftest import EXAMPLES

DEMO = EXAMPLES / "demo.yaml"
SLANG = "chat:#wsb"  # act 3's channel: chat in a slang the champion was not trained on
T0 = datetime(2026, 3, 4, 13, 30, tzinfo=UTC)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_the_example_stream_replays_without_a_dead_letter() -> None:
    dead: list = []
    rows = ordered_rows(EXAMPLES / "stream.jsonl", dead, 1.0)
    assert dead == []
    for r in rows:
        decode(Message, json.dumps(to_message_payload(r.data, None)).encode())  # raises on a bad row
        assert r.data["label"] in LABELS, r.data["id"]
    ids = [r.data["id"] for r in rows]
    assert len(set(ids)) == len(ids)


def test_the_example_files_share_no_text() -> None:
    stream = {r["text"] for r in _rows(EXAMPLES / "stream.jsonl")}
    assert not stream & {r["text"] for r in _rows(EXAMPLES / "train.jsonl")}


def test_the_demo_settings_let_the_monitor_see_the_slang_act_and_ask_for_a_round_within_it() -> None:
    """With examples/demo.yaml the chat baseline is set before act 3, and act 3 leaves room after a request.

    The chat detectors learn their regime from the first ``warmup`` chat messages, so acts 1-2 must
    hold them; a retraining round needs ``min_labels`` labels of the drifted source after the drift
    point, and the promoted model must then still meet slang messages for the summary to show a
    before/after.
    """
    m = load_settings(DEMO).monitor
    assert (m.warmup, m.expected_run_length, m.min_labels) == (50, 2000, 100)
    assert m.retrain_cooldown_s == 0 and m.followup_rounds == 0
    rows = sorted(_rows(EXAMPLES / "stream.jsonl"), key=lambda r: r["ts"])
    first_slang = next(i for i, r in enumerate(rows) if r.get("channel") == SLANG)
    before = [r for r in rows[:first_slang] if r["source"] == "chat"]
    slang = rows[first_slang:]
    assert all(r["source"] == "chat" and r["channel"] == SLANG for r in slang), "act 3 is the stream's end"
    assert len(before) >= 3 * m.warmup
    assert len(slang) >= 3 * m.min_labels
    labels = Counter(r["label"] for r in slang)
    assert min(labels.values()) >= len(slang) // 5, labels  # no label the round could learn to ignore


def test_the_xyz_burst_of_act_2_is_still_in_the_stream() -> None:
    """The README's `$XYZ` alert: a burst of negative news on 2026-03-03 among calmer days."""
    xyz = [r for r in _rows(EXAMPLES / "stream.jsonl") if "$XYZ" in r.get("entities", [])]
    burst = [r for r in xyz if r["ts"].startswith("2026-03-03") and r["label"] == "negative"]
    assert len(burst) >= 6


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


def test_drift_line_counts_only_retrain_requests() -> None:
    """Shadow trials and rollbacks the monitor raised are not retrain requests."""
    events = [
        {"kind": "drift", "source": "chat", "position": 288, "detector": "adwin_confidence"},
        {"kind": "retrain_request"},
        {"kind": "shadow_rejected"},
        {"kind": "rollback"},
    ]
    line = drift_line({"events_this_run": events})
    assert "1 events: chat@288 (adwin_confidence)" in line
    assert line.rstrip().split(";")[1].strip().startswith("1 retrain requests")
