"""Labeled examples: reading JSONL, refusing untrainable data, seeded stratified splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aet.pipeline.learning.examples import (
    Example,
    TrainingDataError,
    check_trainable,
    load_examples,
    stratified_split,
)


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
