"""Wiring: open what the roles need from settings, and run them together in one process.

This is the only place that chooses concrete backends (bus, database,
artifact store); the roles themselves see interfaces.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from adapters.bus import Bus, open_bus
from pipeline.config import Settings
from pipeline.label_recorder import LabelRecorder
from pipeline.model import ModelLoadError, SentimentModel
from pipeline.replay import Replay
from pipeline.scorer import Scorer
from pipeline.training import train_bootstrap_model
from storage.artifacts import ArtifactError, ArtifactStore, verify
from storage.db import Database
from storage.registry import ModelInfo, ModelRegistry
from storage.store import ResultStore

log = logging.getLogger(__name__)


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
            version=version, artifact_path=str(path.resolve()), sha256=digest,
            backbone=self.settings.model.backbone, labels=list(model.model.config.id2label.values()),
            status="champion", metrics={"validation": facts["validation"]},
            info={"origin": "bootstrap", **facts["info"]},
        )
        log.info("registered %s as champion (validation macro-F1 %.3f)", version, facts["validation"]["macro_f1"])
        return info

    def ensure_champion(self, bootstrap_data: Path | None, *, progress: bool = True) -> ModelInfo:
        """The registered champion, bootstrapping one from ``bootstrap_data`` if there is none."""
        champion = self.registry.champion()
        if champion is not None:
            return champion
        if bootstrap_data is None:
            raise NoChampionError(
                "no champion model is registered; run `aet models bootstrap --data FILE.jsonl` "
                "or pass --bootstrap-data"
            )
        return self.bootstrap(bootstrap_data, progress=progress)

    def load_model(self, info: ModelInfo) -> SentimentModel:
        """Verify a registered artifact against its sha256 and load it."""
        try:
            verify(Path(info.artifact_path), info.sha256)
        except ArtifactError as exc:
            raise ModelLoadError(f"model {info.version}: {exc}") from exc
        m = self.settings.model
        return SentimentModel.load(info.artifact_path, version=info.version, max_length=m.max_length,
                                   batch_size=m.batch_size, device=m.device, new_head=False)

    def scorer(self, model: SentimentModel) -> Scorer:
        return Scorer(self.bus, self.store, model, self.settings.topics, self.settings.scorer)

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
        except BaseException as exc:  # noqa: BLE001 - reported by run_embedded
            self.error = exc
            log.exception("worker %s died", self.worker.role)
            self.stop.set()


def run_embedded(app: App, stream: Path, *, bootstrap_data: Path | None = None, progress: bool = True,
                 stop: threading.Event | None = None) -> dict[str, Any]:
    """Replay ``stream`` through every role in this process and return a summary.

    Returns once every published message and label is processed and committed.
    """
    champion = app.ensure_champion(bootstrap_data, progress=progress)
    model = app.load_model(champion)
    topics = app.settings.topics
    stop = stop or threading.Event()
    scorer = app.scorer(model)
    labels = LabelRecorder(app.bus, app.store, topics)
    threads = [WorkerThread(scorer, stop), WorkerThread(labels, stop)]
    for t in threads:
        t.start()
    try:
        stats = Replay(app.bus, topics, app.settings.replay, max_text_chars=app.settings.scorer.max_text_chars).run(
            stream, progress=progress
        )
        pending = [(scorer, [topics.messages]), (labels, [topics.labels])]
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
    errors = [t.error for t in threads if t.error is not None]
    if errors:
        raise RuntimeError(f"a worker failed: {errors[0]!r}") from errors[0]
    totals = app.store.summary()
    return {
        "stream": str(stream),
        "interrupted": interrupted,
        "champion": champion.version,
        "replay": asdict(stats),
        "scored_this_run": threads[0].processed,
        "labels_this_run": threads[1].processed,
        "store": totals,
        "database": app.settings.db_url,
    }
