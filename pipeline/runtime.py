"""The composition root: the one place that chooses the backends and builds the roles.

:class:`App` opens what one AET installation needs from its settings (the
database and its stores, the model registry, the artifact directory, the bus)
and builds each role with exactly the ports it uses (:mod:`aet.pipeline.ports`):
no role sees the App. ``aet run`` (:func:`run_embedded`), the daemons of the CLI
and the replay benchmark build their roles through these factories, so they
all run the same wiring.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, cast

from aet.adapters.bus import open_bus
from aet.adapters.sinks import SinkDispatcher, start_dispatchers
from aet.pipeline.config import ModelSettings, Settings
from aet.pipeline.learning.bootstrap import train_bootstrap_model
from aet.pipeline.learning.examples import load_examples
from aet.pipeline.learning.heads import HEADS_FILE, HeadSet, HeadWeights, load_heads, save_heads
from aet.pipeline.learning.promotion import Promoter
from aet.pipeline.learning.rehearsal import Reservoir, ReservoirStats
from aet.pipeline.learning.rollback import AutoRollback, RollbackGuard
from aet.pipeline.learning.shadow import ShadowTrial
from aet.pipeline.model import ModelLoadError, SentimentModel
from aet.pipeline.ports import ArtifactError, Bus, ChampionChanged, ModelInfo, ModelRef
from aet.pipeline.records import ControlEvent, configure, utcnow
from aet.pipeline.roles.alerts import AlertWorker
from aet.pipeline.roles.dead_letters import DeadLetterRecorder
from aet.pipeline.roles.head_learner import HeadLearner
from aet.pipeline.roles.hotswap import ChampionFollower, ModelSwapper
from aet.pipeline.roles.label_recorder import LabelRecorder
from aet.pipeline.roles.monitor import Monitor
from aet.pipeline.roles.monitor_embedding import RegistryModels
from aet.pipeline.roles.replay import Replay
from aet.pipeline.roles.scorer import Scorer
from aet.pipeline.roles.trainer import TrainerRole
from aet.pipeline.signing import SigningBus
from aet.pipeline.worker import Worker
from aet.storage.alert_store import AlertStore
from aet.storage.artifacts import ArtifactStore, verify
from aet.storage.db import Database
from aet.storage.drift_store import MonitorStore
from aet.storage.registry import ModelRegistry
from aet.storage.store import ResultStore
from aet.storage.training_store import TrainingStore

log = logging.getLogger(__name__)
SINK_DRAIN_S = 5.0  # at the end of an embedded run, keep delivering due alerts to sinks this long


class NoChampionError(RuntimeError):
    """No model is registered as champion and no bootstrap data was given."""


def load_verified_model(
    ref: ModelRef,
    settings: ModelSettings,
    device: str | None = None,
    *,
    name: str = "model",
    serving: bool = False,
) -> SentimentModel:
    """Verify a registered artifact against its sha256, then load it (on ``device``, default the settings').

    A missing or altered artifact is a :class:`ModelLoadError` that names the
    version (as ``name`` ``version``), never a model loaded from unverified files.
    With ``serving``, the verified float32 weights are converted to ``model.precision``;
    otherwise (a model to train or evaluate) they stay float32 on the CPU, bf16 on CUDA.
    """
    try:
        verify(Path(ref.artifact_path), ref.sha256)
    except ArtifactError as exc:
        raise ModelLoadError(f"{name} {ref.version}: {exc}") from exc
    return SentimentModel.load(
        ref.artifact_path,
        version=ref.version,
        max_length=settings.max_length,
        batch_size=settings.batch_size,
        device=settings.device if device is None else device,
        new_head=False,
        precision=settings.precision if serving else None,
    )


class App:
    """The stores, registry, artifact directory and bus of one AET installation, and the roles built on them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        configure(settings.limits, settings.dead_letters)  # what every record is held to in this process
        settings.home.mkdir(parents=True, exist_ok=True)
        self.db = Database(settings.db_url)
        self.store = ResultStore(self.db)
        self.registry = ModelRegistry(self.db)
        self.artifacts = ArtifactStore(settings.models_dir)
        self.training_store = TrainingStore(self.db)
        self.monitor_store = MonitorStore(self.db)
        self.alert_store = AlertStore(self.db)
        self._bus: Bus | None = None
        # Loaded serving weights by version, so that a heads version on them does not load them again.
        self._serving_weights: weakref.WeakValueDictionary[str, SentimentModel] = weakref.WeakValueDictionary()

    @property
    def bus(self) -> Bus:
        """The bus named by the settings, opened (and its topics created) on first use."""
        if self._bus is None:
            bus = open_bus(self.settings.bus)
            key = self.settings.control.signing_key  # every control event this installation publishes is signed
            self._bus = SigningBus(bus, self.settings.topics.control, key) if key is not None else bus
            self._bus.create_topics(self.settings.topics.all())
        return self._bus

    # ------------------------------------------------------------------ models

    def load_model(
        self,
        ref: ModelRef,
        device: str | None = None,
        *,
        name: str = "model",
        share_weights: bool = False,
        serving: bool = False,
    ) -> SentimentModel:
        """Verify a registered artifact against its sha256 and load it (see :func:`load_verified_model`).

        A fast-path heads version loads its base's verified weights and adds
        the heads. With ``share_weights``, weights already loaded for serving
        in this process are reused instead of loaded again (never for a model
        that will be trained: its weights must be its own). Shared or
        ``serving`` weights are converted to ``model.precision``.
        """
        serving = serving or share_weights
        path = Path(ref.artifact_path)
        if not (path / HEADS_FILE).is_file():
            cached = self._serving_weights.get(ref.version) if share_weights else None
            if cached is not None:  # its weights already serve here (they were verified when loaded)
                return replace(cached, heads=None, version=ref.version, base_version=None)
            model = load_verified_model(ref, self.settings.model, device, name=name, serving=serving)
            if share_weights:
                self._serving_weights[model.base] = model
            return model
        try:
            verify(path, ref.sha256)
        except ArtifactError as exc:
            raise ModelLoadError(f"{name} {ref.version}: {exc}") from exc
        heads = load_heads(path)
        assert heads is not None
        base = self._serving_weights.get(heads.base) if share_weights else None
        if base is None:
            base = load_verified_model(
                self.registry.get(heads.base), self.settings.model, device, name=name, serving=serving
            )
        model = base.with_heads(heads, ref.version)
        if share_weights:
            self._serving_weights[heads.base] = model
        return model

    def serving_model(self, ref: ModelRef) -> SentimentModel:
        """``ref`` loaded to serve: weights shared with what already serves in this process."""
        return self.load_model(ref, share_weights=True)

    def bootstrap(self, data: Path, *, progress: bool = True) -> ModelInfo:
        """Train a first model on ``data`` and register it as the champion."""
        version = self.registry.next_version()
        model, facts = train_bootstrap_model(self.settings, data, version, progress=progress)
        validation = cast(dict[str, Any], facts["validation"])  # evaluate()'s report
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
            labels=[str(label) for label in (model.model.config.id2label or {}).values()],
            status="champion",
            metrics={"validation": validation},
            info={"origin": "bootstrap", **cast(dict[str, Any], facts["info"])},
        )
        log.info("registered %s as champion (validation macro-F1 %.3f)", version, validation["macro_f1"])
        self.seed_reservoir(data)  # the champion's data is the first "older" data rehearsal and the gate use
        return info

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

    def reservoir(self) -> Reservoir:
        """The rehearsal reservoir (pipeline/learning/rehearsal.py) with the retrain settings' size and seed."""
        r = self.settings.retrain
        return Reservoir(self.training_store, r.reservoir_per_source, r.seed)

    def seed_reservoir(self, data: Path) -> ReservoirStats:
        """Offer the labeled examples of ``data`` to the rehearsal reservoir."""
        return self.reservoir().add(load_examples(data))

    # ------------------------------------------------------------------ roles

    def replay(self) -> Replay:
        """Stream ingest: a recorded stream file onto ``aet.messages`` (and some labels onto ``aet.labels``)."""
        s = self.settings
        return Replay(self.bus, s.topics, s.replay, max_text_chars=s.scorer.max_text_chars)

    def scorer(self, model: SentimentModel, swapper: ModelSwapper | None = None) -> Scorer:
        """The scorer role serving ``model``; with ``swapper``, it takes the models the swapper loads."""
        # Features feed only the fast path: with it off, the scorers do not compute or publish them.
        scorer = self.settings.scorer.model_copy(update={"features": self.fast_path_enabled})
        return Scorer(self.bus, self.store, model, self.settings.topics, scorer, swapper)

    def swapper(self, model: SentimentModel) -> ModelSwapper:
        """Loads the versions a scorer serving ``model`` is asked to swap to, verified, in the background."""
        self._serving_weights[model.base] = model
        s = self.settings.scorer
        return ModelSwapper(model, self.serving_model, retries=s.swap_retries, retry_backoff_s=s.swap_retry_backoff_s)

    def champion_follower(self, swapper: ModelSwapper) -> ChampionFollower:
        """Keeps ``swapper`` wanting the registry's champion (not started)."""
        s = self.settings
        return ChampionFollower(
            self.bus,
            s.topics.control,
            self.registry,
            swapper,
            group_prefix=s.scorer.group,
            registry_poll_s=s.scorer.registry_poll_s,
        )

    @contextmanager
    def serving_scorer(self, champion: ModelInfo) -> Iterator[Scorer]:
        """A scorer serving ``champion`` that, with ``scorer.hot_swap``, follows later promotions and rollbacks.

        The model is loaded here and referenced only by the scorer, so that a
        swap releases it.
        """
        scorer = self.scorer(self.load_model(champion, serving=True))
        if not self.settings.scorer.hot_swap:
            yield scorer
            return
        swapper = self.swapper(scorer.model)
        follower = self.champion_follower(swapper)
        scorer.swapper = swapper
        follower.start()
        try:
            yield scorer
        finally:
            follower.close()
            swapper.close()

    def label_recorder(self) -> LabelRecorder:
        """The label recorder role: ``aet.labels`` into the labels table."""
        return LabelRecorder(self.bus, self.store, self.settings.topics)

    def dead_letter_recorder(self) -> DeadLetterRecorder:
        """The dead-letter recorder role: ``aet.dlq`` (whichever stage wrote it) into the dead_letters table."""
        return DeadLetterRecorder(self.bus, self.store, self.settings.topics, self.settings.dead_letters)

    def alert_worker(self) -> AlertWorker:
        """The alert role, with its baselines and cooldowns kept in this database."""
        s = self.settings
        return AlertWorker(self.bus, self.store, s.topics, s.alerts, state=self.alert_store)

    def monitor(self, model: SentimentModel | None = None, clock: Callable[[], datetime] | None = None) -> Monitor:
        """The drift monitor role: embeds with ``model``, else loads and follows the champion.

        ``clock`` (default: the wall clock) stamps its events and times its cooldowns; a replay benchmark
        passes the stream's event-time clock.
        """
        m = self.settings.monitor
        rollback = (
            AutoRollback(self.registry, RollbackGuard(m.rollback_labels, m.rollback_margin), check_s=m.champion_check_s)
            if m.auto_rollback
            else None
        )
        shadow = (
            ShadowTrial(
                self.registry,
                self.serving_model,
                alpha=m.shadow_alpha,
                max_labels=m.shadow_labels,
                check_s=m.champion_check_s,
            )
            if self.settings.retrain.shadow
            else None
        )
        return Monitor(
            self.bus,
            self.monitor_store,
            self.settings.topics,
            m,
            embedder=model,
            models=RegistryModels(self.registry, self.serving_model),
            rollback=rollback,
            shadow=shadow,
            clock=clock or utcnow,
        )

    def trainer(
        self,
        *,
        progress: bool = True,
        mode: str | None = None,
        follower: bool = False,
        retry_backoff_s: float = 1.0,
    ) -> TrainerRole:
        """The trainer role: retrain requests in, challengers and gate decisions out.

        ``mode`` overrides ``retrain.mode``; a ``follower`` (a data-parallel rank
        other than 0) gets no bus: rank 0 hands it each round.
        """
        s = self.settings
        settings = s.retrain if mode is None else s.retrain.model_copy(update={"mode": mode})

        def load_champion(ref: ModelRef, device: str) -> SentimentModel:
            return self.load_model(ref, device, name="champion")

        return TrainerRole(
            None if follower else self.bus,
            self.store,
            registry=self.registry,
            artifacts=self.artifacts,
            training=self.training_store,
            reservoir=Reservoir(self.training_store, settings.reservoir_per_source, settings.seed),
            load_model=load_champion,
            topics=s.topics,
            settings=settings,
            model_device=s.model.device,
            progress=progress,
            retry_backoff_s=retry_backoff_s,
            signing_key=s.control.signing_key,
        )

    @property
    def fast_path_enabled(self) -> bool:
        """The fast path runs when enabled and the scorers attach the features it learns from."""
        return self.settings.fast_path.enabled and self.settings.scorer.features

    def head_learner(self) -> HeadLearner:
        """The fast-path role: per-source heads learned from every label, published as heads versions."""
        s = self.settings
        return HeadLearner(self.bus, self.store, s.topics, s.fast_path, FastPathRegistry(self))

    def sink_dispatchers(self, stop: threading.Event | None = None) -> list[SinkDispatcher]:
        """Started threads that feed the configured alert sinks (stdout, webhooks) from the outbox."""
        return start_dispatchers(self.alert_store, self.settings.alerts, stop)

    def close(self) -> None:
        if self._bus is not None:
            self._bus.close()
        self.db.dispose()


