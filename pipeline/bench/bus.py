"""``aet bench bus``: produce and consume msg/s of the memory bus and of Kafka, next to the scorer's rate.

Kafka is measured twice, with the client settings AET chose by measurement and
with kafka-python's defaults, on a broker given by the caller or a throwaway one
started for the run. Each configuration runs several rounds, interleaved, and
the median is reported with the samples: shared machines are noisy.

This module only measures. The buses and the broker come from the composition
root (the command line) as :class:`BusBackends`, so that nothing here imports
kafka-python or a concrete bus.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from aet.pipeline.bench.data import BENCH_TS, load_texts
from aet.pipeline.bench.report import bar_chart, environment, write_report
from aet.pipeline.config import BusSettings
from aet.pipeline.ports import Bus
from aet.pipeline.records import Message

CONSUME_BATCH = 1000  # records asked of each poll; every poll is committed, as a worker would
_CASHTAG = re.compile(r"\$[A-Za-z]{1,6}\b")


class BusFactory(Protocol):
    """Opens the bus ``settings`` name; ``tuned=False``: a Kafka bus with kafka-python's default client settings."""

    def __call__(self, settings: BusSettings, *, tuned: bool = True) -> Bus: ...


class Broker(Protocol):
    """A Kafka-protocol broker for the run: entering the context starts it, leaving stops it."""

    @property
    def binary(self) -> str: ...

    @property
    def bootstrap_servers(self) -> str: ...

    def __enter__(self) -> Broker: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


@dataclass(frozen=True)
class BusBackends:
    """What the benchmark measures, handed in by the composition root.

    ``open``: the bus factory. ``tuned``: AET's chosen kafka-python settings, reported
    next to the numbers. ``broker``: starts a throwaway broker when no bootstrap
    servers are given (``None``: there is none to start).
    """

    open: BusFactory
    tuned: Mapping[str, Any]
    broker: Callable[[], Broker] | None = None


def bus_payloads(rows: Sequence[dict[str, Any]]) -> list[tuple[str, bytes]]:
    """(key, value) message records keyed like live traffic: by the first entity (a cashtag), else the channel."""
    out = []
    for i, row in enumerate(rows):
        entities = [row["entity"]] if row.get("entity") else [t.upper() for t in _CASHTAG.findall(row["text"])[:3]]
        m = Message(
            id=f"bench-{i}",
            source=row.get("source", "news"),
            text=row["text"],
            channel=row.get("channel") or row.get("corpus") or "bench",
            ts=BENCH_TS,
            entities=entities,
        )
        out.append((m.key, m.to_bytes()))
    return out


def _measure_bus(bus: Bus, payloads: list[tuple[str, bytes]], tag: str) -> dict[str, float]:
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
            first = consumer.poll(max_records=CONSUME_BATCH, timeout_ms=500)
            if time.perf_counter() - joined > 120:
                raise RuntimeError("benchmark consumer got no records in 120 s")
        consumer.commit()
        t0 = time.perf_counter()
        join_s = t0 - joined
        got = len(first)
        counted = 0
        while got < n:
            batch = consumer.poll(max_records=CONSUME_BATCH, timeout_ms=2000)
            if not batch:
                raise RuntimeError(f"benchmark consumer stalled at {got} of {n} records")
            consumer.commit()
            got += len(batch)
            counted += len(batch)
        consume_s = time.perf_counter() - t0
    if not counted:
        raise RuntimeError(f"all {n} records came in the first poll: use more messages to measure consuming")
    return {"produce_msgs_per_s": n / produce_s, "consume_msgs_per_s": counted / consume_s, "join_s": join_s}


@contextlib.contextmanager
def _kafka(bootstrap_servers: str | None, backends: BusBackends) -> Iterator[dict[str, Any]]:
    """The Kafka to measure on, described for the report: the one given, or a broker started for the run."""
    if bootstrap_servers:
        yield {"bootstrap_servers": bootstrap_servers, "started_here": False}
        return
    with _broker(backends) as broker:
        yield {"tansu": broker.binary, "started_here": True, "bootstrap_servers": broker.bootstrap_servers}


