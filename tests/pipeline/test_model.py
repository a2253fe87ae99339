"""The sentiment model wrapper: loading rules, label order, probabilities, clear load errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from aet.pipeline.model import ModelLoadError, SentimentModel, resolve_backbone, sentiment_label_order
from aet.pipeline.records import LABELS

TEXTS = [
    "Shares of $AAPL fell 5% after weak guidance",
    "Board meeting scheduled for Tuesday",
    "Record quarterly profit, dividend raised",
    "ok",
]


@pytest.fixture(scope="module")
def fresh_model() -> SentimentModel:
    torch.manual_seed(0)
    return SentimentModel.load("minilm", version="test", new_head=True, device="cpu")


def test_bare_encoder_gets_a_three_label_head(fresh_model: SentimentModel) -> None:
    assert fresh_model.model.config.num_labels == 3
    assert [fresh_model.model.config.id2label[i] for i in range(3)] == list(LABELS)


def test_predict_proba_returns_distributions_in_input_order(fresh_model: SentimentModel) -> None:
    probs = fresh_model.predict_proba(TEXTS)
    assert probs.shape == (len(TEXTS), 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    one_by_one = np.stack([fresh_model.predict_proba([t])[0] for t in TEXTS])
    np.testing.assert_allclose(probs, one_by_one, atol=1e-5)


def test_predict_proba_on_empty_batch(fresh_model: SentimentModel) -> None:
    assert fresh_model.predict_proba([]).shape == (0, 3)


def test_predict_runs_without_autograd(fresh_model: SentimentModel) -> None:
    captured = []
    handle = fresh_model.model.register_forward_hook(
        lambda _m, _i, out: captured.append(torch.is_inference_mode_enabled())
    )
    try:
        fresh_model.predict_proba(TEXTS[:1])
    finally:
        handle.remove()
    assert captured == [True]


def test_checkpoint_with_other_label_order_is_reordered(fresh_model: SentimentModel, tmp_path: Path) -> None:
    """A FinBERT-style head (positive, negative, neutral) reads as negative, neutral, positive."""
    expected = fresh_model.predict_proba(TEXTS)
    fresh_model.save(tmp_path / "canonical")
    other = SentimentModel.load(tmp_path / "canonical", version="x", new_head=False, device="cpu")
    head = other.model.classifier
    perm = [2, 0, 1]  # new row i holds the old row of label perm[i]: positive, negative, neutral
    with torch.no_grad():
        head.weight.copy_(head.weight[perm].clone())
        head.bias.copy_(head.bias[perm].clone())
    other.model.config.id2label = {0: "Positive", 1: "NEGATIVE", 2: "neutral"}
    other.model.config.label2id = {v: k for k, v in other.model.config.id2label.items()}
    other.save(tmp_path / "finbert-order")
    loaded = SentimentModel.load(tmp_path / "finbert-order", version="y", device="cpu")
    np.testing.assert_allclose(loaded.predict_proba(TEXTS), expected, atol=1e-5)
    assert [loaded.model.config.id2label[i] for i in range(3)] == list(LABELS)


def test_sentiment_label_order() -> None:
    assert sentiment_label_order({0: "positive", 1: "negative", 2: "neutral"}) == [1, 2, 0]
    assert sentiment_label_order({0: "LABEL_0", 1: "LABEL_1"}) is None


def test_missing_directory_error_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match=str(missing)):
        SentimentModel.load(missing, version="x")


def test_directory_without_config_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"config\.json"):
        SentimentModel.load(tmp_path / "empty", version="x")


def test_pickled_weights_are_refused(tmp_path: Path) -> None:
    src = Path(resolve_backbone("minilm"))
    target = tmp_path / "pickled"
    target.mkdir()
    shutil.copy(src / "config.json", target / "config.json")
    (target / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ModelLoadError, match="pickled weights"):
        SentimentModel.load(target, version="x")


def test_corrupt_weights_error_names_the_path(tmp_path: Path) -> None:
    src = Path(resolve_backbone("minilm"))
    target = tmp_path / "corrupt"
    shutil.copytree(src, target)
    data = (target / "model.safetensors").read_bytes()
    (target / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelLoadError, match=str(target)):
        SentimentModel.load(target, version="x")


def test_save_writes_safetensors_only(fresh_model: SentimentModel, tmp_path: Path) -> None:
    fresh_model.save(tmp_path / "out")
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert "model.safetensors" in names and "config.json" in names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
