"""Benchmark messages: the first rows of a corpus, never repeated unless the corpus repeats them."""

from __future__ import annotations

import json
from pathlib import Path

from aet.pipeline.bench.data import load_texts


def write_rows(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def test_rows_never_repeat_when_more_are_asked_than_the_file_holds(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "s.jsonl", [f"text {i}" for i in range(5)])
    rows, source = load_texts(data, 12)
    assert [r["text"] for r in rows] == [f"text {i}" for i in range(5)] and source == str(data)
    assert [r["text"] for r in load_texts(data, 3)[0]] == ["text 0", "text 1", "text 2"]


def test_a_repeat_in_the_corpus_is_kept_and_cycling_is_explicit(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "s.jsonl", ["a", "b", "a"])
    assert [r["text"] for r in load_texts(data, 10)[0]] == ["a", "b", "a"]
    assert [r["text"] for r in load_texts(data, 5, cycle=True)[0]] == ["a", "b", "a", "a", "b"]