class FastPathRegistry:
    """The registry and artifact directory as the fast path sees them (:class:`HeadsRegistry`)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.promoter = Promoter(app.registry)

    def champion_base(self) -> str | None:
        champion = self.app.registry.champion()
        return None if champion is None else champion.weights_version

    def own_head(self, base: str) -> HeadWeights:
        return self.app.serving_model(self.app.registry.get(base)).own_head()

    def publish(self, heads: HeadSet, info: dict[str, object]) -> ControlEvent:
        registry, artifacts = self.app.registry, self.app.artifacts
        serving = self.champion_base()
        if serving != heads.base:
            raise ChampionChanged(f"heads for the weights {heads.base}, but {serving} serve now")
        prefix = f"{heads.base}.h"
        k = 1 + max((int(m.version[len(prefix) :]) for m in registry.list() if m.version.startswith(prefix)), default=0)
        version = f"{prefix}{k}"
        staged = artifacts.stage()
        try:
            save_heads(heads, staged, info)
            path, digest = artifacts.commit(staged, version)
        except BaseException:
            artifacts.discard(staged)
            raise
        base = registry.get(heads.base)
        registry.register(
            version=version,
            artifact_path=str(path.resolve()),
            sha256=digest,
            backbone=base.backbone,
            labels=list(base.labels),
            parent=heads.base,
            info={"kind": "heads", "base": heads.base, **info},
        )
        try:
            return self.promoter.promote(
                version,
                reason="fast path: heads beat the champion's own layer",
                kind="heads",
                expect_weights=heads.base,
            )
        except ChampionChanged as exc:
            registry.set_status(version, "rejected", note={"rejected": str(exc)})
            raise


class Runnable(Protocol):
    """A role's loop, as :class:`WorkerThread` runs it."""

    @property
    def role(self) -> str: ...

    def run(self, stop: threading.Event) -> int: ...


