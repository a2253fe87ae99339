"""``aet bench score``: what the scorer costs, per serving option, next to transformers' ``pipeline``, in one run.

Per option (float32, int8, bf16 where the CPU has bf16 instructions; the score
cache off, and the default precision with the cache on) it measures:

- the scorer worker's throughput on its whole path (memory bus in, model, bus
  out, SQLite upserts, commits) in a throwaway installation;
- p50/p99 latency (publish to score) with messages published at half that
  throughput, with the configured ``scorer.max_wait_ms``;
- macro-F1 on the real test splits (PhraseBank's held-out share, the tweets'
  own valid split, from the shared data) and the share of labels that agree
  with float32.

Next to them: transformers' ``pipeline`` at batch size 1 and 32 on the same
float32 model and messages, and the whole embedded loop (``aet run``: replay,
scorer, monitor, alerts, label and dead-letter recorders in one process) on
the same messages with the default configuration, at the rate it sustains once
running (first to last score: a daemon loads its model once) and end to end.
The messages never repeat unless the corpus repeats them, so the cache cannot
inflate the ratios.
Absolute numbers on a shared machine are noisy; the ratios between
configurations measured in the same run are what to compare. :func:`scorer_rate`
gives the other benchmarks the worker's rate to compare their own stage with.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aet.pipeline.bench.data import BENCH_TS, EXAMPLES, load_texts
from aet.pipeline.bench.report import bar_chart, environment, write_report
from aet.pipeline.bench.scratch import scratch_app
from aet.pipeline.evaluation import macro_f1
from aet.pipeline.model import SentimentModel, cpu_has_bf16, serving_precision
from aet.pipeline.records import Message, ScoredMessage, decode

#: The real test splits: (corpus, use the corpus's own split).
QUALITY_SPLITS = (("financial_phrasebank", True), ("twitter_financial_news_sentiment", True))
LATENCY_S = 10.0  # seconds of publishing at half load per option (quick: a third of it)


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


def scorer_throughput(
    app: Any, model: Any, messages: Sequence[Message], *, cache_size: int | None = None
) -> dict[str, float]:
    """The scorer worker draining ``messages`` with ``app``'s scorer settings, in a throwaway installation."""
    scorer_settings = _scorer_settings(app, cache_size)
    with tempfile.TemporaryDirectory() as tmp:
        bench = scratch_app(app.settings, Path(tmp), scorer=scorer_settings)
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
    return {
        "messages": n,
        "seconds": seconds,
        "messages_per_s": n / seconds,
        "batches": scorer.batches,
        "cache_hit_rate": scorer.cache.stats.hit_rate,
    }


def latency_at_rate(
    app: Any, model: Any, rows: Sequence[dict[str, Any]], *, rate: float, seconds: float, cache_size: int | None = None
) -> dict[str, Any]:
    """p50/p99 seconds from publishing to scoring, messages published at ``rate`` for ``seconds`` (a live feed)."""
    from aet.pipeline.runtime import WorkerThread

    count = max(1, min(len(rows), int(rate * seconds)))
    with tempfile.TemporaryDirectory() as tmp:
        bench: Any = scratch_app(app.settings, Path(tmp), scorer=_scorer_settings(app, cache_size))  # memory bus
        stop = threading.Event()
        try:
            topic = bench.settings.topics.messages
            scorer = bench.scorer(model)
            worker = WorkerThread(scorer, stop)
            worker.start()
            start = time.monotonic()
            for i, row in enumerate(rows[:count]):
                stop.wait(max(0.0, start + i / rate - time.monotonic()))  # the producer's pace, not a synchronisation
                m = Message(id=f"lat-{i}", source=row.get("source", "news"), text=row["text"], ts=datetime.now(UTC))
                bench.bus.publish(topic, m.to_bytes(), key=f"k{i % 12}")
            deadline = time.monotonic() + 120 + count / rate
            while bench.bus.group_lag(scorer.group, [topic]) and time.monotonic() < deadline:
                scorer.wait_for_commit(0.5)
            stop.set()
            worker.join()
            if worker.error is not None:
                raise RuntimeError(f"the scorer failed: {worker.error!r}") from worker.error
            scored = [decode(ScoredMessage, r.value) for r in bench.bus.read_all(bench.settings.topics.scored)]
        finally:
            stop.set()
            bench.close()
    if len(scored) != count:
        raise RuntimeError(f"latency run scored {len(scored)} of {count} messages")
    ms = np.asarray([(m.scored_at - m.ts).total_seconds() * 1000 for m in scored])
    return {
        "rate_msgs_per_s": round(rate, 1),
        "messages": count,
        "max_wait_ms": bench.settings.scorer.max_wait_ms,
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
    }


