"""The fast path: a linear head per source over the serving model's features, learned from every label.

A head maps the features that the model's final linear layer reads (the
pooled encoder output) to the three class logits, exactly as that layer
does, so a head initialised from the layer predicts exactly what the model
predicts. Learning is maximum a posteriori: cross-entropy on the source's
recent labels plus an elastic pull ``μ/2 · ‖(W, b) − (W₀, b₀)‖²`` toward the
model's own layer — AET's anchor to what the champion knows, applied to the
one layer that can be refit in milliseconds on a CPU. With few labels the
pull dominates and the head is the champion; as labels accumulate the data
takes over.

μ is not tuned per stream: an :class:`OnlineHead` fits several strengths side
by side, including an infinitely strong one (the champion's own layer), and
serves the one whose predictions of labels it had not yet learned from
(prequential log-loss, decayed) were best. A stationary stream thus keeps
the champion; a drifted one moves to the weakest pull that predicts well.

A head also notices when it stops paying: river's ADWIN watches how much
better than the champion's own layer its best candidate predicts each new
label, and when that gain falls (the feed went back to a language the
champion knows, or on to one the head misleads on) the head starts a new
episode on the labels since the change. The monitor's drift events do the same, but a
drift event waits out the monitor's cooldown; the head's own test does not.

The heads of a model version live next to its weights in
``heads.safetensors`` (:func:`save_heads`, :func:`load_heads`).
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from river import drift as river_drift

HEADS_FILE = "heads.safetensors"
N_CLASSES = 3
#: The head's change test: river ADWIN's confidence and how often (in labels) it looks for a cut, and the
#: log-loss gain per label it reads, clipped to ± this many nats and scaled into [0, 1]. On a simulated fall
#: of the gain from +0.6 to -1.0 nats (noise 1-1.5 nats) it finds the fall after a median of 35 labels, and
#: raised no false fall in 60,000 stationary labels.
GAIN_DELTA = 0.01
GAIN_CLOCK = 4
GAIN_CLIP = 1.5


@dataclass(frozen=True)
class HeadWeights:
    """A linear layer from features to the three class logits: ``logits = features @ weight.T + bias``."""

    weight: np.ndarray  # (classes, features)
    bias: np.ndarray  # (classes,)

    def logits(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, dtype=np.float64) @ self.weight.T + self.bias

    def proba(self, features: np.ndarray) -> np.ndarray:
        return softmax(self.logits(features))

    @classmethod
    def of_linear(cls, layer: torch.nn.Linear) -> HeadWeights:
        """The weights of a model's final linear layer (its rows in the model's label order)."""
        return cls(
            weight=layer.weight.detach().to("cpu", torch.float64).numpy().copy(),
            bias=layer.bias.detach().to("cpu", torch.float64).numpy().copy()
            if layer.bias is not None
            else np.zeros(layer.out_features),
        )

    def equals(self, other: HeadWeights) -> bool:
        return np.array_equal(self.weight, other.weight) and np.array_equal(self.bias, other.bias)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def fit_map(
    features: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    prior: HeadWeights,
    strength: float,
    *,
    sample_weight: np.ndarray | None = None,
    start: HeadWeights | None = None,
    max_iter: int = 200,
) -> HeadWeights:
    """``argmin Σ_i w_i · CE(y_i, W f_i + b) + strength/2 · (‖W − W₀‖² + ‖b − b₀‖²)``, by L-BFGS in float64.

    The objective is strictly convex for ``strength > 0``, so the result does
    not depend on a learning rate, an order of examples or a seed; ``start``
    (e.g. the previous fit, when a few labels were added) only saves
    iterations. NumPy and SciPy on one BLAS thread, not torch: a fit this small
    is dominated by per-call overhead, and it must not compete with the
    scorer's threads.
    """
    from scipy.optimize import minimize
    from threadpoolctl import threadpool_limits

    if strength <= 0:
        raise ValueError(f"the elastic pull must be positive, not {strength}")
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} feature rows for {len(y)} labels")
    if len(y) == 0:
        return prior
    classes, dim = prior.weight.shape
    anchor = np.concatenate([prior.weight.ravel(), prior.bias])
    initial = anchor if start is None else np.concatenate([start.weight.ravel(), start.bias])
    sw = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    onehot = np.zeros((len(y), classes))
    onehot[np.arange(len(y)), y] = 1.0

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        weight, bias = theta[: classes * dim].reshape(classes, dim), theta[classes * dim :]
        logits = x @ weight.T + bias
        logits -= logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(logits).sum(axis=1))
        data = float((sw * (log_norm - (logits * onehot).sum(axis=1))).sum())
        residual = (np.exp(logits - log_norm[:, None]) - onehot) * sw[:, None]
        diff = theta - anchor
        grad = np.concatenate([(residual.T @ x).ravel(), residual.sum(axis=0)]) + strength * diff
        return data + 0.5 * strength * float(diff @ diff), grad

    with threadpool_limits(limits=1, user_api="blas"):
        result = minimize(objective, initial, jac=True, method="L-BFGS-B", options={"maxiter": max_iter, "gtol": 1e-6})
    theta = result.x
    return HeadWeights(theta[: classes * dim].reshape(classes, dim).copy(), theta[classes * dim :].copy())


class OnlineHead:
    """One source's fast-path head: learns every label, serves the best of several elastic strengths.

    river-style: :meth:`learn_many` takes the features and labels that arrived,
    :meth:`predict_proba` answers with the currently selected candidate. Before
    learning a batch, every candidate predicts it; its decayed log-loss on
    those (not yet learned) labels decides which candidate serves.
    """

    def __init__(
        self,
        prior: HeadWeights,
        *,
        strengths: Sequence[float] = (1.0, 10.0, 100.0),
        window: int = 2000,
        half_life: float = 100.0,
        min_labels: int = 8,
        evidence_window: int = 300,
    ) -> None:
        self.prior = prior
        self.strengths = tuple(strengths)
        self.window = window
        self.half_life = half_life
        self.decay = 0.5 ** (1.0 / half_life)
        self.min_labels = min_labels
        self.evidence_window = evidence_window
        self.changes = 0  # episodes started by the head's own change test
        self.reset()

    def reset(self, prior: HeadWeights | None = None) -> None:
        """Forget the window and the candidates' record (a new episode, or a new model to start from)."""
        if prior is not None:
            self.prior = prior
        self.features: deque[np.ndarray] = deque(maxlen=self.window)
        self.labels: deque[int] = deque(maxlen=self.window)
        self.learned = 0
        # Candidate 0 is the prior itself (an infinitely strong pull); the others are refit on the window.
        self.candidates: list[HeadWeights] = [self.prior] * (1 + len(self.strengths))
        self.loss = np.zeros(1 + len(self.strengths))
        self.correct = np.zeros(1 + len(self.strengths))
        self.weight_sum = 0.0
        # Each candidate's log-loss on each label before learning it, for the paired evidence test.
        self.prequential: deque[np.ndarray] = deque(maxlen=self.evidence_window)
        # The best head candidate's log-loss gain over the prior, per label: the head's own change test.
        self.gain = river_drift.ADWIN(delta=GAIN_DELTA, clock=GAIN_CLOCK)

    def new_episode(self, keep_last: int) -> None:
        """A drift: judge the candidates afresh, refit on the last ``keep_last`` labels only (the new regime's)."""
        features, labels = list(self.features)[-keep_last:], list(self.labels)[-keep_last:]
        self.reset()
        if labels:
            self.features.extend(features)
            self.labels.extend(labels)
            x, y = np.asarray(self.features), np.asarray(self.labels)
            self.candidates = [self.prior] + [fit_map(x, y, self.prior, s) for s in self.strengths]

    @property
    def selected(self) -> int:
        """Index of the serving candidate: 0 = the prior, k = ``strengths[k - 1]``."""
        if self.learned < self.min_labels or self.weight_sum == 0:
            return 0
        return int(np.argmin(self.loss))

    @property
    def weights(self) -> HeadWeights:
        return self.candidates[self.selected]

    @property
    def strength(self) -> float:
        """The elastic strength that serves (``math.inf``: the prior)."""
        k = self.selected
        return math.inf if k == 0 else self.strengths[k - 1]

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        return self.weights.proba(features)

    def learn_many(self, features: np.ndarray, labels: Sequence[int] | np.ndarray) -> None:
        """Score every candidate on these labels (before learning them), then refit on the window."""
        x = np.atleast_2d(np.asarray(features, dtype=np.float64))
        y = np.asarray(labels, dtype=np.int64)
        if len(y) == 0:
            return
        best = 1 + int(np.argmin(self.loss[1:]))  # the head candidate the change test follows, chosen beforehand
        losses = np.empty((len(y), len(self.candidates)))
        for k, candidate in enumerate(self.candidates):
            p = candidate.proba(x)[np.arange(len(y)), y]
            losses[:, k] = -np.log(np.clip(p, 1e-12, 1.0))
            correct = candidate.logits(x).argmax(axis=1) == y
            for loss_i, correct_i in zip(losses[:, k], correct, strict=True):
                self.loss[k] = self.decay * self.loss[k] + float(loss_i)
                self.correct[k] = self.decay * self.correct[k] + float(correct_i)
        self.prequential.extend(losses)
        for _ in range(len(y)):
            self.weight_sum = self.decay * self.weight_sum + 1.0
        self.features.extend(x)
        self.labels.extend(int(v) for v in y)
        self.learned += len(y)
        since = self._gain_fell(losses, best)
        if since is not None:
            self.changes += 1
            self.new_episode(keep_last=since)
            return
        window_x, window_y = np.asarray(self.features), np.asarray(self.labels)
        self.candidates = [self.prior] + [
            fit_map(window_x, window_y, self.prior, s, start=previous)
            for s, previous in zip(self.strengths, self.candidates[1:], strict=True)
        ]

    def _gain_fell(self, losses: np.ndarray, best: int) -> int | None:
        """Feed each label's gain of candidate ``best`` over the prior to the ADWIN; when the gain fell, the
        number of labels since the change (ADWIN's remaining window), else ``None``."""
        for gain in np.clip(losses[:, 0] - losses[:, best], -GAIN_CLIP, GAIN_CLIP):
            before = self.gain.estimation
            self.gain.update((float(gain) + GAIN_CLIP) / (2 * GAIN_CLIP))
            if self.gain.drift_detected and self.gain.estimation < before:
                return max(int(self.gain.width), 1)
        return None

    def evidence(self) -> float:
        """One-sided p-value that the serving candidate predicts unseen labels better than the prior.

        A paired t-test on the two candidates' prequential log-losses of the
        same recent labels (each scored before it was learned): 1.0 while the
        prior serves or too few labels were seen.
        """
        from scipy.stats import ttest_rel

        k = self.selected
        if k == 0 or len(self.prequential) < self.min_labels:
            return 1.0
        losses = np.asarray(self.prequential)
        diff = losses[:, 0] - losses[:, k]
        if np.allclose(diff, diff[0]):
            return 0.0 if diff[0] > 0 else 1.0
        return float(ttest_rel(losses[:, 0], losses[:, k], alternative="greater").pvalue)

    def recent_accuracy(self) -> list[float]:
        """Decayed prequential accuracy of each candidate (prior first)."""
        return [float(c / self.weight_sum) if self.weight_sum else 0.0 for c in self.correct]


