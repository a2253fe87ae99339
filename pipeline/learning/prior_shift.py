"""Label-free prior-shift correction (Saerens, Latinne & Decaestecker, 2002) for the fast path.

When a stream's class mix changes (a chat feed with no neutral messages, a
market day with far more negative news) while what each class looks like
does not, a model's posteriors are off by the ratio of the new class priors
to the ones it learned. The new priors can be estimated from the unlabeled
stream alone by EM: weight each message's posterior by the current prior
ratio, renormalise, average — until the priors stop moving. The corrected
posterior is ``p(y|x) · π_new(y) / π_ref(y)``, i.e. the model's own last layer
with ``log(π_new / π_ref)`` added to its bias, which the fast path can serve
as a head before a single label has arrived.

``π_ref`` is what the model believes the mix is where it is at home: the
mean posterior over the first messages it scored. A correction is only
proposed when the estimated mix moved by at least ``min_shift`` (total
variation); once labels arrive, :class:`PriorShift` judges it on them (the
corrected and the plain layer's log-loss on the same labels) and withdraws
it when it predicts worse — a concept shift that EM mistook for a prior shift.
"""

from __future__ import annotations

from collections import deque

import numpy as np

MAX_OFFSET = 6.0  # |log prior ratio| cap: a class the stream never shows is suppressed, not made impossible
FLOOR = 1e-6


def em_priors(probs: np.ndarray, reference: np.ndarray, *, max_iter: int = 200, tol: float = 1e-6) -> np.ndarray:
    """The class priors of the messages behind ``probs`` (rows: posteriors under ``reference`` priors), by EM."""
    p = np.clip(np.asarray(probs, dtype=np.float64), FLOOR, 1.0)
    ref = np.clip(np.asarray(reference, dtype=np.float64), FLOOR, 1.0)
    priors = ref.copy()
    for _ in range(max_iter):
        weighted = p * (priors / ref)
        weighted /= weighted.sum(axis=1, keepdims=True)
        new = weighted.mean(axis=0)
        if np.abs(new - priors).max() < tol:
            return new
        priors = new
    return priors


class PriorShift:
    """One source's verdict on correcting for its class mix: proposes the offset, and lets the labels refute it."""

    def __init__(self, min_shift: float = 0.1, min_messages: int = 128, judge_labels: int = 16) -> None:
        self.min_shift = min_shift
        self.min_messages = min_messages
        self.judge_labels = judge_labels
        self.differences: deque[float] = deque(maxlen=300)  # corrected minus plain log-loss, label by label

    def offset(self, probs: np.ndarray, reference: np.ndarray) -> np.ndarray | None:
        """``log(π_new / π_ref)`` to add to the bias for the messages behind ``probs`` (posteriors of the plain
        layer), or ``None``: too few messages, too small a shift, or refuted by the labels."""
        if len(probs) < self.min_messages or self.refuted():
            return None
        priors = em_priors(probs, reference)
        if 0.5 * float(np.abs(priors - reference).sum()) < self.min_shift:
            return None
        ratio = np.log(np.clip(priors, FLOOR, 1.0) / np.clip(reference, FLOOR, 1.0))
        return np.clip(ratio, -MAX_OFFSET, MAX_OFFSET)

    def judge(self, plain_loss: np.ndarray, shifted_loss: np.ndarray) -> None:
        """Log-losses of the plain and the corrected layer on the same newly labeled messages."""
        self.differences.extend(np.asarray(shifted_loss, dtype=np.float64) - np.asarray(plain_loss, dtype=np.float64))

    def refuted(self) -> bool:
        """Whether the labels say the correction predicts worse than the plain layer (one-sided t-test, 5 %)."""
        if len(self.differences) < self.judge_labels:
            return False
        from scipy.stats import ttest_1samp

        d = np.asarray(self.differences)
        if np.allclose(d, d[0]):
            return bool(d[0] > 0)
        return bool(ttest_1samp(d, 0.0, alternative="greater").pvalue <= 0.05)
