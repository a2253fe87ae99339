"""The alert role: scored messages in from ``aet.scored``, sentiment alerts out to ``aet.alerts``.

The windows, baselines and thresholds are the alert engine's
(:mod:`aet.pipeline.alert_engine`, pure statistics); this role decodes the
batch, hands it to the engine, publishes and stores what it raises (the
worker's delivery contract), and keeps the engine's baselines and per-entity
buckets in an :class:`~aet.pipeline.ports.AlertState` so that a restart resumes
them and the cooldowns hold.
"""

from __future__ import annotations

import logging
import threading
import time

from aet.pipeline import metrics
from aet.pipeline.alert_engine import KINDS, AlertEngine
from aet.pipeline.config import AlertSettings, TopicSettings
from aet.pipeline.ports import AlertState, BatchStore, Bus, BusRecord
from aet.pipeline.records import Alert, BadRecord, DeadLetter, ScoredMessage, decode
from aet.pipeline.worker import Outputs, Worker

log = logging.getLogger(__name__)


class AlertWorker(Worker):
    """The alert engine role: ``aet.scored`` in, ``aet.alerts`` (and the alerts table) out."""

    role = "alerts"

    def __init__(
        self,
        bus: Bus,
        store: BatchStore,
        topics: TopicSettings,
        settings: AlertSettings,
        *,
        engine: AlertEngine | None = None,
        state: AlertState | None = None,
    ) -> None:
        super().__init__(
            bus,
            store,
            group=settings.group,
            topics=[topics.scored],
            dlq_topic=topics.dlq,
            max_batch=settings.max_batch,
            max_wait_ms=settings.max_wait_ms,
        )
        self.settings = settings
        self.engine = engine or AlertEngine(settings)
        self.state = state
        self.out_topic = topics.alerts
        self.raised: list[Alert] = []
        self._flushed_at = time.monotonic()
        self._lock = threading.Lock()

    def handle(self, records: list[BusRecord]) -> Outputs:
        out = Outputs()
        messages: list[ScoredMessage] = []
        for r in records:
            try:
                messages.append(decode(ScoredMessage, r.value))
            except BadRecord as exc:
                out.dead_letters.append(
                    DeadLetter.of(
                        r.value,
                        stage="alerts",
                        reason=exc.reason,
                        topic=r.topic,
                        partition=r.partition,
                        offset=r.offset,
                        key=r.key,
                    )
                )
        with self._lock:
            alerts = self.engine.process(messages)
        metrics.ALERT_ENTITIES.set(self.engine.entities)
        for a in alerts:
            log.info(
                "alert %s %s %s: %d/%d %s in %s..%s (z %.1f)",
                a.severity,
                a.kind,
                a.entity,
                a.counts[KINDS[a.kind]],
                a.counts["total"],
                KINDS[a.kind],
                a.window_start,
                a.window_end,
                a.z,
            )
            out.alerts.append(a)
            out.publish.append((self.out_topic, a.entity, a.to_bytes()))
        self.raised.extend(alerts)
        return out

    def before_batch(self) -> None:
        if self.state is not None and time.monotonic() - self._flushed_at >= self.settings.state_flush_s:
            self.flush_state()

    def flush_state(self) -> None:
        """Write changed baselines and per-entity buckets; a failure is logged and retried next time."""
        if self.state is None:
            return
        self._flushed_at = time.monotonic()
        with self._lock:
            baselines, buckets = self.engine.dirty_state()
        if not baselines and not buckets:
            return
        try:
            self.state.save_state(baselines, buckets)
        except Exception as exc:  # noqa: BLE001 - state is advisory; the next flush carries it again
            log.warning("could not save alert state (%s: %s); will retry", type(exc).__name__, exc)
            with self._lock:
                self.engine.requeue(baselines, buckets)

    def run(self, stop: threading.Event, *, drain: bool = False) -> int:
        if self.state is not None:
            window = self.settings.cooldown_s + self.settings.window_s
            self.engine.restore(self.state.load_baselines(), self.state.recent_alerts(window))
        try:
            return super().run(stop, drain=drain)
        finally:
            self.flush_state()
