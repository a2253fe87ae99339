"""Drift detectors over several signals, calibrated to an expected run length, with hysteresis and saved state.

Signals, per source (news and chat drift differently) and per serving model version:

- ``error``: 0/1 error of a labeled prediction, as delayed labels are joined (label-based);
- ``confidence``: the top class probability of each prediction (label-free);
- ``class``: the predicted class, whose mix over blocks of messages is watched (label-free);
- ``embedding``: the mean-pooled encoder embedding of (a sample of) the messages (label-free).

Detectors (names used in settings, events and the benchmark):

- ``adwin_error``: river ADWIN on the 0/1 error;
- ``adwin_confidence``: river ADWIN on the standardised confidence;
- ``kswin_confidence``: river KSWIN on the confidence (optional; see docs/drift.md for its numbers);
- ``page_hinkley_class_mix``: one two-sided river Page-Hinkley per class on the class's share of each
  block of messages, standardised by its binomial spread;
- ``hotelling_embedding``: Hotelling's T² of the mean embedding of the last window of messages against
  a reference window (PCA-whitened), a Mahalanobis distance between the two embedding distributions.

**Alarm budget.** Thresholds are never raw p-values. The monitor is configured with an expected run
length ``A``: the number of stationary messages of one source expected between two false alarms of
the *whole* monitor. The budget is split evenly (Bonferroni) over the enabled detectors, each of which
gets a run length ``A * n_detectors`` and turns it into its own parameter: ADWIN's ``delta`` through a
table measured by simulation (:data:`ADWIN_ARL_TABLE`; ADWIN's own bound is far too loose to use), KSWIN's
``alpha`` through a measured constant, Page-Hinkley's threshold through Siegmund's approximation of the
CUSUM run length, and the T² threshold through the chi-square quantile at a per-check level of
``checks / run length`` (a union bound over the checks). Every target is first multiplied by
:data:`SAFETY`.

**Hysteresis and cooldown.** A raw alarm of any detector of a source opens a drift episode and emits one
event; every detector of that source is then reset so that it learns the new regime (a detector that
kept its old window would re-alarm on the same change, as river's ADWIN does), labels of messages scored
before the reset no longer feed the error signal, and further alarms within ``cooldown_messages`` of the
source are suppressed (counted, and the detector reset again). One drift therefore fires one event.
With a fixed (training-data) embedding reference the T² detector additionally latches after an alarm
until its statistic falls back below the chi-square median.

**State.** :meth:`DriftEngine.state` is plain JSON (numbers, lists, base64 of float arrays and of the
ADWIN window's own serialisation, never pickle) tagged with the river version; :meth:`DriftEngine.restore`
refuses state written by another river minor version, and the detectors then start afresh.
"""

from __future__ import annotations

import abc
import base64
import bisect
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import river
from river import drift as river_drift
from river import stats as river_stats
from scipy import stats as scipy_stats

DETECTORS = ("adwin_error", "adwin_confidence", "kswin_confidence", "page_hinkley_class_mix", "hotelling_embedding")
DEFAULT_DETECTORS = ("adwin_error", "adwin_confidence", "page_hinkley_class_mix", "hotelling_embedding")
SIGNAL_OF = {
    "adwin_error": "error",
    "adwin_confidence": "confidence",
    "kswin_confidence": "confidence",
    "page_hinkley_class_mix": "class",
    "hotelling_embedding": "embedding",
}
STATE_VERSION = 1
RIVER_VERSION = ".".join(river.__version__.split(".")[:2])

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
#: Embeddings are first mapped to this many dimensions by a fixed, seeded random projection.
PROJECTION_DIM = 64
MAX_COMPONENTS = 20


# --------------------------------------------------------------------------------------------------
# Calibration: expected run length -> detector parameter


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


# --------------------------------------------------------------------------------------------------
# State helpers: JSON-safe float arrays


def pack(array: np.ndarray | None) -> dict[str, Any] | None:
    """A float32 array as JSON (shape and base64 bytes)."""
    if array is None:
        return None
    arr = np.ascontiguousarray(array, dtype=np.float32)
    return {"shape": list(arr.shape), "b64": base64.b64encode(arr.tobytes()).decode("ascii")}


def unpack(data: dict[str, Any] | None) -> np.ndarray | None:
    if data is None:
        return None
    raw = base64.b64decode(data["b64"])
    return np.frombuffer(raw, dtype=np.float32).reshape(data["shape"]).copy()


