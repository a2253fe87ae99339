"""The labeled corpora of ``../shared/data``: where they are, how they load, how they split.

Splits never leak: a corpus's own test/valid split when it has one (and it is
asked for), else a stable hash of the text, and texts that occur in the test
part (up to case and spacing) are removed from the train part. Some corpora
share texts (``TWINS``, see the shared data README): never train on one and
test on its twin.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aet.pipeline.bench.data import shared_data_dir
from aet.pipeline.learning.examples import Example
from aet.pipeline.learning.rehearsal import is_holdout, text_key, uniform
from aet.pipeline.records import LABELS

TEST_SPLITS = ("test", "valid", "val", "validation")
# Corpora that share texts (see ../shared/data/README.md): never train on one and test on the other.
TWINS = [{"fiqa2018_task1", "semeval2017_task5_headlines"}, {"fiqa2018_task1", "semeval2017_task5_microblogs"}]
OLD_HOLDOUT = 0.2


def corpus_path(name: str, data_dir: Path | None = None) -> Path:
    root = data_dir or shared_data_dir()
    if root is None:
        raise FileNotFoundError("no shared data: set AET_SHARED_DATA or run from a checkout next to ../shared/data")
    path = Path(root) / name / f"{name}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"corpus {name} not found at {path}")
    return path


def load_corpus(path: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").split("\n") if line.strip()]
    return [r for r in rows if r.get("label") in LABELS and isinstance(r.get("text"), str) and r["text"].strip()]


def example(r: dict[str, Any]) -> Example:
    return Example(text=r["text"], label=LABELS.index(r["label"]), source=r.get("source", "news"), id=str(r["id"]))


def split_corpus(
    rows: Sequence[dict[str, Any]], use_given_split: bool, salt: str | None = None
) -> tuple[list[Example], list[Example], str]:
    """(train, test, how): the corpus's own test/valid split when asked and present, else a stable hash split.

    The hash split is the trainer's held-out hash (:func:`aet.pipeline.learning.rehearsal.is_holdout`)
    unless ``salt`` names another one. A benchmark that feeds a corpus's train part to the
    trainer must pass a salt: with the same hash, none of those texts would fall in the
    trainer's held-out share, and its gate would find no older examples to check forgetting on.
    Texts that occur in the test part (up to case and spacing) are removed from the train part.
    """

    def held_out(text: str) -> bool:
        return is_holdout(text, OLD_HOLDOUT) if salt is None else uniform(salt, text_key(text)) < OLD_HOLDOUT

    given = use_given_split and any(r.get("split") in TEST_SPLITS for r in rows)
    if given:
        test = [example(r) for r in rows if r.get("split") in TEST_SPLITS]
        train = [example(r) for r in rows if r.get("split") not in TEST_SPLITS]
        how = "the corpus's own test/valid split"
    else:
        test = [example(r) for r in rows if held_out(r["text"])]
        train = [example(r) for r in rows if not held_out(r["text"])]
        how = f"stable text-hash split, {OLD_HOLDOUT:.0%} held out" + (f" (salt {salt!r})" if salt else "")
    held = {text_key(e.text) for e in test}
    train = [e for e in train if text_key(e.text) not in held]
    return train, test, how


def subsample(examples: Sequence[Example], n: int | None, seed: int) -> list[Example]:
    if n is None or n >= len(examples):
        return list(examples)
    return random.Random(seed).sample(list(examples), n)
