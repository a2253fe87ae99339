"""The alarm budget: an expected run length between false alarms, turned into each detector's parameter.

Thresholds are never raw p-values. The monitor is configured with an expected run
length ``A``: the number of stationary messages of one source expected between two
false alarms of the *whole* monitor. The budget is split evenly (Bonferroni) over the
enabled detectors (:meth:`aet.pipeline.drift.config.DriftConfig.run_length_of`), each
of which gets a run length ``A * n_detectors`` and turns it into its own parameter
here: ADWIN's ``delta`` through a table measured by simulation
(:data:`ADWIN_ARL_TABLE`; ADWIN's own bound is far too loose to use), KSWIN's
``alpha`` through a measured constant, Page-Hinkley's threshold through Siegmund's
approximation of the CUSUM run length, and the T² threshold through the chi-square
quantile at a per-check level of ``checks / run length`` (a union bound over the
checks). Every target is first multiplied by :data:`SAFETY`.
"""

from __future__ import annotations

import bisect
import math

from scipy import stats as scipy_stats

#: Every calibration target run length is multiplied by this before it is turned into a parameter:
#: the tables below are measured with about ±25% noise and Siegmund's formula is an approximation.
SAFETY = 1.5

#: ADWIN (river 0.26, clock=32): ``delta`` -> measured run length between false alarms, the minimum over
#: i.i.d. Bernoulli(0.1/0.3/0.5) and Gaussian inputs of standard deviation 0.5 (3 million draws each;
#: ADWIN's Hoeffding/Bernstein bound would give no false alarm at all at these deltas).
ADWIN_ARL_TABLE: tuple[tuple[float, float], ...] = (
    (0.05, 93_750.0),
    (0.1, 42_857.0),
    (0.2, 17_143.0),
    (0.4, 7_212.0),
    (0.7, 3_138.0),
    (1.0, 1_880.0),
)
ADWIN_CLOCK = 32
#: KSWIN (window 300, statistic window 100): measured run length ~ 3.3 / alpha for alpha <= 1e-3.
KSWIN_ARL_CONSTANT = 3.0
KSWIN_WINDOW, KSWIN_STAT = 300, 100
#: Page-Hinkley: allowance (in standard deviations of a block share) and block length (messages).
PH_ALLOWANCE = 0.25
PH_BLOCK = 20


def adwin_delta(run_length: float) -> float:
    """ADWIN ``delta`` whose measured run length between false alarms is at least ``run_length``.

    Log-log interpolation in :data:`ADWIN_ARL_TABLE`; below the table's smallest delta the run length
    is extrapolated with the flattest slope of the table, which errs towards fewer false alarms.
    """
    target = float(run_length)
    deltas = [math.log(d) for d, _ in ADWIN_ARL_TABLE]
    arls = [math.log(a) for _, a in ADWIN_ARL_TABLE]
    lt = math.log(max(target, 1.0))
    if lt <= arls[-1]:
        return ADWIN_ARL_TABLE[-1][0]
    if lt >= arls[0]:
        slopes = [(arls[i + 1] - arls[i]) / (deltas[i + 1] - deltas[i]) for i in range(len(arls) - 1)]
        slope = max(slopes)  # least negative: the longest extrapolated delta shrink per decade
        return math.exp(deltas[0] + (lt - arls[0]) / slope)
    # arls decrease as deltas increase; find the bracketing pair.
    rev = arls[::-1]
    j = bisect.bisect_left(rev, lt)
    i = len(arls) - 1 - j
    t = (lt - arls[i]) / (arls[i + 1] - arls[i])
    return math.exp(deltas[i] + t * (deltas[i + 1] - deltas[i]))


def kswin_alpha(run_length: float) -> float:
    """KSWIN's per-test ``alpha`` for a run length (its tests at every step are strongly correlated)."""
    return min(0.01, KSWIN_ARL_CONSTANT / max(float(run_length), 1.0))


def siegmund_run_length(allowance: float, threshold: float) -> float:
    """Siegmund's approximation of a one-sided CUSUM's in-control run length (unit-variance increments)."""
    b = threshold + 1.166
    k = allowance
    return (math.exp(2 * k * b) - 2 * k * b - 1) / (2 * k * k)


def page_hinkley_threshold(run_length: float, allowance: float = PH_ALLOWANCE) -> float:
    """Two-sided Page-Hinkley threshold (in standard deviations) for a run length (in updates)."""
    lo, hi = 0.0, 1000.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if siegmund_run_length(allowance, mid) / 2 < run_length:  # two sides: half the run length
            lo = mid
        else:
            hi = mid
    return hi


def chi2_threshold(run_length: float, step: int, dof: int) -> float:
    """Chi-square quantile at a per-check level of ``step / run_length`` (a union bound over the checks)."""
    level = min(0.5, step / max(float(run_length), 1.0))
    return float(scipy_stats.chi2.isf(level, dof))
