"""The fast path's heads: MAP fit with an elastic pull, candidate selection by prequential loss, storage."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from aet.pipeline.learning.heads import (
    FeatureScaler,
    HeadSet,
    HeadWeights,
    OnlineHead,
    RegimeGate,
    fit_map,
    load_heads,
    save_heads,
    softmax,
    widen,
)

D = 8


def _prior(seed: int = 0) -> HeadWeights:
    rng = np.random.default_rng(seed)
    return HeadWeights(rng.normal(size=(3, D)), rng.normal(size=3) * 0.1)


def _data(n: int, truth: HeadWeights, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels drawn from the softmax model ``truth``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D))
    p = truth.proba(x)
    y = np.array([rng.choice(3, p=row) for row in p])
    return x, y


def test_a_head_from_a_linear_layer_computes_what_the_layer_computes() -> None:
    layer = torch.nn.Linear(D, 3)
    head = HeadWeights.of_linear(layer)
    x = np.random.default_rng(1).normal(size=(5, D))
    expected = layer(torch.as_tensor(x, dtype=torch.float32)).detach().numpy()
    assert np.allclose(head.logits(x), expected, atol=1e-5)
    assert np.allclose(head.proba(x).sum(axis=1), 1.0)
    assert np.allclose(softmax(np.array([[1000.0, 0.0, 0.0]])), [[1.0, 0.0, 0.0]])


def test_a_strong_pull_keeps_the_prior_and_a_weak_one_learns_the_data() -> None:
    prior, truth = _prior(0), HeadWeights(_prior(1).weight * 3, np.zeros(3))
    x, y = _data(400, truth, seed=2)
    stiff = fit_map(x, y, prior, strength=1e6)
    loose = fit_map(x, y, prior, strength=0.1)
    assert np.abs(stiff.weight - prior.weight).max() < 1e-2
    acc = lambda h: float((h.logits(x).argmax(1) == y).mean())
    assert acc(loose) > acc(prior) + 0.2
    assert fit_map(x, y, prior, strength=0.1).equals(loose)  # deterministic: convex, no seed
    assert fit_map(x[:0], y[:0], prior, strength=1.0) is prior
    with pytest.raises(ValueError, match="positive"):
        fit_map(x, y, prior, strength=0.0)
    with pytest.raises(ValueError, match="labels"):
        fit_map(x, y[:-1], prior, strength=1.0)


def test_the_online_head_serves_the_prior_until_labels_show_a_better_candidate() -> None:
    prior, truth = _prior(0), HeadWeights(_prior(5).weight * 3, np.array([0.0, -1.0, 1.0]))
    head = OnlineHead(prior, min_labels=8)
    x, y = _data(600, truth, seed=6)
    head.learn_many(x[:4], y[:4])
    assert head.selected == 0 and head.strength == math.inf and head.weights is prior
    for start in range(4, 300, 16):
        head.learn_many(x[start : start + 16], y[start : start + 16])
    assert head.selected > 0
    test_x, test_y = x[300:], y[300:]
    served = (head.predict_proba(test_x).argmax(1) == test_y).mean()
    assert served > (prior.logits(test_x).argmax(1) == test_y).mean() + 0.15
    accuracies = head.recent_accuracy()
    assert accuracies[head.selected] > accuracies[0]


def test_the_online_head_keeps_the_prior_when_the_prior_is_right() -> None:
    truth = HeadWeights(_prior(3).weight * 4, np.zeros(3))
    head = OnlineHead(truth, min_labels=8)
    x, y = _data(160, truth, seed=7)
    for start in range(0, 160, 16):
        head.learn_many(x[start : start + 16], y[start : start + 16])
    # Either the prior itself serves, or a candidate that predicts what it predicts.
    agree = (head.predict_proba(x).argmax(1) == truth.logits(x).argmax(1)).mean()
    assert agree > 0.95


def _stream(head: OnlineHead, x: np.ndarray, y: np.ndarray, *, batch: int = 16) -> None:
    for start in range(0, len(y), batch):
        head.learn_many(x[start : start + batch], y[start : start + batch])


def test_a_head_that_stops_beating_the_prior_starts_a_new_episode_on_its_own() -> None:
    """A feed back in the champion's language: the head's gain over the prior falls, the head notices it
    (without a drift event) and the prior serves again within a few dozen labels."""
    prior = HeadWeights(_prior(3).weight * 4, np.zeros(3))
    other = HeadWeights(_prior(4).weight * 4, np.zeros(3))  # another language: the prior is wrong on it
    head = OnlineHead(prior, min_labels=8)
    x, y = _data(400, other, seed=11)
    _stream(head, x, y)
    assert head.selected > 0 and head.changes == 0
    back_x, back_y = _data(400, prior, seed=12)
    for start in range(0, 400, 16):
        head.learn_many(back_x[start : start + 16], back_y[start : start + 16])
        if head.changes:
            break
    assert head.changes == 1 and start < 120, start
    assert head.selected == 0  # the prior serves again until the new episode's labels say otherwise


def test_a_head_on_a_stationary_stream_keeps_its_episode() -> None:
    other = HeadWeights(_prior(4).weight * 4, np.zeros(3))
    head = OnlineHead(HeadWeights(_prior(3).weight * 4, np.zeros(3)), min_labels=8)
    x, y = _data(1500, other, seed=13)
    _stream(head, x, y)
    assert head.changes == 0 and head.selected > 0


def test_reset_forgets_the_window_and_can_start_from_a_new_prior() -> None:
    head = OnlineHead(_prior(0), min_labels=2)
    x, y = _data(40, _prior(1), seed=8)
    head.learn_many(x, y)
    assert head.learned == 40
    new = _prior(9)
    head.reset(new)
    assert head.learned == 0 and head.weights is new and len(head.labels) == 0


def test_heads_round_trip_through_safetensors(tmp_path: Path) -> None:
    features = np.random.default_rng(2).normal(size=(50, D + 4)) * 3 + 1
    scaler = FeatureScaler.fit(features, pooled_dim=D)
    gate = RegimeGate(np.eye(2, 4), np.zeros(2), (widen(_prior(2), 4),))
    heads = HeadSet("v0001", scaler, {"news": widen(_prior(0), 4), "chat": widen(_prior(1), 4)}, {"news": gate})
    save_heads(heads, tmp_path, {"published_after_labels": 64})
    loaded = load_heads(tmp_path)
    assert loaded is not None and loaded.base == "v0001" and sorted(loaded.heads) == ["chat", "news"]
    [(source, back)] = loaded.gates.items()
    assert source == "news" and np.allclose(back.weight, gate.weight) and back.heads[0] is not None
    assert np.allclose(back.heads[0].weight, gate.heads[0].weight, atol=1e-6)
    assert np.allclose(loaded.scaler.center, scaler.center, atol=1e-5)
    own = np.full((3, 3), 1 / 3)
    served = loaded.proba(features[:3], ["news", "chat", "other"], own)
    assert np.allclose(served[:2], heads.proba(features[:2], ["news", "chat"], own[:2]), atol=1e-4)
    assert np.isnan(served[2]).all()  # no head for that source: the model's own layer answers
    assert load_heads(tmp_path / "missing") is None


def test_a_widened_prior_predicts_what_the_model_predicts() -> None:
    """Zero weight on the standardised mean-pooled inputs: the head starts exactly as the model's layer."""
    prior = _prior(4)
    features = np.random.default_rng(5).normal(size=(20, D + 6))
    scaler = FeatureScaler.fit(features, pooled_dim=D)
    head = widen(prior, 6)
    assert np.allclose(head.logits(scaler(features)), prior.logits(features[:, :D]))


