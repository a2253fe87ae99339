"""The scorer role: messages in, sentiment out, every output naming its model version."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import cast

import numpy as np

from aet.pipeline import logging_setup
from aet.pipeline.config import ScorerSettings, TopicSettings
from aet.pipeline.model import SentimentModel
from aet.pipeline.ports import BatchStore, Bus, BusRecord
from aet.pipeline.records import (
    LABELS,
    BadRecord,
    DeadLetter,
    Message,
    Probs,
    ScoredMessage,
    decode,
    pack_features,
    utcnow,
)
from aet.pipeline.roles.hotswap import ModelSwapper
from aet.pipeline.score_cache import ScoreCache
from aet.pipeline.worker import Outputs, Worker

log = logging.getLogger(__name__)


def to_scored(
    message: Message,
    probs: np.ndarray,
    model_version: str,
    *,
    base_version: str | None = None,
    features: np.ndarray | None = None,
    base_probs: np.ndarray | None = None,
) -> ScoredMessage:
    """Attach one prediction (and, for the fast path, the features it was computed from) to its message."""
    p = [float(x) for x in probs]
    return ScoredMessage(
        **message.model_dump(),
        label=LABELS[int(np.argmax(p))],
        probs=_probs(probs),
        score=max(-1.0, min(1.0, p[2] - p[0])),
        model_version=model_version,
        scored_at=utcnow(),
        base_version=base_version if base_version != model_version else None,
        base_probs=_probs(base_probs) if base_probs is not None and np.isfinite(base_probs).all() else None,
        features=pack_features(features) if features is not None else None,
    )


class Scorer(Worker):
    """Consumes ``aet.messages``, publishes ``aet.scored``, stores each score under its message id.

    With a :class:`~aet.pipeline.roles.hotswap.ModelSwapper`, a newly promoted model that
    is loaded and verified replaces the current one between two batches. A
    :class:`~aet.pipeline.score_cache.ScoreCache` (``scorer.cache_size``) serves
    texts the serving version already scored without a forward pass.
    """

    role = "scorer"

    def __init__(
        self,
        bus: Bus,
        store: BatchStore,
        model: SentimentModel,
        topics: TopicSettings,
        settings: ScorerSettings,
        swapper: ModelSwapper | None = None,
    ) -> None:
        super().__init__(
            bus,
            store,
            group=settings.group,
            topics=[topics.messages],
            dlq_topic=topics.dlq,
            max_batch=settings.max_batch,
            max_wait_ms=settings.max_wait_ms,
        )
        self.model = model
        self.swapper = swapper
        self.out_topic = topics.scored
        self.max_text_chars = settings.max_text_chars
        self.emit_features = settings.features
        self.cache: ScoreCache[_Row] = ScoreCache(settings.cache_size)

    def before_batch(self) -> None:
        """Swap in a model the swapper has ready; no batch is in flight here."""
        if self.swapper is not None:
            new = self.swapper.take()
            if new is not None:
                old, self.model = self.model, new
                self.swapper.retire(old)  # released off the scoring path; nothing else refers to it
                self.cache.clear()  # keyed by version, so unreachable now: give the memory back
        logging_setup.set_model_version(self.model.version)  # the batch's log lines name the version scoring it

    def handle(self, records: list[BusRecord]) -> Outputs:
        out = Outputs()
        decoded: list[tuple[BusRecord, Message]] = []
        for r in records:
            try:
                decoded.append((r, decode(Message, r.value, max_text_chars=self.max_text_chars)))
            except BadRecord as exc:
                out.dead_letters.append(_dead_letter(r, exc.reason))
        model = self.model
        for (_, message), row in zip(decoded, self._predict(model, decoded, out), strict=True):
            if row is None:
                continue
            probs, features, base_probs = row
            scored = to_scored(
                message, probs, model.version, base_version=model.base, features=features, base_probs=base_probs
            )
            out.scored.append(scored)
            out.publish.append((self.out_topic, message.key, scored.to_bytes()))
        return out

    def _predict(
        self, model: SentimentModel, decoded: Sequence[tuple[BusRecord, Message]], out: Outputs
    ) -> list[_Row | None]:
        """Score the batch; if the batch fails, isolate the message that breaks the model."""
        if not decoded:
            return []
        try:
            return list(self._score(model, [m for _, m in decoded]))
        except Exception as exc:  # noqa: BLE001 - one input must not stop the worker
            log.warning("batch of %d failed in the model (%s); scoring one by one", len(decoded), exc)
        results: list[_Row | None] = []
        for r, m in decoded:
            try:
                results.append(self._score(model, [m])[0])
            except Exception as exc:  # noqa: BLE001
                results.append(None)
                out.dead_letters.append(_dead_letter(r, f"model failed on this input: {exc}"))
        return results

    def _score(self, model: SentimentModel, messages: Sequence[Message]) -> list[_Row]:
        """Per message: probabilities (each source's fast-path head where it has one), the weights' own where a
        head served, and, if emitted, the features; from the cache, else from one forward pass over the rest."""
        if not self.cache.enabled:
            return self._forward(model, messages)
        rows: list[_Row | None] = [None] * len(messages)
        todo: dict[tuple[str, str, str], list[int]] = {}  # texts to score, each with the messages that carry it
        for i, m in enumerate(messages):
            key = self.cache.key(model.version, m.source, m.text)
            if key in todo:  # repeated within this batch: scored once
                todo[key].append(i)
                self.cache.stats.hits += 1
                continue
            cached = self.cache.get(key)
            if cached is None:
                todo[key] = [i]
            else:
                rows[i] = cached
        if todo:
            fresh = self._forward(model, [messages[ix[0]] for ix in todo.values()])
            for (key, ix), row in zip(todo.items(), fresh, strict=True):
                self.cache.put(key, row)
                for i in ix:
                    rows[i] = row
        return cast(list[_Row], rows)  # every position was filled: from the cache, the batch or the forward pass

    def _forward(self, model: SentimentModel, messages: Sequence[Message]) -> list[_Row]:
        """Rows of ``messages`` from one call of the model."""
        n = len(messages)
        prediction = model.predict(
            [m.text for m in messages], [m.source for m in messages], features=self.emit_features
        )
        rows = _checked(prediction.probs, n)
        features = prediction.features if prediction.features is not None else [None] * n
        base = prediction.base_probs if prediction.base_probs is not None else [None] * n
        return list(zip(rows, features, base, strict=True))


def _probs(values: np.ndarray) -> Probs:
    p = [float(x) for x in values]
    return Probs(negative=p[0], neutral=p[1], positive=p[2])


_Row = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]  # probabilities, features, base probabilities


def _dead_letter(r: BusRecord, reason: str) -> DeadLetter:
    """A scorer dead letter that keeps the raw input and where it was read from."""
    return DeadLetter.of(
        r.value, stage="score", reason=reason, topic=r.topic, partition=r.partition, offset=r.offset, key=r.key
    )


def _checked(probs: np.ndarray, n: int) -> list[np.ndarray]:
    """The model's rows, refusing output that would silently drop or misreport messages."""
    arr = np.asarray(probs, dtype=np.float64)
    if arr.shape != (n, 3):
        raise ValueError(f"model returned probabilities of shape {arr.shape}, expected ({n}, 3)")
    if not ((arr >= 0.0) & (arr <= 1.0)).all():
        raise ValueError("model returned probabilities outside [0, 1] (or NaN)")
    return list(arr)
