"""What the drift monitor embeds with: the registry's champion, a sample of the messages, its training texts.

The embedding detector (Hotelling T² in :mod:`aet.pipeline.drift`) compares the
pooled encoder embeddings of the stream with a reference. :class:`ChampionEmbedder`
keeps a copy of the champion to embed with (following promotions every
``champion_check_s``), embeds one message in ``embed_every`` (chosen by a hash of
its id, so the sample is the same across replays and restarts) among those the
same version scored, and with ``embedding_reference: training`` embeds the
champion's training texts as the reference. An embedding failure is logged and
skipped: the monitor keeps running on its label-free signals.

A scored message that carries its features (``scorer.features``, on while the
fast path runs) already holds the embedding: the features are the final
layer's input followed by the mean-pooled last hidden state of the forward
pass that scored it, the very vector :meth:`SentimentModel.embed` computes
(float16 on the wire). Those messages are not run through the encoder a second
time; only messages without features are (``reused`` and ``encoded`` count both).
"""

from __future__ import annotations

import logging
import random
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from aet.pipeline.config import MonitorSettings
from aet.pipeline.drift import DriftConfig
from aet.pipeline.learning.examples import load_examples
from aet.pipeline.ports import ModelInfo, RegistryReader
from aet.pipeline.records import ScoredMessage, unpack_features

log = logging.getLogger(__name__)
EMBEDDING_DETECTOR = "hotelling_embedding"
MIN_REFERENCE_TEXTS = 20


class Embedder(Protocol):
    """What the monitor embeds with: :class:`aet.pipeline.model.SentimentModel` fits."""

    version: str

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class ModelSource(Protocol):
    """Where the monitor finds the champion to embed with, and its training texts."""

    def champion_version(self) -> str | None: ...

    def load(self, version: str) -> Embedder: ...

    def training_texts(self, version: str) -> dict[str, list[str]] | None: ...


def sampled_for_embedding(message_id: str, every: int) -> bool:
    """Deterministic 1-in-``every`` choice of messages to embed (stable across replays and restarts)."""
    return every <= 1 or zlib.crc32(message_id.encode("utf-8")) % every == 0


