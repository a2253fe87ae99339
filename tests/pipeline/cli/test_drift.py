"""``aet monitor``, ``aet drift`` and the monitor inside ``aet run``, end to end."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from aet.adapters.memory_bus import MemoryBus
from aet.pipeline.config import TopicSettings
from aet.pipeline.records import ControlEvent, Message
from aet.pipeline.roles.scorer import to_scored
from aet.storage.db import Database
from aet.storage.drift_store import MonitorBatch, MonitorStore
from tests.cli_helpers import aet_env, run_aet
from tests.conftest import EXAMPLES
from tests.pipeline.pipeline_fakes import dead_letter_rows

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def aet_in_process(home: Path, *args: str):
    """``aet --home HOME ARGS`` in this process (``aet drift`` needs no model: no subprocess start-up)."""
    from typer.testing import CliRunner

    from aet.pipeline.cli.main import app

    return CliRunner().invoke(app, ["--home", str(home), *args])


def _scored(i: int, probs: list[float]) -> bytes:
    m = Message(id=f"m{i}", source="news", text=f"message {i}", ts=T0 + timedelta(minutes=i))
    return to_scored(m, np.asarray(probs), "v0001").to_bytes()


@pytest.mark.slow  # a subprocess
def test_aet_monitor_drains_a_journal_and_aet_drift_lists_the_event(tmp_path: Path) -> None:
    home, journal = tmp_path / "home", tmp_path / "journal"
    topics = TopicSettings()
    bus = MemoryBus(partitions=2, journal_dir=journal)
    bus.create_topics(topics.all())
    for i in range(1200):
        bus.publish(topics.scored, _scored(i, [0.15, 0.7, 0.15] if i < 400 else [0.7, 0.15, 0.15]), key="k")
    bus.publish(topics.labels, json.dumps({"message_id": "m5", "label": "neutral"}).encode(), key="m5")
    bus.publish(topics.labels, json.dumps({"message_id": "m6", "label": "bullish"}).encode(), key="m6")
    bus.close()
    env = aet_env(home, AET_MONITOR__DETECTORS='["page_hinkley_class_mix"]', AET_MONITOR__WARMUP="100")

    result = run_aet(["--bus-journal", str(journal), "monitor", "--drain", "--no-embed"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "drift on news: page_hinkley_class_mix" in result.stderr

    listed = aet_in_process(home, "drift")
    assert listed.exit_code == 0, listed.output
    assert "drift" in listed.stdout and "page_hinkley_class_mix" in listed.stdout
    data = json.loads(aet_in_process(home, "drift", "--json", "--quality").stdout)
    [event] = data["events"]
    assert event["kind"] == "drift" and 400 < event["payload"]["position"] < 600
    [q] = data["quality"]
    assert (q["source"], q["model_version"], q["labeled"], q["correct"]) == ("news", "v0001", 1, 1)

    db = Database(f"sqlite:///{home / 'aet.db'}")
    try:
        stages = [r.stage for r in dead_letter_rows(db)]
        assert stages == ["monitor"]  # the "bullish" label
    finally:
        db.dispose()


def test_aet_drift_lists_retrain_requests_newest_first(tmp_path: Path) -> None:
    home = tmp_path / "home"
    db = Database(f"sqlite:///{home / 'aet.db'}")
    try:
        drift = ControlEvent(
            kind="drift",
            ts=T0,
            model_version="v0001",
            payload={
                "source": "chat",
                "detector": "adwin_error",
                "position": 812,
                "statistic": {"mean_before": 0.31, "mean_recent": 0.52},
            },
        )
        request = ControlEvent(
            kind="retrain_request",
            ts=T0 + timedelta(hours=1),
            model_version="v0001",
            payload={
                "source": "chat",
                "detector": "adwin_error",
                "to_position": 1400,
                "labeled": 250,
                "window": {"start": "a", "end": "b"},
            },
        )
        MonitorStore(db).write_batch("x", MonitorBatch(), events=[drift, request])
    finally:
        db.dispose()
    result = aet_in_process(home, "drift")
    lines = [line for line in result.stdout.splitlines() if "adwin_error" in line]
    assert len(lines) == 2 and "retrain_request" in lines[0] and "250 labels" in lines[0]
    assert "mean_before=0.31" in lines[1] and "812" in lines[1]
    only = aet_in_process(home, "drift", "--no-requests", "--source", "news")
    assert "no drift events" in only.stdout


@pytest.mark.slow  # the session champion
def test_run_embedded_also_monitors_and_still_ends(app_with_champion) -> None:
    """``aet run`` wires the monitor as another worker; the run ends once its topics are drained too."""
    from aet.pipeline.runtime import run_embedded

    app = app_with_champion
    app.settings.replay.label_fraction = 1.0
    summary = run_embedded(app, EXAMPLES / "stream.jsonl", progress=False)
    drift = summary["drift"]
    assert sum(drift["positions"].values()) == summary["store"]["scored"]
    assert drift["labels"]["joined"] == summary["replay"]["labels"]
    assert drift["labels"]["expired"] == 0 and drift["labels"]["invalid"] == 0
    assert app.bus.group_lag(app.settings.monitor.group, [app.settings.topics.scored, app.settings.topics.labels]) == 0
    quality = MonitorStore(app.db).quality()
    assert sum(q.labeled for q in quality) == summary["replay"]["labels"]
    # v0001 served, and the fast-path heads versions on its weights that came in while the stream ran.
    assert {q.model_version.split(".h")[0] for q in quality} == {"v0001"}
