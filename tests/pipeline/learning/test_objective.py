"""The AET objective's extra terms: elastic anchor, attention distillation, diagonal Fisher and its online merge."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from aet.pipeline.learning.loop import StepContext
from aet.pipeline.learning.objective import (
    FISHER_FILE,
    AttentionDistillation,
    ElasticAnchor,
    attention_kl,
    estimate_fisher,
    fisher_info,
    load_fisher,
    merge_fisher,
    save_fisher,
)
from aet.pipeline.learning.trainable import disable_attention_dropout, effective_weights, prepare, trained_names
from tests.pipeline.tiny_model import synthetic_examples, tiny_model


def _anchor(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in net.named_parameters()}


def _fisher(net: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) + 0.1 for n, p in net.named_parameters()}


# --------------------------------------------------------------------------- elastic anchor


@pytest.mark.parametrize("mode", ["full", "attention", "lora"])
def test_ewc_is_zero_at_the_champion_and_positive_after_a_trained_weight_moves(mode: str) -> None:
    model = tiny_model(seed=1)
    anchor, fisher = _anchor(model.model), _fisher(model.model)
    prepare(model.model, mode)
    term = ElasticAnchor(model.model, anchor, fisher, weight=2.0)
    assert term.names  # something is anchored in every mode
    zero = term(model, {}, torch.tensor([]))
    assert zero.item() == 0.0  # exactly zero at θ = θ*

    trained = [p for n, p in model.model.named_parameters() if p.requires_grad]
    with torch.no_grad():
        trained[0].add_(0.01)  # under LoRA this is lora_A, which alone changes nothing (B = 0) ...
        if mode == "lora":
            lora_b = next(p for n, p in model.model.named_parameters() if "lora_B" in n)
            lora_b.add_(0.05)  # ... so move B as well
    moved = term(model, {}, torch.tensor([]))
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
    assert term(model, {}, torch.tensor([])).item() == pytest.approx(expected.item(), rel=1e-5)


def test_ewc_ignores_frozen_weights() -> None:
    model = tiny_model(seed=4)
    anchor, fisher = _anchor(model.model), _fisher(model.model)
    prepare(model.model, "attention")
    term = ElasticAnchor(model.model, anchor, fisher, weight=1.0)
    frozen = next(p for n, p in model.model.named_parameters() if not p.requires_grad and "intermediate" in n)
    with torch.no_grad():
        frozen.add_(1.0)
    assert term(model, {}, torch.tensor([])).item() == 0.0


def test_lora_effective_weight_is_base_plus_scaled_low_rank_update() -> None:
    model = tiny_model(seed=5)
    prepare(model.model, "lora", lora_r=2, lora_alpha=4.0)
    layer = model.model.bert.encoder.layer[0].attention.self.query
    with torch.no_grad():
        layer.lora_B["default"].weight.fill_(0.1)
    weights = dict(effective_weights(model.model))
    expected = layer.base_layer.weight + (layer.lora_B["default"].weight @ layer.lora_A["default"].weight) * 2.0
    assert torch.allclose(weights["bert.encoder.layer.0.attention.self.query.weight"], expected)
    assert "bert.encoder.layer.0.attention.self.query.base_layer.weight" not in weights


# --------------------------------------------------------------------------- attention distillation


def _attentions(model, texts):
    enc = model.encode(texts)
    return enc, model.model(**enc, output_attentions=True).attentions


def test_attention_kl_is_zero_for_identical_models_and_positive_for_different_ones() -> None:
    texts = ["Acme soars on record profit", "Globex files notice", "shares of Initech plunge after layoffs today"]
    a, same, other = tiny_model(seed=1), tiny_model(seed=1), tiny_model(seed=9)
    enc, att_a = _attentions(a, texts)
    _, att_same = _attentions(same, texts)
    _, att_other = _attentions(other, texts)
    assert attention_kl(att_a, att_same, enc["attention_mask"]).item() == 0.0
    assert attention_kl(att_a, att_other, enc["attention_mask"]).item() > 1e-6  # near-uniform maps at init


def test_attention_kl_ignores_padding_queries() -> None:
    texts = ["short", "a much longer headline about Acme and Globex and quarterly results"]
    a, b = tiny_model(seed=1), tiny_model(seed=2)
    enc, att_a = _attentions(a, texts)
    _, att_b = _attentions(b, texts)
    mask = enc["attention_mask"]
    base = attention_kl(att_a, att_b, mask)
    pad = mask[0] == 0
    assert pad.any()
    noisy = [t.clone() for t in att_b]
    for t in noisy:
        t[0, :, pad, :] = torch.rand_like(t[0, :, pad, :])  # garbage in padded query rows of text 0
    assert attention_kl(att_a, noisy, mask).item() == pytest.approx(base.item(), rel=1e-6)


def test_distillation_term_is_zero_for_identical_models_and_batches_without_replay() -> None:
    student = tiny_model(seed=1)
    replay = synthetic_examples(6, seed=1)
    recent = synthetic_examples(6, seed=2, prefix="new ")
    batch = recent[:3] + replay[:3]
    enc = student.encode([e.text for e in batch])
    outputs = student.model(**enc, output_attentions=True)

    same = AttentionDistillation(copy.deepcopy(student.model), replay, weight=1.0)
    # zero up to float rounding: the teacher sees the replay rows re-padded as a batch of their own
    assert same(student, enc, torch.tensor([]), StepContext(batch, outputs)).item() == pytest.approx(0.0, abs=1e-8)
    other = AttentionDistillation(tiny_model(seed=7).model, replay, weight=1.0)
    assert other.rows(batch) == [3, 4, 5]
    assert (
        other(student, enc, torch.tensor([]), StepContext(batch, outputs)).item() > 1e-5
    )  # near-uniform attention of random tiny models: ~1e-4
    no_replay = recent[:3]
    enc2 = student.encode([e.text for e in no_replay])
    out2 = student.model(**enc2, output_attentions=True)
    assert other(student, enc2, torch.tensor([]), StepContext(no_replay, out2)).item() == 0.0


def test_distillation_in_training_mode_needs_attention_dropout_off() -> None:
    """In train mode the returned maps are post-dropout; with attention dropout zeroed they are distributions."""
    student = tiny_model(seed=1)
    student.model.config.attention_probs_dropout_prob = 0.5
    for layer in student.model.bert.encoder.layer:
        layer.attention.self.dropout.p = 0.5
    student.model.train()
    enc = student.encode(["Acme soars on record profit"])
    rows = student.model(**enc, output_attentions=True).attentions[0].sum(-1)
    assert not torch.allclose(rows, torch.ones_like(rows))
    changed = disable_attention_dropout(student.model)
    assert len(changed) == 2
    rows = student.model(**enc, output_attentions=True).attentions[0].sum(-1)
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)
    assert student.model.config.attention_probs_dropout_prob == 0.5  # the saved config is left alone


def test_own_batch_distillation_draws_replay_inputs_itself() -> None:
    student, teacher = tiny_model(seed=1), tiny_model(seed=3)
    replay = synthetic_examples(10, seed=1)
    term = AttentionDistillation(teacher.model, replay, weight=1.0, own_batch=4, seed=0)
    assert not term.needs_attentions
    batch = synthetic_examples(3, seed=2, prefix="new ")
    enc = student.encode([e.text for e in batch])
    value = term(student, enc, torch.tensor([]), StepContext(batch, None))
    assert value.item() > 0.0 and value.requires_grad


# --------------------------------------------------------------------------- Fisher


def test_fisher_merge_is_gamma_times_old_plus_new_exactly() -> None:
    g = torch.Generator().manual_seed(0)
    old = {"a": torch.rand(3, 4, generator=g), "b": torch.rand(5, generator=g), "only_old": torch.rand(2, generator=g)}
    new = {"a": torch.rand(3, 4, generator=g), "b": torch.rand(5, generator=g), "only_new": torch.rand(2, generator=g)}
    merged = merge_fisher(old, new, gamma=0.7)
    assert set(merged) == {"a", "b", "only_old", "only_new"}
    assert torch.equal(merged["a"], 0.7 * old["a"] + new["a"])
    assert torch.equal(merged["b"], 0.7 * old["b"] + new["b"])
    assert torch.equal(merged["only_old"], 0.7 * old["only_old"])
    assert torch.equal(merged["only_new"], new["only_new"])
    assert torch.equal(merge_fisher(None, new, 0.7)["a"], new["a"])
    # Two rounds: F2 = γ(γ F0 + F1) + F2new.
    again = merge_fisher(merged, new, gamma=0.5)
    assert torch.equal(again["a"], 0.5 * (0.7 * old["a"] + new["a"]) + new["a"])
    with pytest.raises(ValueError, match="shape"):
        merge_fisher({"a": torch.zeros(2)}, {"a": torch.zeros(3)}, 0.5)


def test_fisher_with_batch_size_one_is_the_mean_of_squared_per_example_gradients() -> None:
    model = tiny_model(seed=1)
    examples = synthetic_examples(5, seed=4)
    names = ["classifier.weight", "bert.encoder.layer.1.attention.self.query.weight"]
    fisher = estimate_fisher(model, examples, samples=5, batch_size=1, names=names)
    assert set(fisher) == set(names)
    params = dict(model.model.named_parameters())
    expected = {n: torch.zeros_like(params[n]) for n in names}
    for e in examples:
        enc = model.encode([e.text])
        loss = torch.nn.functional.cross_entropy(model.model(**enc).logits, torch.tensor([e.label]))
        grads = torch.autograd.grad(loss, [params[n] for n in names])
        for n, g in zip(names, grads):
            expected[n] += g.pow(2) / len(examples)
    for n in names:
        assert torch.allclose(fisher[n], expected[n], rtol=1e-4, atol=1e-12), n
        assert fisher[n].sum() > 0
    assert all(p.requires_grad for p in model.model.parameters())  # flags restored


def test_fisher_covers_what_a_mode_trains() -> None:
    model = tiny_model()
    attention = trained_names(model.model, "attention")
    lora = trained_names(model.model, "lora")
    assert "classifier.weight" in attention and "bert.pooler.dense.weight" in attention
    assert "bert.encoder.layer.0.attention.self.key.bias" in attention
    assert "bert.encoder.layer.0.attention.self.key.bias" not in lora  # LoRA adapts weights only
    assert not any("intermediate" in n or "embeddings" in n for n in attention)
    assert set(trained_names(model.model, "full")) == {n for n, _ in model.model.named_parameters()}


def test_fisher_file_round_trips_bit_exactly(tmp_path: Path) -> None:
    model = tiny_model()
    fisher = estimate_fisher(
        model, synthetic_examples(8), samples=8, batch_size=4, names=trained_names(model.model, "attention")
    )
    save_fisher(fisher, tmp_path, {"gamma": 0.9, "rounds": 2})
    loaded = load_fisher(tmp_path)
    assert loaded is not None and set(loaded) == set(fisher)
    for n, t in fisher.items():
        assert loaded[n].dtype == torch.float32
        assert torch.equal(loaded[n], t), n
    assert fisher_info(tmp_path) == {"gamma": 0.9, "rounds": 2}
    assert (tmp_path / FISHER_FILE).is_file()
    assert load_fisher(tmp_path / "nowhere") is None
