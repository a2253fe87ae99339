"""Benchmarks run side by side in one process, reported as JSON (and a plot when matplotlib is there).

Absolute numbers on a shared machine are noisy; the ratios between
configurations measured in the same run are what to compare.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from adapters.memory_bus import MemoryBus
from pipeline.config import ScorerSettings
from pipeline.records import Message
from pipeline.scorer import Scorer
from storage.db import Database
from storage.store import ResultStore

SHARED_CORPUS = "twitter_financial_news_sentiment/twitter_financial_news_sentiment.jsonl"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def shared_data_dir() -> Path | None:
    """``AET_SHARED_DATA``, else ``../shared/data`` from the working directory, if it exists."""
    for candidate in (os.environ.get("AET_SHARED_DATA"), "../shared/data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def load_texts(data: Path | None, n: int) -> tuple[list[dict[str, Any]], str]:
    """Up to ``n`` message rows (cycled if the file is shorter) and where they came from."""
    if data is None:
        shared = shared_data_dir()
        data = shared / SHARED_CORPUS if shared and (shared / SHARED_CORPUS).is_file() else EXAMPLES / "stream.jsonl"
    rows = [json.loads(line) for line in Path(data).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"no rows in {data}")
    picked = [rows[i % len(rows)] for i in range(n)]
    return picked, str(data)


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def _scorer_throughput(model: Any, rows: list[dict[str, Any]], settings: ScorerSettings) -> dict[str, float]:
    """Full worker path: memory bus in, model, bus out, SQLite upserts, commits."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/bench.db")
        bus = MemoryBus(partitions=3)
        from pipeline.config import TopicSettings

        topics = TopicSettings()
        for i, row in enumerate(rows):
            m = Message(id=f"bench-{i}", source=row.get("source", "news"), text=row["text"],
                        ts="2026-01-01T00:00:00+00:00", entities=[row["entity"]] if row.get("entity") else [])
            bus.publish(topics.messages, m.to_bytes(), key=m.key)
        scorer = Scorer(bus, ResultStore(db), model, topics, settings)
        started = time.perf_counter()
        n = scorer.run(threading.Event(), drain=True)
        seconds = time.perf_counter() - started
        stored = ResultStore(db).count_scored()
        bus.close()
        db.dispose()
    if stored != len(rows):
        raise RuntimeError(f"benchmark scorer stored {stored} of {len(rows)} messages")
    return {"messages": n, "seconds": seconds, "messages_per_s": n / seconds, "batches": scorer.batches}


def _pipeline_throughput(model: Any, texts: list[str], batch_size: int | None) -> dict[str, float]:
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
    """Scorer worker vs transformers' ``pipeline`` on the same champion and messages."""
    champion = app.ensure_champion(bootstrap_data or EXAMPLES / "train.jsonl", progress=False)
    model = app.load_model(champion)
    rows, source = load_texts(data, n)
    texts = [r["text"] for r in rows]
    model.predict_proba(texts[:64])  # warm-up, so no configuration pays for first-call costs
    results = {
        "scorer_worker": _scorer_throughput(model, rows, app.settings.scorer),
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
    write_report(report, out, "score", {k: v["messages_per_s"] for k, v in results.items()}, "messages/s")
    return report


def write_report(report: dict[str, Any], out: Path, name: str, bars: dict[str, float], unit: str) -> None:
    """Write ``NAME.json`` and, when matplotlib is installed, a bar chart ``NAME.png``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2, default=str))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.barh(list(bars), list(bars.values()), color="#4C72B0")
    ax.set_xlabel(unit)
    ax.set_title(f"aet bench {name}")
    for i, v in enumerate(bars.values()):
        ax.text(v, i, f" {v:,.0f}", va="center")
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=120)
    plt.close(fig)