class FeatureScaler:
    """Standardises the mean-pooled half of a model's features, as the heads read them.

    A model's features are ``[pooled, mean]``: the input of its final linear
    layer (which the model's own layer reads) and the mean-pooled last hidden
    state (a sentence embedding the fast path adds, scaled to unit variance by
    statistics of the messages the model has scored).
    """

    def __init__(self, pooled_dim: int, center: np.ndarray, scale: np.ndarray) -> None:
        self.pooled_dim = pooled_dim
        self.center = np.asarray(center, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)

    @classmethod
    def fit(cls, features: np.ndarray, pooled_dim: int) -> FeatureScaler:
        mean_part = np.asarray(features, dtype=np.float64)[:, pooled_dim:]
        return cls(pooled_dim, mean_part.mean(axis=0), mean_part.std(axis=0) + 1e-6)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(features, dtype=np.float64))
        return np.concatenate([x[:, : self.pooled_dim], (x[:, self.pooled_dim :] - self.center) / self.scale], axis=1)


def widen(layer: HeadWeights, extra: int) -> HeadWeights:
    """The model's own layer over ``[pooled, mean]`` features: zero weight on the ``extra`` mean-pooled inputs."""
    return HeadWeights(np.concatenate([layer.weight, np.zeros((layer.weight.shape[0], extra))], axis=1), layer.bias)


