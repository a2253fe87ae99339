"""Wiring: open what the roles need from settings, and run them together in one process.

This is the only place that chooses concrete backends (bus, database,
artifact store); the roles themselves see interfaces.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from aet.adapters.bus import Bus, open_bus
from aet.pipeline.config import Settings
from aet.pipeline.learning.loop import train_bootstrap_model
from aet.pipeline.model import ModelLoadError, SentimentModel
from aet.pipeline.roles.hotswap import ChampionFollower, ModelSwapper, SwapTarget
from aet.pipeline.roles.label_recorder import LabelRecorder
from aet.pipeline.roles.replay import Replay
from aet.pipeline.roles.scorer import Scorer
from aet.storage.artifacts import ArtifactError, ArtifactStore, verify
from aet.storage.db import Database
from aet.storage.registry import ModelInfo, ModelRegistry
from aet.storage.store import ResultStore

log = logging.getLogger(__name__)
SINK_DRAIN_S = 5.0  # at the end of an embedded run, keep delivering due alerts to sinks this long


class NoChampionError(RuntimeError):
    """No model is registered as champion and no bootstrap data was given."""


class App:
    """The database, registry, artifact store and bus of one AET installation."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.home.mkdir(parents=True, exist_ok=True)
        self.db = Database(settings.db_url)
        self.store = ResultStore(self.db)
        self.registry = ModelRegistry(self.db)
        self.artifacts = ArtifactStore(settings.models_dir)
        self._bus: Bus | None = None

    @property
    def bus(self) -> Bus:
        if self._bus is None:
            self._bus = open_bus(self.settings.bus)
            self._bus.create_topics(self.settings.topics.all())
        return self._bus

    def bootstrap(self, data: Path, *, progress: bool = True) -> ModelInfo:
        """Train a first model on ``data`` and register it as the champion."""
        version = self.registry.next_version()
        model, facts = train_bootstrap_model(self.settings, data, version, progress=progress)
        staged = self.artifacts.stage()
        try:
            model.save(staged)
            path, digest = self.artifacts.commit(staged, version)
        except BaseException:
            self.artifacts.discard(staged)
            raise
        info = self.registry.register(
            version=version,
            artifact_path=str(path.resolve()),
            sha256=digest,
            backbone=self.settings.model.backbone,
            labels=list(model.model.config.id2label.values()),
            status="champion",
            metrics={"validation": facts["validation"]},
            info={"origin": "bootstrap", **facts["info"]},
        )
        log.info("registered %s as champion (validation macro-F1 %.3f)", version, facts["validation"]["macro_f1"])
        self.seed_reservoir(data)  # the champion's data is the first "older" data replay and the gate use
        return info

    def seed_reservoir(self, data: Path) -> Any:
        """Offer the labeled examples of ``data`` to the replay reservoir (pipeline/learning/rehearsal.py)."""
        from aet.pipeline.learning.loop import load_examples
        from aet.pipeline.learning.rehearsal import Reservoir
        from aet.storage.training_store import TrainingStore

        r = self.settings.retrain
        return Reservoir(TrainingStore(self.db), r.reservoir_per_source, r.seed).add(load_examples(data))

    def trainer(self, *, progress: bool = True, mode: str | None = None) -> Any:
        """The trainer role (pipeline/roles/trainer.py): retrain requests in, challengers and gate decisions out."""
        from aet.pipeline.roles.trainer import TrainerRole

        return TrainerRole(self, progress=progress, mode=mode)

    def ensure_champion(self, bootstrap_data: Path | None, *, progress: bool = True) -> ModelInfo:
        """The registered champion, bootstrapping one from ``bootstrap_data`` if there is none."""
        champion = self.registry.champion()
        if champion is not None:
            return champion
        if bootstrap_data is None:
            raise NoChampionError(
                "no champion model is registered; run `aet models bootstrap --data FILE.jsonl` or pass --bootstrap-data"
            )
        return self.bootstrap(bootstrap_data, progress=progress)

    def load_model(self, info: ModelInfo | SwapTarget) -> SentimentModel:
        """Verify a registered artifact against its sha256 and load it."""
        try:
            verify(Path(info.artifact_path), info.sha256)
        except ArtifactError as exc:
            raise ModelLoadError(f"model {info.version}: {exc}") from exc
        m = self.settings.model
        return SentimentModel.load(
            info.artifact_path,
            version=info.version,
            max_length=m.max_length,
            batch_size=m.batch_size,
            device=m.device,
            new_head=False,
        )

    def scorer(self, model: SentimentModel, swapper: ModelSwapper | None = None) -> Scorer:
        return Scorer(self.bus, self.store, model, self.settings.topics, self.settings.scorer, swapper)

    @contextmanager
    def serving_scorer(self, champion: ModelInfo) -> Iterator[Scorer]:
        """A scorer serving ``champion`` that, with ``scorer.hot_swap``, follows later promotions and rollbacks.

        The model is loaded here and referenced only by the scorer, so that a
        swap releases it.
        """
        scorer = self.scorer(self.load_model(champion))
        if not self.settings.scorer.hot_swap:
            yield scorer
            return
        swapper = ModelSwapper(scorer.model, self.load_model)
        follower = ChampionFollower(
            self.bus,
            self.settings.topics.control,
            self.registry,
            swapper,
            group_prefix=self.settings.scorer.group,
            registry_poll_s=self.settings.scorer.registry_poll_s,
        )
        scorer.swapper = swapper
        follower.start()
        try:
            yield scorer
        finally:
            follower.close()
            swapper.close()

    def alert_worker(self) -> Any:
        """The alert engine role, with its baselines and cooldowns kept in this database."""
        from aet.pipeline.roles.alerts import AlertWorker
        from aet.storage.alert_store import AlertStore

        return AlertWorker(self.bus, self.store, self.settings.topics, self.settings.alerts, state=AlertStore(self.db))

    def monitor(self, model: SentimentModel | None = None, clock: Any = None) -> Any:
        """The drift monitor role (pipeline/roles/monitor.py): embeds with ``model``, else loads and follows the champion.

        ``clock`` (default: the wall clock) stamps its events and times its cooldowns; a replay benchmark
        passes the stream's event-time clock.
        """
        from aet.pipeline.learning.rollback import AutoRollback, RollbackGuard
        from aet.pipeline.roles.monitor import Monitor, RegistryModels
        from aet.storage.drift_store import MonitorStore

        m = self.settings.monitor
        rollback = (
            AutoRollback(self.registry, RollbackGuard(m.rollback_labels, m.rollback_margin), check_s=m.champion_check_s)
            if m.auto_rollback
            else None
        )
        return Monitor(
            self.bus,
            MonitorStore(self.db),
            self.settings.topics,
            m,
            embedder=model,
            models=RegistryModels(self.registry, self.load_model),
            rollback=rollback,
            **({"clock": clock} if clock is not None else {}),
        )

    def sink_dispatchers(self) -> list[Any]:
        """Started threads that feed the configured alert sinks (stdout, webhooks) from the outbox."""
        from aet.adapters.sinks import start_dispatchers
        from aet.storage.alert_store import AlertStore

        return start_dispatchers(AlertStore(self.db), self.settings.alerts)

    def close(self) -> None:
        if self._bus is not None:
            self._bus.close()
        self.db.dispose()


