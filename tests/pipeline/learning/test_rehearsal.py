"""The replay reservoir: bounded, per source, class-balanced, deterministic for a seed (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections import Counter

import pytest

from aet.pipeline.learning.examples import Example
from aet.pipeline.learning.rehearsal import Reservoir, is_holdout, split_holdout
from aet.storage.db import Database
from aet.storage.training_store import TrainingStore


def _stream(n: int, source: str, mix: tuple[float, float, float] = (1, 1, 1), tag: str = "") -> list[Example]:
    """``n`` examples of one source whose labels follow ``mix`` (deterministic)."""
    total = sum(mix)
    bounds = [mix[0] / total, (mix[0] + mix[1]) / total]
    out = []
    for i in range(n):
        u = ((i * 7919) % 1000) / 1000
        label = 0 if u < bounds[0] else 1 if u < bounds[1] else 2
        out.append(Example(text=f"{source} {tag} message {i}", label=label, source=source, id=f"{source}{tag}-{i}"))
    return out


def _held(reservoir: Reservoir) -> Counter:
    return Counter((e.source, e.label) for e in reservoir.examples())


def test_bounded_per_source_and_class_balanced(database: Database) -> None:
    reservoir = Reservoir(TrainingStore(database), capacity_per_source=30, seed=1)
    reservoir.add(_stream(600, "news", mix=(1, 8, 1)))  # 80% neutral, like financial news
    reservoir.add(_stream(90, "chat", mix=(1, 0.0001, 1)))
    held = _held(reservoir)
    # news: every class saw more than its 10 slots, so each holds exactly 10 despite the skew
    assert [held[("news", c)] for c in range(3)] == [10, 10, 10]
    # chat: per source, independent of news; a class with fewer examples than slots keeps all of them
    assert held[("chat", 1)] <= 1 and held[("chat", 0)] == 10 and held[("chat", 2)] == 10
    assert sum(held.values()) <= 2 * 30
    stream_mix = Counter(("news", e.label) for e in _stream(600, "news", mix=(1, 8, 1)))
    summary = reservoir.summary()
    assert summary["seen"]["news"] == {
        name: stream_mix[("news", c)] for c, name in enumerate(("negative", "neutral", "positive"))
    }
    assert summary["held"]["news"] == {"negative": 10, "neutral": 10, "positive": 10}


def test_same_seed_same_sample_other_seed_other_sample(database: Database, tmp_path) -> None:
    stream = _stream(500, "news")
    a = Reservoir(TrainingStore(database), capacity_per_source=15, seed=5)
    a.add(stream[:250])
    a.add(stream[250:])  # in two batches: the draw depends only on the position, not on batching
    other = Database(f"sqlite:///{tmp_path / 'b.db'}")
    third = Database(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        b = Reservoir(TrainingStore(other), capacity_per_source=15, seed=5)
        b.add(stream)
        c = Reservoir(TrainingStore(third), capacity_per_source=15, seed=6)
        c.add(stream)
        ids = lambda r: sorted(e.id for e in r.examples())
        assert ids(a) == ids(b)
        assert ids(a) != ids(c)
    finally:
        other.dispose()
        third.dispose()


def test_reservoir_is_a_uniform_sample_not_the_first_or_last(database: Database) -> None:
    reservoir = Reservoir(TrainingStore(database), capacity_per_source=3 * 50, seed=2)
    reservoir.add(_stream(3000, "news"))
    positions = sorted(int(e.id.split("-")[1]) for e in reservoir.examples() if e.label == 1)
    assert len(positions) == 50
    mean = sum(positions) / len(positions)
    assert 1000 < mean < 2000  # the stream's middle, for a uniform sample of 0..2999
    assert positions[0] < 600 and positions[-1] > 2400


def test_redelivered_examples_are_not_counted_twice(database: Database) -> None:
    reservoir = Reservoir(TrainingStore(database), capacity_per_source=30, seed=1)
    batch = _stream(12, "news")
    first = reservoir.add(batch)
    again = reservoir.add(batch)
    assert first.kept == 12 and again.duplicate == 12 and again.kept == 0
    assert sum(reservoir.summary()["seen"]["news"].values()) == 12


def test_holdout_split_is_stable_and_keeps_duplicate_texts_together() -> None:
    examples = [Example(text=f"Headline number {i}", label=i % 3, id=str(i)) for i in range(2000)]
    train, held = split_holdout(examples, 0.2)
    assert 0.17 < len(held) / len(examples) < 0.23
    assert split_holdout(examples, 0.2) == (train, held)
    assert is_holdout("Headline number 7", 0.2) == is_holdout("  HEADLINE   number 7 ", 0.2)
    assert not {e.text for e in train} & {e.text for e in held}


def test_capacity_must_fit_one_slot_per_label(database: Database) -> None:
    with pytest.raises(ValueError, match="at least 3"):
        Reservoir(TrainingStore(database), capacity_per_source=2)
