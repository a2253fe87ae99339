"""Attention distillation: the KL between attention maps, the term on rehearsal rows, and its setup/teardown hooks."""

from __future__ import annotations

import copy

import pytest
import torch

from aet.pipeline.learning.terms import Step
from aet.pipeline.learning.terms.attention import AttentionDistillation, attention_kl, disable_attention_dropout
from tests.pipeline.tiny_model import synthetic_examples, tiny_model


def _attentions(model, texts):
    enc = model.encode(texts)
    return enc, model.model(**enc, output_attentions=True).attentions


def _step(model, enc, batch, outputs) -> Step:
    return Step(model=model, encoded=enc, labels=torch.tensor([]), examples=batch, outputs=outputs)


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


def test_distillation_term_is_zero_for_identical_models_and_batches_without_rehearsal() -> None:
    student = tiny_model(seed=1)
    rehearsal = synthetic_examples(6, seed=1)
    recent = synthetic_examples(6, seed=2, prefix="new ")
    batch = recent[:3] + rehearsal[:3]
    enc = student.encode([e.text for e in batch])
    outputs = student.model(**enc, output_attentions=True)

    same = AttentionDistillation(copy.deepcopy(student.model), rehearsal, weight=1.0)
    assert same.name == "att" and same.needs_attentions
    # zero up to float rounding: the teacher sees the rehearsal rows re-padded as a batch of their own
    assert same(_step(student, enc, batch, outputs)).item() == pytest.approx(0.0, abs=1e-8)
    other = AttentionDistillation(tiny_model(seed=7).model, rehearsal, weight=1.0)
    assert other.rows(batch) == [3, 4, 5]
    assert (
        other(_step(student, enc, batch, outputs)).item() > 1e-5
    )  # near-uniform attention of random tiny models: ~1e-4
    no_rehearsal = recent[:3]
    enc2 = student.encode([e.text for e in no_rehearsal])
    out2 = student.model(**enc2, output_attentions=True)
    assert other(_step(student, enc2, no_rehearsal, out2)).item() == 0.0


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


def test_own_batch_distillation_draws_rehearsal_inputs_itself() -> None:
    student, teacher = tiny_model(seed=1), tiny_model(seed=3)
    rehearsal = synthetic_examples(10, seed=1)
    term = AttentionDistillation(teacher.model, rehearsal, weight=1.0, own_batch=4, seed=0)
    assert not term.needs_attentions
    batch = synthetic_examples(3, seed=2, prefix="new ")
    enc = student.encode([e.text for e in batch])
    value = term(_step(student, enc, batch, None))
    assert value.item() > 0.0 and value.requires_grad


def test_setup_prepares_both_models_and_teardown_puts_them_back() -> None:
    student, teacher = tiny_model(seed=1), tiny_model(seed=3)
    for net in (student.model, teacher.model):
        net.set_attn_implementation("sdpa")
        for layer in net.bert.encoder.layer:
            layer.attention.self.dropout.p = 0.1
    teacher.model.train()
    term = AttentionDistillation(teacher.model, synthetic_examples(4), weight=1.0)
    term.setup(student)
    assert student.model.config._attn_implementation == teacher.model.config._attn_implementation == "eager"
    assert all(layer.attention.self.dropout.p == 0.0 for layer in student.model.bert.encoder.layer)
    assert not teacher.model.training and not any(p.requires_grad for p in teacher.model.parameters())
    term.teardown()
    assert student.model.config._attn_implementation == teacher.model.config._attn_implementation == "sdpa"
    assert all(layer.attention.self.dropout.p == 0.1 for layer in student.model.bert.encoder.layer)
    assert teacher.model.training and all(p.requires_grad for p in teacher.model.parameters())
    term.teardown()  # a second teardown has nothing left to undo
    assert student.model.config._attn_implementation == "sdpa"
