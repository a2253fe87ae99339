"""The monitor's embeddings: read off the features the scorer attached, the encoder run only for the rest."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

from aet.pipeline.config import MonitorSettings
from aet.pipeline.drift import DriftConfig
from aet.pipeline.records import Message, ScoredMessage
from aet.pipeline.roles.monitor_embedding import ChampionEmbedder
from aet.pipeline.roles.scorer import to_scored
from tests.pipeline.tiny_model import tiny_model

TEXTS = ["$ACME beats estimates", "Globex cuts guidance and plans layoffs", "Initech holds its annual meeting", "ok"]


class CountingEmbedder:
    """The real (tiny) model's embedding, counting the texts it had to encode."""

    def __init__(self) -> None:
        self.model = tiny_model(0, version="v0001")
        self.version = "v0001"
        self.encoded: list[str] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.encoded.extend(texts)
        return self.model.embed(texts)


def scored(embedder: CountingEmbedder, *, features: bool) -> list[ScoredMessage]:
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    messages = [Message(id=f"m{i}", source="news", text=t, ts=ts) for i, t in enumerate(TEXTS)]
    prediction = embedder.model.predict(TEXTS, features=features)
    rows = prediction.features if prediction.features is not None else [None] * len(TEXTS)
    return [to_scored(m, p, "v0001", features=f) for m, p, f in zip(messages, prediction.probs, rows, strict=True)]


def test_messages_with_features_are_not_encoded_again_and_give_the_same_embedding() -> None:
    embedder = CountingEmbedder()
    monitor = ChampionEmbedder(MonitorSettings(), DriftConfig(embed_every=1), embedder=embedder)
    expected = embedder.model.embed(TEXTS)
    got = monitor.embed(scored(embedder, features=True))
    assert embedder.encoded == [] and (monitor.reused, monitor.encoded) == (4, 0)
    for i in range(len(TEXTS)):
        np.testing.assert_allclose(got[f"m{i}"], expected[i], rtol=2e-3, atol=2e-3)  # float16 on the wire


def test_messages_without_features_are_encoded() -> None:
    embedder = CountingEmbedder()
    monitor = ChampionEmbedder(MonitorSettings(), DriftConfig(embed_every=1), embedder=embedder)
    got = monitor.embed(scored(embedder, features=False))
    assert embedder.encoded == TEXTS and (monitor.reused, monitor.encoded) == (0, 4)
    np.testing.assert_allclose(got["m1"], embedder.model.embed(TEXTS[1:2])[0], atol=1e-5)
