"""``aet bench score``: messages/s of the scorer worker next to transformers' ``pipeline``, same model and messages.

The worker is measured on its whole path (memory bus in, model, bus out,
SQLite upserts, commits) in a throwaway installation; the pipeline at batch
size 1 and 32 is what a plain transformers loop would do. Absolute numbers on a
shared machine are noisy; the ratios between configurations measured in the
same run are what to compare. :func:`scorer_rate` gives the other benchmarks
the worker's rate to compare their own stage with.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aet.pipeline.bench.data import BENCH_TS, EXAMPLES, load_texts
from aet.pipeline.bench.report import bar_chart, environment, write_report
from aet.pipeline.bench.scratch import scratch_app
from aet.pipeline.records import Message


def bench_messages(rows: Sequence[dict[str, Any]]) -> list[Message]:
    """Messages from benchmark rows (``text``; optional ``source`` and ``entity``), all at one event time."""
    return [
        Message(
            id=f"bench-{i}",
            source=row.get("source", "news"),
            text=row["text"],
            ts=BENCH_TS,
            entities=[row["entity"]] if row.get("entity") else [],
        )
        for i, row in enumerate(rows)
    ]


def scorer_throughput(app: Any, model: Any, messages: Sequence[Message]) -> dict[str, float]:
    """The scorer worker draining ``messages`` with ``app``'s scorer settings, in a throwaway installation."""
    with tempfile.TemporaryDirectory() as tmp:
        bench = scratch_app(app.settings, Path(tmp))
        try:
            topic = bench.settings.topics.messages
            for m in messages:
                bench.bus.publish(topic, m.to_bytes(), key=m.key)
            scorer = bench.scorer(model)
            started = time.perf_counter()
            n = scorer.run(threading.Event(), drain=True)
            seconds = time.perf_counter() - started
            stored = bench.store.count_scored()
        finally:
            bench.close()
    if stored != len(messages):
        raise RuntimeError(f"benchmark scorer stored {stored} of {len(messages)} messages")
    return {"messages": n, "seconds": seconds, "messages_per_s": n / seconds, "batches": scorer.batches}


def _pipeline_throughput(model: Any, texts: list[str], batch_size: int | None) -> dict[str, float]:
    """transformers' text-classification pipeline on the same model: one text per call, or batched."""
    from transformers import pipeline

    clf = pipeline("text-classification", model=model.model, tokenizer=model.tokenizer, device=model.device, top_k=None)
    kwargs = {"truncation": True, "max_length": model.max_length}
    started = time.perf_counter()
    if batch_size is None:
        for t in texts:
            clf(t, **kwargs)
    else:
        clf(texts, batch_size=batch_size, **kwargs)
    seconds = time.perf_counter() - started
    return {"messages": len(texts), "seconds": seconds, "messages_per_s": len(texts) / seconds}


def score_benchmark(app: Any, *, data: Path | None, n: int, out: Path, bootstrap_data: Path | None) -> dict[str, Any]:
    """Scorer worker vs transformers' ``pipeline`` on the same champion and messages; writes ``score.json``."""
    champion = app.ensure_champion(bootstrap_data or EXAMPLES / "train.jsonl", progress=False)
    model = app.load_model(champion)
    rows, source = load_texts(data, n)
    texts = [r["text"] for r in rows]
    model.predict_proba(texts[:64])  # warm-up, so no configuration pays for first-call costs
    results = {
        "scorer_worker": scorer_throughput(app, model, bench_messages(rows)),
        "hf_pipeline_batch1": _pipeline_throughput(model, texts, None),
        "hf_pipeline_batch32": _pipeline_throughput(model, texts, 32),
    }
    ours = results["scorer_worker"]["messages_per_s"]
    report = {
        "benchmark": "score",
        "model_version": model.version,
        "messages": n,
        "data": source,
        "scorer_settings": app.settings.scorer.model_dump(),
        "model_batch_size": model.batch_size,
        "environment": environment(),
        "results": results,
        "ratio_scorer_vs_pipeline_batch1": ours / results["hf_pipeline_batch1"]["messages_per_s"],
        "ratio_scorer_vs_pipeline_batch32": ours / results["hf_pipeline_batch32"]["messages_per_s"],
    }
    bars = {k: v["messages_per_s"] for k, v in results.items()}
    write_report(report, out, "score", bar_chart(bars, "messages/s", "aet bench score"))
    return report


def scorer_rate(app: Any, *, n: int, bootstrap_data: Path | None) -> dict[str, Any]:
    """The scorer worker's msg/s on the memory bus (model, SQLite, commits), for ``aet bench bus``."""
    champion = app.ensure_champion(bootstrap_data or EXAMPLES / "train.jsonl", progress=False)
    model = app.load_model(champion)
    rows, source = load_texts(None, n)
    model.predict_proba([r["text"] for r in rows[:64]])  # warm-up
    result = scorer_throughput(app, model, bench_messages(rows))
    return {**result, "model_version": model.version, "data": source, "device": str(model.device)}
