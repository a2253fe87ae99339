"""``aet bench score`` produces a complete, internally consistent report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aet.pipeline.bench.score import score_benchmark
from tests.conftest import EXAMPLES


@pytest.mark.slow
def test_score_benchmark_reports_every_configuration(app_with_champion, tmp_path: Path) -> None:
    report = score_benchmark(app_with_champion, data=EXAMPLES / "stream.jsonl", n=64, out=tmp_path, bootstrap_data=None)
    results = report["results"]
    assert set(results) == {"scorer_worker", "hf_pipeline_batch1", "hf_pipeline_batch32"}
    assert all(r["messages"] == 64 and r["messages_per_s"] > 0 for r in results.values())
    expected = results["scorer_worker"]["messages_per_s"] / results["hf_pipeline_batch1"]["messages_per_s"]
    assert report["ratio_scorer_vs_pipeline_batch1"] == pytest.approx(expected)
    assert json.loads((tmp_path / "score.json").read_text())["model_version"] == "v0001"
