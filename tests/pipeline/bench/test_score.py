"""``aet bench score`` produces a complete, internally consistent report (on a tiny champion: the numbers are not
the point here, the report's shape and arithmetic are)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aet.pipeline.bench.score import score_benchmark, sustained_rate
from aet.pipeline.config import load_settings
from aet.pipeline.runtime import App
from tests.conftest import EXAMPLES
from tests.pipeline.tiny_model import register_tiny


@pytest.mark.slow
def test_score_benchmark_reports_every_option_the_baselines_and_the_loop(tmp_path: Path) -> None:
    app = App(load_settings(home=tmp_path / "home", model={"device": "cpu", "max_length": 32}))
    try:
        register_tiny(app)
        report = score_benchmark(
            app, data=EXAMPLES / "stream.jsonl", n=40, out=tmp_path, bootstrap_data=None, quick=True
        )
    finally:
        app.close()
    options = report["options"]
    assert {"float32", "int8", f"{report['default']['precision']}+cache"} <= set(options)
    for result in options.values():
        assert result["throughput"]["messages"] == 40 and result["throughput"]["messages_per_s"] > 0
        assert result["latency_at_half_load"]["p99_ms"] >= result["latency_at_half_load"]["p50_ms"] > 0
    assert options["float32"]["throughput"]["cache_hit_rate"] == 0.0  # cache off: every message scored
    results = report["results"]
    expected = results["scorer_worker"]["messages_per_s"] / results["hf_pipeline_batch1"]["messages_per_s"]
    assert report["ratio_scorer_vs_pipeline_batch1"] == pytest.approx(expected)
    assert report["loop_vs_scorer"] == pytest.approx(
        results["embedded_loop"]["messages_per_s"] / results["scorer_worker"]["messages_per_s"]
    )
    default = report["default"]["precision"]
    assert default in ("float32", "bf16") and report["default"]["option"] == f"{default}+cache"
    assert report["environment"]["cpu"]["model"] and report["threads"]["torch_intra_op"] >= 1
    assert report["compute"]["gflop_per_message"] > 0
    if report["macro_f1_delta_points"] is not None:  # the shared data is there
        f1 = {name: options[name]["quality"]["mean_macro_f1"] for name in ("float32", default)}
        assert report["macro_f1_delta_points"] == pytest.approx(100 * (f1[default] - f1["float32"]), abs=0.01)
        assert options["float32"]["quality"]["mean_agreement"] == 1.0
    assert json.loads((tmp_path / "score.json").read_text())["messages"] == 40


def test_sustained_rate_leaves_out_start_up_and_the_first_batch() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    # Three batches of 10, scored 1 s apart (a few microseconds between the scores of one batch).
    stamps = [start + timedelta(seconds=b, microseconds=i) for b in range(3) for i in range(10)]
    assert sustained_rate(stamps) == pytest.approx(20 / 2.000009, rel=1e-6)
    assert sustained_rate(stamps[:10]) is None  # one batch: nothing to time it against
