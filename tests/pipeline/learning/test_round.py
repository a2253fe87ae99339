"""One adaptation round (pipeline/learning/round.py): what it returns, what it leaves alone, and its artifact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aet.pipeline.config import LEARNING_RATE_BY_MODE, RoundSettings
from aet.pipeline.learning.fisher import load_fisher, save_fisher
from aet.pipeline.learning.round import adapt
from aet.pipeline.learning.trainable import is_lora, trained_names
from aet.pipeline.model import SentimentModel
from aet.storage.artifacts import ArtifactStore, verify
from tests.pipeline.tiny_model import synthetic_examples, tiny_model

RECENT = synthetic_examples(48, seed=1, prefix="new ")
REHEARSAL = synthetic_examples(30, seed=2, prefix="old ")
FAST = RoundSettings(
    epochs=1, batch_size=16, fisher_samples=12, fisher_batch_size=4, seed=5, learning_rate=1e-2, time_budget_s=None
)


def _state(model: SentimentModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.model.state_dict().items()}


@pytest.mark.parametrize("mode", ["full", "attention", "lora"])
def test_a_round_returns_a_plain_model_and_the_merged_fisher_and_leaves_the_champion_alone(mode: str) -> None:
    champion = tiny_model(seed=0)
    before, impl = _state(champion), champion.model.config._attn_implementation
    champion_fisher = {n: torch.full_like(p, 0.5) for n, p in champion.model.named_parameters()}
    result = adapt(
        champion,
        recent=RECENT,
        validation=RECENT[:6],
        rehearsal=REHEARSAL,
        champion_fisher=champion_fisher,
        settings=FAST.model_copy(update={"mode": mode}),
    )

    after = _state(champion)
    assert all(torch.equal(before[k], after[k]) for k in before)  # the champion is untouched ...
    assert champion.model.config._attn_implementation == impl  # ... and back on its attention implementation
    assert all(p.requires_grad for p in champion.model.parameters())
    student = result.model.model
    assert not is_lora(student) and list(student.state_dict()) == list(before)  # a plain checkpoint
    changed = [k for k in before if not torch.equal(before[k], student.state_dict()[k])]
    assert changed and set(changed) <= set(trained_names(champion.model, mode))
    names = trained_names(champion.model, mode)
    assert set(result.fisher) == set(champion_fisher)  # merged: the stored keys, decayed or updated
    for n in names[:3]:
        assert torch.all(result.fisher[n] >= 0.9 * 0.5 - 1e-7)  # γ·F_old + F_new with F_new ≥ 0
    assert result.counts == {"recent": 48, "rehearsal": 24, "train": 72, "validation": 6}
    assert result.train.history[0]["train_ewc"] > 0 and result.train.history[0]["train_att"] >= 0
    facts = result.facts()
    assert facts["objective"] == "ce+rehearsal+ewc(1)+att(1)" and facts["mode"] == mode
    assert facts["trainable_parameters"] == result.trainable_parameters > 0


def test_rounds_are_deterministic_for_a_seed() -> None:
    a = adapt(tiny_model(seed=0), recent=RECENT, rehearsal=REHEARSAL, settings=FAST)
    b = adapt(tiny_model(seed=0), recent=RECENT, rehearsal=REHEARSAL, settings=FAST)
    sa, sb = a.model.model.state_dict(), b.model.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all(torch.equal(a.fisher[k], b.fisher[k]) for k in a.fisher)


def test_switching_terms_off() -> None:
    plain = adapt(
        tiny_model(seed=0),
        recent=RECENT,
        rehearsal=REHEARSAL,
        settings=FAST.model_copy(update={"rehearsal": False, "lambda_ewc": 0.0, "lambda_att": 0.0}),
    )
    assert plain.counts["rehearsal"] == 0
    assert set(plain.train.history[0]) == {"epoch", "train_loss"}
    att_only = adapt(
        tiny_model(seed=0),
        recent=RECENT,
        rehearsal=REHEARSAL,
        settings=FAST.model_copy(update={"rehearsal": False, "lambda_ewc": 0.0, "lambda_att": 1.0}),
    )
    assert att_only.counts["rehearsal"] == 0 and att_only.train.history[0]["train_att"] > 0


def test_a_follower_skips_the_new_fisher_and_the_mode_sets_the_default_learning_rate() -> None:
    settings = FAST.model_copy(update={"learning_rate": None, "mode": "lora"})
    result = adapt(tiny_model(seed=0), recent=RECENT, rehearsal=REHEARSAL, settings=settings, new_fisher=False)
    assert result.fisher is None and "fisher_new" not in result.seconds
    assert result.facts()["learning_rate"] == LEARNING_RATE_BY_MODE["lora"] == 2e-3


def test_the_artifact_round_trips_bit_exactly(tmp_path: Path) -> None:
    """Weights, config, tokenizer and Fisher come back from a sealed artifact exactly as they were."""
    result = adapt(tiny_model(seed=0), recent=RECENT, rehearsal=REHEARSAL, settings=FAST, version="v0002")
    store = ArtifactStore(tmp_path / "models")
    staged = store.stage()
    result.model.save(staged)
    save_fisher(result.fisher, staged, {"version": "v0002"})
    path, digest = store.commit(staged, "v0002")
    verify(path, digest)

    loaded = SentimentModel.load(path, version="v0002", device="cpu", new_head=False, max_length=32)
    original, back = result.model.model.state_dict(), loaded.model.state_dict()
    assert list(original) == list(back)
    for k in original:
        assert original[k].dtype == back[k].dtype and torch.equal(original[k], back[k]), k
    fisher = load_fisher(path)
    assert set(fisher) == set(result.fisher) and all(torch.equal(fisher[k], result.fisher[k]) for k in fisher)
    texts = [e.text for e in RECENT[:8]]
    loaded.model.set_attn_implementation(result.model.model.config._attn_implementation)  # same kernels
    assert (loaded.predict_proba(texts) == result.model.predict_proba(texts)).all()
