"""The detectors on the per-message signals: river's ADWIN, KSWIN and Page-Hinkley, calibrated and resumable.

Each detector watches one signal of one source and model version:

- ``adwin_error``: river ADWIN on the 0/1 error of a labeled prediction, as delayed labels are joined;
- ``adwin_confidence``: river ADWIN on the standardised top-class probability (label-free);
- ``kswin_confidence``: river KSWIN on the top-class probability (optional; see docs/drift.md for its numbers);
- ``page_hinkley_class_mix``: one two-sided river Page-Hinkley per class on the class's share of each
  block of messages, standardised by its binomial spread (label-free).

The embedding detector, which needs linear algebra rather than a river detector, is in
embedding.py. Every detector takes a run length (its share of the alarm budget, see
calibration.py), returns the statistic that crossed its threshold on an alarm, forgets
its regime on :meth:`Detector.reset`, and saves its state as plain JSON (never pickle).
"""

from __future__ import annotations

import abc
import base64
import math
from collections import deque
from typing import Any

import numpy as np
from river import drift as river_drift
from river import stats as river_stats

from aet.pipeline.drift.calibration import (
    ADWIN_CLOCK,
    KSWIN_STAT,
    KSWIN_WINDOW,
    PH_ALLOWANCE,
    PH_BLOCK,
    SAFETY,
    adwin_delta,
    kswin_alpha,
    page_hinkley_threshold,
)


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
        old, recent = window[: KSWIN_WINDOW - KSWIN_STAT], [*window[KSWIN_WINDOW - KSWIN_STAT :], float(value)]
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
        # river annotates p_value as an int (its initial 0); KSWIN keeps the test's float p-value there.
        self._k.p_value = float(state["p_value"])  # type: ignore[assignment]
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
        for ph, s in zip(self._phs, state["phs"], strict=False):
            mean = river_stats.Mean()
            mean.n, mean._mean = float(s["n"]), float(s["mean"])
            ph._x_mean = mean
            ph._sum_increase, ph._sum_decrease = float(s["inc"]), float(s["dec"])
            ph._min_increase = float("inf") if s["min_inc"] is None else float(s["min_inc"])
            # river annotates _max_decrease as an int (its initial 0); the running sums it tracks are floats.
            ph._max_decrease = float(s["max_dec"])  # type: ignore[assignment]
            ph._drift_detected = bool(s["detected"])

    def describe(self) -> dict[str, Any]:
        return {
            "run_length": self.run_length,
            "threshold": self.threshold,
            "allowance": PH_ALLOWANCE,
            "block": self.block,
        }


def _finite(x: float) -> float | None:
    return None if math.isinf(x) else float(x)
