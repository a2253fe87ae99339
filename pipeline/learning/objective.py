"""The AET objective of one round: rehearsal in the task loss, and which extra terms the loop adds to it.

    L = CE(y, f_θ(x))                                   on recent + rehearsal examples (:func:`rehearsal_sample`)
      + λ_ewc/2 · Σ_i F_i (θ_i − θ*_i)²                 terms/elastic.py, :class:`ElasticAnchor`
      + λ_att · KL(A_θ*(x_reh) ‖ A_θ(x_reh))            terms/attention.py, :class:`AttentionDistillation`

Which terms are on and their weights are :class:`aet.pipeline.config.ObjectiveSettings`
(docs/architecture.md, "Elastic retraining: the AET objective"). F is the diagonal Fisher
stored with the champion (pipeline/learning/fisher.py) and θ* its weights.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence

from aet.pipeline.config import RoundSettings
from aet.pipeline.learning.examples import Example
from aet.pipeline.learning.fisher import Tensors
from aet.pipeline.learning.terms import LossTerm
from aet.pipeline.learning.terms.attention import AttentionDistillation
from aet.pipeline.learning.terms.elastic import ElasticAnchor
from aet.pipeline.model import SentimentModel

log = logging.getLogger(__name__)


def rehearsal_sample(rehearsal: Sequence[Example], n_recent: int, ratio: float, seed: int) -> list[Example]:
    """At most ``ratio`` rehearsal examples per recent one, drawn with ``seed`` (all of them when fewer)."""
    k = min(len(rehearsal), math.ceil(ratio * n_recent))
    return sorted(random.Random(seed).sample(list(rehearsal), k), key=lambda e: (e.source, e.label, e.id, e.text))


def objective_terms(
    settings: RoundSettings,
    *,
    champion: SentimentModel,
    student: SentimentModel,
    fisher: Tensors | None,
    rehearsed: Sequence[Example],
) -> list[LossTerm]:
    """The extra terms of ``settings``'s objective for training ``student`` away from ``champion``.

    ``rehearsed`` is the round's rehearsal sample. With rehearsal in the task
    loss, distillation runs on the rehearsal rows of each batch; without it,
    the term draws its own rehearsal inputs (as many per step as rehearsal
    would have put in a batch). The elastic anchor needs the champion's
    ``fisher``; without one it is left out.
    """
    s = settings
    terms: list[LossTerm] = []
    if s.lambda_ewc > 0 and fisher is not None:
        anchor = dict(champion.model.named_parameters())
        terms.append(ElasticAnchor(student.model, anchor, fisher, s.lambda_ewc))
    if s.lambda_att > 0:
        own = 0 if s.rehearsal else max(1, round(s.batch_size * s.rehearsal_ratio / (1 + s.rehearsal_ratio)))
        if not rehearsed:
            log.warning("attention distillation is on but there are no rehearsal inputs: the term stays zero")
        terms.append(AttentionDistillation(champion.model, rehearsed, s.lambda_att, own_batch=own, seed=s.seed))
    return terms
