"""AET itself as a strategy of the replay benchmark: the real roles on the bus, driven in lock-step.

Each chunk's messages are published and every role (scorer with hot swap,
label recorder, drift monitor, alert engine) runs until its group has
committed them; then the labels due are published and processed; then the
trainer serves any retrain request the monitor raised, and a promotion is
swapped into the scorer before the next chunk. The stream waits for training
(it takes no event time), so the same seed gives the same drift events,
retrains and numbers on the memory bus. Every role is built by the composition
root (:class:`aet.pipeline.runtime.App`), as for ``aet run``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from aet.pipeline.bench.scenario import Stream, StreamItem
from aet.pipeline.bench.strategies import Strategy
from aet.pipeline.evaluation import Report
from aet.pipeline.learning.examples import Example
from aet.pipeline.learning.loop import evaluate
from aet.pipeline.records import LABELS, LabelRecord, ScoredMessage, decode
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
        self.fast_path = app.head_learner() if app.fast_path_enabled else None
        workers = [self.scorer, self.labels, self.monitor, self.alerter]
        self.threads = [WorkerThread(w, self.stop) for w in [*workers, *filter(None, [self.fast_path])]]
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
        return evaluate(self.scorer.model, examples, by_source=True)  # as served: fast-path heads included

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
        if self.fast_path is not None:
            pending.append((self.fast_path, [t.scored, t.labels, t.control]))
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


def adaptation_delays(stream: Stream, loop: AetLoop) -> dict[str, Any]:
    """After each detected drift, the labels of its source that had arrived when an adapted version first served.

    An adapted version is one that did not serve before the drift event (a
    fast-path head or a retrained model, both fit on labels that arrived after
    it). Counted: labeled messages of the drifted source at or after the drift
    position whose labels had arrived before that first adapted prediction.
    """
    index = {it.message.id: it.index for it in stream.items}
    served = [loop.predicted.get(it.message.id, (None, None))[1] for it in stream.items]
    delay = stream.scenario.label_delay
    out: dict[str, int | None] = {}
    for e in loop.events("drift"):
        position = index.get(e.payload.get("message_id"))
        if position is None:
            continue
        source = stream.items[position].message.source
        before = set(served[: position + 1])
        first = next((i for i in range(position + 1, len(served)) if served[i] not in before), None)
        key = f"{position}:{e.payload.get('detector')}"
        if first is None:
            out[key] = None
            continue
        out[key] = sum(
            1
            for it in stream.items[position:first]
            if it.labeled and it.message.source == source and it.index + delay < first
        )
    return {"labels_to_first_adapted": out}
