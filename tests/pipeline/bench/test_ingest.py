"""``aet bench ingest`` on a tiny run: every stage publishes what it was given and the report has the issue's keys."""

from __future__ import annotations

from pathlib import Path

from aet.pipeline.bench.ingest import run
from aet.pipeline.cli.bench import ingest_edges
from aet.pipeline.config import Settings


def test_tiny_ingest_benchmark_reports_every_rate(settings: Settings, tmp_path: Path) -> None:
    report = run(
        settings, ingest_edges(), batched=60, batch=20, single=10, feeds=2, items=15, file_msgs=40, out=tmp_path
    )
    for key in ("http_batch_msgs_per_s", "http_single_msgs_per_s", "rss_items_per_s", "file_msgs_per_s", "http_p99_ms"):
        assert report[key] > 0, key
    assert report["rss_items"] == 30 and report["file_msgs"] == 40
    assert report["environment"]["cpu"]["model"]
    assert report["http_batch_vs_scorer"].startswith("to be measured")
    assert (tmp_path / "ingest.json").is_file()
