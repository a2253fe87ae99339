"""A replayed real stream with a spliced burst: exactly one alert, for the burst's entity, within its window.

The stream is the timestamped SemEval-2017 Task 5 microblogs (StockTwits and
Twitter, real cashtags and times; ../shared/data). Into it we splice a burst: 20
real negative microblogs from the same corpus (score below -0.4), their cashtags
rewritten to one entity, posted within 30 minutes on a quiet afternoon.

- the fast test scores with the corpus labels (a perfect scorer) and runs the real
  replay and the real alert worker on the memory bus, over every timestamped
  message before April 2016 (the two busy days of April 2016 hold natural negative
  surges of $TSLA and $FB that the engine rightly flags, which is not this test);
- the slow test runs the whole embedded pipeline (replay, the real champion
  model, the alert engine) on a three-day slice around the burst; its burst is made
  of Financial PhraseBank negatives (news sentences all annotators agreed on), which
  the small session champion reads reliably.
"""

from __future__ import annotations

import json
import random
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aet.adapters.memory_bus import MemoryBus
from aet.pipeline.config import AlertSettings, ReplaySettings, TopicSettings
from aet.pipeline.entities import CASHTAG
from aet.pipeline.records import Message, Probs, ScoredMessage, decode, parse_event_time
from aet.pipeline.roles.alerts import AlertWorker
from aet.pipeline.roles.replay import Replay
from aet.storage.alert_store import AlertStore
from aet.storage.db import Database
from aet.storage.store import ResultStore
from tests.conftest import shared_corpus

CORPUS = "semeval2017_task5_microblogs"
TARGET = "$AAPL"
BURST_START = datetime(2016, 3, 16, 14, 0, tzinfo=UTC)
BURST_SIZE = 20
PROBS = {"negative": (0.85, 0.1, 0.05), "neutral": (0.1, 0.8, 0.1), "positive": (0.05, 0.1, 0.85)}


def _rows(until: datetime | None = None, since: datetime | None = None) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in shared_corpus(CORPUS).read_text().splitlines() if line.strip()]
    out = []
    for r in rows:
        if not r.get("ts"):
            continue
        ts = parse_event_time(r["ts"])
        if (until is None or ts < until) and (since is None or ts >= since):
            out.append(r)
    return out


def _burst(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Real, clearly negative microblogs retargeted at one entity, one every 90 seconds."""
    pool = [r for r in _rows() if r["label"] == "negative" and r.get("score", 0) < -0.4 and CASHTAG.search(r["text"])]
    seen, picked = set(), []
    for r in random.Random(17).sample(pool, len(pool)):
        text = CASHTAG.sub(TARGET, r["text"])
        if text.lower() not in seen:
            seen.add(text.lower())
            picked.append(text)
        if len(picked) == BURST_SIZE:
            break
    return [
        {
            "id": f"spliced-burst-{i:02d}",
            "text": text,
            "label": "negative",
            "source": "chat",
            "entity": TARGET,
            "ts": (BURST_START + timedelta(seconds=90 * i)).isoformat(),
            "corpus": "spliced",
        }
        for i, text in enumerate(picked)
    ]


def _write_stream(path: Path, rows: list[dict[str, Any]]) -> dict[str, str]:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return {r["id"]: r["label"] for r in rows}


def _check(alerts: list[Any], burst: list[dict[str, Any]]) -> None:
    assert len(alerts) == 1, [(a.entity, a.kind, round(a.z, 2), a.window_end.isoformat()) for a in alerts]
    [alert] = alerts
    start, end = parse_event_time(burst[0]["ts"]), parse_event_time(burst[-1]["ts"])
    assert (alert.entity, alert.kind) == (TARGET, "negative_surge")
    assert start < alert.window_end <= end + timedelta(minutes=5)  # raised during the burst...
    assert alert.window_start <= start + timedelta(minutes=10)  # ...by a window that holds it
    assert alert.trigger_id in {b["id"] for b in burst}
    assert set(alert.example_ids) <= {b["id"] for b in burst}


def test_spliced_burst_raises_exactly_one_alert_with_a_perfect_scorer(tmp_path: Path) -> None:
    rows = _rows(until=datetime(2016, 4, 1, tzinfo=UTC))
    burst = _burst(rows)
    labels = _write_stream(tmp_path / "stream.jsonl", rows + burst)
    assert len(rows) > 1000 and len(burst) == BURST_SIZE
    topics = TopicSettings()
    bus = MemoryBus(partitions=3)
    bus.create_topics(topics.all())
    db = Database(f"sqlite:///{tmp_path / 'alerts.db'}")
    try:
        stats = Replay(bus, topics, ReplaySettings()).run(tmp_path / "stream.jsonl", progress=False)
        assert stats.published == len(rows) + len(burst)
        # The perfect scorer: each message with its corpus label, published to aet.scored as a scorer would,
        # partition by partition (so the alert engine sees partitions drift apart in event time).
        for r in bus.read_all(topics.messages):
            m = decode(Message, r.value)
            p = PROBS[labels[m.id]]
            scored = ScoredMessage(
                **m.model_dump(),
                label=labels[m.id],
                score=p[2] - p[0],
                model_version="corpus",
                probs=Probs(negative=p[0], neutral=p[1], positive=p[2]),
            )
            bus.publish(topics.scored, scored.to_bytes(), key=m.key)
        worker = AlertWorker(bus, ResultStore(db), topics, AlertSettings(), state=AlertStore(db))
        worker.run(threading.Event(), drain=True)
        _check(worker.raised, burst)
        assert [a.id for a in AlertStore(db).list_alerts()] == [worker.raised[0].id]
        assert [decode(type(worker.raised[0]), r.value).id for r in bus.read_all(topics.alerts)] == [
            worker.raised[0].id
        ]
    finally:
        bus.close()
        db.dispose()


@pytest.mark.slow
def test_spliced_burst_through_the_embedded_pipeline(app_with_champion: Any, tmp_path: Path) -> None:
    """Replay, the real champion model and the alert engine, as ``aet run`` runs them."""
    from aet.pipeline.runtime import run_embedded

    rows = _rows(since=BURST_START - timedelta(days=2), until=BURST_START + timedelta(days=1))
    # The session champion is trained on a few hundred example sentences, so the burst is made of
    # news sentences it reads well: Financial PhraseBank negatives that all annotators agreed on.
    bank = [json.loads(line) for line in shared_corpus("financial_phrasebank").read_text().splitlines() if line]
    negatives = [r["text"] for r in bank if r["label"] == "negative" and r.get("agreement") == "100"]
    burst = [
        {
            "id": f"spliced-burst-{i:02d}",
            "text": f"{TARGET} {text}",
            "label": "negative",
            "source": "news",
            "entity": TARGET,
            "ts": (BURST_START + timedelta(seconds=90 * i)).isoformat(),
            "corpus": "spliced",
        }
        for i, text in enumerate(random.Random(17).sample(negatives, BURST_SIZE))
    ]
    _write_stream(tmp_path / "stream.jsonl", rows + burst)
    summary = run_embedded(app_with_champion, tmp_path / "stream.jsonl", progress=False)
    assert summary["scored_this_run"] == len(rows) + len(burst)
    raised = AlertStore(app_with_champion.db).list_alerts()
    _check(raised, burst)
    assert summary["alerts"]["raised_this_run"][0]["id"] == raised[0].id
    assert raised[0].model_version == "v0001"