def quality(
    models: dict[str, SentimentModel], *, per_split: int | None, seed: int = 7
) -> dict[str, dict[str, Any]] | None:
    """Per option: macro-F1 on each real test split and label agreement with float32 (``None`` without shared data)."""
    from aet.pipeline.bench.corpora import corpus_path, load_corpus, split_corpus, subsample

    try:
        splits = {
            name: subsample(split_corpus(load_corpus(corpus_path(name)), given)[1], per_split, seed)
            for name, given in QUALITY_SPLITS
        }
    except FileNotFoundError:
        return None
    out: dict[str, dict[str, Any]] = {option: {} for option in models}
    for name, examples in splits.items():
        texts, sources, truth = [e.text for e in examples], [e.source for e in examples], [e.label for e in examples]
        predicted = {
            option: np.argmax(m.predict_proba(texts, sources), axis=1).tolist() for option, m in models.items()
        }
        for option, labels in predicted.items():
            out[option][name] = {
                "examples": len(examples),
                "macro_f1": round(macro_f1(truth, labels), 4),
                "agreement_with_float32": round(float(np.mean(np.asarray(labels) == predicted["float32"])), 4),
            }
    for scores in out.values():
        per = list(scores.values())
        scores["mean_macro_f1"] = round(float(np.mean([s["macro_f1"] for s in per])), 4)
        scores["mean_agreement"] = round(float(np.mean([s["agreement_with_float32"] for s in per])), 4)
    return out


