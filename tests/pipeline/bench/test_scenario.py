"""Scenarios: loading, the quick variant, and streams that never leak test or bootstrap data."""

from __future__ import annotations

from pathlib import Path

import pytest

from aet.pipeline.bench.scenario import build_stream, load_scenario
from tests.pipeline.bench.scenario_fakes import scenario


def test_the_shipped_scenarios_load_and_their_quick_variants_shrink() -> None:
    for name in ("news-tweets", "news-chat", "news-tweets-chat-news"):
        s = load_scenario(name)
        q = s.quick_variant()
        assert len(q.phases) == len(s.phases) and sum(p.n for p in q.phases) < sum(p.n for p in s.phases)
        assert q.quick == {} and q.name.endswith("(quick)")
    with pytest.raises(FileNotFoundError, match="news-tweets"):
        load_scenario("no-such-scenario")


def test_twin_corpora_are_refused() -> None:
    with pytest.raises(ValueError, match="share texts"):
        scenario(
            phases=[
                {"name": "A", "corpus": "fiqa2018_task1", "n": 10},
                {"name": "B", "corpus": "semeval2017_task5_headlines", "n": 10},
            ]
        )


def test_a_stream_never_leaks_bootstrap_or_test_texts_and_is_seeded(data: Path) -> None:
    s = scenario()
    stream = build_stream(s, data)
    texts = [it.message.text for it in stream.items]
    boot = {e.text for e in stream.bootstrap}
    tests = {e.text for examples in stream.tests.values() for e in examples}
    assert len(texts) == len(set(texts)) == 350  # phases A and A2 draw different rows of one corpus
    assert not boot & set(texts) and not tests & set(texts) and not tests & boot
    assert all(e.text.startswith("news_corpus") for e in stream.bootstrap)  # first phase's corpus only
    assert stream.phase_bounds == [(0, 120), (120, 270), (270, 350)]
    assert [it.message.ts for it in stream.items] == sorted(it.message.ts for it in stream.items)
    again = build_stream(s, data)
    assert [(it.message.id, it.labeled) for it in again.items] == [(it.message.id, it.labeled) for it in stream.items]
    assert {it.message.source for it in stream.items[120:270]} == {"chat"}
    assert {it.message.source for it in build_stream(scenario(source="news"), data).items} == {"news"}


def test_every_label_arrives_once_and_after_its_message(data: Path) -> None:
    stream = build_stream(scenario(chunk=16), data)
    seen: list[int] = []
    for start in range(0, len(stream.items), 16):
        end = min(start + 16, len(stream.items))
        for it in stream.labels_due(start, end):
            assert it.index < end - stream.scenario.label_delay + 1
            seen.append(it.index)
    seen += [it.index for it in stream.label_tail()]
    assert sorted(seen) == [it.index for it in stream.items if it.labeled]


def test_a_phase_asking_for_more_than_its_corpus_has_is_refused(data: Path) -> None:
    with pytest.raises(ValueError, match="unused train messages"):
        build_stream(scenario(phases=[{"name": "A", "corpus": "chat_corpus", "n": 10_000}]), data)
