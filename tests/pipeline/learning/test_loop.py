"""Supervised training: data checks, seeded splits, the training loop and its extension point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from aet.pipeline.config import TrainSettings
from aet.pipeline.learning.loop import (
    Example,
    Trainer,
    TrainingDataError,
    check_trainable,
    evaluate,
    load_examples,
    stratified_split,
)
from aet.pipeline.model import SentimentModel
from tests.conftest import EXAMPLES


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_load_examples_skips_unlabeled_rows(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"text": "up", "label": "positive", "source": "chat"},
            {"text": "no label here"},
            {"text": "down", "label": "negative"},
        ],
    )
    examples = load_examples(path)
    assert [(e.text, e.label, e.source) for e in examples] == [("up", 2, "chat"), ("down", 0, "news")]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": "x", "label": "bullish"}', "line 1: unknown label 'bullish'"),
        ("not json", "line 1: not JSON"),
        ('{"text": "  ", "label": "neutral"}', "line 1: no text"),
    ],
)
def test_load_examples_names_the_bad_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(TrainingDataError, match=message):
        load_examples(path)


def test_load_examples_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TrainingDataError, match="not found"):
        load_examples(tmp_path / "nope.jsonl")


def test_check_trainable_refuses_too_few_and_single_class() -> None:
    with pytest.raises(TrainingDataError, match="only 3 labeled examples"):
        check_trainable([Example("a", 0), Example("b", 1), Example("c", 2)])
    with pytest.raises(TrainingDataError, match="all labeled examples have the label 'neutral'"):
        check_trainable([Example(str(i), 1) for i in range(40)])


def test_stratified_split_is_seeded_and_keeps_class_shares() -> None:
    examples = [Example(f"t{i}", i % 3) for i in range(300)]
    train_a, val_a = stratified_split(examples, 0.2, seed=1)
    train_b, val_b = stratified_split(examples, 0.2, seed=1)
    _, val_c = stratified_split(examples, 0.2, seed=2)
    assert (train_a, val_a) == (train_b, val_b)
    assert val_a != val_c
    assert len(val_a) == 60 and {c: sum(e.label == c for e in val_a) for c in range(3)} == {0: 20, 1: 20, 2: 20}
    assert not {e.text for e in train_a} & {e.text for e in val_a}


@pytest.fixture(scope="module")
def small_data() -> list[Example]:
    return load_examples(EXAMPLES / "train.jsonl")[:48]


def _train_once(data: list[Example], extra: list = ()) -> tuple[SentimentModel, list[dict]]:
    torch.manual_seed(0)
    model = SentimentModel.load("minilm", version="t", new_head=True, device="cpu")
    result = Trainer(model, TrainSettings(epochs=1, batch_size=16, seed=3), loss_terms=extra, progress=False).fit(data)
    return model, result.history


@pytest.mark.slow
def test_training_is_deterministic_for_a_seed(small_data: list[Example]) -> None:
    a, _ = _train_once(small_data)
    b, _ = _train_once(small_data)
    for (name, pa), (_, pb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(pa, pb), name


@pytest.mark.slow
def test_extra_loss_terms_are_added_to_the_objective(small_data: list[Example]) -> None:
    _, plain = _train_once(small_data)
    constant = ("constant", lambda model, enc, labels: torch.tensor(5.0))
    _, with_term = _train_once(small_data, [constant])
    assert with_term[0]["train_loss"] == pytest.approx(plain[0]["train_loss"] + 5.0, abs=1e-4)


@pytest.mark.slow
def test_bootstrapped_champion_beats_an_untrained_head(champion_artifact: dict[str, str]) -> None:
    """The session champion (trained on examples/train.jsonl) is measured on the unseen stream file."""
    stream = load_examples(EXAMPLES / "stream.jsonl")
    champion = SentimentModel.load(champion_artifact["artifact_path"], version="c", device="cpu")
    torch.manual_seed(0)
    untrained = SentimentModel.load("minilm", version="u", new_head=True, device="cpu")
    trained_f1 = evaluate(champion, stream)["macro_f1"]
    untrained_f1 = evaluate(untrained, stream)["macro_f1"]
    assert trained_f1 > 0.6, trained_f1
    assert trained_f1 > untrained_f1 + 0.2, (trained_f1, untrained_f1)
