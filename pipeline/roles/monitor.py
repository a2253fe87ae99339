"""The drift monitor role: scored messages and delayed labels in, drift events and retrain requests out.

The monitor consumes ``aet.scored`` and ``aet.labels`` and feeds the detectors
of :mod:`aet.pipeline.drift`, per source and serving model version:

- every scored message gives its confidence and predicted class, and (for one
  message in ``embed_every``, chosen by a hash of its id) its pooled encoder
  embedding under the monitor's copy of the champion;
- every label is joined to its prediction by message id and gives a 0/1 error.
  A label whose message has not arrived yet is **held** (in memory and in the
  ``label_joins`` ledger) and joined when the message comes; a second label for
  a message is a **duplicate** and ignored (the first one counts); a label whose
  message never comes within ``hold_messages`` messages is **dead-lettered**
  ("unknown message id"), and an invalid label record is dead-lettered with the
  validation reason. A label whose message left the monitor's memory is joined
  to the prediction stored in ``scored_messages``.

A detector alarm that opens a drift episode becomes a ``drift`` control event
(detector, signal, statistic, stream position, time) on ``aet.control`` and in
the database. A ``retrain_request`` follows once ``min_labels`` labels of that
source's messages after the drift point have been joined and
``retrain_cooldown_s`` has passed since the last retrain request, training
result or promotion; it names the data window (event time and stream
positions) in the form the trainer reads (``window.start``/``window.end``,
``source``, ``drift_event_id``).

Live quality (:mod:`aet.pipeline.live_quality`): rolling accuracy and macro-F1 of
the labeled messages per source and model version, stored in ``live_quality`` and
exported as Prometheus gauges.

Restarts: the detectors, positions, pending requests and live quality are
saved as JSON in ``detector_state`` in the same transaction as each batch's
events, together with the identity (topic, partition, offset, checksum) of the
batch's records; a batch redelivered after a crash is recognised and skipped,
so nothing is counted twice. Run one monitor per group: the detectors see the
whole stream.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from aet.pipeline import metrics
from aet.pipeline.config import MonitorSettings, TopicSettings
from aet.pipeline.drift import Alarm, DriftConfig, DriftEngine
from aet.pipeline.drift.new_source import NewSourceCheck
from aet.pipeline.learning.rollback import AutoRollback
from aet.pipeline.learning.shadow import ShadowTrial
from aet.pipeline.live_quality import LiveQuality
from aet.pipeline.ports import Bus, BusRecord, MonitorBatch, MonitorLedger
from aet.pipeline.records import LABELS, BadRecord, ControlEvent, DeadLetter, LabelRecord, ScoredMessage, decode, utcnow
from aet.pipeline.roles.monitor_embedding import ChampionEmbedder, Embedder, ModelSource
from aet.pipeline.worker import Outputs, Worker

log = logging.getLogger(__name__)
MONITOR_STATE_VERSION = 1
CHECKPOINT_EVERY = 64  # messages between (position, time) checkpoints of a source
MAX_CHECKPOINTS = 1024  # ~65,000 messages of a source; older labels map to position 0 (pre-reset)
RETRAIN_BLOCKERS = ("retrain_request", "training_result", "promotion")


@dataclass
class _Prediction:
    """What served a message, and what the weights under a fast-path head predicted on their own."""

    source: str
    position: int | None
    label: int
    version: str
    ts: datetime
    own_label: int  # what the weights under a head predicted (the served label where no head served)
    own_version: str  # the weights' version
    labeled: bool = False

    @classmethod
    def stored(cls, p: Any, position: int | None) -> _Prediction:
        """A prediction read back from the store, which keeps only what served."""
        label = LABELS.index(p.label)
        return cls(p.source, position, label, p.model_version, p.ts, label, p.model_version)


def record_key(r: BusRecord) -> str:
    """Identity of one delivered record: where it was read, and a checksum of what it was."""
    return f"{r.topic}:{r.partition}:{r.offset}:{zlib.crc32(r.value):08x}"


def _event_id(*parts: Any) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:32]


class _BatchWriter:
    """The store the worker loop sees: writes the batch's events and dead letters with the monitor's rows."""

    def __init__(self, store: MonitorLedger, monitor: Monitor) -> None:
        self.store = store
        self.monitor = monitor

    def write(
        self, *, events: Sequence[ControlEvent] = (), dead_letters: Sequence[DeadLetter] = (), **others: Sequence[Any]
    ) -> None:
        unexpected = {k for k, v in others.items() if v}
        if unexpected:
            raise ValueError(f"the monitor produces no {sorted(unexpected)}")
        self.store.write_batch(self.monitor.group, self.monitor.current_batch, events=events, dead_letters=dead_letters)


class Monitor(Worker):
    """Consumes ``aet.scored`` and ``aet.labels``; publishes drift events and retrain requests to ``aet.control``."""

    role = "monitor"

    def __init__(
        self,
        bus: Bus,
        store: MonitorLedger,
        topics: TopicSettings,
        settings: MonitorSettings,
        *,
        embedder: Embedder | None = None,
        models: ModelSource | None = None,
        rollback: AutoRollback | None = None,
        shadow: ShadowTrial | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(
            bus,
            _BatchWriter(store, self),
            group=settings.group,
            topics=[topics.scored, topics.labels],
            dlq_topic=topics.dlq,
            max_batch=settings.max_batch,
            max_wait_ms=settings.max_wait_ms,
        )
        self.current_batch = MonitorBatch()
        self.monitor_store = store
        self.settings = settings
        self.names = topics  # topic names (self.topics, set by Worker, is the list consumed)
        self.config = DriftConfig.from_settings(settings)
        self.engine = DriftEngine(self.config)
        self.embedding = ChampionEmbedder(settings, self.config, embedder=embedder, models=models)
        self.rollback = rollback  # judges promotions on the live labels (pipeline/learning/rollback.py)
        self.shadow = shadow  # judges a shadow challenger on the live labels (pipeline/learning/shadow.py)
        self.clock = clock
        self.recent: OrderedDict[str, _Prediction] = OrderedDict()
        self.held: dict[str, tuple[LabelRecord, int]] = {}
        self.seen = 0
        self.pending: dict[str, dict[str, Any]] = {}
        self.last_request_at: datetime | None = None
        self.quality = LiveQuality(settings.quality_window)
        self.applied: set[str] = set()
        self.latest_ts: dict[str, str] = {}
        self.checkpoints: dict[str, deque[tuple[int, str]]] = {}
        # Every source's latest labeled outcomes, whichever version served them: the reference a
        # never-seen source's accuracy is compared with.
        self.source_accuracy: dict[str, deque[int]] = {}
        self.counts = {
            "joined": 0,
            "held": 0,
            "duplicate": 0,
            "expired": 0,
            "invalid": 0,
            "duplicate_scored": 0,
            "skipped_redelivered": 0,
        }
        self.raised: deque[ControlEvent] = deque(maxlen=1000)  # this process's latest events (summaries, tests)
        self._restore()

    # ------------------------------------------------------------------ state

    def _restore(self) -> None:
        state = self.monitor_store.load_state(self.group)
        if state is not None:
            if state.get("version") != MONITOR_STATE_VERSION:
                log.warning(
                    "monitor state v%s is not v%s; starting afresh", state.get("version"), MONITOR_STATE_VERSION
                )
            else:
                for warning in self.engine.restore(state["engine"]):
                    log.warning("%s", warning)
                self.seen = int(state["seen"])
                self.pending = dict(state["pending"])
                self.last_request_at = (
                    datetime.fromisoformat(state["last_request_at"]) if state["last_request_at"] else None
                )
                self.quality.restore(state["quality"])
                self.applied = set(state["applied"])
                self.latest_ts = dict(state["latest_ts"])
                self.checkpoints = {
                    s: deque(((int(p), t) for p, t in cp), maxlen=MAX_CHECKPOINTS)
                    for s, cp in state["checkpoints"].items()
                }
                self.counts.update(state.get("counts", {}))
                for source, outcomes in state.get("source_accuracy", {}).items():
                    self._outcomes(source).extend(int(c) for c in outcomes)
                if self.rollback is not None and state.get("rollback"):
                    self.rollback.restore(state["rollback"])
                if self.shadow is not None:
                    self.shadow.restore(state.get("shadow"))
                log.info(
                    "monitor %s resumed at %s", self.group, {s: src.position for s, src in self.engine.sources.items()}
                )
        for row in self.monitor_store.held_labels():
            label = LabelRecord.model_validate(
                {"message_id": row.message_id, "label": row.label, "ts": row.label_ts, "annotator": row.annotator}
            )
            self.held[row.message_id] = (label, int(row.held_at or 0))
        metrics.HELD_LABELS.set(len(self.held))

    def state(self, applied: set[str]) -> dict[str, Any]:
        return {
            "version": MONITOR_STATE_VERSION,
            "engine": self.engine.state(),
            "seen": self.seen,
            "pending": self.pending,
            "last_request_at": self.last_request_at.isoformat() if self.last_request_at else None,
            "quality": self.quality.state(),
            "applied": sorted(applied),
            "latest_ts": self.latest_ts,
            "checkpoints": {s: list(cp) for s, cp in self.checkpoints.items()},
            "counts": self.counts,
            "source_accuracy": {s: "".join(map(str, d)) for s, d in self.source_accuracy.items()},
            "rollback": self.rollback.state() if self.rollback is not None else None,
            "shadow": self.shadow.state() if self.shadow is not None else None,
        }

    # ------------------------------------------------------------------ the champion to embed with

    @property
    def embedder(self) -> Embedder | None:
        """The model the monitor embeds with now (the champion it follows, or the one it was given)."""
        return self.embedding.embedder

    def before_batch(self) -> None:
        self.embedding.follow()
        if self.shadow is not None:
            try:
                self.shadow.follow()
            except Exception as exc:  # noqa: BLE001 - a registry outage must not stop drift detection
                log.warning("cannot follow the shadow challenger (%s: %s); retried later", type(exc).__name__, exc)

    def _training_reference(self, source: str, version: str, *, always: bool = False) -> None:
        """With ``embedding_reference: training`` (or ``always``), the champion's training texts are the reference."""
        reference = self.embedding.training_reference(source, version, always=always)
        if reference is not None:
            self.engine.set_reference(source, reference)
            log.info("embedding reference of %s/%s: %d training texts", source, version, len(reference))

    # ------------------------------------------------------------------ the batch

    def handle(self, records: list[BusRecord]) -> Outputs:
        out = Outputs()
        batch = MonitorBatch()
        self.current_batch = batch
        keys = [record_key(r) for r in records]
        decoded: list[tuple[BusRecord, ScoredMessage | LabelRecord]] = []
        for r, key in zip(records, keys, strict=True):
            if key in self.applied:
                self.counts["skipped_redelivered"] += 1
                continue
            try:
                if r.topic == self.names.scored:
                    decoded.append((r, decode(ScoredMessage, r.value)))
                elif r.topic == self.names.labels:
                    decoded.append((r, decode(LabelRecord, r.value)))
            except BadRecord as exc:
                if r.topic == self.names.labels:
                    self.counts["invalid"] += 1
                    metrics.LABEL_OUTCOMES.labels("invalid").inc()
                out.dead_letters.append(
                    DeadLetter.of(
                        r.value,
                        stage="monitor",
                        reason=exc.reason,
                        topic=r.topic,
                        partition=r.partition,
                        offset=r.offset,
                        key=r.key,
                    )
                )
        embeddings = self.embedding.embed([m for _, m in decoded if isinstance(m, ScoredMessage)])
        batch_ids = {m.id for _, m in decoded if isinstance(m, ScoredMessage)}
        lookup = [
            item.message_id
            for _, item in decoded
            if isinstance(item, LabelRecord) and item.message_id not in self.recent and item.message_id not in batch_ids
        ]
        stored = self.monitor_store.predictions(lookup) if lookup else {}
        already = self.monitor_store.joined(lookup) if lookup else set()
        touched: set[tuple[str, str]] = set()
        for _, item in decoded:
            if isinstance(item, ScoredMessage):
                self._on_scored(item, embeddings.get(item.id), out, batch, touched)
            else:
                self._on_label(item, stored, already, out, batch, touched)
        self._expire_held(out, batch, touched)
        self._retrain_requests(out)
        self._auto_rollback(out)
        self._shadow_trial(out)
        batch.quality.extend(self.quality.report(touched))
        for name, src in self.engine.sources.items():
            metrics.STREAM_POSITION.labels(name).set(src.position)
        metrics.HELD_LABELS.set(len(self.held))
        self.applied = set(keys)
        batch.state = self.state(self.applied)
        return out

    def _on_scored(
        self,
        m: ScoredMessage,
        embedding: np.ndarray | None,
        out: Outputs,
        batch: MonitorBatch,
        touched: set[tuple[str, str]],
    ) -> None:
        if m.id in self.recent:
            # The scorer delivers at least once: a message published again (after a scorer crash) is
            # not fed to the detectors a second time while the monitor remembers it.
            self.counts["duplicate_scored"] += 1
            return
        first_sight = m.source not in self.engine.sources
        src = self.engine.source(m.source)
        # The detectors follow the weights: a fast-path heads version on the same weights is the same regime.
        if src.version != m.base and m.base not in src.retired:
            src.follow(m.base)
            self._training_reference(m.source, m.base)
        if first_sight and self.settings.new_source_check and self._never_seen(m.source, m.base):
            self._watch_new_source(m.source, m.base)
        # The label-free detectors watch the weights they follow: where a fast-path head served, its weights' own.
        own = m.base_probs or m.probs
        probs = (own.negative, own.neutral, own.positive)
        self.seen += 1
        ts = m.ts.isoformat()
        if ts > self.latest_ts.get(m.source, ""):
            self.latest_ts[m.source] = ts
        alarms = self.engine.message(m.source, m.base, probs, embedding)
        position = src.position
        if position % CHECKPOINT_EVERY == 1:
            self.checkpoints.setdefault(m.source, deque(maxlen=MAX_CHECKPOINTS)).append((position, ts))
        self._remember(
            m.id,
            _Prediction(
                m.source, position, LABELS.index(m.label), m.model_version, m.ts, int(np.argmax(probs)), m.base
            ),
        )
        if self.shadow is not None:
            self.shadow.observe(m.id, m.text)
        self._emit(alarms, m.id, m.ts, out)
        held = self.held.pop(m.id, None)
        if held is not None:
            self._join(held[0], self.recent[m.id], m.id, out, batch, touched)

    def _on_label(
        self,
        label: LabelRecord,
        stored: dict[str, Any],
        already: set[str],
        out: Outputs,
        batch: MonitorBatch,
        touched: set[tuple[str, str]],
    ) -> None:
        mid = label.message_id
        pred = self.recent.get(mid)
        if pred is None and mid in stored and mid not in already:
            p = stored[mid]
            pred = _Prediction.stored(p, self._position_at(p.source, p.ts))
            self._remember(mid, pred)  # so that a second label for it in this batch is a duplicate
        if pred is not None and not pred.labeled and mid not in already:
            self._join(label, pred, mid, out, batch, touched)
            return
        if pred is not None or mid in already or mid in self.held:
            self.counts["duplicate"] += 1
            metrics.LABEL_OUTCOMES.labels("duplicate").inc()
            log.debug("duplicate label for %s ignored (the first label counts)", mid)
            return
        self.held[mid] = (label, self.seen)
        self.counts["held"] += 1
        metrics.LABEL_OUTCOMES.labels("held").inc()
        batch.joins.append(
            {
                "message_id": mid,
                "status": "held",
                "label": label.label,
                "annotator": label.annotator,
                "label_ts": label.ts,
                "source": None,
                "model_version": None,
                "predicted": None,
                "message_ts": None,
                "position": None,
                "held_at": self.seen,
            }
        )

    def _never_seen(self, source: str, version: str) -> bool:
        """Whether the champion was not trained on ``source``: its training data say so, or (when they
        cannot be read) the source appeared after another one had already passed its warm-up."""
        known = self.embedding.training_sources(version)
        if known is not None:
            return source not in known
        return any(s.position >= self.settings.warmup for name, s in self.engine.sources.items() if name != source)

    def _watch_new_source(self, source: str, version: str) -> None:
        """Compare a never-seen source with what the champion knows (module docstring of drift/new_source.py)."""
        s = self.settings
        self.engine.source(source).novel = NewSourceCheck(alpha=s.new_source_alpha, margin=s.new_source_margin)
        log.info("source %s is new to %s: compared with its training data and its other sources", source, version)
        self._training_reference(source, version, always=True)

    def _outcomes(self, source: str) -> deque[int]:
        if source not in self.source_accuracy:
            self.source_accuracy[source] = deque(maxlen=self.settings.quality_window)
        return self.source_accuracy[source]

    def _accuracy_elsewhere(self, source: str) -> tuple[int, int]:
        """(correct, labeled) of the latest labeled predictions on every source but ``source``."""
        others = [d for s, d in self.source_accuracy.items() if s != source]
        return sum(sum(d) for d in others), sum(len(d) for d in others)

    def _remember(self, mid: str, pred: _Prediction) -> None:
        self.recent[mid] = pred
        while len(self.recent) > self.settings.track_messages:
            self.recent.popitem(last=False)

    def _position_at(self, source: str, ts: datetime) -> int | None:
        """Approximate stream position of a message the monitor no longer remembers, from its event time."""
        cps = self.checkpoints.get(source)
        if not cps:
            return None
        iso = ts.isoformat()
        best = None
        for position, when in cps:
            if when <= iso:
                best = position
            else:
                break
        return best if best is not None else 0

    def _join(
        self,
        label: LabelRecord,
        pred: _Prediction,
        mid: str,
        out: Outputs,
        batch: MonitorBatch,
        touched: set[tuple[str, str]],
    ) -> None:
        pred.labeled = True
        true = LABELS.index(label.label)
        self.counts["joined"] += 1
        metrics.LABEL_OUTCOMES.labels("joined").inc()
        self.quality.add(pred.source, pred.version, true, pred.label)
        touched.add((pred.source, pred.version))
        pending = self.pending.get(pred.source)
        if pending is not None and (pred.position if pred.position is not None else 0) > pending["position"]:
            pending["labels"] += 1
        batch.joins.append(
            {
                "message_id": mid,
                "status": "joined",
                "label": label.label,
                "annotator": label.annotator,
                "label_ts": label.ts,
                "source": pred.source,
                "model_version": pred.version,
                "predicted": LABELS[pred.label],
                "message_ts": pred.ts,
                "position": pred.position,
                "held_at": None,
            }
        )
        if self.rollback is not None:
            self.rollback.learn_one(pred.version, true == pred.label)
        if self.shadow is not None:
            self.shadow.learn_one(mid, true, true == pred.own_label)  # weights against weights
        novel = self.engine.source(pred.source).novel
        reference = self._accuracy_elsewhere(pred.source) if novel is not None and not novel.done else None
        self._outcomes(pred.source).append(int(true == pred.label))
        # The error detectors judge the weights they follow, as the label-free ones do: a fast-path head that
        # fixes the weights' errors must not hide their drift (nor would a heads version match the weights').
        alarms = self.engine.label(
            pred.source,
            pred.own_version,
            pred.position if pred.position is not None else 0,
            true == pred.own_label,
            reference,
            served_correct=true == pred.label,
        )
        self._emit(alarms, mid, pred.ts, out)

    def _expire_held(self, out: Outputs, batch: MonitorBatch, touched: set[tuple[str, str]]) -> None:
        limit = self.settings.hold_messages
        due = [mid for mid, (_, held_at) in self.held.items() if self.seen - held_at >= limit]
        if not due:
            return
        stored = self.monitor_store.predictions(due)  # scored and stored, but never seen on the bus by this monitor
        for mid in due:
            label, _ = self.held.pop(mid)
            if mid in stored:
                p = stored[mid]
                pred = _Prediction.stored(p, self._position_at(p.source, p.ts))
                self._join(label, pred, mid, out, batch, touched)
                continue
            self.counts["expired"] += 1
            metrics.LABEL_OUTCOMES.labels("expired").inc()
            batch.drop_joins.append(mid)
            out.dead_letters.append(
                DeadLetter.of(
                    label.to_bytes(),
                    stage="monitor",
                    topic=self.names.labels,
                    key=mid,
                    reason=f"label for unknown message id {mid!r}: no scored message with this id arrived within "
                    f"{limit} messages",
                )
            )

    # ------------------------------------------------------------------ events

    def _emit(self, alarms: list[Alarm], message_id: str, message_ts: datetime, out: Outputs) -> None:
        for a in alarms:
            if not a.event:
                metrics.DRIFT_SUPPRESSED.labels(a.source, a.detector).inc()
                log.info("drift alarm of %s on %s at %d suppressed (cooldown)", a.detector, a.source, a.position)
                continue
            drift_ts = self.latest_ts.get(a.source) or message_ts.isoformat()
            event = ControlEvent(
                id=_event_id("drift", self.group, a.source, a.position, a.labeled, a.detector),
                kind="drift",
                ts=self.clock(),
                model_version=a.model_version,
                payload={
                    "source": a.source,
                    "detector": a.detector,
                    "signal": a.signal,
                    "statistic": a.statistic,
                    "position": a.position,
                    "labeled": a.labeled,
                    "message_id": message_id,
                    "message_ts": message_ts.isoformat(),
                    "stream_ts": drift_ts,
                    "corroborated_by": a.corroborated_by,
                    "parameters": a.parameters,
                    "expected_run_length": self.config.expected_run_length,
                    "monitor": self.group,
                },
            )
            out.events.append(event)
            out.publish.append((self.names.control, "drift", event.to_bytes()))
            self.raised.append(event)
            metrics.DRIFT_EVENTS.labels(a.source, a.detector).inc()
            log.warning(
                "drift on %s: %s (%s) at position %d: %s", a.source, a.detector, a.signal, a.position, a.statistic
            )
            self.pending[a.source] = {
                "drift_event_id": event.id,
                "detector": a.detector,
                "position": a.position,
                "ts": drift_ts,
                "model_version": a.model_version,
                "labels": 0,
            }

    def _follow_up(self, source: str, p: dict[str, Any]) -> None:
        """Keep adapting while the episode lasts: another round after ``min_labels`` more labels (of messages
        since the drift), on a window that still starts at the drift, so the gate's held-out slice grows."""
        round_ = int(p.get("round", 1))
        if round_ > self.settings.followup_rounds or source in self.pending:
            return
        self.pending[source] = {**p, "round": round_ + 1, "labels": 0}

    def _rejections(self, drift_event_id: str) -> int:
        """Challengers of this drift episode that the gate rejected."""
        return self.monitor_store.count_control("rejection", drift_event_id=drift_event_id)

    def _auto_rollback(self, out: Outputs) -> None:
        if self.rollback is None:
            return
        try:
            event = self.rollback.step()
        except Exception as exc:  # noqa: BLE001 - a registry outage must not stop drift detection
            log.warning("automatic rollback check failed (%s: %s); retried next batch", type(exc).__name__, exc)
            return
        if event is not None:
            out.events.append(event)
            out.publish.append((self.names.control, event.kind, event.to_bytes()))
            self.raised.append(event)

    def _shadow_trial(self, out: Outputs) -> None:
        if self.shadow is None:
            return
        try:
            events = self.shadow.step()
        except Exception as exc:  # noqa: BLE001 - a registry or model failure must not stop drift detection
            log.warning("shadow scoring failed (%s: %s); retried next batch", type(exc).__name__, exc)
            return
        for event in events:
            out.events.append(event)
            out.publish.append((self.names.control, event.kind, event.to_bytes()))
            self.raised.append(event)

    def _retrain_requests(self, out: Outputs) -> None:
        ready = [s for s, p in self.pending.items() if p["labels"] >= self.settings.min_labels]
        if not ready:
            return
        now = self.clock()
        last = [t for t in (self.last_request_at, self.monitor_store.latest_control_ts(RETRAIN_BLOCKERS)) if t]
        if last and (now - max(last)).total_seconds() < self.settings.retrain_cooldown_s:
            return
        source = min(ready, key=lambda s: self.pending[s]["position"])  # one request per cooldown
        p = self.pending.pop(source)
        if p.get("round", 1) > 1 and self._rejections(p["drift_event_id"]) >= 2:
            log.info("drift episode %s of %s ends: two rounds did not beat the champion", p["drift_event_id"], source)
            return
        src = self.engine.source(source)
        end = datetime.fromisoformat(self.latest_ts[source]) + timedelta(microseconds=1)
        event = ControlEvent(
            # One id per round of the episode: the trainer handles each id once.
            id=_event_id("retrain_request", p["drift_event_id"], *([p["round"]] if p.get("round", 1) > 1 else [])),
            kind="retrain_request",
            ts=now,
            model_version=p["model_version"],
            payload={
                "source": source,
                "drift_event_id": p["drift_event_id"],
                "round": p.get("round", 1),
                "detector": p["detector"],
                "window": {"start": p["ts"], "end": end.isoformat()},
                "from_position": p["position"],
                "to_position": src.position,
                "labeled": p["labels"],
                "min_labels": self.settings.min_labels,
                "monitor": self.group,
            },
        )
        out.events.append(event)
        out.publish.append((self.names.control, "retrain_request", event.to_bytes()))
        self.raised.append(event)
        self.last_request_at = now
        self._follow_up(source, p)
        metrics.RETRAIN_REQUESTS.labels(source).inc()
        log.warning(
            "retrain request for %s: %d labels since drift %s, window %s",
            source,
            p["labels"],
            p["drift_event_id"],
            event.payload["window"],
        )
