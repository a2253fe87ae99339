"""The gate's statistics: a challenger better by chance on a tiny slice is not promoted; one clearly better is."""

from __future__ import annotations

import numpy as np
import pytest

from aet.pipeline.evaluation import macro_f1
from aet.pipeline.learning.evidence import (
    binomial_tail,
    macro_f1_from_counts,
    mcnemar,
    mcnemar_counts,
    paired_bootstrap,
)


def _noisy(y: np.ndarray, accuracy: float, rng: np.random.Generator) -> np.ndarray:
    """Predictions that are right with probability ``accuracy``, else a uniformly wrong class."""
    wrong = (y + rng.integers(1, 3, size=len(y))) % 3
    return np.where(rng.random(len(y)) < accuracy, y, wrong)


def test_vectorised_macro_f1_matches_the_evaluation_module() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        y, p = rng.integers(0, 3, 40), rng.integers(0, 3, 40)
        if rng.random() < 0.3:  # a class absent from both: skipped by both implementations
            y, p = np.where(y == 1, 0, y), np.where(p == 1, 2, p)
        counts = np.zeros((3, 3), dtype=np.int64)
        np.add.at(counts, (y, p), 1)
        assert macro_f1_from_counts(counts) == pytest.approx(macro_f1(y.tolist(), p.tolist()))


def test_a_challenger_better_by_chance_on_a_tiny_slice_is_not_clearly_better() -> None:
    """Same true accuracy; on 30 examples the challenger happens to score higher, but the bound includes zero."""
    rng = np.random.default_rng(3)
    lucky = None
    for _ in range(200):
        y = rng.integers(0, 3, 30)
        a, b = _noisy(y, 0.7, rng), _noisy(y, 0.7, rng)
        if macro_f1(y.tolist(), b.tolist()) - macro_f1(y.tolist(), a.tolist()) > 0.08:
            lucky = (y, a, b)
            break
    assert lucky is not None, "no lucky draw found"
    c = paired_bootstrap(*lucky, seed=0)
    assert c.delta > 0.08
    assert c.low <= 0 < c.high
    assert c.p_not_better > 0.05


def test_a_clearly_better_challenger_has_a_positive_lower_bound() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 300)
    a, b = _noisy(y, 0.6, rng), _noisy(y, 0.8, rng)
    c = paired_bootstrap(y, a, b, confidence=0.9, seed=1)
    assert c.low > 0.05
    assert c.p_not_better < 0.01
    assert c.to_dict()["n"] == 300


def test_pairing_detects_a_small_consistent_gain_that_two_unpaired_slices_would_not() -> None:
    """The challenger fixes 15 of the champion's mistakes and breaks none: paired, that is certain."""
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 200)
    a = _noisy(y, 0.7, rng)
    b = a.copy()
    wrong = np.flatnonzero(a != y)[:15]
    b[wrong] = y[wrong]
    c = paired_bootstrap(y, a, b, metric="accuracy", seed=2)
    assert c.delta == pytest.approx(15 / 200)
    assert c.low > 0.03


def test_bootstrap_is_deterministic_for_a_seed_and_checks_its_inputs() -> None:
    y, a, b = [0, 1, 2, 1], [0, 1, 1, 1], [0, 2, 2, 1]
    assert paired_bootstrap(y, a, b, seed=7) == paired_bootstrap(y, a, b, seed=7)
    with pytest.raises(ValueError, match="same examples"):
        paired_bootstrap(y, a, b[:3])
    with pytest.raises(ValueError, match="metric"):
        paired_bootstrap(y, a, b, metric="auc")
    empty = paired_bootstrap([], [], [])
    assert empty.n == 0 and empty.low < 0 < empty.high


def test_binomial_tail_is_exact() -> None:
    assert binomial_tail(0, 5) == 1.0
    assert binomial_tail(6, 5) == 0.0
    assert binomial_tail(5, 5) == pytest.approx(1 / 32)
    assert binomial_tail(4, 5) == pytest.approx(6 / 32)


def test_mcnemar_counts_only_the_messages_where_the_models_disagree() -> None:
    champion = [True] * 50 + [False] * 20 + [True] * 2 + [False] * 28
    challenger = [True] * 50 + [True] * 20 + [False] * 2 + [False] * 28
    m = mcnemar(champion, challenger)
    assert (m.n, m.only_challenger_right, m.only_champion_right, m.discordant) == (100, 20, 2, 22)
    assert m.p_challenger_better < 0.001
    assert m.p_champion_better > 0.99
    assert mcnemar_counts(100, 20, 2) == m


def test_mcnemar_on_a_coin_flip_split_gives_no_evidence() -> None:
    m = mcnemar_counts(40, 6, 5)
    assert m.p_challenger_better > 0.3 and m.p_champion_better > 0.3
    with pytest.raises(ValueError, match="same messages"):
        mcnemar([True], [True, False])
