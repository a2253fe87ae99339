"""``aet bench swap`` end to end on the session champion, with a short timeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aet.pipeline.bench.swap import swap_benchmark
from tests.conftest import EXAMPLES


def test_swap_bench_measures_every_swap_and_scores_each_message_once(app_with_champion: Any, tmp_path: Path) -> None:
    report = swap_benchmark(
        app_with_champion, rate=20, steady_s=4, swaps=2, every_s=4, data=EXAMPLES / "stream.jsonl", out=tmp_path
    )
    assert report["swaps_applied"] == 2
    assert [(s["kind"], s["to"]) for s in report["swaps"]] == [("promotion", "v0002"), ("rollback", "v0001")]
    assert all(
        s["seconds_to_first_new_score"] is not None and s["seconds_to_first_new_score"] > 0 for s in report["swaps"]
    )
    assert report["messages"]["exactly_once"] and report["messages"]["published"] >= 150
    assert report["latency_steady"]["n"] > 0 and report["latency_around_swaps"]["n"] > 0
    written = json.loads((tmp_path / "swap.json").read_text())
    assert written["seconds_to_first_new_score"] == report["seconds_to_first_new_score"]
    assert "timeline" not in written
    assert app_with_champion.registry.champion().version == "v0001"  # the bench's registry is its own
