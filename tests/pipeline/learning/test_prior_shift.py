"""Label-free prior-shift estimation: EM recovers a changed class mix from calibrated posteriors alone."""

from __future__ import annotations

import numpy as np

from aet.pipeline.learning.prior_shift import PriorShift, em_priors

MEANS = np.array([-2.0, 0.0, 2.0])  # one Gaussian per class (negative, neutral, positive), unit variance


def posteriors(x: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """Exact Bayes posteriors of the three-Gaussian model under ``priors``: a calibrated classifier."""
    likelihood = np.exp(-0.5 * (x[:, None] - MEANS[None, :]) ** 2)
    joint = likelihood * priors
    return joint / joint.sum(axis=1, keepdims=True)


def sample(priors: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    classes = rng.choice(3, size=n, p=priors)
    return rng.normal(MEANS[classes], 1.0)


REFERENCE = np.array([0.15, 0.6, 0.25])


def test_em_recovers_the_new_class_mix_from_unlabeled_messages() -> None:
    new = np.array([0.45, 0.0, 0.55])  # a chat feed: no neutral messages at all
    probs = posteriors(sample(new, 2000, seed=1), REFERENCE)
    naive = probs.mean(axis=0)  # the average posterior is pulled toward the old mix
    estimated = em_priors(probs, REFERENCE)
    assert np.abs(estimated - new).max() < 0.05 < np.abs(naive - new).max()


def test_no_correction_without_a_shift_and_one_with_it() -> None:
    shift = PriorShift(min_shift=0.1, min_messages=128)
    same = posteriors(sample(REFERENCE, 256, seed=2), REFERENCE)
    assert shift.offset(same, REFERENCE) is None
    assert shift.offset(same[:100], REFERENCE) is None  # too few messages
    moved = posteriors(sample(np.array([0.45, 0.0, 0.55]), 256, seed=3), REFERENCE)
    offset = shift.offset(moved, REFERENCE)
    assert offset is not None and offset[1] < -1.0 and offset[0] > 0 and offset[2] > 0


def test_labels_that_say_the_correction_hurts_withdraw_it() -> None:
    shift = PriorShift(min_shift=0.1, min_messages=128, judge_labels=16)
    moved = posteriors(sample(np.array([0.45, 0.0, 0.55]), 256, seed=4), REFERENCE)
    assert shift.offset(moved, REFERENCE) is not None
    rng = np.random.default_rng(5)
    plain = rng.uniform(0.3, 0.8, 40)
    shift.judge(plain, plain + rng.uniform(0.1, 0.5, 40))  # the corrected layer's log-loss is higher on every label
    assert shift.refuted() and shift.offset(moved, REFERENCE) is None
