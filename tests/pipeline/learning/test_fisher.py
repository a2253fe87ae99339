"""The diagonal Fisher: its estimate, its online merge across rounds, and its file next to the model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aet.pipeline.learning.fisher import (
    FISHER_FILE,
    estimate_fisher,
    fisher_info,
    load_fisher,
    merge_fisher,
    save_fisher,
)
from aet.pipeline.learning.trainable import trained_names
from tests.pipeline.tiny_model import synthetic_examples, tiny_model


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
        for n, g in zip(names, grads, strict=True):
            expected[n] += g.pow(2) / len(examples)
    for n in names:
        assert torch.allclose(fisher[n], expected[n], rtol=1e-4, atol=1e-12), n
        assert fisher[n].sum() > 0
    assert all(p.requires_grad for p in model.model.parameters())  # flags restored


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