@dataclass(frozen=True)
class RegimeGate:
    """Weighs, for each message of a source, the regimes its features look like: earlier ones and the current one.

    A source's language can come back (a feed returns to the news it carried
    before a chat episode). The fast path keeps each earlier episode of a
    source as a regime — the messages it saw and the head that served it —
    and a multinomial logistic regression over the standardised mean-pooled
    features (``weight``, ``bias``: one row per earlier regime, the last row
    the current one) gives each message a posterior over them, with no label
    and no delay. ``heads[k]`` served earlier regime ``k`` (``None``: the model's
    own layer); the current regime is served by the source's head in the set.
    """

    weight: np.ndarray  # (regimes, mean-pooled features)
    bias: np.ndarray  # (regimes,)
    heads: tuple[HeadWeights | None, ...]  # the earlier regimes' heads; len(heads) == regimes - 1

    def posterior(self, mean_features: np.ndarray) -> np.ndarray:
        """Each row's probability of each regime (the last column: the current one)."""
        return softmax(np.asarray(mean_features, dtype=np.float64) @ self.weight.T + self.bias)


@dataclass(frozen=True)
class HeadSet:
    """The fast-path heads of one model: per source, a head over the model's standardised features, and for a
    source whose language changed, a gate that weighs its earlier regimes' heads in."""

    base: str
    scaler: FeatureScaler
    heads: Mapping[str, HeadWeights]
    gates: Mapping[str, RegimeGate] = field(default_factory=dict)

    def proba(self, features: np.ndarray, sources: Sequence[str], own: np.ndarray) -> np.ndarray:
        """Served probabilities; NaN rows where the model's own layer alone serves (no head, no gate).

        ``own`` is the model's own probabilities of the rows. A source with a gate
        gets the mixture of its regimes' answers (a head's, or ``own`` for a regime
        the model's layer served) weighted by the gate's posterior: a message that
        clearly belongs to an earlier regime is answered as it was then, and an
        ambiguous one by a blend, not by a guess.
        """
        x = self.scaler(features)
        out = np.full((len(x), N_CLASSES), np.nan)
        names = np.asarray(sources, dtype=object)
        for source in sorted(set(self.heads) | set(self.gates)):
            rows = np.flatnonzero(names == source)
            if not len(rows):
                continue
            current, gate = self.heads.get(source), self.gates.get(source)
            if gate is None:
                if current is not None:
                    out[rows] = current.proba(x[rows])
                continue
            weights = gate.posterior(x[rows, self.scaler.pooled_dim :])
            answers = [own[rows] if head is None else head.proba(x[rows]) for head in (*gate.heads, current)]
            out[rows] = sum(weights[:, k : k + 1] * answer for k, answer in enumerate(answers))
        return out