# --------------------------------------------------------------------------------------------------
# Detectors


class Detector(abc.ABC):
    """One detector on one signal. ``update`` returns the alarm's statistic, or ``None``."""

    name: str = ""
    signal: str = ""

    def __init__(self, run_length: float) -> None:
        self.run_length = float(run_length)

    @abc.abstractmethod
    def update(self, value: Any) -> dict[str, Any] | None:
        """Feed one value; on an alarm return the statistic that crossed its threshold."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget the regime learned so far (after a drift event)."""

    @abc.abstractmethod
    def get_state(self) -> dict[str, Any]:
        """JSON-safe state."""

    @abc.abstractmethod
    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state`'s output."""

    def describe(self) -> dict[str, Any]:
        """The calibrated parameters (reported in events and by the benchmark)."""
        return {"run_length": self.run_length}


class _AdwinBase(Detector):
    """river ADWIN (clock 32) with ``delta`` from :func:`adwin_delta`; optionally on a standardised signal."""

    def __init__(self, run_length: float, *, warmup: int = 0) -> None:
        super().__init__(run_length)
        self.delta = adwin_delta(run_length * SAFETY)
        self.warmup = warmup
        self.reset()

    def _new(self) -> river_drift.ADWIN:
        return river_drift.ADWIN(delta=self.delta, clock=ADWIN_CLOCK)

    def reset(self) -> None:
        self._adwin = self._new()
        self._warm: list[float] = []
        self._mu: float | None = None if self.warmup else 0.0
        self._sd: float = 1.0

    def _to_unit(self, x: float) -> float:
        """Standardised to a standard deviation of 0.5 (the scale the ADWIN table was measured at)."""
        if not self.warmup:
            return x
        z = 0.5 * (x - self._mu) / self._sd  # type: ignore[operator]
        return max(-10.0, min(10.0, z))

    def _from_unit(self, z: float) -> float:
        if not self.warmup:
            return z
        return float(self._mu + 2.0 * self._sd * z)  # type: ignore[operator]

    def update(self, value: Any) -> dict[str, Any] | None:
        x = float(value)
        if self._mu is None:
            self._warm.append(x)
            if len(self._warm) < self.warmup:
                return None
            arr = np.asarray(self._warm)
            self._mu, self._sd = float(arr.mean()), max(float(arr.std()), 1e-6)
            for v in self._warm:  # the warm-up values seed the window; they cannot alarm against themselves
                self._adwin.update(self._to_unit(v))
            self._warm = []
            return None
        before_mean, before_width = self._adwin.estimation, self._adwin.width
        self._adwin.update(self._to_unit(x))
        if not self._adwin.drift_detected:
            return None
        return {
            "mean_before": self._from_unit(before_mean),
            "window_before": int(before_width),
            "mean_recent": self._from_unit(self._adwin.estimation),
            "window_recent": int(self._adwin.width),
            "delta": self.delta,
        }

    def get_state(self) -> dict[str, Any]:
        helper = self._adwin._helper.__getstate__()  # the Rust window's own serialisation (not pickle)
        return {
            "adwin": base64.b64encode(helper).decode("ascii"),
            "detected": bool(self._adwin._drift_detected),
            "warm": list(self._warm),
            "mu": self._mu,
            "sd": self._sd,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._adwin = self._new()
        self._adwin._helper.__setstate__(base64.b64decode(state["adwin"]))
        self._adwin._drift_detected = bool(state["detected"])
        self._warm = [float(v) for v in state["warm"]]
        self._mu = state["mu"] if state["mu"] is None else float(state["mu"])
        self._sd = float(state["sd"])

    def describe(self) -> dict[str, Any]:
        return {"run_length": self.run_length, "delta": self.delta, "clock": ADWIN_CLOCK}


class AdwinError(_AdwinBase):
    """ADWIN on the 0/1 error of labeled predictions."""

    name, signal = "adwin_error", "error"

    def __init__(self, run_length: float, **_: Any) -> None:
        super().__init__(run_length, warmup=0)


class AdwinConfidence(_AdwinBase):
    """ADWIN on the top-class probability, standardised by the first ``warmup`` values of the regime."""

    name, signal = "adwin_confidence", "confidence"

    def __init__(self, run_length: float, *, warmup: int = 200, **_: Any) -> None:
        super().__init__(run_length, warmup=warmup)


class KswinConfidence(Detector):
    """river KSWIN (window 300, statistic window 100) on the top-class probability."""

    name, signal = "kswin_confidence", "confidence"

    def __init__(self, run_length: float, *, seed: int = 0, **_: Any) -> None:
        super().__init__(run_length)
        self.alpha = kswin_alpha(run_length * SAFETY)
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        self._k = river_drift.KSWIN(alpha=self.alpha, window_size=KSWIN_WINDOW, stat_size=KSWIN_STAT, seed=self.seed)

    def update(self, value: Any) -> dict[str, Any] | None:
        window = list(self._k.window)
        self._k.update(float(value))
        if not self._k.drift_detected:
            return None
        old, recent = window[: KSWIN_WINDOW - KSWIN_STAT], window[KSWIN_WINDOW - KSWIN_STAT :] + [float(value)]
        return {
            "p_value": float(self._k.p_value),
            "alpha": self.alpha,
            "mean_before": float(np.mean(old)) if old else None,
            "mean_recent": float(np.mean(recent[-KSWIN_STAT:])),
        }

    def get_state(self) -> dict[str, Any]:
        version, internal, gauss = self._k._rng.getstate()
        return {
            "window": list(self._k.window),
            "n": self._k.n,
            "p_value": float(self._k.p_value),
            "detected": bool(self._k._drift_detected),
            "rng": [version, list(internal), gauss],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.reset()
        self._k.window = deque((float(v) for v in state["window"]), maxlen=KSWIN_WINDOW)
        self._k.n = int(state["n"])
        self._k.p_value = float(state["p_value"])
        self._k._drift_detected = bool(state["detected"])
        version, internal, gauss = state["rng"]
        self._k._rng.setstate((version, tuple(internal), gauss))

    def describe(self) -> dict[str, Any]:
        return {"run_length": self.run_length, "alpha": self.alpha, "window": KSWIN_WINDOW, "stat_window": KSWIN_STAT}


class PageHinkleyClassMix(Detector):
    """Two-sided Page-Hinkley per class on the class's share of each block of :data:`PH_BLOCK` messages.

    The shares of the first ``warmup`` messages of a regime give each class's binomial spread
    (``p`` clipped to [0.1, 0.9], which errs towards fewer alarms for rare classes); each block share is
    divided by it, so the threshold from :func:`page_hinkley_threshold` is in standard deviations.
    The run length is split over the three classes.
    """

    name, signal = "page_hinkley_class_mix", "class"
    n_classes = 3

    def __init__(self, run_length: float, *, warmup: int = 200, block: int = PH_BLOCK, **_: Any) -> None:
        super().__init__(run_length)
        self.block = block
        self.warmup = max(warmup, block)
        blocks = run_length * SAFETY * self.n_classes / block
        self.threshold = page_hinkley_threshold(blocks, PH_ALLOWANCE)
        self.reset()

    def _ph(self) -> river_drift.PageHinkley:
        return river_drift.PageHinkley(
            min_instances=10, delta=PH_ALLOWANCE, threshold=self.threshold, alpha=1.0, mode="both"
        )

    def reset(self) -> None:
        self._warm = [0] * self.n_classes
        self._sd: list[float] | None = None
        self._p: list[float] | None = None
        self._counts = [0] * self.n_classes
        self._in_block = 0
        self._phs = [self._ph() for _ in range(self.n_classes)]
        self._recent: deque[list[float]] = deque(maxlen=5)

    def update(self, value: Any) -> dict[str, Any] | None:
        c = int(value)
        if self._sd is None:
            self._warm[c] += 1
            if sum(self._warm) < self.warmup:
                return None
            n = sum(self._warm)
            self._p = [w / n for w in self._warm]
            self._sd = [math.sqrt(min(max(p, 0.1), 0.9) * (1 - min(max(p, 0.1), 0.9)) / self.block) for p in self._p]
            return None
        self._counts[c] += 1
        self._in_block += 1
        if self._in_block < self.block:
            return None
        shares = [k / self.block for k in self._counts]
        self._counts, self._in_block = [0] * self.n_classes, 0
        self._recent.append(shares)
        fired = None
        for i, ph in enumerate(self._phs):
            mean_before = ph._x_mean.get() * self._sd[i]
            ph.update(shares[i] / self._sd[i])
            if ph.drift_detected and fired is None:
                recent = float(np.mean([s[i] for s in self._recent]))
                fired = {
                    "class": i,
                    "share_before": mean_before,
                    "share_recent": recent,
                    "share_warmup": self._p[i] if self._p else None,
                    "threshold": self.threshold,
                    "allowance": PH_ALLOWANCE,
                    "block": self.block,
                }
        return fired

    def get_state(self) -> dict[str, Any]:
        return {
            "warm": self._warm,
            "sd": self._sd,
            "p": self._p,
            "counts": self._counts,
            "in_block": self._in_block,
            "recent": [list(s) for s in self._recent],
            "phs": [
                {
                    "n": ph._x_mean.n,
                    "mean": ph._x_mean.get(),
                    "inc": ph._sum_increase,
                    "dec": ph._sum_decrease,
                    "min_inc": _finite(ph._min_increase),
                    "max_dec": ph._max_decrease,
                    "detected": bool(ph._drift_detected),
                }
                for ph in self._phs
            ],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.reset()
        self._warm = [int(v) for v in state["warm"]]
        self._sd = None if state["sd"] is None else [float(v) for v in state["sd"]]
        self._p = None if state["p"] is None else [float(v) for v in state["p"]]
        self._counts = [int(v) for v in state["counts"]]
        self._in_block = int(state["in_block"])
        self._recent = deque(([float(x) for x in s] for s in state["recent"]), maxlen=5)
        for ph, s in zip(self._phs, state["phs"]):
            mean = river_stats.Mean()
            mean.n, mean._mean = float(s["n"]), float(s["mean"])
            ph._x_mean = mean
            ph._sum_increase, ph._sum_decrease = float(s["inc"]), float(s["dec"])
            ph._min_increase = float("inf") if s["min_inc"] is None else float(s["min_inc"])
            ph._max_decrease = float(s["max_dec"])
            ph._drift_detected = bool(s["detected"])

    def describe(self) -> dict[str, Any]:
        return {
            "run_length": self.run_length,
            "threshold": self.threshold,
            "allowance": PH_ALLOWANCE,
            "block": self.block,
        }


class HotellingEmbedding(Detector):
    """Hotelling's T² of the mean embedding of the last ``window`` messages against a reference window.

    Embeddings are projected to :data:`PROJECTION_DIM` dimensions (fixed seeded Gaussian projection),
    then onto the top principal components of the reference (at most :data:`MAX_COMPONENTS`, at most a
    tenth of the reference size), whitened. ``T² = W·|mean(window) - mean(ref)|² / (1 + W/R)`` is
    chi-square with ``k`` degrees of freedom when the window comes from the reference distribution; it
    is checked every ``window/10`` embeddings against :func:`chi2_threshold`.

    The reference is either the first ``reference_size`` embeddings of the regime (``stream``: rebuilt
    after every reset) or fixed from outside with :meth:`set_reference` (the champion's training data);
    a fixed reference latches after an alarm until T² drops below the chi-square median.
    """

    name, signal = "hotelling_embedding", "embedding"

    def __init__(
        self, run_length: float, *, reference_size: int = 300, window: int = 100, seed: int = 0, **_: Any
    ) -> None:
        super().__init__(run_length)
        self.reference_size = reference_size
        self.window = window
        self.step = max(1, window // 10)
        self.seed = seed
        self._projection: np.ndarray | None = None
        self._fixed: np.ndarray | None = None  # projected reference given from outside
        self._latched = False
        self._latched_on_reset = False
        self.reset()

    # -- reference
    def _project(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        dim = vectors.shape[1]
        if self._projection is None or self._projection.shape[0] != dim:
            rng = np.random.default_rng(self.seed + 7919 * dim)
            self._projection = (rng.standard_normal((dim, PROJECTION_DIM)) / math.sqrt(PROJECTION_DIM)).astype(
                np.float32
            )
        return vectors @ self._projection

    def set_reference(self, vectors: np.ndarray) -> None:
        """Use a fixed reference (e.g. the champion's training data) instead of the stream's first messages."""
        projected = self._project(vectors)
        if len(projected) < 20:
            raise ValueError(f"a reference needs at least 20 embeddings, got {len(projected)}")
        self._fixed = projected
        self._latched = False
        self.reset()

    def clear_reference(self) -> None:
        """Go back to a reference taken from the stream (a new model version needs its own)."""
        self._fixed = None
        self._latched = self._latched_on_reset = False
        self.reset()

    def _fit(self, ref: np.ndarray) -> None:
        self._mu = ref.mean(axis=0)
        cov = np.cov(ref, rowvar=False)
        values, vectors = np.linalg.eigh(cov)
        order = np.argsort(values)[::-1]
        k = max(1, min(MAX_COMPONENTS, len(ref) // 10, int((values > values.max() * 1e-6).sum())))
        idx = order[:k]
        self._basis = (vectors[:, idx] / np.sqrt(values[idx])).astype(np.float32)
        self._k = k
        self._n_ref = len(ref)
        self.threshold = chi2_threshold(self.run_length * SAFETY, self.step, k)
        self.low_threshold = float(scipy_stats.chi2.ppf(0.5, k))

    def reset(self) -> None:
        self._collect: list[np.ndarray] = []
        self._win: deque[np.ndarray] = deque(maxlen=self.window)
        self._since_check = 0
        self._mu = self._basis = None  # type: ignore[assignment]
        self._k = 0
        self._n_ref = 0
        self.threshold = self.low_threshold = float("nan")
        if self._fixed is not None:
            self._fit(self._fixed)
            self._latched = True if self._latched_on_reset else self._latched
        self._latched_on_reset = False

    def arm_latch(self) -> None:
        """Called by the engine before a reset that follows an event: a fixed reference latches."""
        self._latched_on_reset = self._fixed is not None

    def statistic(self) -> float | None:
        if self._basis is None or len(self._win) < self.window:
            return None
        z = np.mean(np.stack(self._win), axis=0)
        w = len(self._win)
        return float(w * float(z @ z) / (1 + w / self._n_ref))

    def update(self, value: Any) -> dict[str, Any] | None:
        x = self._project(value)[0]
        if self._basis is None:
            self._collect.append(x)
            if len(self._collect) >= self.reference_size:
                self._fit(np.stack(self._collect))
                self._collect = []
            return None
        self._win.append(((x - self._mu) @ self._basis).astype(np.float32))
        self._since_check += 1
        if len(self._win) < self.window or self._since_check < self.step:
            return None
        self._since_check = 0
        t2 = self.statistic()
        assert t2 is not None
        if self._latched:
            if t2 < self.low_threshold:
                self._latched = False
            return None
        if t2 <= self.threshold:
            return None
        return {
            "t2": t2,
            "threshold": self.threshold,
            "components": self._k,
            "reference_size": self._n_ref,
            "window": self.window,
            "reference": "fixed" if self._fixed is not None else "stream",
        }

    def get_state(self) -> dict[str, Any]:
        return {
            "collect": pack(np.stack(self._collect)) if self._collect else None,
            "window": pack(np.stack(self._win)) if self._win else None,
            "since_check": self._since_check,
            "fixed": pack(self._fixed),
            "ref_fit": None
            if self._basis is None
            else {"mu": pack(self._mu), "basis": pack(self._basis), "n": self._n_ref},
            "latched": self._latched,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._fixed = unpack(state["fixed"])
        self._latched = False
        self.reset()
        collect = unpack(state["collect"])
        self._collect = list(collect) if collect is not None else []
        fit = state["ref_fit"]
        if fit is not None:
            self._mu, self._basis, self._n_ref = unpack(fit["mu"]), unpack(fit["basis"]), int(fit["n"])
            self._k = int(self._basis.shape[1])
            self.threshold = chi2_threshold(self.run_length * SAFETY, self.step, self._k)
            self.low_threshold = float(scipy_stats.chi2.ppf(0.5, self._k))
        window = unpack(state["window"])
        self._win = deque(list(window) if window is not None else [], maxlen=self.window)
        self._since_check = int(state["since_check"])
        self._latched = bool(state["latched"])

    def describe(self) -> dict[str, Any]:
        fitted = self._basis is not None
        return {
            "run_length": self.run_length,
            "window": self.window,
            "step": self.step,
            "reference_size": self.reference_size,
            "threshold": self.threshold if fitted else None,
            "components": self._k if fitted else None,
        }


DETECTOR_CLASSES: dict[str, type[Detector]] = {
    cls.name: cls for cls in (AdwinError, AdwinConfidence, KswinConfidence, PageHinkleyClassMix, HotellingEmbedding)
}


def _finite(x: float) -> float | None:
    return None if math.isinf(x) else float(x)


# --------------------------------------------------------------------------------------------------
# The engine: detectors per source, episodes, cooldown, state


@dataclass(frozen=True)
class DriftConfig:
    """What the engine needs from the monitor settings (see ``MonitorSettings``)."""

    detectors: tuple[str, ...] = DEFAULT_DETECTORS
    expected_run_length: float = 20_000
    warmup: int = 200
    cooldown_messages: int = 2_000
    reference_size: int = 300
    embedding_window: int = 100
    embed_every: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [d for d in self.detectors if d not in DETECTOR_CLASSES]
        if unknown:
            raise ValueError(f"unknown drift detectors {unknown}: choose from {list(DETECTOR_CLASSES)}")

    @classmethod
    def from_settings(cls, settings: Any) -> DriftConfig:
        return cls(
            detectors=tuple(settings.detectors),
            expected_run_length=settings.expected_run_length,
            warmup=settings.warmup,
            cooldown_messages=settings.cooldown_messages,
            reference_size=settings.reference_size,
            embedding_window=settings.embedding_window,
            embed_every=settings.embed_every,
            seed=settings.seed,
        )

    def run_length_of(self, name: str) -> float:
        """The share of the alarm budget one detector gets, in its own updates."""
        per_detector = self.expected_run_length * max(1, len(self.detectors))
        if SIGNAL_OF[name] == "embedding":
            return per_detector / max(1, self.embed_every)  # only one message in embed_every is embedded
        return per_detector  # labels are at most one per message: counting them as messages is conservative

    def build(self, name: str) -> Detector:
        cls = DETECTOR_CLASSES[name]
        return cls(
            self.run_length_of(name),
            warmup=self.warmup,
            reference_size=self.reference_size,
            window=self.embedding_window,
            seed=self.seed,
        )


@dataclass
class Alarm:
    """A detector's alarm, resolved by the engine into an event or a suppressed repeat."""

    source: str
    detector: str
    signal: str
    statistic: dict[str, Any]
    position: int
    labeled: int
    model_version: str | None
    event: bool
    corroborated_by: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)


class SourceDrift:
    """The detectors of one source, following the model version that scores it."""

    def __init__(self, source: str, config: DriftConfig) -> None:
        self.source = source
        self.config = config
        self.detectors: dict[str, Detector] = {name: config.build(name) for name in config.detectors}
        self.position = 0  # messages of this source seen
        self.labeled = 0  # labels of this source joined
        self.version: str | None = None
        self.retired: list[str] = []
        self.baseline_position = 0  # detectors learn the regime that started after this position
        self.last_event_position: int | None = None
        self.events = 0
        self.suppressed = 0

    def _reset_all(self) -> None:
        for d in self.detectors.values():
            if isinstance(d, HotellingEmbedding):
                d.arm_latch()
            d.reset()
        self.baseline_position = self.position

    def follow(self, version: str) -> bool:
        """Switch to a new model version (resetting the detectors); ``False`` for a retired one.

        A fixed embedding reference belongs to the previous version and is dropped.
        """
        if version == self.version:
            return True
        if version in self.retired:
            return False
        if self.version is not None:
            self.retired = (self.retired + [self.version])[-20:]
        self.version = version
        for d in self.detectors.values():
            if isinstance(d, HotellingEmbedding):
                d.clear_reference()
            else:
                d.reset()
        self.baseline_position = self.position
        self.last_event_position = None
        return True

    def message(self, version: str, probs: Sequence[float], embedding: np.ndarray | None) -> list[Alarm]:
        """Feed one scored message; returns the alarms it caused (at most one is an event)."""
        following = self.follow(version)  # before counting: the regime of a new version starts with this message
        self.position += 1
        if not following:
            return []
        raw: list[tuple[Detector, dict[str, Any]]] = []
        for d in self.detectors.values():
            if d.signal == "confidence":
                value: Any = float(max(probs))
            elif d.signal == "class":
                value = int(np.argmax(probs))
            elif d.signal == "embedding":
                if embedding is None:
                    continue
                value = embedding
            else:
                continue
            stat = d.update(value)
            if stat is not None:
                raw.append((d, stat))
        return self._resolve(raw)

    def label(self, version: str, message_position: int | None, correct: bool) -> list[Alarm]:
        """Feed one joined label; labels of messages scored before the last reset are ignored."""
        self.labeled += 1
        if version != self.version:
            return []
        if message_position is not None and message_position <= self.baseline_position:
            return []
        raw = []
        for d in self.detectors.values():
            if d.signal == "error":
                stat = d.update(0.0 if correct else 1.0)
                if stat is not None:
                    raw.append((d, stat))
        return self._resolve(raw)

    def _resolve(self, raw: list[tuple[Detector, dict[str, Any]]]) -> list[Alarm]:
        if not raw:
            return []
        cooling = (
            self.last_event_position is not None
            and self.position - self.last_event_position < self.config.cooldown_messages
        )
        alarms = []
        if cooling:
            for d, stat in raw:
                self.suppressed += 1
                d.reset()
                alarms.append(self._alarm(d, stat, event=False))
            return alarms
        first, stat = raw[0]
        alarm = self._alarm(first, stat, event=True)
        alarm.corroborated_by = [d.name for d, _ in raw[1:]]
        self.events += 1
        self.last_event_position = self.position
        self._reset_all()
        return [alarm]

    def _alarm(self, d: Detector, stat: dict[str, Any], *, event: bool) -> Alarm:
        return Alarm(
            source=self.source,
            detector=d.name,
            signal=d.signal,
            statistic=stat,
            position=self.position,
            labeled=self.labeled,
            model_version=self.version,
            event=event,
            parameters=d.describe(),
        )

    def get_state(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "labeled": self.labeled,
            "version": self.version,
            "retired": self.retired,
            "baseline_position": self.baseline_position,
            "last_event_position": self.last_event_position,
            "events": self.events,
            "suppressed": self.suppressed,
            "detectors": {name: d.get_state() for name, d in self.detectors.items()},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.position, self.labeled = int(state["position"]), int(state["labeled"])
        self.version, self.retired = state["version"], list(state["retired"])
        self.baseline_position = int(state["baseline_position"])
        self.last_event_position = state["last_event_position"]
        self.events, self.suppressed = int(state["events"]), int(state["suppressed"])
        for name, d in self.detectors.items():
            if name in state["detectors"]:
                d.set_state(state["detectors"][name])


class DriftEngine:
    """Every source's detectors; the pure core of the monitor role (no bus, no database)."""

    def __init__(self, config: DriftConfig) -> None:
        self.config = config
        self.sources: dict[str, SourceDrift] = {}

    def source(self, name: str) -> SourceDrift:
        if name not in self.sources:
            self.sources[name] = SourceDrift(name, self.config)
        return self.sources[name]

    def message(
        self, source: str, version: str, probs: Sequence[float], embedding: np.ndarray | None = None
    ) -> list[Alarm]:
        return self.source(source).message(version, probs, embedding)

    def label(self, source: str, version: str, message_position: int | None, correct: bool) -> list[Alarm]:
        return self.source(source).label(version, message_position, correct)

    def set_reference(self, source: str, vectors: np.ndarray) -> bool:
        """Give the embedding detector of ``source`` a fixed reference; ``False`` if it has none."""
        d = self.source(source).detectors.get("hotelling_embedding")
        if not isinstance(d, HotellingEmbedding):
            return False
        d.set_reference(vectors)
        return True

    def state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "river": RIVER_VERSION,
            "detectors": list(self.config.detectors),
            "sources": {name: s.get_state() for name, s in self.sources.items()},
        }

    def restore(self, state: dict[str, Any]) -> list[str]:
        """Load :meth:`state`; returns warnings about what could not be restored (and started afresh)."""
        warnings = []
        if state.get("version") != STATE_VERSION or state.get("river") != RIVER_VERSION:
            return [
                f"detector state written by state v{state.get('version')} / river {state.get('river')}; "
                f"this build is v{STATE_VERSION} / river {RIVER_VERSION}: starting the detectors afresh"
            ]
        same = list(state.get("detectors", [])) == list(self.config.detectors)
        for name, s in state.get("sources", {}).items():
            src = self.source(name)
            if same:
                src.set_state(s)
            else:
                # Keep the positions and episode, start the detectors afresh under the new configuration.
                src.set_state({**s, "detectors": {}})
                src.baseline_position = src.position
                warnings.append(
                    f"source {name}: detectors changed from {state.get('detectors')} "
                    f"to {list(self.config.detectors)}; they start afresh"
                )
        return warnings
