"""Tiny synthetic corpora and scenarios for the benchmark tests (no real data needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aet.pipeline.bench.scenario import Scenario
from aet.pipeline.records import LABELS


def write_corpus(root: Path, name: str, n: int, *, split: bool = False, source: str = "news") -> None:
    folder = root / name
    folder.mkdir(parents=True)
    with open(folder / f"{name}.jsonl", "w") as f:
        for i in range(n):
            row = {"id": f"{name}:{i}", "text": f"{name} text number {i}", "label": LABELS[i % 3], "source": source}
            if split:
                row["split"] = "test" if i % 5 == 0 else "train"
            f.write(json.dumps(row) + "\n")


def scenario(**kw: Any) -> Scenario:
    base = {
        "name": "t",
        "seed": 3,
        "bootstrap": 100,
        "label_fraction": 0.5,
        "label_delay": 7,
        "n_test": 50,
        "phases": [
            {"name": "A", "corpus": "news_corpus", "n": 120},
            {"name": "B", "corpus": "chat_corpus", "n": 150},
            {"name": "A2", "corpus": "news_corpus", "n": 80},
        ],
    }
    base.update(kw)
    return Scenario.model_validate(base)