class WorkerThread(threading.Thread):
    """Runs one worker's loop; remembers the exception that ended it, if any."""

    def __init__(self, worker: Runnable, stop: threading.Event) -> None:
        super().__init__(name=f"aet-{worker.role}", daemon=True)
        self.worker, self.stop = worker, stop
        self.error: BaseException | None = None
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
    labels = app.label_recorder()
    threads = [WorkerThread(scorer, stop), WorkerThread(labels, stop)]
    recorder = app.dead_letter_recorder()  # consumes aet.dlq: every stage's dead letters into the store
    threads.append(WorkerThread(recorder, stop))
    alerter = app.alert_worker()  # consumes aet.scored: sentiment alerts (pipeline/roles/alerts.py)
    threads.append(WorkerThread(alerter, stop))
    dispatchers = app.sink_dispatchers()
    monitor = app.monitor()  # consumes aet.scored and aet.labels: drift events, retrain requests
    threads.append(WorkerThread(monitor, stop))
    pending: list[tuple[Worker, list[str]]] = [
        (scorer, [topics.messages]),
        (labels, [topics.labels]),
        (recorder, [topics.dlq]),
        (alerter, [topics.scored]),
        (monitor, [topics.scored, topics.labels]),
    ]
    fast_path = app.head_learner() if app.fast_path_enabled else None  # heads learned from every label
    if fast_path is not None:
        threads.append(WorkerThread(fast_path, stop))
        pending.append((fast_path, [topics.scored, topics.labels, topics.control]))
    # Serves the monitor's retrain requests while the stream runs; a promotion is swapped into the scorer.
    trainer = app.trainer(progress=False)
    threads.append(WorkerThread(trainer, stop))
    pending.append((trainer, [topics.control]))
    for t in threads:
        t.start()
    try:
        stats = app.replay().run(stream, progress=progress)
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
        "database": app.settings.db_url_display,
        "alerts": _alerts_summary(app.alert_store, alerter),
        "drift": _drift_summary(monitor),
        "fast_path": dict(fast_path.counts) if fast_path is not None else None,
        "accuracy_by_version": app.store.accuracy_by_version(),
    }


def _drift_summary(monitor: Monitor) -> dict[str, Any]:
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


def _alerts_summary(alerts: AlertStore, alerter: AlertWorker) -> dict[str, Any]:
    """Alerts raised by this run (in order) and in the database."""
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
        "in_store": alerts.count_alerts(),
        "late_events": stats.late,
        "duplicates": stats.duplicates,
    }
