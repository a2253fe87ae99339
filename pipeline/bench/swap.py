"""``aet bench swap``: how long a promotion takes to reach a running scorer, and what a swap costs in latency.

A scorer with hot swap runs on the memory bus while a producer publishes
messages at a steady rate (below the scorer's capacity, as a live feed
would). After ``steady_s`` seconds, the bench alternates promotions and
rollbacks between the champion and a second artifact of the same model every
``every_s`` seconds, each published on ``aet.control`` as the trainer or
``aet models promote`` would. It reports:

- per swap, the seconds from publishing the control event to the first
  message scored by the new version (target: under 5 s);
- per-message scoring latency (``scored_at`` minus the message's time, which
  the producer sets when it publishes) as p50/p99 in steady state (messages
  scored before the first swap, after a warm-up) and in the 10 seconds after
  each control event, which cover load, verification, warm-up and the swap
  (target: p99 around a swap under 2x the steady p99);
- that every published message was scored exactly once, and the resident
  memory before and after the swaps.

The second version is a byte-identical copy of the champion's artifact under
another path and version: a swap's cost does not depend on the weights.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from aet.pipeline.bench.data import EXAMPLES, load_texts
from aet.pipeline.bench.report import Chart, environment, write_report
from aet.pipeline.bench.scratch import scratch_app
from aet.pipeline.learning.promotion import Promoter
from aet.pipeline.records import Message, ScoredMessage, decode
from aet.pipeline.runtime import WorkerThread

log = logging.getLogger(__name__)
AROUND_S = 10.0
WARMUP_S = 3.0


def _percentiles(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    a = np.asarray(values) * 1000
    return {
        "n": len(values),
        "p50_ms": round(float(np.percentile(a, 50)), 1),
        "p99_ms": round(float(np.percentile(a, 99)), 1),
        "max_ms": round(float(a.max()), 1),
    }


def swap_benchmark(
    app: Any,
    *,
    rate: float = 30.0,
    steady_s: float = 20.0,
    swaps: int = 4,
    every_s: float = 15.0,
    data: Path | None = None,
    bootstrap_data: Path | None = None,
    out: Path = Path("bench-results"),
) -> dict[str, Any]:
    """Run the timeline described in the module docstring; write ``swap.json`` and ``swap.png`` under ``out``."""
    champion = app.ensure_champion(bootstrap_data or EXAMPLES / "train.jsonl", progress=False)
    duration = steady_s + swaps * every_s
    rows, source = load_texts(data, int(rate * duration) + 100, cycle=True)
    with tempfile.TemporaryDirectory(prefix="aet-bench-swap-") as tmp:
        bench = scratch_app(
            app.settings,
            Path(tmp),
            scorer=app.settings.scorer.model_copy(update={"hot_swap": True, "registry_poll_s": 3600.0}),
        )
        try:
            copy = Path(tmp) / "copy"
            shutil.copytree(champion.artifact_path, copy)
            labels = list(champion.labels)
            bench.registry.register(
                version="v0001",
                artifact_path=champion.artifact_path,
                sha256=champion.sha256,
                backbone=champion.backbone,
                labels=labels,
                status="champion",
            )
            bench.registry.register(
                version="v0002",
                artifact_path=str(copy),
                sha256=champion.sha256,
                backbone=champion.backbone,
                labels=labels,
                parent="v0001",
            )
            report = _run(bench, rows, rate=rate, steady_s=steady_s, swaps=swaps, every_s=every_s)
        finally:
            bench.close()
    report = {
        "benchmark": "swap",
        "model": {"version": champion.version, "backbone": champion.backbone, "artifact": champion.artifact_path},
        "data": source,
        "rate_msgs_per_s": rate,
        "steady_s": steady_s,
        "every_s": every_s,
        "scorer_settings": app.settings.scorer.model_dump(),
        "environment": environment(),
        **report,
    }
    _write(report, out)
    return report


def _run(
    bench: Any, rows: list[dict[str, Any]], *, rate: float, steady_s: float, swaps: int, every_s: float
) -> dict[str, Any]:
    topics = bench.settings.topics
    stop, done = threading.Event(), threading.Event()
    published: list[str] = []
    process = psutil.Process()

    def produce() -> None:
        start = time.monotonic()
        for i, row in enumerate(rows):
            due = start + i / rate
            if stop.wait(max(0.0, due - time.monotonic())) or done.is_set():
                break
            m = Message(
                id=f"swap-{i}",
                source=row.get("source", "news"),
                channel="bench",
                text=row["text"],
                ts=datetime.now(UTC),
            )
            bench.bus.publish(topics.messages, m.to_bytes(), key=f"k{i % 12}")
            published.append(m.id)

    promoter = Promoter(bench.registry)
    events: list[dict[str, Any]] = []
    rss_before = rss_after = 0.0
    with bench.serving_scorer(bench.registry.champion()) as scorer:
        worker = WorkerThread(scorer, stop)
        worker.start()
        producer = threading.Thread(target=produce, name="aet-bench-producer", daemon=True)
        producer.start()
        started = time.time()
        stop.wait(steady_s)
        rss_before = process.memory_info().rss / 2**20
        for k in range(swaps):
            event = (
                promoter.promote("v0002", reason="bench swap") if k % 2 == 0 else promoter.rollback(reason="bench swap")
            )
            target = "v0002" if k % 2 == 0 else "v0001"
            events.append({"kind": event.kind, "to": target, "at": time.time()})
            bench.bus.publish(topics.control, event.to_bytes(), key=event.kind)
            bench.bus.flush()
            stop.wait(every_s)
        done.set()
        producer.join()
        while not stop.is_set() and bench.bus.group_lag(scorer.group, [topics.messages]):
            scorer.wait_for_commit(0.5)
        rss_after = process.memory_info().rss / 2**20
        stop.set()
        worker.join()
        if worker.error is not None:
            raise RuntimeError(f"the scorer failed: {worker.error!r}") from worker.error
        swaps_done = scorer.swapper.swaps if scorer.swapper is not None else 0

    scored = [decode(ScoredMessage, r.value) for r in bench.bus.read_all(topics.scored)]
    points = sorted(
        ((m.scored_at.timestamp(), (m.scored_at - m.ts).total_seconds(), m.model_version) for m in scored),
        key=lambda p: p[0],
    )
    first_event = events[0]["at"] if events else float("inf")
    steady = [lat for t, lat, _ in points if started + WARMUP_S <= t < first_event]
    around = [lat for t, lat, _ in points if any(e["at"] <= t < e["at"] + AROUND_S for e in events)]
    for e in events:
        first = next((t for t, _, v in points if t >= e["at"] and v == e["to"]), None)
        e["seconds_to_first_new_score"] = round(first - e["at"], 3) if first is not None else None
        e["at"] = round(e["at"] - started, 3)
    steady_p, around_p = _percentiles(steady), _percentiles(around)
    to_first = [e["seconds_to_first_new_score"] for e in events]
    ids = [m.id for m in scored]
    ratio = (around_p["p99_ms"] / steady_p["p99_ms"]) if steady and around else None
    return {
        "swaps": events,
        "swaps_applied": swaps_done,
        "seconds_to_first_new_score": {
            "max": max((t for t in to_first if t is not None), default=None),
            "all": to_first,
        },
        "latency_steady": steady_p,
        "latency_around_swaps": around_p,
        "p99_around_vs_steady": round(ratio, 2) if ratio is not None else None,
        "messages": {
            "published": len(published),
            "scored": len(ids),
            "distinct_scored": len(set(ids)),
            "exactly_once": sorted(ids) == sorted(published),
        },
        "rss_mib": {"before_swaps": round(rss_before, 1), "after_swaps": round(rss_after, 1)},
        "targets": {
            "promotion_to_first_score_under_5s": all(t is not None and t < 5 for t in to_first),
            "p99_around_swap_under_2x_steady": ratio is not None and ratio < 2,
        },
        "timeline": [(round(t - started, 3), round(lat * 1000, 1), v) for t, lat, v in points],
    }


def _write(report: dict[str, Any], out: Path) -> None:
    """``swap.json`` (without the per-message timeline, which goes to the plot) and ``swap.png``."""
    timeline = report.pop("timeline")
    swaps = report["swaps"]

    def draw(ax: Any) -> None:
        for version, color in (("v0001", "#4C72B0"), ("v0002", "#DD8452")):
            pts = [(t, lat) for t, lat, v in timeline if v == version]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.scatter(xs, ys, s=4, color=color, label=f"scored by {version}")
        for e in swaps:
            ax.axvline(e["at"], color="#888", linestyle="--", linewidth=1)
            ax.text(e["at"], ax.get_ylim()[1], f" {e['kind']}→{e['to']}", fontsize=7, va="top", rotation=90)
        ax.set_xlabel("seconds since start")
        ax.set_ylabel("scoring latency (ms)")
        ax.set_title("aet bench swap: latency per message, promotions and rollbacks dashed")
        ax.legend(loc="upper left", fontsize=8)

    write_report(report, out, "swap", Chart(size=(9, 3.5), draw=draw))
