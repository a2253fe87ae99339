"""Scenarios: loading, the quick variant, and streams that never leak test or bootstrap data."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from aet.pipeline.bench.scenario import Scenario, StreamItem, build_stream, load_scenario
from aet.pipeline.bench.strategies import Strategy
from aet.pipeline.bench.stream import phase_scores, post_drift_score, run_prequential, targets, windows
from aet.pipeline.learning.examples import Example
from aet.pipeline.records import LABELS


def write_corpus(root: Path, name: str, n: int, *, split: bool = False, source: str = "news") -> None:
    folder = root / name
    folder.mkdir(parents=True)
    with open(folder / f"{name}.jsonl", "w") as f:
        for i in range(n):
            row = {"id": f"{name}:{i}", "text": f"{name} text number {i}", "label": LABELS[i % 3], "source": source}
            if split:
                row["split"] = "test" if i % 5 == 0 else "train"
            f.write(json.dumps(row) + "\n")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    write_corpus(tmp_path, "news_corpus", 600)
    write_corpus(tmp_path, "chat_corpus", 400, split=True, source="chat")
    return tmp_path


def scenario(**kw: Any) -> Scenario:
    base = {
        "name": "t",
        "seed": 3,
        "bootstrap": 100,
        "label_fraction": 0.5,
        "label_delay": 7,
        "n_test": 50,
        "phases": [
            {"name": "A", "corpus": "news_corpus", "n": 120},
            {"name": "B", "corpus": "chat_corpus", "n": 150},
            {"name": "A2", "corpus": "news_corpus", "n": 80},
        ],
    }
    base.update(kw)
    return Scenario.model_validate(base)


def test_the_shipped_scenarios_load_and_their_quick_variants_shrink() -> None:
    for name in ("news-tweets", "news-chat", "news-tweets-chat-news"):
        s = load_scenario(name)
        q = s.quick_variant()
        assert len(q.phases) == len(s.phases) and sum(p.n for p in q.phases) < sum(p.n for p in s.phases)
        assert q.quick == {} and q.name.endswith("(quick)")
    with pytest.raises(FileNotFoundError, match="news-tweets"):
        load_scenario("no-such-scenario")


def test_twin_corpora_are_refused() -> None:
    with pytest.raises(ValueError, match="share texts"):
        scenario(
            phases=[
                {"name": "A", "corpus": "fiqa2018_task1", "n": 10},
                {"name": "B", "corpus": "semeval2017_task5_headlines", "n": 10},
            ]
        )


def test_a_stream_never_leaks_bootstrap_or_test_texts_and_is_seeded(data: Path) -> None:
    s = scenario()
    stream = build_stream(s, data)
    texts = [it.message.text for it in stream.items]
    boot = {e.text for e in stream.bootstrap}
    tests = {e.text for examples in stream.tests.values() for e in examples}
    assert len(texts) == len(set(texts)) == 350  # phases A and A2 draw different rows of one corpus
    assert not boot & set(texts) and not tests & set(texts) and not tests & boot
    assert all(e.text.startswith("news_corpus") for e in stream.bootstrap)  # first phase's corpus only
    assert stream.phase_bounds == [(0, 120), (120, 270), (270, 350)]
    assert [it.message.ts for it in stream.items] == sorted(it.message.ts for it in stream.items)
    again = build_stream(s, data)
    assert [(it.message.id, it.labeled) for it in again.items] == [(it.message.id, it.labeled) for it in stream.items]
    assert {it.message.source for it in stream.items[120:270]} == {"chat"}
    assert {it.message.source for it in build_stream(scenario(source="news"), data).items} == {"news"}


def test_every_label_arrives_once_and_after_its_message(data: Path) -> None:
    stream = build_stream(scenario(chunk=16), data)
    seen: list[int] = []
    for start in range(0, len(stream.items), 16):
        end = min(start + 16, len(stream.items))
        for it in stream.labels_due(start, end):
            assert it.index < end - stream.scenario.label_delay + 1
            seen.append(it.index)
    seen += [it.index for it in stream.label_tail()]
    assert sorted(seen) == [it.index for it in stream.items if it.labeled]


def test_a_phase_asking_for_more_than_its_corpus_has_is_refused(data: Path) -> None:
    with pytest.raises(ValueError, match="unused train messages"):
        build_stream(scenario(phases=[{"name": "A", "corpus": "chat_corpus", "n": 10_000}]), data)


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


def test_targets_compare_aet_with_each_baseline() -> None:
    def result(post: float, phases: list[float], seconds: float, forgetting: float) -> dict[str, Any]:
        return {
            "post_drift": {"macro_f1": post},
            "phases": [{"macro_f1": f} for f in phases],
            "train_seconds": seconds,
            "forgetting": {"change_points": forgetting},
        }

    t = targets(
        {
            "aet": result(0.70, [0.8, 0.7], 30, -1.0),
            "static": result(0.55, [0.8, 0.5], 0, 0),
            "river": result(0.40, [0.5, 0.45], 1, 0),
            "periodic": result(0.71, [0.8, 0.71], 90, -6),
        }
    )
    assert t["aet_minus_static_post_drift_points"] == 15.0 and t["at_least_10_points_above_static"]
    assert t["above_river_every_phase"] and t["aet_minus_river_per_phase_points"] == [30.0, 25.0]
    assert t["periodic_minus_aet_post_drift_points"] == 1.0 and t["train_seconds_aet_over_periodic"] == 0.33
    assert t["within_2_points_of_periodic_with_half_the_training"] and t["forgetting_no_worse_than_2_points"]
    t = targets({"aet": result(0.60, [0.8, 0.6], 80, -3.0), "periodic": result(0.70, [0.8, 0.7], 90, 0)})
    assert not t["within_2_points_of_periodic_with_half_the_training"] and not t["forgetting_no_worse_than_2_points"]
