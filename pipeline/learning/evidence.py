"""Evidence for champion/challenger decisions: paired comparisons with a confidence bound.

Two models are always compared on the *same* labeled examples — a held-out
slice both predicted, or live messages both scored — so that which examples
happened to be drawn cancels out of the difference. Two tests, for the two
kinds of evidence the loop has:

- :func:`paired_bootstrap` for a held-out slice and any metric (macro-F1 by
  default): the examples are resampled with replacement, both models'
  metrics recomputed on each resample, and the spread of the difference gives
  a one-sided confidence bound. A challenger that is better on a small slice
  by the luck of the draw has a lower bound at or below zero and is not
  promoted; one that is clearly better has a positive lower bound.
- :func:`mcnemar` for live, prequential evidence accumulated message by
  message (shadow scoring, automatic rollback): only the messages on which
  the two models disagree about correctness carry information, and under
  "equally good" each such message is a fair coin. The exact binomial tail
  gives the probability of a split at least as lopsided by chance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import comb

import numpy as np

N_CLASSES = 3


@dataclass(frozen=True)
class PairedComparison:
    """Champion and challenger on the same examples: their metric, and a confidence interval of the difference."""

    n: int
    champion: float
    challenger: float
    low: float
    high: float
    confidence: float
    p_not_better: float
    metric: str = "macro_f1"

    @property
    def delta(self) -> float:
        return self.challenger - self.champion

    def to_dict(self) -> dict[str, float | int | str]:
        return {
            "n": self.n,
            "metric": self.metric,
            "champion": round(self.champion, 4),
            "challenger": round(self.challenger, 4),
            "delta": round(self.delta, 4),
            "low": round(self.low, 4),
            "high": round(self.high, 4),
            "confidence": self.confidence,
            "p_not_better": round(self.p_not_better, 4),
        }


def macro_f1_from_counts(counts: np.ndarray) -> np.ndarray:
    """Macro-F1 of confusion counts shaped (..., classes, classes), over the classes present in truth or prediction.

    The same rule as :func:`aet.pipeline.evaluation.macro_f1`, vectorised over leading axes.
    """
    tp = np.diagonal(counts, axis1=-2, axis2=-1).astype(np.float64)
    fp = counts.sum(axis=-2) - tp
    fn = counts.sum(axis=-1) - tp
    denominator = 2 * tp + fp + fn
    present = denominator > 0
    f1 = np.where(present, 2 * tp / np.where(present, denominator, 1), 0.0)
    n_present = present.sum(axis=-1)
    return np.where(n_present > 0, f1.sum(axis=-1) / np.maximum(n_present, 1), 0.0)


def _metric(name: str, counts: np.ndarray) -> np.ndarray:
    if name == "macro_f1":
        return macro_f1_from_counts(counts)
    if name == "accuracy":
        total = counts.sum(axis=(-2, -1))
        return np.diagonal(counts, axis1=-2, axis2=-1).sum(axis=-1) / np.maximum(total, 1)
    raise ValueError(f"unknown metric {name!r}: use macro_f1 or accuracy")


def _counts(cells: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Confusion counts (resamples, classes, classes) from cell ids true*classes+pred and per-resample weights."""
    k = N_CLASSES * N_CLASSES
    if weights is None:
        return np.bincount(cells, minlength=k).reshape(N_CLASSES, N_CLASSES)
    onehot = np.zeros((len(cells), k))
    onehot[np.arange(len(cells)), cells] = 1.0
    return (weights @ onehot).reshape(-1, N_CLASSES, N_CLASSES)


def paired_bootstrap(
    y_true: Sequence[int],
    champion: Sequence[int],
    challenger: Sequence[int],
    *,
    metric: str = "macro_f1",
    confidence: float = 0.9,
    resamples: int = 2000,
    seed: int = 0,
) -> PairedComparison:
    """Compare two models' predictions of the same examples; a two-sided ``confidence`` interval of the difference.

    ``low`` is also the one-sided lower bound at ``(1 + confidence) / 2``.
    ``p_not_better`` is the share of resamples in which the challenger's
    metric is not above the champion's. Deterministic for a seed.
    """
    y = np.asarray(y_true, dtype=np.int64)
    a, b = np.asarray(champion, dtype=np.int64), np.asarray(challenger, dtype=np.int64)
    if not (len(y) == len(a) == len(b)):
        raise ValueError(f"{len(y)} labels, {len(a)} and {len(b)} predictions: compare the same examples")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), not {confidence}")
    n = len(y)
    if n == 0:
        return PairedComparison(0, 0.0, 0.0, -1.0, 1.0, confidence, 1.0, metric)
    cells_a, cells_b = y * N_CLASSES + a, y * N_CLASSES + b
    point_a = float(_metric(metric, _counts(cells_a)))
    point_b = float(_metric(metric, _counts(cells_b)))
    rng = np.random.default_rng(seed)
    # Multinomial weights are the bootstrap's resampling counts: example i drawn w[r, i] times in resample r.
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float32)
    deltas = _metric(metric, _counts(cells_b, weights)) - _metric(metric, _counts(cells_a, weights))
    tail = (1 - confidence) / 2
    low, high = np.quantile(deltas, [tail, 1 - tail])
    return PairedComparison(
        n=n,
        champion=point_a,
        challenger=point_b,
        low=float(low),
        high=float(high),
        confidence=confidence,
        p_not_better=float((deltas <= 0).mean()),
        metric=metric,
    )


@dataclass(frozen=True)
class McNemar:
    """Paired correctness of two models on the same messages, and the exact one-sided tests of the difference."""

    n: int
    only_challenger_right: int
    only_champion_right: int
    p_challenger_better: float
    p_champion_better: float

    @property
    def discordant(self) -> int:
        return self.only_challenger_right + self.only_champion_right

    def to_dict(self) -> dict[str, float | int]:
        return {
            "n": self.n,
            "only_challenger_right": self.only_challenger_right,
            "only_champion_right": self.only_champion_right,
            "p_challenger_better": round(self.p_challenger_better, 5),
            "p_champion_better": round(self.p_champion_better, 5),
        }


def binomial_tail(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2): the chance of at least ``k`` heads in ``n`` fair flips."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return sum(comb(n, i) for i in range(k, n + 1)) / 2.0**n


def mcnemar(champion_correct: Sequence[bool], challenger_correct: Sequence[bool]) -> McNemar:
    """The exact McNemar test: of the messages exactly one model got right, is the split more lopsided than chance?"""
    a = np.asarray(champion_correct, dtype=bool)
    b = np.asarray(challenger_correct, dtype=bool)
    if len(a) != len(b):
        raise ValueError(f"{len(a)} and {len(b)} outcomes: compare the same messages")
    return mcnemar_counts(len(a), int((b & ~a).sum()), int((a & ~b).sum()))


def mcnemar_counts(n: int, only_challenger_right: int, only_champion_right: int) -> McNemar:
    """:func:`mcnemar` from running counts (what a long-lived shadow keeps instead of every outcome)."""
    d = only_challenger_right + only_champion_right
    return McNemar(
        n=n,
        only_challenger_right=only_challenger_right,
        only_champion_right=only_champion_right,
        p_challenger_better=binomial_tail(only_challenger_right, d),
        p_champion_better=binomial_tail(only_champion_right, d),
    )
