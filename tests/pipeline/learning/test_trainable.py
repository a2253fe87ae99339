"""What trains per mode: gradients reach exactly the chosen parameters; LoRA merges back to a plain checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aet.pipeline.config import FitSettings
from aet.pipeline.learning.loop import TrainingLoop
from aet.pipeline.learning.trainable import (
    TrainableError,
    attention_module_names,
    effective_weights,
    head_parameter_names,
    is_lora,
    merge_lora,
    prepare,
    trained_names,
)
from aet.pipeline.model import SentimentModel
from tests.pipeline.tiny_model import synthetic_examples, tiny_model


def _is_attention(name: str) -> bool:
    return any(f"attention.{k}" in name for k in ("self.query", "self.key", "self.value", "output.dense"))


def _is_head(name: str) -> bool:
    return name.startswith(("classifier.", "bert.pooler."))


def test_attention_projections_and_head_are_found() -> None:
    net = tiny_model().model
    assert attention_module_names(net) == [
        f"bert.encoder.layer.{i}.attention.{m}"
        for i in range(2)
        for m in ("self.query", "self.key", "self.value", "output.dense")
    ]
    assert head_parameter_names(net) == [
        "bert.pooler.dense.weight",
        "bert.pooler.dense.bias",
        "classifier.weight",
        "classifier.bias",
    ]


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(TrainableError, match="unknown training mode 'everything'"):
        prepare(tiny_model().model, "everything")


@pytest.mark.parametrize("mode", ["full", "attention", "lora"])
def test_gradients_flow_only_into_the_chosen_parameters(mode: str) -> None:
    """One real training step: trained parameters get gradients and change, every other one stays bit-identical."""
    model = tiny_model(seed=3)
    trainable = prepare(model.model, mode)
    before = {n: p.detach().clone() for n, p in model.model.named_parameters()}
    captured: dict[str, bool] = {}
    trainer = TrainingLoop(
        model,
        FitSettings(epochs=1, batch_size=8, learning_rate=1e-2, warmup_fraction=0.0, seed=1),
        trainable=trainable,
        progress=False,
    )
    # Record gradients at the optimizer step by wrapping clip_grad_norm_ (called right after backward).
    original = torch.nn.utils.clip_grad_norm_

    def record(params, *args, **kwargs):
        for n, p in model.model.named_parameters():
            captured[n] = captured.get(n, False) or (p.grad is not None and bool(p.grad.abs().sum() > 0))
        return original(params, *args, **kwargs)

    torch.nn.utils.clip_grad_norm_ = record
    try:
        trainer.fit(synthetic_examples(16, seed=1))  # two steps: LoRA's A gets a gradient once B moved
    finally:
        torch.nn.utils.clip_grad_norm_ = original

    names = set(trainable.names)
    for n, p in model.model.named_parameters():
        changed = not torch.equal(p.detach(), before[n]) if n in before else True
        if n in names:
            assert captured[n], f"{n} should get a gradient in {mode} mode"
        else:
            assert not captured[n], f"{n} must not get a gradient in {mode} mode"
            assert not changed, f"{n} changed in {mode} mode"
    if mode == "full":
        assert names == {n for n, _ in model.model.named_parameters()}
    elif mode == "attention":
        assert names and all(_is_attention(n) or _is_head(n) for n in names)
        assert any(_is_attention(n) for n in names) and any(_is_head(n) for n in names)
    else:
        assert names and all(".lora_" in n or _is_head(n) for n in names)
        assert all(_is_attention(n.split(".lora_")[0]) for n in names if ".lora_" in n)


def test_parameter_counts_shrink_from_full_to_attention_to_lora() -> None:
    counts = {mode: prepare(tiny_model().model, mode).count for mode in ("full", "attention", "lora")}
    assert counts["full"] > counts["attention"] > counts["lora"] > 0


def test_lora_merges_into_a_plain_checkpoint_with_the_same_outputs(tmp_path: Path) -> None:
    model = tiny_model(seed=2)
    plain_names = [n for n, _ in model.model.named_parameters()]
    prepare(model.model, "lora", lora_r=4)
    with torch.no_grad():
        for n, p in model.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)  # a trained adapter
    model.model.eval()
    enc = model.encode(["Acme soars on record profit", "Globex files notice"])
    with torch.no_grad():
        adapted = model.model(**enc).logits
    merge_lora(model.model)
    assert not is_lora(model.model)
    assert [n for n, _ in model.model.named_parameters()] == plain_names
    with torch.no_grad():
        merged = model.model(**enc).logits
    assert torch.allclose(adapted, merged, atol=1e-5)
    model.save(tmp_path / "m")
    loaded = SentimentModel.load(tmp_path / "m", version="m", device="cpu", new_head=False)
    assert not is_lora(loaded.model)  # a plain Hugging Face checkpoint: no peft needed to serve it
    with torch.no_grad():
        assert torch.allclose(loaded.model(**enc).logits, merged, atol=1e-5)


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


def test_trained_names_cover_what_a_mode_trains() -> None:
    """What the Fisher of a round covers: the weights its mode changes, under their plain names."""
    model = tiny_model()
    attention = trained_names(model.model, "attention")
    lora = trained_names(model.model, "lora")
    assert "classifier.weight" in attention and "bert.pooler.dense.weight" in attention
    assert "bert.encoder.layer.0.attention.self.key.bias" in attention
    assert "bert.encoder.layer.0.attention.self.key.bias" not in lora  # LoRA adapts weights only
    assert not any("intermediate" in n or "embeddings" in n for n in attention)
    assert set(trained_names(model.model, "full")) == {n for n, _ in model.model.named_parameters()}
