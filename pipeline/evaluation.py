"""Classification quality: accuracy and macro-F1 over the three sentiment labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import numpy as np

from aet.pipeline.records import LABELS


def confusion(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int = 3) -> np.ndarray:
    """Counts[true, predicted]."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)), 1)
    return m


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int = 3) -> float:
    """Unweighted mean F1 over the classes present in the truth or the predictions.

    Classes absent from both are skipped, so a corpus without neutrals (e.g.
    StockEmotions) is not penalised for a class it cannot contain.
    """
    m = confusion(y_true, y_pred, n_classes)
    f1s = []
    for c in range(n_classes):
        tp, fp, fn = m[c, c], m[:, c].sum() - m[c, c], m[c, :].sum() - m[c, c]
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else 0.0


class Report(TypedDict):
    """What :func:`report` measures."""

    n: int
    accuracy: float
    macro_f1: float
    predicted: dict[str, int]


def report(y_true: Sequence[int], y_pred: Sequence[int]) -> Report:
    """Accuracy, macro-F1, count and the predicted-label mix."""
    truth, predicted = np.asarray(y_true), np.asarray(y_pred)
    n = len(truth)
    return {
        "n": n,
        "accuracy": float((truth == predicted).mean()) if n else 0.0,
        "macro_f1": macro_f1(y_true, y_pred),
        "predicted": {LABELS[c]: int((predicted == c).sum()) for c in range(len(LABELS))},
    }
