"""The extra terms of the training objective, one module each, behind one :class:`LossTerm` protocol.

The training loop (pipeline/learning/loop.py) adds every term to the
cross-entropy at every step and calls each term on the same named hooks:
``setup`` before the first step, the term itself at every step with the
:class:`Step`, and ``teardown`` after the last one (also when training
failed). A term that reads attention maps says so with ``needs_attentions``;
the loop then runs the one forward pass with ``output_attentions=True``.

- :mod:`.elastic`: the elastic (EWC) anchor ``λ_ewc/2 · Σ F (θ − θ*)²``;
- :mod:`.attention`: attention distillation ``λ_att · KL(A_θ*(x) ‖ A_θ(x))``.

A new term is a new module here with a class that subclasses
:class:`LossTerm` (inheriting the no-op hooks) and sets ``name``, which
names its column in the training history (``train_<name>``).
pipeline/learning/objective.py decides which terms a round uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from aet.pipeline.learning.examples import Example
from aet.pipeline.model import SentimentModel


@dataclass(frozen=True)
class Step:
    """One training step as a loss term sees it.

    ``examples`` are the batch's examples in row order; ``outputs`` is the
    model's output for ``encoded`` (it carries ``attentions`` when a term
    needs them).
    """

    model: SentimentModel
    encoded: dict[str, torch.Tensor]
    labels: torch.Tensor
    examples: Sequence[Example]
    outputs: Any


class LossTerm(Protocol):
    """One extra term of the objective: a scalar added to the cross-entropy at every step."""

    #: Names the term in the training history (``train_<name>``).
    name: str
    #: Whether the step's forward pass must return attention maps for this term.
    needs_attentions: bool = False

    def setup(self, student: SentimentModel) -> None:
        """Prepare ``student`` (and the term) before the first step; the default does nothing."""
        return None

    def teardown(self) -> None:
        """Undo what ``setup`` changed, after the last step or a failure; the default does nothing."""
        return None

    def __call__(self, step: Step) -> torch.Tensor:
        """The term's value at ``step`` (a scalar tensor, weight included)."""
        ...
