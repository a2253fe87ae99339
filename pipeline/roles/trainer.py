"""The trainer role: consume retrain requests from ``aet.control``, adapt the champion, register a challenger.

For each ``retrain_request`` control event the trainer

1. validates the request (a corrupt one is rejected with the reason);
2. builds the data: the labeled messages of the requested window (labels
   joined to stored messages), or a labeled JSONL file named by the request;
   too few labels, or one class only, is a rejection with the reason;
3. splits it: a stable-hash held-out share of the recent examples is never
   trained on (the gate's recent slice); the replay reservoir is split the
   same way (replay vs. the gate's older slice);
4. trains a copy of the champion with the AET objective
   (pipeline/learning/round.py) on the GPU in bf16 autocast when there is one,
   else the CPU, with a progress bar, early stopping and a time budget;
5. writes the artifact (safetensors weights, config, tokenizer, the merged
   Fisher, the training facts) into a staging directory, seals it with its
   sha256 and only then registers it as a challenger;
6. applies the champion/challenger gate (pipeline/learning/promotion.py) and
   publishes the training result and the promotion or rejection.

Whoever can write to ``aet.control`` can ask for a round, so before serving a
request the trainer checks it (docs/architecture.md, "Control events are
authenticated"): with ``control.signing_key`` set, an unsigned or wrongly signed
request is dead-lettered (pipeline/signing.py); a ``data`` file outside
``retrain.allowed_data_dirs`` is dead-lettered; and ``auto_promote`` in a request
may switch promotion off, but on only when ``retrain.request_may_promote`` says so.

A crash anywhere before registration leaves no registry row and no final
artifact directory; the request stays uncommitted on the bus, so it is
delivered again and retried (up to ``max_attempts``, counted in the
database, after which it is rejected with the last error). A request that
was already handled is answered from the run log instead of training twice.

Payload of a ``retrain_request`` (every field optional; the schema is
:class:`aet.pipeline.records.RetrainRequest`)::

    {"window": {"start": ISO, "end": ISO}   # or window_start / window_end, or since / until
     "source": "news" | "chat",             # only this source's labeled messages
     "data": "/path/labeled.jsonl",         # instead of the database window
     "mode": "full" | "attention" | "lora", "max_examples": int,
     "drift_event_id": "...",               # lineage; also read from "drift_event": {"id": ...}
     "auto_promote": bool}
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from pydantic import SecretStr, ValidationError

from aet.pipeline import logging_setup, metrics
from aet.pipeline.config import RetrainSettings, RoundSettings, TopicSettings
from aet.pipeline.learning.examples import (
    Example,
    TrainingDataError,
    check_trainable,
    load_examples,
    stratified_split,
)
from aet.pipeline.learning.fisher import load_fisher, save_fisher
from aet.pipeline.learning.loop import TrainingInterrupted
from aet.pipeline.learning.promotion import Promoter, SliceScores, decide, score_slice
from aet.pipeline.learning.rehearsal import Reservoir, split_holdout, text_key
from aet.pipeline.learning.round import adapt, with_new_fisher
from aet.pipeline.model import ModelLoadError, SentimentModel, pick_device
from aet.pipeline.ports import (
    ArtifactError,
    Artifacts,
    BatchStore,
    Bus,
    BusRecord,
    ModelInfo,
    ModelRef,
    Registry,
    TrainerStore,
)
from aet.pipeline.records import LABELS, BadRecord, ControlEvent, DeadLetter, RetrainRequest, decode, explain
from aet.pipeline.signing import check
from aet.pipeline.worker import DetachedBus, Outputs, Worker

log = logging.getLogger(__name__)
TRAINING_FACTS = "training.json"
#: Loads a registered model, verified against its sha256, onto a device ("cpu", "cuda:1", ...).
ModelLoader = Callable[[ModelRef, str], SentimentModel]


class RequestError(ValueError):
    """A retrain request that cannot be served (corrupt, or nothing to train from); the message says why."""


def data_allowed(path: str, allowed: list[Path]) -> bool:
    """Whether ``path`` (symlinks resolved) lies inside one of the ``allowed`` directories."""
    target = Path(path).resolve()
    return any(target.is_relative_to(d.resolve()) for d in allowed)


def parse_request(payload: Any) -> RetrainRequest:
    try:
        return RetrainRequest.model_validate(payload)
    except ValidationError as exc:
        raise RequestError(f"corrupt retrain request: {explain(exc)}") from exc


@dataclass
class RoundData:
    """What :meth:`TrainerRole.prepare` builds for one round."""

    champion: ModelInfo
    examples: list[Example]
    recent_train: list[Example]
    validation: list[Example]
    recent_holdout: list[Example]
    replay_train: list[Example]
    older_holdout: list[Example]
    config: RoundSettings
    device: torch.device
    learned: int = 0  # episode examples the champion already learned: rehearsed, not trained on as new


class TrainerRole(Worker):
    """Consumes ``aet.control``; serves ``retrain_request`` events one at a time.

    ``bus`` is ``None`` for a data-parallel follower (rank > 0), which never
    touches the bus: rank 0 hands it each round (:meth:`follow`).
    ``model_device`` is where training runs when ``settings.device`` is unset.
    """

    role = "trainer"

    def __init__(
        self,
        bus: Bus | None,
        store: BatchStore,
        *,
        registry: Registry,
        artifacts: Artifacts,
        training: TrainerStore,
        reservoir: Reservoir,
        load_model: ModelLoader,
        topics: TopicSettings,
        settings: RetrainSettings,
        model_device: str = "auto",
        progress: bool = True,
        retry_backoff_s: float = 1.0,
        signing_key: SecretStr | str | None = None,
    ) -> None:
        super().__init__(
            bus if bus is not None else DetachedBus(),
            store,
            group=settings.group,
            topics=[topics.control],
            dlq_topic=topics.dlq,
            max_batch=1,
            max_wait_ms=0,
        )
        self.settings = settings
        self.control_topic = topics.control
        self.registry = registry
        self.artifacts = artifacts
        self.training = training
        self.reservoir = reservoir
        self.load_model = load_model
        self.model_device = model_device
        self.promoter = Promoter(registry)
        self.progress = progress
        self.retry_backoff_s = retry_backoff_s
        self.signing_key = signing_key
        self._warned_unsigned = False
        self.failures = 0
        #: Called with (request_id, round data) just before a round trains (pipeline/learning/distributed.py).
        self.before_training: Callable[[str, RoundData], None] | None = None
        #: Retry a crashed round in this process; off under torchrun, where a crash must take the group down.
        self.retry_in_process = True
        self._stop = threading.Event()

    # ------------------------------------------------------------------ the loop

    def run(self, stop: threading.Event, *, drain: bool = False) -> int:
        """The worker loop; a training crash leaves its request uncommitted and the loop starts again (retry)."""
        delay, processed = self.retry_backoff_s, 0
        self._stop = stop
        while True:
            try:
                return processed + super().run(stop, drain=drain)
            except TrainingInterrupted as exc:  # a stop request: the round is dropped, its request left uncommitted
                log.info("%s; the request stays on the bus and is trained again on the next start", exc)
                return processed
            except Exception as exc:
                if stop.is_set() or not self.retry_in_process:
                    raise
                self.failures += 1
                metrics.TRAINING_ROUNDS.labels("crashed").inc()
                log.error(
                    "training crashed (%s: %s); the request will be retried in %.1fs", type(exc).__name__, exc, delay
                )
                stop.wait(delay)
                delay = min(max(delay, 0.1) * 2, 60.0)

    def handle(self, records: list[BusRecord]) -> Outputs:
        out = Outputs()
        for r in records:
            try:
                raw = json.loads(r.value)
            except (UnicodeDecodeError, json.JSONDecodeError):
                raw = None
            if not isinstance(raw, dict) or raw.get("kind") != "retrain_request":
                if raw is None:
                    out.dead_letters.append(
                        DeadLetter.of(
                            r.value,
                            stage="trainer",
                            reason="not JSON",
                            topic=r.topic,
                            partition=r.partition,
                            offset=r.offset,
                            key=r.key,
                        )
                    )
                continue  # other control events are not the trainer's business
            refused = self.refusal(raw)
            if refused is not None:
                log.error("retrain request at %s[%s]@%s dead-lettered: %s", r.topic, r.partition, r.offset, refused)
                out.dead_letters.append(
                    DeadLetter.of(
                        r.value,
                        stage="trainer",
                        reason=refused,
                        topic=r.topic,
                        partition=r.partition,
                        offset=r.offset,
                        key=r.key,
                    )
                )
                continue
            try:
                event = decode(ControlEvent, r.value)
            except BadRecord as exc:
                raw_id = raw.get("id")
                ident = raw_id if isinstance(raw_id, str) else f"{r.topic}-{r.partition}-{r.offset}"
                self._emit(out, self._reject(ident, f"corrupt retrain request: {exc.reason}", payload=raw))
                continue
            with logging_setup.bind(message_id=event.id):  # every line about this request names it
                for e in self.serve(event):
                    self._emit(out, e)
        return out

    def refusal(self, raw: dict[str, Any]) -> str | None:
        """Why a retrain request (decoded JSON) must not be served at all, or ``None``: its signature, its file."""
        if self.signing_key is not None:
            reason = check(raw, self.signing_key)
            if reason is not None:
                return reason
        elif not self._warned_unsigned:
            self._warned_unsigned = True
            log.warning(
                "aet.control is not authenticated: control.signing_key is not set, so anyone who can write to "
                "the topic can request training; set it on every process for a shared bus"
            )
        payload = raw.get("payload")
        data = payload.get("data") if isinstance(payload, dict) else None
        if isinstance(data, str) and not data_allowed(data, self.settings.allowed_data_dirs):
            allowed = ", ".join(str(d) for d in self.settings.allowed_data_dirs) or "none"
            return f"training data {data!r} is outside retrain.allowed_data_dirs ({allowed})"
        return None

    def _emit(self, out: Outputs, event: ControlEvent) -> None:
        out.events.append(event)
        out.publish.append((self.control_topic, event.kind, event.to_bytes()))

    # ------------------------------------------------------------------ one request

    def serve(self, event: ControlEvent) -> list[ControlEvent]:
        """Handle one retrain request; returns the events to publish. Raises only for crashes (to be retried)."""
        request_id = event.id
        done = self.training.get_run(request_id)
        if done is not None and done["status"] != "running":  # handled before a crash kept the offset uncommitted
            log.info(
                "retrain request %s was already handled (%s); publishing its result again", request_id, done["status"]
            )
            return [ControlEvent.model_validate(e) for e in done["result"].get("events", [])]
        try:
            request = parse_request(event.payload)
        except RequestError as exc:
            return [self._reject(request_id, str(exc), payload=event.payload)]
        made = self.registry.find(request_id=request_id)
        if made:  # registered before a crash, but never announced: finish it instead of training again
            log.info("retrain request %s already produced %s; finishing it", request_id, made[0].version)
            self.training.begin_run(request_id, event.payload)
            try:
                self.reservoir.add(self._examples(request))  # the step the crash may have cut short
            except (RequestError, TrainingDataError) as exc:
                log.warning("could not add request %s's examples to the reservoir: %s", request_id, exc)
            return self._conclude(request_id, request, made[0])
        run = self.training.begin_run(request_id, event.payload)
        if run["attempts"] > self.settings.max_attempts:
            reason = (
                f"training failed {run['attempts'] - 1} times (max_attempts={self.settings.max_attempts}); "
                f"last error: {run['last_error']}"
            )
            return [self._reject(request_id, reason, payload=event.payload)]
        started = time.perf_counter()
        try:
            events = self._train(request_id, request, event)
        except (RequestError, TrainingDataError, ModelLoadError, ArtifactError) as exc:
            return [self._reject(request_id, str(exc), payload=event.payload, drift_event_id=request.drift_event_id)]
        except TrainingInterrupted:
            self.training.forget_attempt(request_id)  # stopping is not a failure of the request
            raise
        except Exception as exc:
            self.training.note_failure(request_id, f"{type(exc).__name__}: {exc}")
            raise
        metrics.RETRAIN_SECONDS.observe(time.perf_counter() - started)
        return events

    def _reject(
        self, request_id: str, reason: str, *, payload: Any = None, drift_event_id: str | None = None
    ) -> ControlEvent:
        """A recorded, explained rejection of a request (no model was made)."""
        log.warning("retrain request %s rejected: %s", request_id, reason)
        metrics.TRAINING_ROUNDS.labels("rejected").inc()
        event = ControlEvent(
            kind="rejection",
            payload={
                "request_id": request_id,
                "reason": reason,
                "stage": "request",
                "drift_event_id": drift_event_id,
            },
        )
        if self.training.get_run(request_id) is None:
            self.training.begin_run(request_id, payload if isinstance(payload, dict) else {"raw": repr(payload)})
        self.training.finish_run(
            request_id,
            status="rejected",
            version=None,
            result={"events": [event.model_dump(mode="json")]},
            error=reason,
        )
        return event

    def _examples(self, request: RetrainRequest) -> list[Example]:
        s = self.settings
        limit = min(request.max_examples or s.max_examples, s.max_examples)
        if request.data:
            examples = load_examples(Path(request.data))
            if request.source:
                examples = [e for e in examples if e.source == request.source]
            examples = examples[-limit:]
        else:
            rows = self.training.labeled_examples(
                start=request.window_start, end=request.window_end, source=request.source, limit=limit
            )
            examples = [
                Example(text=r["text"], label=LABELS.index(r["label"]), source=r["source"], id=r["message_id"])
                for r in rows
                if r["label"] in LABELS
            ]
        where = request.data or f"window {request.window()}" + (f" source {request.source}" if request.source else "")
        try:
            check_trainable(examples, minimum=s.min_examples)
        except TrainingDataError as exc:
            raise TrainingDataError(f"{where}: {exc}") from exc
        return examples

    def prepare(self, request: RetrainRequest) -> RoundData:
        """The data and settings of one round."""
        s = self.settings
        champion_info = self.registry.champion()
        if champion_info is None:
            raise RequestError("no champion is registered to adapt")
        examples = self._examples(request)
        recent_pool, recent_holdout = split_holdout(examples, s.holdout_fraction)
        check_trainable(recent_pool, minimum=2)
        learned_ids = self._learned(champion_info, request)
        fresh = [e for e in recent_pool if e.id not in learned_ids]
        learned = [e for e in recent_pool if e.id in learned_ids]
        if not _trainable(fresh, s.min_examples):  # too few new labels to train on alone: the episode trains
            fresh, learned = recent_pool, []
        recent_train, recent_val = stratified_split(fresh, s.validation_fraction, s.seed)
        recent_texts = {text_key(e.text) for e in examples}
        held = [e for e in self.reservoir.examples() if text_key(e.text) not in recent_texts]
        replay_train, older_holdout = split_holdout(held, s.holdout_fraction)
        replay_train = learned + replay_train
        config = s.model_copy(update={"mode": request.mode or s.mode})
        # Early stopping follows the recent data; the older data is the gate's forgetting check.
        validation = recent_val
        return RoundData(
            champion=champion_info,
            examples=examples,
            recent_train=recent_train,
            validation=validation,
            recent_holdout=recent_holdout,
            replay_train=replay_train,
            older_holdout=older_holdout,
            config=config,
            device=pick_device(s.device or self.model_device),
            learned=len(learned),
        )

    def _learned(self, champion: ModelInfo, request: RetrainRequest) -> set[str]:
        """Ids of the request's examples that the champion's weights were trained on in the same drift episode.

        A follow-up round trains on what its champion has not learned yet and rehearses the rest
        (``retrain.followup_trains_on``), so the rounds of an episode cost the same each instead of
        growing with it. A label that arrived after the champion's round for a message inside its
        window counts as learned: it is rehearsed, not lost.
        """
        if self.settings.followup_trains_on != "new" or request.data or not request.drift_event_id:
            return set()
        weights = (
            champion if champion.weights_version == champion.version else self.registry.get(champion.weights_version)
        )
        facts = weights.info
        window = facts.get("window") or {}
        if facts.get("drift_event_id") != request.drift_event_id or facts.get("source") != request.source:
            return set()
        if not window.get("end"):
            return set()
        end = datetime.fromisoformat(window["end"])
        start = request.window_start
        rows = self.training.labeled_examples(
            start=start, end=end, source=request.source, limit=self.settings.max_examples
        )
        return {r["message_id"] for r in rows}

    def _weights_artifact(self, info: ModelInfo) -> str:
        """The artifact holding ``info``'s weights (and Fisher): its base's, for a fast-path heads version."""
        return (
            info.artifact_path
            if info.weights_version == info.version
            else self.registry.get(info.weights_version).artifact_path
        )

    def _train(self, request_id: str, request: RetrainRequest, event: ControlEvent) -> list[ControlEvent]:
        data = self.prepare(request)
        if self.before_training is not None:  # data-parallel: hand the other ranks this round's exact data
            self.before_training(request_id, data)
        champion_info, config, device = data.champion, data.config, data.device
        champion = self._load(champion_info, device)
        version = self.registry.next_version()
        log.info(
            "retrain %s: %s from %s in %s mode on %s (%d recent, %d replay, %d validation)",
            request_id,
            version,
            champion_info.version,
            config.mode,
            device,
            len(data.recent_train),
            len(data.replay_train),
            len(data.validation),
        )
        result = adapt(
            champion,
            recent=data.recent_train,
            validation=data.validation,
            rehearsal=data.replay_train,
            champion_fisher=load_fisher(Path(self._weights_artifact(champion_info))),
            settings=config,
            version=version,
            progress=self.progress,
            interrupt=self._stop.is_set,
            new_fisher=False,
        )
        confidence, seed = self.settings.gate_confidence, self.settings.seed
        recent_scores = score_slice(champion, result.model, data.recent_holdout, confidence=confidence, seed=seed)
        older_scores = score_slice(champion, result.model, data.older_holdout, confidence=confidence, seed=seed)
        del champion
        verdict = decide(recent_scores, older_scores, self.settings)
        if not self._gated(request) or verdict.promote or verdict.shadow:
            result = with_new_fisher(result)  # a challenger that may become the champion anchors the next round
        else:  # the gate will reject it (see _conclude): its Fisher would never anchor a round
            result.fisher_info["skipped"] = "rejected by the gate"

        facts = {
            "origin": "retrain",
            "request_id": request_id,
            "drift_event_id": request.drift_event_id,
            "parent": champion_info.version,
            "window": request.window(),
            "source": request.source,
            "data": request.data,
            "device": str(device),
            "data_parallel_ranks": _world(),
            "examples": {
                "labeled": len(data.examples),
                "recent_train": len(data.recent_train),
                "validation": len(data.validation),
                "recent_holdout": len(data.recent_holdout),
                "replay_train": len(data.replay_train),
                "learned_before": data.learned,
                "older_holdout": len(data.older_holdout),
            },
            **result.facts(),
        }
        path, digest = self._write_artifact(result, version, facts)
        metrics_ = {
            "holdout_recent": recent_scores.to_dict(),
            "holdout_older": older_scores.to_dict(),
            "validation": result.train.history[-1] if result.train.history else {},
        }
        try:
            info = self.registry.register(
                version=version,
                artifact_path=str(path.resolve()),
                sha256=digest,
                backbone=champion_info.backbone,
                labels=list(LABELS),
                status="challenger",
                parent=champion_info.version,
                metrics=metrics_,
                info=facts,
            )
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)  # never leave a sealed artifact that no row points at
            raise
        self.reservoir.add(data.examples)
        metrics.TRAINING_ROUNDS.labels("registered").inc()
        return self._conclude(request_id, request, info)

    def _gated(self, request: RetrainRequest) -> bool:
        """Whether the gate decides this request's challenger: a request may always switch promotion off, and on
        only where ``request_may_promote`` allows it."""
        s = self.settings
        if request.auto_promote is False:
            return False
        return s.auto_promote or (bool(request.auto_promote) and s.request_may_promote)

    def _conclude(self, request_id: str, request: RetrainRequest, info: ModelInfo) -> list[ControlEvent]:
        """Announce a registered challenger, apply the gate, and close the request's run.

        Also used when a crash hit after registration: the gate's numbers are in the registry row.
        """
        s = self.settings
        events = [
            ControlEvent(
                kind="training_result",
                model_version=info.version,
                payload={
                    "request_id": request_id,
                    "drift_event_id": request.drift_event_id,
                    "parent": info.parent,
                    "artifact_path": info.artifact_path,
                    "sha256": info.sha256,
                    "mode": info.info.get("mode"),
                    "objective": info.info.get("objective"),
                    "metrics": info.metrics,
                    "train_seconds": (info.info.get("seconds") or {}).get("train"),
                    "stopped": info.info.get("stopped"),
                },
            )
        ]
        auto = self._gated(request)
        if request.auto_promote and not s.auto_promote and not s.request_may_promote:
            log.warning(
                "retrain request %s asks for auto_promote, which is off; a request may not switch it on "
                "(retrain.request_may_promote): %s stays a challenger",
                request_id,
                info.version,
            )
        if auto and info.status == "challenger":
            recent, older = (SliceScores.from_dict(info.metrics.get(k)) for k in ("holdout_recent", "holdout_older"))
            decision = decide(recent or SliceScores(0, 0.0, 0.0), older, s)
            parent = self.registry.get(info.parent) if info.parent else None
            # Fast-path heads versions come and go on the same weights while a round trains: only new weights
            # promoted meanwhile make the gate's comparison stale, and the registry then refuses the promotion.
            events.append(
                self.promoter.apply(
                    info.version,
                    decision,
                    expect_weights=parent.weights_version if parent is not None else None,
                    request_id=request_id,
                    drift_event_id=request.drift_event_id,
                )
            )
        self.training.finish_run(
            request_id,
            status="registered",
            version=info.version,
            result={"events": [e.model_dump(mode="json") for e in events]},
        )
        return events

    def follow(self, data: RoundData) -> None:
        """A non-zero data-parallel rank's share of a round (rank 0's data, this rank's device); writes nothing."""
        device = pick_device(self.settings.device or self.model_device)
        data = replace(data, device=device)
        champion = self._load(data.champion, device)
        adapt(
            champion,
            recent=data.recent_train,
            validation=data.validation,
            rehearsal=data.replay_train,
            champion_fisher=load_fisher(Path(self._weights_artifact(data.champion))),
            settings=data.config,
            new_fisher=False,
            version="follower",
            progress=False,
        )

    def _load(self, info: ModelRef, device: torch.device) -> SentimentModel:
        """The champion in float32 on ``device`` (bf16 comes from autocast while training)."""
        model = self.load_model(info, "cpu")
        # transformers wraps PreTrainedModel.to in a decorator whose signature mypy misreads
        model.model.to(device)  # type: ignore[arg-type]
        return model

    def _write_artifact(self, result: Any, version: str, facts: dict[str, Any]) -> tuple[Path, str]:
        """Stage, fill and seal the artifact; a crash on the way leaves no final directory."""
        store = self.artifacts
        final = store.path_of(version)
        if final.exists():
            self._clear_orphan(final, facts["request_id"])
        staged = store.stage()
        try:
            result.model.save(staged)
            if result.fisher is not None:
                save_fisher(result.fisher, staged, {"version": version, **result.fisher_info})
            (staged / TRAINING_FACTS).write_text(json.dumps(facts, indent=1, sort_keys=True, default=str))
            return store.commit(staged, version)
        except BaseException:
            store.discard(staged)
            raise

    def _clear_orphan(self, final: Path, request_id: str) -> None:
        """Remove a sealed artifact left by an earlier attempt at the same request that crashed before registering."""
        if any(m.version == final.name for m in self.registry.list()):
            raise ArtifactError(f"artifact {final} already exists and is registered")
        facts_file = final / TRAINING_FACTS
        owner = json.loads(facts_file.read_text()).get("request_id") if facts_file.is_file() else None
        if owner != request_id:
            raise RuntimeError(
                f"artifact {final} exists, is not registered and belongs to request {owner!r}; "
                "another trainer may be writing it"
            )
        log.warning("removing %s, left by an earlier attempt at request %s", final, request_id)
        shutil.rmtree(final)


def _trainable(examples: list[Example], minimum: int) -> bool:
    """Whether ``examples`` can train a round on their own (``minimum`` of them, more than one class)."""
    try:
        check_trainable(examples, minimum=minimum)
    except TrainingDataError:
        return False
    return True


def _world() -> int:
    """How many data-parallel ranks trained this round (1 without torchrun)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1
