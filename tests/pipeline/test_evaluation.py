"""Classification quality: macro-F1 against hand-computed values, absent classes skipped."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aet.pipeline.evaluation import confusion, macro_f1, report

NEG, NEU, POS = 0, 1, 2


def test_confusion_counts_true_by_predicted() -> None:
    m = confusion([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0])
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert m.sum() == 6


def test_macro_f1_hand_computed() -> None:
    # class 0: tp=1 fp=1 fn=1 -> F1 = 2/4 = 0.5
    # class 1: tp=1 fp=1 fn=0 -> F1 = 2/3
    # class 2: tp=2 fp=0 fn=1 -> F1 = 4/5
    y_true = [NEG, NEG, NEU, POS, POS, POS]
    y_pred = [NEG, NEU, NEU, POS, POS, NEG]
    assert macro_f1(y_true, y_pred) == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)


def test_macro_f1_perfect_and_all_wrong() -> None:
    assert macro_f1([0, 1, 2, 2], [0, 1, 2, 2]) == 1.0
    assert macro_f1([0, 0, 2], [2, 2, 0]) == 0.0


def test_absent_class_is_skipped_not_counted_as_zero() -> None:
    # No neutral in the truth or the predictions (a StockEmotions-like corpus).
    # class 0: tp=1 fp=1 fn=0 -> 2/3; class 2: tp=1 fp=0 fn=1 -> 2/3; class 1 skipped.
    y_true = [NEG, POS, POS]
    y_pred = [NEG, POS, NEG]
    assert macro_f1(y_true, y_pred) == pytest.approx(2 / 3)  # not (2/3 + 2/3 + 0) / 3


def test_class_only_predicted_counts_with_f1_zero() -> None:
    # Neutral never true but predicted once: it is present (fp=1) and scores 0.
    # class 0: tp=1 fp=0 fn=0 -> 1; class 1: tp=0 fp=1 fn=0 -> 0; class 2: tp=1 fp=0 fn=1 -> 2/3
    assert macro_f1([NEG, POS, POS], [NEG, POS, NEU]) == pytest.approx((1 + 0 + 2 / 3) / 3)


def test_empty_input() -> None:
    assert macro_f1([], []) == 0.0
    assert report([], []) == {
        "n": 0,
        "accuracy": 0.0,
        "macro_f1": 0.0,
        "predicted": {"negative": 0, "neutral": 0, "positive": 0},
    }


def test_report() -> None:
    r = report([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0])
    assert r["n"] == 6
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    assert r["predicted"] == {"negative": 2, "neutral": 2, "positive": 2}


labels = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=60)


@given(labels)
def test_macro_f1_matches_a_direct_computation(pairs: list[tuple[int, int]]) -> None:
    y_true = np.array([t for t, _ in pairs])
    y_pred = np.array([p for _, p in pairs])
    f1s = []
    for c in range(3):
        tp = int(((y_true == c) & (y_pred == c)).sum())
        fp = int(((y_true != c) & (y_pred == c)).sum())
        fn = int(((y_true == c) & (y_pred != c)).sum())
        if c in y_true or c in y_pred:
            precision = tp / (tp + fp) if tp + fp else 0.0
            recall = tp / (tp + fn) if tp + fn else 0.0
            f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    got = macro_f1(y_true, y_pred)
    assert got == pytest.approx(sum(f1s) / len(f1s))
    assert 0.0 <= got <= 1.0
    assert report(y_true, y_pred)["accuracy"] == pytest.approx(float((y_true == y_pred).mean()))
