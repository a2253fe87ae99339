"""The sentiment model wrapper: loading rules, label order, probabilities, clear load errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from aet.pipeline.model import (
    ModelLoadError,
    SentimentModel,
    cpu_has_bf16,
    resolve_backbone,
    sentiment_label_order,
    serving_precision,
)
from aet.pipeline.records import LABELS
from tests.pipeline.tiny_model import tiny_model

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


# -- serving precision -----------------------------------------------------------


def test_serving_precision_auto_is_bf16_where_the_hardware_has_it_and_int8_stays_on_cpu() -> None:
    assert serving_precision("auto", torch.device("cpu"), bf16_cpu=False) == "float32"
    assert serving_precision("auto", torch.device("cpu"), bf16_cpu=True) == "bf16"
    assert serving_precision("auto", torch.device("cuda")) == "bf16"
    assert serving_precision("float32", torch.device("cpu"), bf16_cpu=True) == "float32"
    assert serving_precision("int8", torch.device("cpu")) == "int8"
    with pytest.raises(ValueError, match="CPU only"):
        serving_precision("int8", torch.device("cuda"))
    with pytest.raises(ValueError, match="must be one of"):
        serving_precision("fp8", torch.device("cpu"))


def test_int8_quantizes_the_encoder_keeps_head_and_pooler_float32_and_keeps_the_outputs() -> None:
    float32 = tiny_model(0)
    int8 = float32.converted("int8")
    assert (int8.precision, float32.precision) == ("int8", "float32")
    quantized = [n for n, m in int8.model.named_modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert quantized and all(n.startswith("bert.encoder.") for n in quantized)
    assert type(int8.model.classifier) is torch.nn.Linear and type(int8.model.bert.pooler.dense) is torch.nn.Linear
    assert type(float32.model.bert.encoder.layer[0].output.dense) is torch.nn.Linear  # the original is untouched
    got, want = int8.predict(TEXTS, features=True), float32.predict(TEXTS, features=True)
    assert np.allclose(got.probs, want.probs, atol=0.02)
    assert got.features is not None and got.features.shape == want.features.shape  # type: ignore[union-attr]
    assert int8.own_head().weight.shape == float32.own_head().weight.shape  # the fast path's prior still reads
    with pytest.raises(ValueError, match="never saved"):
        int8.save(Path("unused"))
    with pytest.raises(ValueError, match="from the float32 model"):
        int8.converted("bf16")


def test_bf16_serves_distributions_close_to_float32() -> None:
    float32 = tiny_model(0)
    bf16 = float32.converted("bf16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    probs = bf16.predict_proba(TEXTS)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-3)
    assert np.allclose(probs, float32.predict_proba(TEXTS), atol=0.02)


def test_bf16_instructions_are_read_from_the_cpu_flags(tmp_path: Path) -> None:
    with_bf16, without = tmp_path / "a", tmp_path / "b"
    with_bf16.write_text("flags\t: fpu avx512f avx512_bf16 avx512_vnni\n")
    without.write_text("flags\t: fpu avx512f avx512_vnni\n")
    assert cpu_has_bf16(with_bf16) and not cpu_has_bf16(without) and not cpu_has_bf16(tmp_path / "missing")