def loop_throughput(app: Any, champion: Any, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The embedded ``aet run`` loop (replay → scorer → monitor, alerts, recorders) over ``rows``, in msg/s."""
    from aet.pipeline.runtime import run_embedded

    with tempfile.TemporaryDirectory() as tmp:
        stream = Path(tmp) / "stream.jsonl"
        with stream.open("w", encoding="utf-8") as f:
            for i, row in enumerate(rows):
                record = {"id": f"loop-{i}", "text": row["text"], "source": row.get("source", "news")}
                f.write(json.dumps(record) + "\n")
        bench: Any = scratch_app(app.settings, Path(tmp) / "home")  # a memory bus: read_all reads the scores back
        try:
            bench.registry.register(
                version=champion.version,
                artifact_path=champion.artifact_path,
                sha256=champion.sha256,
                backbone=champion.backbone,
                labels=list(champion.labels),
                status="champion",
                info=champion.info,
            )
            started = time.perf_counter()
            summary = run_embedded(bench, stream, progress=False)
            seconds = time.perf_counter() - started
            scored = [decode(ScoredMessage, r.value) for r in bench.bus.read_all(bench.settings.topics.scored)]
        finally:
            bench.close()
    n = summary["scored_this_run"]
    if n != len(rows):
        raise RuntimeError(f"the embedded loop scored {n} of {len(rows)} messages")
    end_to_end = n / seconds
    sustained = sustained_rate([m.scored_at for m in scored])
    return {
        "messages": n,
        "seconds": seconds,
        "end_to_end_messages_per_s": end_to_end,
        "sustained_messages_per_s": sustained,
        "messages_per_s": sustained if sustained is not None else end_to_end,
        "rate": "sustained" if sustained is not None else "end_to_end",
        "precision": app.settings.model.precision,
    }


def sustained_rate(scored_at: Sequence[datetime]) -> float | None:
    """Messages per second from the first scored batch to the last: the rate a running loop keeps up.

    A daemon loads, verifies and converts its model and starts its roles once, so
    start-up and shut-down are left out (the end-to-end rate keeps them). The first
    batch (the scores stamped within a millisecond of the first) is not counted: it
    was computed before the window opens. ``None`` when there is only one batch.
    """
    times = sorted(t.timestamp() for t in scored_at)
    first_batch = sum(t - times[0] <= 1e-3 for t in times)
    if first_batch >= len(times):
        return None
    return (len(times) - first_batch) / (times[-1] - times[0])


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


def serving_options(model: SentimentModel) -> dict[str, SentimentModel]:
    """float32 and every other precision this machine serves: int8 on the CPU, bf16 on CUDA and on CPUs with
    bf16 instructions."""
    options = {"float32": model}
    if model.device.type == "cpu":
        options["int8"] = model.converted("int8")
        if cpu_has_bf16():
            options["bf16"] = model.converted("bf16")
    else:
        options["bf16"] = model.converted("bf16")
    return options


#: Dense bf16 tensor-core peaks (TFLOP/s, vendor data sheets), by a substring of the device name.
GPU_BF16_PEAK_TFLOPS = {"H200": 989.5, "H100": 989.5, "A100": 312.0, "L40S": 362.1, "L4": 121.0}


def flops_per_message(model: SentimentModel, texts: Sequence[str]) -> dict[str, float]:
    """Mean tokens and forward-pass FLOPs of one message (the encoder's matrix products and attention, no padding)."""
    cfg = model.model.config
    h, inter, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    lengths = np.asarray(
        [len(ids) for ids in model.tokenizer(list(texts), truncation=True, max_length=model.max_length)["input_ids"]],
        dtype=np.float64,
    )
    flops = layers * (2 * lengths * (4 * h * h + 2 * h * inter) + 4 * lengths**2 * h)
    return {"mean_tokens": round(float(lengths.mean()), 1), "gflop_per_message": round(float(flops.mean()) / 1e9, 4)}


def model_only(model: SentimentModel, texts: Sequence[str], *, batch_size: int) -> dict[str, float]:
    """The model alone (tokenize, length-sorted batches, forward, probabilities): the ceiling of the scorer."""
    from dataclasses import replace

    big = replace(model, batch_size=batch_size)
    big.predict_proba(texts[: batch_size * 2])  # warm-up at this batch size (CUDA kernels, allocator)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    big.predict_proba(texts)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    n = len(texts)
    return {"messages": n, "batch_size": batch_size, "seconds": seconds, "messages_per_s": n / seconds}


def compute_report(
    options: dict[str, SentimentModel], texts: Sequence[str], per_option: dict[str, dict[str, Any]], gpu_batch: int
) -> dict[str, Any]:
    """Where the time goes: FLOPs per message, achieved GFLOP/s per option, and on a GPU its share of the peak."""
    base = options["float32"]
    work = flops_per_message(base, texts)
    out: dict[str, Any] = {**work, "achieved_gflop_s": {}}
    for name, result in per_option.items():
        out["achieved_gflop_s"][name] = round(result["throughput"]["messages_per_s"] * work["gflop_per_message"], 1)
    if base.device.type == "cuda":
        device_name = torch.cuda.get_device_name(base.device)
        peak = next((v for k, v in GPU_BF16_PEAK_TFLOPS.items() if k in device_name), None)
        alone = model_only(options["bf16"], texts, batch_size=gpu_batch)
        achieved = alone["messages_per_s"] * work["gflop_per_message"] / 1000
        out["gpu"] = {
            "name": device_name,
            "bf16_peak_tflop_s": peak,
            "model_only_bf16": alone,
            "achieved_tflop_s": round(achieved, 2),
            "fraction_of_bf16_peak": round(achieved / peak, 4) if peak else None,
        }
    return out


def threads() -> dict[str, Any]:
    """The thread counts the numbers were measured with (intra-op, inter-op, tokenizer parallelism)."""
    return {
        "torch_intra_op": torch.get_num_threads(),
        "torch_inter_op": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM"),
    }


def score_benchmark(
    app: Any,
    *,
    data: Path | None,
    n: int,
    out: Path,
    bootstrap_data: Path | None,
    quick: bool = False,
    gpu_batch: int = 1024,
) -> dict[str, Any]:
    """Every serving option, ``pipeline()`` and the embedded loop on the same champion and messages; ``score.json``.

    The device is ``model.device``; on CUDA the options are float32 and bf16, and the
    report adds the model alone at ``gpu_batch`` and its share of the GPU's bf16 peak.
    """
    from aet.pipeline.runtime import load_verified_model

    champion = app.ensure_champion(bootstrap_data or EXAMPLES / "train.jsonl", progress=False)
    as_stored = app.settings.model.model_copy(update={"precision": "float32"})
    base = load_verified_model(champion, as_stored, serving=True)  # what the registry's artifact holds
    rows, source = load_texts(data, n)
    texts = [r["text"] for r in rows]
    messages = bench_messages(rows)
    options = serving_options(base)
    default = serving_precision(app.settings.model.precision, base.device)
    for m in options.values():
        m.predict_proba(texts[:64])  # warm-up, so no configuration pays for first-call costs
    cache_size = app.settings.scorer.cache_size
    per_option: dict[str, dict[str, Any]] = {}
    for name, model in options.items():
        per_option[name] = {"throughput": scorer_throughput(app, model, messages, cache_size=0)}
    per_option[f"{default}+cache"] = {"throughput": scorer_throughput(app, options[default], messages)}
    latency_s = LATENCY_S / 3 if quick else LATENCY_S
    for name, result in per_option.items():
        model = options[name.split("+")[0]]
        rate = result["throughput"]["messages_per_s"] / 2
        result["latency_at_half_load"] = latency_at_rate(
            app, model, rows, rate=rate, seconds=latency_s, cache_size=None if "+cache" in name else 0
        )
    scores = quality(options, per_split=200 if quick else None)
    if scores is not None:
        for name, result in per_option.items():
            result["quality"] = scores[name.split("+")[0]]
    baseline = {
        "hf_pipeline_batch1": _pipeline_throughput(base, texts, None),
        "hf_pipeline_batch32": _pipeline_throughput(base, texts, 32),
    }
    default_name = f"{default}+cache" if cache_size else default
    ours = per_option[default_name]["throughput"]["messages_per_s"]
    loop = loop_throughput(app, champion, rows)
    report = {
        "benchmark": "score",
        "model_version": base.version,
        "messages": len(rows),
        "distinct_texts": len({" ".join(t.split()) for t in texts}),
        "data": source,
        "quick": quick,
        "default": {"precision": default, "cache_size": cache_size, "option": default_name},
        "scorer_settings": app.settings.scorer.model_dump(),
        "model_batch_size": base.batch_size,
        "environment": environment(),
        "threads": threads(),
        "options": per_option,
        "results": {"scorer_worker": per_option[default_name]["throughput"], **baseline, "embedded_loop": loop},
        "ratio_scorer_vs_pipeline_batch1": ours / baseline["hf_pipeline_batch1"]["messages_per_s"],
        "ratio_scorer_vs_pipeline_batch32": ours / baseline["hf_pipeline_batch32"]["messages_per_s"],
        "macro_f1_delta_points": (
            round(100 * (scores[default]["mean_macro_f1"] - scores["float32"]["mean_macro_f1"]), 2) if scores else None
        ),
        "loop_vs_scorer": loop["messages_per_s"] / ours,
        "compute": compute_report(options, texts, per_option, gpu_batch),
    }
    bars = {k: v["throughput"]["messages_per_s"] for k, v in per_option.items()}
    bars |= {k: v["messages_per_s"] for k, v in baseline.items()} | {"embedded_loop": loop["messages_per_s"]}
    write_report(report, out, "score", bar_chart(bars, "messages/s", "aet bench score"))
    return report


def scorer_rate(app: Any, *, n: int, bootstrap_data: Path | None) -> dict[str, Any]:
    """The scorer worker's msg/s on the memory bus (model, SQLite, commits), for ``aet bench bus``."""
    champion = app.ensure_champion(bootstrap_data or EXAMPLES / "train.jsonl", progress=False)
    model = app.load_model(champion, serving=True)
    rows, source = load_texts(None, n)
    model.predict_proba([r["text"] for r in rows[:64]])  # warm-up
    result = scorer_throughput(app, model, bench_messages(rows))
    return {**result, "model_version": model.version, "data": source, "device": str(model.device)}


def _scorer_settings(app: Any, cache_size: int | None) -> Any:
    """``app``'s scorer settings, with the score cache's size replaced when ``cache_size`` is given."""
    s = app.settings.scorer
    return s if cache_size is None else s.model_copy(update={"cache_size": cache_size})
