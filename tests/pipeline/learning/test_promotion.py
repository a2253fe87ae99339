"""The champion/challenger gate and the control events of promotions, rejections and rollbacks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aet.pipeline.config import RetrainSettings
from aet.pipeline.learning.examples import Example
from aet.pipeline.learning.promotion import Promoter, SliceScores, decide, decision_from_dict, score_slice
from aet.storage.db import Database
from aet.storage.registry import ModelRegistry

SETTINGS = RetrainSettings(promote_min_gain=0.02, forget_max_drop=0.03, min_holdout=20)


@pytest.mark.parametrize(
    ("recent", "older", "promote", "why"),
    [
        (SliceScores(100, 0.50, 0.60), SliceScores(100, 0.80, 0.79), True, "within the allowed drop"),
        (SliceScores(100, 0.50, 0.51), SliceScores(100, 0.80, 0.80), False, "does not improve by the required +0.020"),
        (SliceScores(100, 0.50, 0.70), SliceScores(100, 0.80, 0.70), False, "falls by more than the allowed 0.030"),
        (SliceScores(5, 0.50, 0.90), SliceScores(100, 0.80, 0.80), False, "only 5 held-out recent examples"),
        (SliceScores(100, 0.50, 0.70), SliceScores(3, 0.80, 0.80), False, "forgetting cannot be checked"),
        (SliceScores(100, 0.50, 0.70), None, False, "forgetting cannot be checked"),
        # with the bootstrap's interval, a drop counts as forgetting only when the challenger is worse with confidence
        (
            SliceScores(100, 0.50, 0.70, 0.1, 0.3, 0.8),
            SliceScores(40, 0.80, 0.72, -0.2, 0.03, 0.8),
            True,
            "not counted as forgetting",
        ),
        (
            SliceScores(100, 0.50, 0.70, 0.1, 0.3, 0.8),
            SliceScores(400, 0.80, 0.72, -0.12, -0.04, 0.8),
            False,
            "falls by more than the allowed 0.030, worse with 80% confidence",
        ),
        # exactly on the margins passes
        (SliceScores(100, 0.50, 0.52), SliceScores(100, 0.80, 0.77), True, "at least +0.020"),
    ],
)
def test_gate(recent: SliceScores, older: SliceScores | None, promote: bool, why: str) -> None:
    decision = decide(recent, older, SETTINGS)
    assert decision.promote is promote
    assert any(why in r for r in decision.reasons), decision.reasons
    assert decision_from_dict(decision.to_dict()) == decision


def test_gate_without_older_data_when_allowed() -> None:
    lax = SETTINGS.model_copy(update={"require_older_holdout": False})
    decision = decide(SliceScores(100, 0.5, 0.6), None, lax)
    assert decision.promote and any("forgetting not checked" in r for r in decision.reasons)


class Answers:
    """A model that answers from a table: text -> class (the gate sees only predictions)."""

    def __init__(self, answers: dict[str, int]) -> None:
        self.answers = answers

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return np.eye(3)[[self.answers[t] for t in texts]]


def slice_of(n: int, champion_right: int, challenger_right: int) -> tuple[list[Example], Answers, Answers]:
    """``n`` examples; each model gets the first ``..._right`` of them right and the rest wrong."""
    examples = [Example(text=f"t{i}", label=i % 3) for i in range(n)]
    champion = Answers({e.text: e.label if i < champion_right else (i + 1) % 3 for i, e in enumerate(examples)})
    challenger = Answers({e.text: e.label if i < challenger_right else (i + 1) % 3 for i, e in enumerate(examples)})
    return examples, champion, challenger


OLDER_OK = SliceScores(100, 0.80, 0.80)


def test_a_challenger_better_by_chance_on_a_small_slice_is_not_promoted() -> None:
    examples, champion, challenger = slice_of(24, 14, 16)  # two more right out of 24: +8 points of accuracy
    recent = score_slice(champion, challenger, examples, confidence=0.8)  # type: ignore[arg-type]
    assert recent.delta > SETTINGS.promote_min_gain and recent.low is not None and recent.low <= 0
    decision = decide(recent, OLDER_OK, SETTINGS)
    assert not decision.promote and any("not better with 80% confidence" in r for r in decision.reasons)
    assert decision_from_dict(decision.to_dict()).recent == SliceScores.from_dict(recent.to_dict())


def test_a_clearly_better_challenger_is_promoted() -> None:
    examples, champion, challenger = slice_of(120, 60, 100)
    recent = score_slice(champion, challenger, examples, confidence=0.8)  # type: ignore[arg-type]
    assert recent.low is not None and recent.low > 0.1
    assert decide(recent, OLDER_OK, SETTINGS).promote


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    reg = ModelRegistry(db)
    fields = {"artifact_path": "/m", "sha256": "a" * 64, "backbone": "b", "labels": ["negative", "neutral", "positive"]}
    reg.register(version="v0001", status="champion", **{**fields, "artifact_path": "/m/v0001"})
    reg.register(version="v0002", parent="v0001", **{**fields, "artifact_path": "/m/v0002", "sha256": "b" * 64})
    yield reg
    db.dispose()


def test_a_passing_challenger_is_promoted_and_announced(registry: ModelRegistry) -> None:
    decision = decide(SliceScores(100, 0.5, 0.6), SliceScores(100, 0.8, 0.8), SETTINGS)
    event = Promoter(registry).apply("v0002", decision, request_id="req-1")
    assert event.kind == "promotion" and event.model_version == "v0002"
    assert event.payload["previous"] == "v0001" and event.payload["request_id"] == "req-1"
    assert event.payload["champion"] == {"version": "v0002", "artifact_path": "/m/v0002", "sha256": "b" * 64}
    assert event.payload["gate"]["recent"]["delta"] == pytest.approx(0.1)
    assert registry.champion().version == "v0002" and registry.get("v0001").status == "retired"


def test_a_failing_challenger_is_rejected_with_the_numbers(registry: ModelRegistry) -> None:
    decision = decide(SliceScores(100, 0.5, 0.6), SliceScores(100, 0.8, 0.6), SETTINGS)
    event = Promoter(registry).apply("v0002", decision, request_id="req-2")
    assert event.kind == "rejection" and event.model_version == "v0002"
    assert "older macro-F1 0.800 -> 0.600" in event.payload["reason"]
    assert event.payload["champion"]["version"] == "v0001"  # the champion keeps serving
    stored = registry.get("v0002")
    assert stored.status == "rejected"
    assert stored.info["rejection"]["older"]["challenger_macro_f1"] == 0.6
    assert registry.champion().version == "v0001"


def test_a_passing_challenger_of_weights_that_no_longer_serve_is_rejected(registry: ModelRegistry) -> None:
    fields = {
        "artifact_path": "/m/v0003",
        "sha256": "c" * 64,
        "backbone": "b",
        "labels": ["negative", "neutral", "positive"],
    }
    registry.register(version="v0003", parent="v0001", **fields)
    Promoter(registry).promote("v0003")  # promoted while v0002 trained from v0001
    decision = decide(SliceScores(100, 0.5, 0.6), SliceScores(100, 0.8, 0.8), SETTINGS)
    event = Promoter(registry).apply("v0002", decision, expect_weights="v0001")
    assert event.kind == "rejection" and "v0003 serve now" in event.payload["reason"]
    assert registry.champion().version == "v0003" and registry.get("v0002").status == "rejected"


def test_rollback_event_names_both_versions(registry: ModelRegistry) -> None:
    promoter = Promoter(registry)
    promoter.promote("v0002", reason="manual")
    with pytest.raises(ValueError, match="already the champion"):
        promoter.promote("v0002")
    event = promoter.rollback(reason="live accuracy fell")
    assert event.kind == "rollback" and event.model_version == "v0002"
    assert event.payload["from"] == "v0002" and event.payload["to"] == "v0001"
    assert event.payload["champion"]["artifact_path"] == "/m/v0001"
    assert event.payload["reason"] == "live accuracy fell"
    assert registry.get("v0002").status == "rolled_back" and registry.champion().version == "v0001"