def save_heads(heads: HeadSet, directory: Path, info: Mapping[str, Any] | None = None) -> Path:
    """Write ``heads.safetensors``: per source ``<source>.weight``/``.bias``, and the feature scaler (float32)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {
        "_scaler.center": torch.as_tensor(heads.scaler.center, dtype=torch.float32).contiguous(),
        "_scaler.scale": torch.as_tensor(heads.scaler.scale, dtype=torch.float32).contiguous(),
    }
    layers: list[tuple[str, HeadWeights | RegimeGate | None]] = list(heads.heads.items())
    for source, gate in heads.gates.items():
        layers += [(f"_gate.{source}", gate)] + [(f"_regime.{k}.{source}", h) for k, h in enumerate(gate.heads)]
    for prefix, layer in layers:
        if layer is not None:
            tensors[f"{prefix}.weight"] = torch.as_tensor(layer.weight, dtype=torch.float32).contiguous()
            tensors[f"{prefix}.bias"] = torch.as_tensor(layer.bias, dtype=torch.float32).contiguous()
    meta = {
        "base": heads.base,
        "pooled_dim": heads.scaler.pooled_dim,
        "gates": {source: len(gate.heads) for source, gate in heads.gates.items()},
        **dict(info or {}),
    }
    path = Path(directory) / HEADS_FILE
    save_file(tensors, str(path), metadata={"aet": json.dumps(meta, sort_keys=True, default=str)})
    return path


def load_heads(directory: Path) -> HeadSet | None:
    """The heads stored in a version's directory (``None`` when it has none)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(directory) / HEADS_FILE
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("aet", "{}"))
    tensors = load_file(str(path))
    sources = sorted({name.rsplit(".", 1)[0] for name in tensors if not name.startswith("_")})
    scaler = FeatureScaler(
        int(meta["pooled_dim"]), tensors["_scaler.center"].double().numpy(), tensors["_scaler.scale"].double().numpy()
    )

    def head(prefix: str) -> HeadWeights | None:
        if f"{prefix}.weight" not in tensors:
            return None
        return HeadWeights(tensors[f"{prefix}.weight"].double().numpy(), tensors[f"{prefix}.bias"].double().numpy())

    heads = {s: h for s in sources if (h := head(s)) is not None}
    gates = {
        source: RegimeGate(
            tensors[f"_gate.{source}.weight"].double().numpy(),
            tensors[f"_gate.{source}.bias"].double().numpy(),
            tuple(head(f"_regime.{k}.{source}") for k in range(int(earlier))),
        )
        for source, earlier in dict(meta.get("gates") or {}).items()
    }
    return HeadSet(base=str(meta["base"]), scaler=scaler, heads=heads, gates=gates)