def test_a_regime_gate_weighs_each_rows_regimes_by_where_its_features_sit() -> None:
    """Rows that sit with the earlier regime are answered by its head (or, for None, the model's own
    probabilities); an ambiguous row gets the blend the gate's posterior gives."""
    earlier, current = widen(_prior(0), 2), widen(_prior(1), 2)
    scaler = FeatureScaler(D, np.zeros(2), np.ones(2))
    x = np.random.default_rng(3).normal(size=(7, D + 2))
    x[:3, D], x[3:6, D], x[6, D] = 20.0, -20.0, 0.0  # earlier regime, current regime, halfway
    gate = RegimeGate(np.array([[1.0, 0.0], [-1.0, 0.0]]), np.zeros(2), (earlier,))
    own = np.tile([0.2, 0.5, 0.3], (7, 1))
    served = HeadSet("v0001", scaler, {"news": current}, {"news": gate}).proba(x, ["news"] * 7, own)
    assert np.allclose(served[:3], earlier.proba(x[:3])) and np.allclose(served[3:6], current.proba(x[3:6]))
    assert np.allclose(served[6], 0.5 * earlier.proba(x[6:]) + 0.5 * current.proba(x[6:]))
    to_layer = HeadSet("v0001", scaler, {"news": current}, {"news": RegimeGate(gate.weight, gate.bias, (None,))})
    served = to_layer.proba(x, ["news"] * 3 + ["chat"] * 4, own)
    assert np.allclose(served[:3], own[:3]) and np.isnan(served[3:]).all()  # chat: no head, no gate
