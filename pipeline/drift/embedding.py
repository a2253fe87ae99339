"""The embedding detector: Hotelling's T² between recent message embeddings and a reference window.

A change in what people write about shows in the encoder's embeddings before any
label arrives. :class:`HotellingEmbedding` compares the mean embedding of the last
messages with a reference (the first messages of the regime, or the champion's
training data), a Mahalanobis distance between the two embedding distributions that
is chi-square under no change, so its threshold comes from the alarm budget like the
other detectors'. Its state keeps float arrays as base64 (:func:`pack`), JSON-safe.
"""

from __future__ import annotations

import base64
import math
from collections import deque
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from aet.pipeline.drift.calibration import SAFETY, chi2_threshold
from aet.pipeline.drift.detectors import Detector

#: Embeddings are first mapped to this many dimensions by a fixed, seeded random projection.
PROJECTION_DIM = 64
MAX_COMPONENTS = 20


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
        self._mu = self._basis = None
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