class WorkerThread(threading.Thread):
    """Runs one worker's loop; remembers the exception that ended it, if any."""

    def __init__(self, worker: Any, stop: threading.Event) -> None:
        super().__init__(name=f"aet-{worker.role}", daemon=True)
        self.worker, self.stop, self.error = worker, stop, None
        self.processed = 0

    def run(self) -> None:
        try:
            self.processed = self.worker.run(self.stop)
        except BaseException as exc:
            self.error = exc
            log.exception("worker %s died", self.worker.role)
            self.stop.set()


def run_embedded(
    app: App,
    stream: Path,
    *,
    bootstrap_data: Path | None = None,
    progress: bool = True,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Replay ``stream`` through every role in this process and return a summary.

    Returns once every published message and label is processed and committed.
    """
    champion = app.ensure_champion(bootstrap_data, progress=progress)
    with app.serving_scorer(champion) as scorer:
        return _run_roles(app, stream, scorer, champion, progress=progress, stop=stop or threading.Event())


def _run_roles(
    app: App, stream: Path, scorer: Scorer, champion: ModelInfo, *, progress: bool, stop: threading.Event
) -> dict[str, Any]:
    topics = app.settings.topics
    labels = LabelRecorder(app.bus, app.store, topics)
    threads = [WorkerThread(scorer, stop), WorkerThread(labels, stop)]
    alerter = app.alert_worker()  # consumes aet.scored: sentiment alerts (pipeline/roles/alerts.py)
    threads.append(WorkerThread(alerter, stop))
    dispatchers = app.sink_dispatchers()
    monitor = (
        app.monitor()
    )  # consumes aet.scored and aet.labels: drift events, retrain requests (pipeline/roles/monitor.py)
    threads.append(WorkerThread(monitor, stop))
    for t in threads:
        t.start()
    try:
        stats = Replay(app.bus, topics, app.settings.replay, max_text_chars=app.settings.scorer.max_text_chars).run(
            stream, progress=progress
        )
        pending = [(scorer, [topics.messages]), (labels, [topics.labels])]
        pending.append((alerter, [topics.scored]))
        pending.append((monitor, [topics.scored, topics.labels]))
        while not stop.is_set() and any(app.bus.group_lag(w.group, ts) for w, ts in pending):
            for w, ts in pending:
                if app.bus.group_lag(w.group, ts):
                    w.wait_for_commit(0.5)
                    break
        interrupted = stop.is_set()
    finally:
        stop.set()
        for t in threads:
            t.join()
        for d in dispatchers:
            d.close(drain_s=SINK_DRAIN_S)
    errors = [t.error for t in threads if t.error is not None]
    if errors:
        raise RuntimeError(f"a worker failed: {errors[0]!r}") from errors[0]
    totals = app.store.summary()
    alerts_summary = _alerts_summary(app, alerter)
    return {
        "stream": str(stream),
        "interrupted": interrupted,
        "champion": champion.version,
        "serving_at_end": scorer.model.version,
        "model_swaps": scorer.swapper.swaps if scorer.swapper is not None else 0,
        "replay": asdict(stats),
        "scored_this_run": threads[0].processed,
        "labels_this_run": threads[1].processed,
        "store": totals,
        "database": app.settings.db_url,
        "alerts": alerts_summary,
        "drift": _drift_summary(monitor),
    }


def _drift_summary(monitor: Any) -> dict[str, Any]:
    """Drift events and retrain requests of this run, and how the monitor handled the labels."""
    return {
        "events_this_run": [
            {
                "id": e.id,
                "kind": e.kind,
                "source": e.payload.get("source"),
                "detector": e.payload.get("detector"),
                "position": e.payload.get("position", e.payload.get("to_position")),
                "model_version": e.model_version,
            }
            for e in monitor.raised
        ],
        "labels": dict(monitor.counts),
        "positions": {name: src.position for name, src in monitor.engine.sources.items()},
    }


def _alerts_summary(app: App, alerter: Any) -> dict[str, Any]:
    """Alerts raised by this run (in order) and in the database."""
    from aet.storage.alert_store import AlertStore

    stats = alerter.engine.stats
    return {
        "raised_this_run": [
            {
                "id": a.id,
                "entity": a.entity,
                "kind": a.kind,
                "severity": a.severity,
                "z": round(a.z, 2),
                "window_start": a.window_start.isoformat(),
                "window_end": a.window_end.isoformat(),
                "counts": a.counts,
                "model_version": a.model_version,
            }
            for a in alerter.raised
        ],
        "in_store": AlertStore(app.db).count_alerts(),
        "late_events": stats.late,
        "duplicates": stats.duplicates,
    }
