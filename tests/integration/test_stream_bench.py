"""The replay benchmark's quick run: the whole loop on real corpora, static and river beside it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aet.pipeline.bench.scenario import load_scenario
from aet.pipeline.bench.stream import stream_benchmark
from tests.conftest import SHARED_DATA, shared_corpus

pytestmark = pytest.mark.slow


def test_quick_news_to_chat_loop_detects_retrains_swaps_and_beats_static(tmp_path: Path) -> None:
    shared_corpus("financial_phrasebank")
    shared_corpus("stockemotions")
    scenario = load_scenario("news-chat").quick_variant()
    report = stream_benchmark(scenario, data_dir=SHARED_DATA, out=tmp_path, progress=False)

    aet, static = report["results"]["aet"], report["results"]["static"]
    assert report["data"]["messages"] == 900 and set(report["results"]) == {"static", "river", "aet"}
    assert aet["drift"]["events"], "no drift event"
    assert aet["drift"]["delay_messages"]["B"] is not None, "the switch to chat was not detected"
    assert aet["retrains"] >= 1 and aet["train_seconds"] > 0
    assert aet["swaps"], "no promoted model reached the scorer"
    assert {m["version"] for m in aet["models"]} >= {"v0001", "v0002"}
    assert aet["post_drift"]["macro_f1"] > static["post_drift"]["macro_f1"]
    assert static["retrains"] == 0 and static["forgetting"]["change_points"] == 0
    for phase in aet["phases"]:
        assert phase["labeled"] > 0
    written = json.loads((tmp_path / "stream.json").read_text())
    assert written["results"]["aet"]["post_drift"] == aet["post_drift"] and written["curves"]["aet"]
    assert (tmp_path / "stream.png").stat().st_size > 0
