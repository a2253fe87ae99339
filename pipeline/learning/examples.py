"""Labeled examples: reading them, refusing data that cannot train a classifier, and seeded stratified splits.

The bootstrap, the trainer role and the benchmarks all train on
:class:`Example` rows; the checks here are why a bad file is a rejection that
names the line instead of a model trained on a silent subset.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aet.pipeline.records import LABELS


class TrainingDataError(ValueError):
    """Training data that cannot train a 3-way classifier (missing, unreadable, too few, one class)."""


@dataclass(frozen=True)
class Example:
    """One labeled text."""

    text: str
    label: int
    source: str = "news"
    id: str = ""


def load_examples(path: Path) -> list[Example]:
    """Read labeled rows (``text``, ``label``; optional ``source``, ``id``) from a JSONL file.

    Unlabeled rows are skipped; a row with an unknown label or no text is an
    error naming the line, since silently training on a subset would hide it.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingDataError(f"training data not found: {path}")
    out: list[Example] = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TrainingDataError(f"{path} line {i}: not JSON ({exc})") from exc
            label = row.get("label")
            if label in (None, ""):
                continue
            if label not in LABELS:
                raise TrainingDataError(f"{path} line {i}: unknown label {label!r} (expected one of {LABELS})")
            text = row.get("text")
            if not isinstance(text, str) or not text.strip():
                raise TrainingDataError(f"{path} line {i}: no text")
            out.append(
                Example(
                    text=text, label=LABELS.index(label), source=row.get("source", "news"), id=str(row.get("id", i))
                )
            )
    return out


def check_trainable(examples: Sequence[Example], minimum: int = 16) -> None:
    """Refuse data that cannot train a meaningful classifier, saying why."""
    if len(examples) < minimum:
        raise TrainingDataError(f"only {len(examples)} labeled examples; at least {minimum} are needed")
    classes = {e.label for e in examples}
    if len(classes) < 2:
        raise TrainingDataError(
            f"all labeled examples have the label {LABELS[classes.pop()]!r}; need at least two classes"
        )


def stratified_split(examples: Sequence[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Split into (train, validation) keeping each class's share, deterministically for a seed."""
    rng = random.Random(seed)
    train, val = [], []
    for c in range(len(LABELS)):
        group = [e for e in examples if e.label == c]
        rng.shuffle(group)
        k = round(len(group) * fraction)
        val.extend(group[:k])
        train.extend(group[k:])
    rng.shuffle(train)
    return train, val
