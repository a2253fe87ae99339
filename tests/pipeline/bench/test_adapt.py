"""``aet bench adapt`` data handling (fast) and the real-model checks (slow): MiniLM rounds and the GPU-check script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aet.pipeline.bench.adapt import CONFIGS, _objective, _targets, adapt_benchmark, gpu_train_benchmark
from aet.pipeline.bench.corpora import split_corpus
from aet.pipeline.learning.rehearsal import text_key
from tests.conftest import EXAMPLES


def _rows(n: int, split: str | None = None, dup_every: int = 0) -> list[dict]:
    rows = []
    for i in range(n):
        text = f"Headline {i % dup_every if dup_every else i} about Acme"
        row = {"id": f"c:{i}", "text": text, "label": ("negative", "neutral", "positive")[i % 3], "source": "news"}
        if split:
            row["split"] = split if i % 5 == 0 else "train"
        rows.append(row)
    return rows


def test_hash_split_never_shares_a_text_between_train_and_test() -> None:
    train, test, how = split_corpus(_rows(600, dup_every=150), use_given_split=False)
    assert "hash" in how and train and test
    assert not {text_key(e.text) for e in train} & {text_key(e.text) for e in test}


def test_a_given_test_split_is_used_and_its_texts_are_removed_from_train() -> None:
    rows = _rows(500, split="valid")
    rows.append({"id": "c:dup", "text": rows[0]["text"], "label": "neutral", "source": "news", "split": "train"})
    train, test, how = split_corpus(rows, use_given_split=True)
    assert "own test/valid split" in how and len(test) == 100
    assert rows[0]["text"] not in {e.text for e in train}


def test_twin_corpora_are_refused() -> None:
    with pytest.raises(ValueError, match="share texts"):
        adapt_benchmark(old="fiqa2018_task1", new="semeval2017_task5_headlines", out=Path("/nonexistent"))


def test_objectives_of_the_ablation() -> None:
    described = {c: _objective(c, 2.0, 3.0).describe() for c in CONFIGS}
    assert described == {
        "plain": "ce",
        "replay": "ce+rehearsal",
        "ewc": "ce+ewc(2)",
        "att": "ce+att(3)",
        "aet": "ce+rehearsal+ewc(2)+att(3)",
    }


def test_targets_are_checked_per_mode() -> None:
    champ = {"new_f1": 0.60, "old_f1": 0.80}
    results = [
        {"mode": "lora", "config": "plain", "new_gain": 0.15, "old_drop": 0.10, "round_seconds": 50.0},
        {"mode": "lora", "config": "aet", "new_gain": 0.12, "old_drop": 0.04, "round_seconds": 55.0},
    ]
    t = _targets(champ, results)["lora"]
    assert t["new_gain_at_least_10_points"] and t["old_loss_at_most_half_of_plain"] and t["round_under_60s"]
    results[1]["old_drop"] = 0.06
    assert not _targets(champ, results)["lora"]["old_loss_at_most_half_of_plain"]


@pytest.mark.slow
def test_gpu_check_runs_in_float32_on_the_cpu(tmp_path: Path) -> None:
    report = gpu_train_benchmark(
        data=EXAMPLES / "train.jsonl", n=32, mode="lora", device="cpu", out=tmp_path, progress=False
    )
    assert report["device"] == "cpu" and report["precision"] == "float32"
    assert report["samples_per_s"] > 0 and report["peak_memory"]["process_peak_rss_mib"] > 0
    assert report["examples"]["recent"] == 32 and report["trainable_parameters"] > 0
    assert json.loads((tmp_path / "gpu-train.json").read_text())["benchmark"] == "gpu-train"
