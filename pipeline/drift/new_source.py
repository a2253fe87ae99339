"""A never-seen source: is the champion as accurate on it as it is on the sources it knows?

A source's detectors learn their baseline from that source's own first messages,
so a source on which the champion is poor from its very first message never
looks like a *change* to them. For a source the champion was not trained on,
the monitor therefore adds two comparisons with what the champion knows:

- label-free, its embeddings are compared with the champion's training data
  (the source's embedding detector gets the training texts as its fixed
  reference, see pipeline/roles/monitor.py);
- with labels, :class:`NewSourceCheck` compares the source's live accuracy
  with the champion's accuracy on the other sources.

The accuracy comparison is a one-sided Fisher exact test at a few looks
(30, 60, 120 and 240 labels by default), each at ``alpha / looks`` so that
looking several times keeps the false-alarm rate at ``alpha`` (Bonferroni). It
raises once, when the source is worse by at least ``margin`` with that
confidence, and retires after the last look: from then on the source's own
detectors watch it like any other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scipy.stats import fisher_exact

MIN_REFERENCE = 50  # labeled predictions on the other sources before they are a reference


@dataclass
class NewSourceCheck:
    """The live accuracy of a never-seen source against the champion's elsewhere; ``update`` returns an alarm."""

    name = "new_source_accuracy"
    signal = "error"

    looks: tuple[int, ...] = (30, 60, 120, 240)
    alpha: float = 0.01
    margin: float = 0.05
    labeled: int = 0
    correct: int = 0
    done: bool = False
    last: dict[str, Any] = field(default_factory=dict)

    def update(self, correct: bool, reference: tuple[int, int] | None) -> dict[str, Any] | None:
        """One labeled prediction on the source, with the reference's (correct, labeled); the alarm's statistic."""
        if self.done:
            return None
        self.labeled += 1
        self.correct += int(correct)
        if self.labeled not in self.looks:
            return None
        self.done = self.labeled >= max(self.looks)
        if reference is None or reference[1] < MIN_REFERENCE:
            return None
        ref_correct, ref_labeled = reference
        accuracy, ref_accuracy = self.correct / self.labeled, ref_correct / ref_labeled
        table = [[self.correct, self.labeled - self.correct], [ref_correct, ref_labeled - ref_correct]]
        p = float(fisher_exact(table, alternative="less").pvalue)
        self.last = {
            "labeled": self.labeled,
            "accuracy": round(accuracy, 4),
            "reference_accuracy": round(ref_accuracy, 4),
            "reference_labeled": ref_labeled,
            "p": p,
            "threshold": self.alpha / len(self.looks),
        }
        if p <= self.alpha / len(self.looks) and ref_accuracy - accuracy >= self.margin:
            self.done = True
            return dict(self.last)
        return None

    def reset(self) -> None:
        """Nothing to forget: the check runs once per source, across drift events."""

    def describe(self) -> dict[str, Any]:
        return {"looks": list(self.looks), "alpha": self.alpha, "margin": self.margin}

    def get_state(self) -> dict[str, Any]:
        return {"labeled": self.labeled, "correct": self.correct, "done": self.done}

    def set_state(self, state: dict[str, Any]) -> None:
        self.labeled, self.correct, self.done = int(state["labeled"]), int(state["correct"]), bool(state["done"])
