"""``aet bench alerts``: how fast the alert engine is, and how soon a burst becomes an alert.

Two measurements on a synthetic scored stream over many entities (Zipf-like
popularity, real financial texts with the entity's cashtag in front):

- **throughput**: N scored messages pre-published to ``aet.scored`` on the memory
  bus, drained by the alert worker exactly as it runs in production (decode,
  entities, windows, baselines, publish, store in SQLite, commit, state flushes),
  and the engine alone (no bus, no decoding, no database);
- **delay**: the worker runs live while background traffic flows; bursts of
  negative messages about fresh entities are published one message at a time, and
  the delay is measured from publishing the message that completed the burst (the
  alert's ``trigger_id``) to the alert arriving on ``aet.alerts``.

The scorer's throughput to compare with is given, or measured on the registered
champion through the scorer worker.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import json
import random
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aet.pipeline.alert_engine import AlertEngine
from aet.pipeline.bench.data import EXAMPLES, load_texts
from aet.pipeline.bench.report import bar_chart, environment, write_report
from aet.pipeline.bench.score import scorer_throughput
from aet.pipeline.bench.scratch import scratch_app
from aet.pipeline.config import AlertSettings, Settings
from aet.pipeline.records import Message, ScoredMessage, decode

START = datetime(2026, 2, 2, 9, 0, tzinfo=UTC)
PROBS = {"negative": (0.86, 0.09, 0.05), "neutral": (0.1, 0.8, 0.1), "positive": (0.05, 0.09, 0.86)}


def _entity(i: int) -> str:
    return f"$E{i:05d}" if i < 100_000 else f"$F{i}"


def _scored(i: int, entity: str, ts: datetime, text: str, label: str, version: str = "bench") -> bytes:
    p = PROBS[label]
    return json.dumps(
        {
            "schema_version": 1,
            "id": f"b-{i}",
            "source": "chat",
            "channel": "bench",
            "text": f"{entity} {text}",
            "ts": ts.isoformat(),
            "entities": [entity],
            "meta": {},
            "label": label,
            "probs": {"negative": p[0], "neutral": p[1], "positive": p[2]},
            "score": p[2] - p[0],
            "model_version": version,
            "scored_at": ts.isoformat(),
        }
    ).encode()


class _Stream:
    """Background traffic: Zipf-like entity popularity, 30/40/30 negative/neutral/positive."""

    def __init__(self, entities: int, texts: list[str], seed: int = 11) -> None:
        self.rng = random.Random(seed)
        weights = [1.0 / (r + 1) ** 0.8 for r in range(entities)]
        self.cum = list(itertools.accumulate(weights))
        self.texts = texts
        self.n = 0

    def next(self, ts: datetime) -> tuple[str, bytes]:
        rng = self.rng
        e = _entity(bisect.bisect_left(self.cum, rng.random() * self.cum[-1]))
        label = rng.choices(("negative", "neutral", "positive"), (0.3, 0.4, 0.3))[0]
        self.n += 1
        return e, _scored(self.n, e, ts, self.texts[self.n % len(self.texts)], label)


def _settings(base: AlertSettings) -> AlertSettings:
    return base.model_copy(update={"stdout": False, "webhooks": [], "gazetteer": None})


def _throughput(settings: Settings, entities: int, messages: int, texts: list[str], tmp: Path) -> dict[str, Any]:
    stream = _Stream(entities, texts)
    span_s = 48 * 3600  # two days of event time: buckets close, baselines update, windows are evicted
    records = [stream.next(START + timedelta(seconds=i * span_s / messages)) for i in range(messages)]
    bench = scratch_app(settings, tmp / "throughput")
    try:
        for key, value in records:
            bench.bus.publish(bench.settings.topics.scored, value, key=key)
        worker = bench.alert_worker()
        started = time.perf_counter()
        n = worker.run(threading.Event(), drain=True)
        seconds = time.perf_counter() - started
        stats = worker.engine.stats
    finally:
        bench.close()
    decoded = [decode(ScoredMessage, v) for _, v in records]
    engine = AlertEngine(settings.alerts)
    started = time.perf_counter()
    engine.process(decoded)
    engine_s = time.perf_counter() - started
    return {
        "worker": {
            "messages": n,
            "seconds": seconds,
            "messages_per_s": n / seconds,
            "batches": worker.batches,
            "alerts": stats.alerts,
            "entities_seen": entities,
        },
        "engine_only": {"messages": len(decoded), "seconds": engine_s, "messages_per_s": len(decoded) / engine_s},
    }


def _delay(
    settings: Settings, entities: int, bursts: int, texts: list[str], tmp: Path, background_rate: float
) -> dict[str, Any]:
    """Live worker, background traffic, bursts for fresh entities; delay from trigger publish to alert."""
    bench = scratch_app(settings, tmp / "delay")
    topics, bus, min_count = bench.settings.topics, bench.bus, settings.alerts.min_count
    stop = threading.Event()
    worker = bench.alert_worker()
    runner = threading.Thread(target=worker.run, args=(stop,), name="bench-alert-worker", daemon=True)
    received: dict[str, tuple[float, str | None]] = {}
    cond = threading.Condition()

    def observe() -> None:
        with bus.consumer("bench-observer", [topics.alerts]) as consumer:
            while not stop.is_set():
                for r in consumer.poll(100, timeout_ms=50):
                    alert = json.loads(r.value)
                    with cond:
                        received.setdefault(alert["entity"], (time.perf_counter(), alert.get("trigger_id")))
                        cond.notify_all()
                consumer.commit()

    observer = threading.Thread(target=observe, name="bench-alert-observer", daemon=True)
    runner.start()
    observer.start()
    stream = _Stream(entities, texts, seed=5)
    published: dict[str, float] = {}
    delays: list[float] = []
    missed: list[str] = []
    clock = START
    lock = threading.Lock()

    def background(stop_bg: threading.Event) -> None:
        nonlocal clock
        interval = 1.0 / background_rate
        next_at = time.perf_counter()
        while not stop_bg.is_set():
            with lock:
                clock += timedelta(seconds=0.5)
                key, value = stream.next(clock)
            bus.publish(topics.scored, value, key=key)
            next_at += interval
            pause = next_at - time.perf_counter()
            if pause > 0:
                stop_bg.wait(pause)

    stop_bg = threading.Event()
    feeder = threading.Thread(target=background, args=(stop_bg,), name="bench-background", daemon=True)
    try:
        # Warm-up: a minute of background traffic in event time, so the engine has state to carry.
        for _ in range(int(background_rate * 2)):
            clock += timedelta(seconds=0.5)
            key, value = stream.next(clock)
            bus.publish(topics.scored, value, key=key)
        feeder.start()
        for k in range(bursts):
            entity = _entity(200_000 + k)
            alerted = functools.partial(received.__contains__, entity)
            for j in range(min_count * 3):
                with lock:
                    clock += timedelta(seconds=1)
                    ts = clock
                mid = f"burst-{k}-{j}"
                value = json.loads(_scored(0, entity, ts, texts[j % len(texts)], "negative"))
                value["id"] = mid
                published[mid] = time.perf_counter()
                bus.publish(topics.scored, json.dumps(value).encode(), key=entity)
                with cond:
                    if cond.wait_for(alerted, timeout=0.02):
                        break
            with cond:
                cond.wait_for(alerted, timeout=5.0)
                hit = received.get(entity)
            if hit is None or hit[1] not in published:
                missed.append(entity)
                continue
            delays.append(hit[0] - published[hit[1]])
    finally:
        stop_bg.set()
        if feeder.is_alive():
            feeder.join()
        stop.set()
        runner.join()
        observer.join()
        bench.close()
    delays_ms = sorted(d * 1000 for d in delays)
    pct = (lambda q: delays_ms[min(len(delays_ms) - 1, int(q * len(delays_ms)))]) if delays_ms else (lambda q: None)
    return {
        "bursts": bursts,
        "detected": len(delays),
        "missed": missed,
        "background_messages_per_s": background_rate,
        "background_messages": stream.n,
        "delay_ms": {
            "p50": pct(0.5),
            "p95": pct(0.95),
            "max": delays_ms[-1] if delays_ms else None,
            "mean": statistics.fmean(delays_ms) if delays_ms else None,
        },
    }


def _scorer_rate(app: Any, texts: list[str], n: int = 256) -> dict[str, Any] | None:
    """Messages/s of the scorer worker on the registered champion (None if there is none)."""
    champion = app.registry.champion()
    if champion is None:
        return None
    model = app.load_model(champion)
    model.predict_proba(texts[:32])
    messages = [Message(id=f"s-{i}", source="chat", text=texts[i % len(texts)], ts=START) for i in range(n)]
    result = scorer_throughput(app, model, messages)
    return {
        "messages_per_s": result["messages_per_s"],
        "messages": result["messages"],
        "source": f"scorer worker on {champion.version}",
    }


def alerts_benchmark(
    app: Any,
    *,
    entities: int = 10_000,
    messages: int = 200_000,
    bursts: int = 20,
    out: Path = Path("bench-results"),
    scorer_rate: float | None = None,
    background_rate: float = 2000.0,
) -> dict[str, Any]:
    """Run both measurements and write ``alerts.json`` (and ``alerts.png``) under ``out``."""
    settings = app.settings.model_copy(update={"alerts": _settings(app.settings.alerts)})
    rows, source = load_texts(None, 2000)
    texts = [r["text"] for r in rows]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        throughput = _throughput(settings, entities, messages, texts, tmp)
        delay = _delay(settings, entities, bursts, texts, tmp, background_rate)
    scorer = {"messages_per_s": scorer_rate, "source": "given"} if scorer_rate else _scorer_rate(app, texts)
    worker_rate = throughput["worker"]["messages_per_s"]
    ratio = worker_rate / scorer["messages_per_s"] if scorer else None
    p95 = delay["delay_ms"]["p95"]
    report = {
        "benchmark": "alerts",
        "entities": entities,
        "messages": messages,
        "texts": source if source else str(EXAMPLES),
        "alert_settings": settings.alerts.model_dump(mode="json", exclude={"webhooks"}),
        "throughput": throughput,
        "delay": delay,
        "scorer": scorer,
        "ratio_alert_worker_vs_scorer": ratio,
        "targets": {
            "ratio_at_least": 20,
            "delay_below_ms": 1000,
            "ratio_met": None if ratio is None else ratio >= 20,
            "delay_met": p95 is not None and p95 < 1000 and not delay["missed"],
        },
        "environment": environment(),
    }
    bars = {"alert worker": worker_rate, "alert engine only": throughput["engine_only"]["messages_per_s"]}
    if scorer:
        bars["scorer"] = scorer["messages_per_s"]
    write_report(report, out, "alerts", bar_chart(bars, "scored messages/s", "aet bench alerts"))
    return report
