"""Live quality: rolling accuracy and macro-F1 of labeled predictions, per source and serving model version.

The drift monitor joins each delayed label to its prediction and adds the pair
here. The totals, the confusion matrix and a rolling window of the last
``window`` pairs are what the ``live_quality`` table, the Prometheus gauges and
``aet drift`` show; the state is plain JSON, saved with the monitor's own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from aet.pipeline import metrics
from aet.pipeline.evaluation import macro_f1


class Quality:
    """Totals and a rolling window of (true, predicted) for one source and model version."""

    def __init__(self, window: int) -> None:
        self.labeled = 0
        self.correct = 0
        self.confusion = [[0, 0, 0] for _ in range(3)]
        self.window: deque[tuple[int, int]] = deque(maxlen=window)

    def add(self, true: int, predicted: int) -> None:
        self.labeled += 1
        self.correct += int(true == predicted)
        self.confusion[true][predicted] += 1
        self.window.append((true, predicted))

    def accuracy(self) -> float:
        return sum(t == p for t, p in self.window) / len(self.window) if self.window else 0.0

    def macro_f1(self) -> float:
        return macro_f1([t for t, _ in self.window], [p for _, p in self.window]) if self.window else 0.0

    def state(self) -> dict[str, Any]:
        return {
            "labeled": self.labeled,
            "correct": self.correct,
            "confusion": self.confusion,
            "window": "".join(f"{t}{p}" for t, p in self.window),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.labeled, self.correct = int(state["labeled"]), int(state["correct"])
        self.confusion = [[int(x) for x in row] for row in state["confusion"]]
        w = state["window"]
        self.window.extend((int(w[i]), int(w[i + 1])) for i in range(0, len(w), 2))


class LiveQuality:
    """One :class:`Quality` per (source, model version), with the rows and gauges of the ones a batch changed."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.by_key: dict[tuple[str, str], Quality] = {}

    def of(self, source: str, version: str) -> Quality:
        key = (source, version)
        if key not in self.by_key:
            self.by_key[key] = Quality(self.window)
        return self.by_key[key]

    def add(self, source: str, version: str, true: int, predicted: int) -> None:
        """One labeled prediction of ``version`` on a message of ``source``."""
        self.of(source, version).add(true, predicted)

    def report(self, touched: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
        """The ``live_quality`` rows of the (source, version) pairs in ``touched``; their gauges are set too."""
        rows = []
        for source, version in touched:
            q = self.of(source, version)
            rows.append(
                {
                    "source": source,
                    "model_version": version,
                    "labeled": q.labeled,
                    "correct": q.correct,
                    "window": len(q.window),
                    "accuracy": q.accuracy(),
                    "macro_f1": q.macro_f1(),
                    "confusion": q.confusion,
                }
            )
            metrics.LIVE_ACCURACY.labels(source, version).set(q.accuracy())
            metrics.LIVE_MACRO_F1.labels(source, version).set(q.macro_f1())
            metrics.LIVE_LABELED.labels(source, version).set(q.labeled)
        return rows

    def state(self) -> dict[str, dict[str, Any]]:
        return {f"{s}\x1f{v}": q.state() for (s, v), q in self.by_key.items()}

    def restore(self, state: dict[str, dict[str, Any]]) -> None:
        for key, q in state.items():
            source, version = key.split("\x1f", 1)
            self.of(source, version).restore(q)