def embedding_of_features(message: ScoredMessage) -> np.ndarray | None:
    """The mean-pooled last hidden state carried in ``message.features`` (their second half), if it has any."""
    if message.features is None:
        return None
    try:
        values = unpack_features(message.features)
    except ValueError:  # not base64: embed the text instead
        return None
    if len(values) == 0 or len(values) % 2:
        return None
    return values[len(values) // 2 :]


class ChampionEmbedder:
    """The monitor's model to embed with: follows the champion, embeds sampled messages and training texts."""

    def __init__(
        self,
        settings: MonitorSettings,
        config: DriftConfig,
        *,
        embedder: Embedder | None = None,
        models: ModelSource | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.embedder = embedder
        self.models = models
        self._last_champion_check = -float("inf")
        self._warned_no_embedder = False
        self._training_sources: dict[str, set[str] | None] = {}
        self.reused = 0  # sampled messages whose embedding came with their features
        self.encoded = 0  # sampled messages run through the encoder here

    @property
    def wanted(self) -> bool:
        """Whether the embedding detector runs at all."""
        return EMBEDDING_DETECTOR in self.config.detectors

    def follow(self) -> None:
        """Load the champion to embed with when it changed (checked every ``champion_check_s``)."""
        if self.models is None or not self.wanted:
            return
        now = time.monotonic()
        if now - self._last_champion_check < self.settings.champion_check_s:
            return
        self._last_champion_check = now
        try:
            version = self.models.champion_version()
            if version is not None and (self.embedder is None or self.embedder.version != version):
                log.info("monitor embeds with champion %s from now on", version)
                self.embedder = self.models.load(version)
        except Exception as exc:  # noqa: BLE001 - the monitor keeps running on the label-free signals it has
            log.warning(
                "cannot load the champion to embed with (%s: %s); keeping %s",
                type(exc).__name__,
                exc,
                getattr(self.embedder, "version", None),
            )

    def embed(self, messages: list[ScoredMessage]) -> dict[str, np.ndarray]:
        """Embeddings of the sampled messages that the embedding model's version scored, by message id."""
        if not self.wanted or not messages:
            return {}
        if self.embedder is None:
            if not self._warned_no_embedder:
                log.warning("the monitor has no model to embed with: the embedding detector is idle")
                self._warned_no_embedder = True
            return {}
        chosen = [
            m
            for m in messages
            if m.base == self.embedder.version and sampled_for_embedding(m.id, self.config.embed_every)
        ]
        if not chosen:
            return {}
        out = {m.id: v for m in chosen if (v := embedding_of_features(m)) is not None}
        rest = [m for m in chosen if m.id not in out]
        self.reused += len(out)
        if not rest:
            return out
        try:
            vectors = np.asarray(self.embedder.embed([m.text for m in rest]), dtype=np.float32)
        except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the monitor; the signal skips it
            log.warning(
                "embedding %d messages failed (%s: %s); the embedding signal skips them",
                len(rest),
                type(exc).__name__,
                exc,
            )
            return out
        self.encoded += len(rest)
        return out | {m.id: v for m, v in zip(rest, vectors, strict=True)}

    def training_sources(self, version: str) -> set[str] | None:
        """The sources ``version`` was trained on, or ``None`` when its training data cannot be read."""
        if version not in self._training_sources:
            texts = None
            if self.models is not None:
                try:
                    texts = self.models.training_texts(version)
                except Exception as exc:  # noqa: BLE001 - a missing file only means the sources are unknown
                    log.warning("cannot read the training data of %s (%s)", version, exc)
            self._training_sources[version] = {s for s, ts in texts.items() if ts} if texts else None
        return self._training_sources[version]

    def training_reference(self, source: str, version: str, *, always: bool = False) -> np.ndarray | None:
        """With ``embedding_reference: training`` (or ``always``), the embedded training texts of ``version``."""
        if (self.settings.embedding_reference != "training" and not always) or not self.wanted:
            return None
        if self.embedder is None or self.embedder.version != version or self.models is None:
            log.warning(
                "no training reference for %s/%s (no matching model); using the stream's first messages",
                source,
                version,
            )
            return None
        try:
            texts = self.models.training_texts(version)
        except Exception as exc:  # noqa: BLE001
            log.warning("cannot read the training data of %s (%s); using the stream's first messages", version, exc)
            return None
        if not texts:
            log.warning(
                "the registry names no readable training data for %s; using the stream's first messages", version
            )
            return None
        pool = texts.get(source) or [t for ts in texts.values() for t in ts]
        pool = random.Random(self.config.seed).sample(pool, min(len(pool), self.config.reference_size))
        if len(pool) < MIN_REFERENCE_TEXTS:
            log.warning("only %d training texts for %s; using the stream's first messages", len(pool), source)
            return None
        return np.asarray(self.embedder.embed(pool), dtype=np.float32)


class RegistryModels:
    """Follows the registry's champion for the monitor: its version, a loaded copy, its training texts."""

    def __init__(self, registry: RegistryReader, load: Callable[[ModelInfo], Embedder]) -> None:
        self.registry = registry
        self._load = load

    def champion_version(self) -> str | None:
        info = self.registry.champion()
        return None if info is None else info.weights_version

    def load(self, version: str) -> Embedder:
        return self._load(self.registry.get(version))

    def training_texts(self, version: str) -> dict[str, list[str]] | None:
        """Texts of the labeled file the version was trained on (``info['trained_on']``), by source."""

        path = (self.registry.get(version).info or {}).get("trained_on")
        if not path or not Path(path).is_file():
            return None
        texts: dict[str, list[str]] = {}
        for e in load_examples(Path(path)):
            texts.setdefault(e.source, []).append(e.text)
        return texts
