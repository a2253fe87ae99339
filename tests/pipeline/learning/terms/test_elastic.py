"""The elastic (EWC) anchor: zero at the champion, λ/2·ΣF(θ−θ*)² once trained weights move, blind to frozen ones."""

from __future__ import annotations

import pytest
import torch

from aet.pipeline.learning.terms import Step
from aet.pipeline.learning.terms.elastic import ElasticAnchor
from aet.pipeline.learning.trainable import prepare
from aet.pipeline.model import SentimentModel
from tests.pipeline.tiny_model import tiny_model


def _anchor(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in net.named_parameters()}


def _fisher(net: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) + 0.1 for n, p in net.named_parameters()}


def _step(model: SentimentModel) -> Step:
    """A step the anchor reads only the model of."""
    return Step(model=model, encoded={}, labels=torch.tensor([]), examples=[], outputs=None)


@pytest.mark.parametrize("mode", ["full", "attention", "lora"])
def test_ewc_is_zero_at_the_champion_and_positive_after_a_trained_weight_moves(mode: str) -> None:
    model = tiny_model(seed=1)
    anchor, fisher = _anchor(model.model), _fisher(model.model)
    prepare(model.model, mode)
    term = ElasticAnchor(model.model, anchor, fisher, weight=2.0)
    assert term.names  # something is anchored in every mode
    assert term.name == "ewc" and not term.needs_attentions
    zero = term(_step(model))
    assert zero.item() == 0.0  # exactly zero at θ = θ*

    trained = [p for n, p in model.model.named_parameters() if p.requires_grad]
    with torch.no_grad():
        trained[0].add_(0.01)  # under LoRA this is lora_A, which alone changes nothing (B = 0) ...
        if mode == "lora":
            lora_b = next(p for n, p in model.model.named_parameters() if "lora_B" in n)
            lora_b.add_(0.05)  # ... so move B as well
    moved = term(_step(model))
    assert moved.item() > 0.0
    assert moved.requires_grad  # it trains something


def test_ewc_equals_lambda_half_sum_of_fisher_times_squared_distance() -> None:
    model = tiny_model(seed=2)
    anchor, fisher = _anchor(model.model), _fisher(model.model, seed=3)
    prepare(model.model, "attention")
    name = next(n for n, p in model.model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        dict(model.model.named_parameters())[name].add_(0.5)
    term = ElasticAnchor(model.model, anchor, fisher, weight=3.0, normalize=False)
    expected = 0.5 * 3.0 * (fisher[name] * 0.5**2).sum()
    assert term(_step(model)).item() == pytest.approx(expected.item(), rel=1e-5)


def test_ewc_ignores_frozen_weights() -> None:
    model = tiny_model(seed=4)
    anchor, fisher = _anchor(model.model), _fisher(model.model)
    prepare(model.model, "attention")
    term = ElasticAnchor(model.model, anchor, fisher, weight=1.0)
    frozen = next(p for n, p in model.model.named_parameters() if not p.requires_grad and "intermediate" in n)
    with torch.no_grad():
        frozen.add_(1.0)
    assert term(_step(model)).item() == 0.0
