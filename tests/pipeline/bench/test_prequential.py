"""Prequential evaluation: every prediction is made before its label arrives, scored per phase."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from aet.pipeline.bench.prequential import phase_scores, post_drift_score, run_prequential, windows
from aet.pipeline.bench.scenario import StreamItem, build_stream
from aet.pipeline.bench.strategies import Strategy
from aet.pipeline.learning.examples import Example
from tests.pipeline.bench.scenario_fakes import scenario


class Recorder(Strategy):
    """Predicts the truth of every message whose label it has already seen, else 'neutral'."""

    name = "recorder"

    def __init__(self) -> None:
        super().__init__()
        self.known: dict[str, int] = {}
        self.learned: list[int] = []

    def predict(self, items: Sequence[StreamItem]) -> list[int]:
        assert not any(it.message.id in self.known for it in items), "a label arrived before its message was scored"
        return [1 for _ in items]

    def learn(self, items: Sequence[StreamItem], position: int) -> None:
        for it in items:
            self.known[it.message.id] = it.truth
            self.learned.append(it.index)

    def evaluate(self, examples: Sequence[Example]) -> dict[str, Any]:
        return {}


def test_prequential_predicts_before_learning_and_scores_per_phase(data: Path) -> None:
    stream = build_stream(scenario(chunk=10), data)
    rec = Recorder()
    predictions = run_prequential(stream, rec)
    assert len(predictions) == len(stream.items)
    assert sorted(rec.learned) == [it.index for it in stream.items if it.labeled]
    scores = phase_scores(stream, predictions)
    assert [p["phase"] for p in scores] == ["A", "B", "A2"]
    for p, (start, end) in zip(scores, stream.phase_bounds, strict=True):
        labeled = [it for it in stream.items[start:end] if it.labeled]
        assert p["labeled"] == len(labeled)
        assert p["accuracy"] == pytest.approx(sum(it.truth == 1 for it in labeled) / len(labeled), abs=1e-4)
    assert post_drift_score(stream, predictions)["labeled"] == sum(p["labeled"] for p in scores[1:])
    curve = windows(stream, predictions, 20)
    assert len(curve) == sum(it.labeled for it in stream.items) // 20 and all(0 <= f1 <= 1 for _, f1 in curve)
