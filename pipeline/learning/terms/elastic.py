"""The elastic (EWC) anchor: ``λ/2 · Σ_i F_i (θ_i − θ*_i)²``, which holds the weights the old data needs.

F is the diagonal Fisher stored with the champion (pipeline/learning/fisher.py)
and θ* the champion's weights: moving a weight costs in proportion to how
much the champion's predictions depend on it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch

from aet.pipeline.learning.terms import LossTerm, Step
from aet.pipeline.learning.trainable import effective_weights

log = logging.getLogger(__name__)


class ElasticAnchor(LossTerm):
    """``λ/2 · Σ_i F_i (θ_i − θ*_i)²`` over the trained weights, with θ* the champion's weights.

    Only weights that train contribute (a frozen weight cannot move); under
    LoRA the weight's effective value (base + low-rank update) is compared.
    With ``normalize`` the Fisher is divided by its mean over the anchored
    weights, so that λ does not depend on the Fisher's overall scale (which
    varies with the model's confidence); it is still zero exactly at θ = θ*.
    """

    name = "ewc"

    def __init__(
        self,
        net: torch.nn.Module,
        anchor: Mapping[str, torch.Tensor],
        fisher: Mapping[str, torch.Tensor],
        weight: float,
        *,
        normalize: bool = True,
    ) -> None:
        trained = {name for name, _ in effective_weights(net)}
        self.names = sorted(n for n in trained if n in fisher and n in anchor)
        missing = sorted(trained - set(self.names))
        if missing:
            log.info(
                "elastic anchor: %d trained tensors have no Fisher/anchor and are not anchored (e.g. %s)",
                len(missing),
                missing[0],
            )
        device = next(net.parameters()).device
        scale = 1.0
        if normalize and self.names:
            total = sum(float(fisher[n].double().sum()) for n in self.names)
            count = sum(fisher[n].numel() for n in self.names)
            mean = total / count if count else 0.0
            scale = 1.0 / mean if mean > 0 else 1.0
        self.scale = scale
        self.fisher = {n: (fisher[n].float() * scale).to(device) for n in self.names}
        self.anchor = {n: anchor[n].detach().float().to(device) for n in self.names}
        self.weight = weight

    def penalty(self, net: torch.nn.Module) -> torch.Tensor:
        """``Σ_i F_i (θ_i − θ*_i)²`` (without λ/2) at ``net``'s current weights."""
        wanted = set(self.names)
        total = torch.zeros((), device=next(net.parameters()).device)
        for name, value in effective_weights(net, wanted):
            total = total + (self.fisher[name] * (value.float() - self.anchor[name]).pow(2)).sum()
        return total

    def __call__(self, step: Step) -> torch.Tensor:
        return 0.5 * self.weight * self.penalty(step.model.model)