def _broker(backends: BusBackends) -> Broker:
    """A broker to start for the run, or a clear error saying how to measure without one."""
    if backends.broker is None:
        raise RuntimeError("no Kafka to measure: pass --bootstrap-servers")
    try:
        return backends.broker()
    except RuntimeError as exc:
        raise RuntimeError(f"no Kafka to measure: pass --bootstrap-servers ({exc})") from exc


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def crc32c_implementation() -> str:
    """Which CRC-32C kafka-python checks record batches with: the C extension, or its slow pure-Python fallback."""
    try:
        import crc32c  # noqa: F401
    except ImportError:
        return "pure python (pip install crc32c: kafka-python checks record CRCs 5-10x faster)"
    return "crc32c C extension"


def bus_benchmark(
    bus_settings: BusSettings,
    backends: BusBackends,
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

    ``bootstrap_servers``: a Kafka cluster to measure on; ``None`` starts a broker
    for the run with ``backends.broker``. Each configuration runs ``repeats`` times,
    interleaved, and the median is reported (samples included): shared machines
    are noisy. ``scorer``: the scorer worker's rate
    (:func:`aet.pipeline.bench.score.scorer_rate`), to say whether the bus would
    limit it. ``variants``: extra ``bus.kafka`` settings to measure side by side
    (for tuning), each on top of kafka-python's defaults.
    """
    rows, source = load_texts(None, n, cycle=True)  # the bus does not care whether texts repeat
    payloads = bus_payloads(rows)
    kafka_extra = dict(bus_settings.kafka or {})
    kafka_extra.setdefault("session_timeout_ms", 6000)  # tansu holds a join for half of it
    kafka_extra.setdefault("heartbeat_interval_ms", 2000)

    configs: dict[str, Any] = {"memory": None, "kafka_chosen": True, "kafka_defaults": False}
    for name, extra in (variants or {}).items():
        configs[f"kafka_{name}"] = extra

    samples: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    with _kafka(bootstrap_servers, backends) as broker_desc:
        servers = broker_desc["bootstrap_servers"]
        for r in range(repeats):
            for name, how in configs.items():
                tag = f"{name}-{r}-{uuid.uuid4().hex[:6]}"
                if how is None:
                    bus = backends.open(BusSettings(backend="memory", partitions=bus_settings.partitions))
                else:
                    extra = dict(kafka_extra)
                    if isinstance(how, dict):
                        extra.update(how)
                    s = bus_settings.model_copy(
                        update={"backend": "kafka", "bootstrap_servers": servers, "kafka": extra}
                    )
                    bus = backends.open(s, tuned=how is True)
                try:
                    samples[name].append(_measure_bus(bus, payloads, tag))
                finally:
                    bus.close()
                if progress:
                    last = samples[name][-1]
                    print(
                        f"bench bus: {name} round {r + 1}/{repeats}: produce {last['produce_msgs_per_s']:,.0f}/s, "
                        f"consume {last['consume_msgs_per_s']:,.0f}/s",
                        file=sys.stderr,
                    )

    results: dict[str, dict[str, Any]] = {
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
        "consume_batch": CONSUME_BATCH,
        "broker": broker_desc,
        "environment": {
            **environment(),
            "kafka_python": importlib.metadata.version("kafka-python"),
            "crc32c": crc32c_implementation(),
        },
        "settings": {
            "kafka_chosen": dict(backends.tuned),
            "kafka_defaults": "kafka-python defaults, plus what the bus needs: acks=all, manual commit, "
            "earliest reset, 30 s delivery timeout",
            **{f"kafka_{k}": v for k, v in (variants or {}).items()},
        },
        "results": results,
        "ratios": ratios,
        "targets": {
            "consume_at_least_2x_defaults": ratios["kafka_chosen_vs_defaults_consume"] >= 2.0,
            "produce_at_least_1_4x_defaults": ratios["kafka_chosen_vs_defaults_produce"] >= 1.4,
        },
    }
    bars = {f"{name} {what}": r[f"{what}_msgs_per_s"] for name, r in results.items() for what in ("produce", "consume")}
    if scorer is not None:
        rate = scorer["messages_per_s"]
        slowest = {name: min(r["produce_msgs_per_s"], r["consume_msgs_per_s"]) for name, r in results.items()}
        report["scorer"] = scorer
        report["bus_headroom_over_scorer"] = {name: v / rate for name, v in slowest.items()}
        report["bus_limits_scorer"] = {name: v < rate for name, v in slowest.items()}
        bars["scorer worker"] = rate
    write_report(report, out, "bus", bar_chart(bars, "messages/s", "aet bench bus"))
    return report
