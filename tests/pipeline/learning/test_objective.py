"""The AET objective of a round: the rehearsal sample, and which extra terms its settings switch on."""

from __future__ import annotations

import torch

from aet.pipeline.config import ObjectiveSettings, RoundSettings
from aet.pipeline.learning.objective import objective_terms, rehearsal_sample
from aet.pipeline.learning.terms.attention import AttentionDistillation
from aet.pipeline.learning.terms.elastic import ElasticAnchor
from tests.pipeline.tiny_model import synthetic_examples, tiny_model

REHEARSAL = synthetic_examples(30, seed=2, prefix="old ")


def test_rehearsal_sample_is_bounded_by_the_ratio_and_seeded() -> None:
    assert len(rehearsal_sample(REHEARSAL, 10, 0.5, seed=1)) == 5
    assert len(rehearsal_sample(REHEARSAL, 1000, 0.5, seed=1)) == len(REHEARSAL)
    assert rehearsal_sample(REHEARSAL, 20, 0.5, seed=1) == rehearsal_sample(REHEARSAL, 20, 0.5, seed=1)


def test_the_objective_is_described_by_its_terms() -> None:
    assert ObjectiveSettings().describe() == "ce+rehearsal+ewc(1)+att(1)"
    assert ObjectiveSettings(rehearsal=False, lambda_ewc=0.0, lambda_att=2.5).describe() == "ce+att(2.5)"


def test_the_settings_switch_the_terms() -> None:
    champion, student = tiny_model(seed=0), tiny_model(seed=0)
    fisher = {n: torch.ones_like(p) for n, p in champion.model.named_parameters()}
    full = objective_terms(RoundSettings(), champion=champion, student=student, fisher=fisher, rehearsed=REHEARSAL)
    assert [type(t) for t in full] == [ElasticAnchor, AttentionDistillation]
    assert [t.name for t in full] == ["ewc", "att"]
    assert full[1].needs_attentions  # distils on the rehearsal rows of each batch
    # Without rehearsal in the task loss, distillation draws its own inputs: as many as rehearsal would add per batch.
    alone = RoundSettings(rehearsal=False, lambda_ewc=0.0, batch_size=32, rehearsal_ratio=0.5)
    (att,) = objective_terms(alone, champion=champion, student=student, fisher=fisher, rehearsed=REHEARSAL)
    assert isinstance(att, AttentionDistillation) and att.own_batch == 11 and not att.needs_attentions
    # No Fisher, no anchor; nothing switched on, no terms.
    no_fisher = objective_terms(RoundSettings(), champion=champion, student=student, fisher=None, rehearsed=REHEARSAL)
    assert [t.name for t in no_fisher] == ["att"]
    plain = RoundSettings(lambda_ewc=0.0, lambda_att=0.0)
    assert objective_terms(plain, champion=champion, student=student, fisher=fisher, rehearsed=REHEARSAL) == []
