"""The score cache: keyed by version, source and whitespace-normalized text, bounded, least recently used out."""

from __future__ import annotations

import pytest

from aet.pipeline.score_cache import ScoreCache, normalize_text


def test_whitespace_is_normalized_but_case_and_words_are_not() -> None:
    assert normalize_text("  Acme  beats\n estimates\t") == "Acme beats estimates"
    assert ScoreCache.key("v1", "news", "Acme  beats") == ScoreCache.key("v1", "news", " Acme beats ")
    assert ScoreCache.key("v1", "news", "Acme beats") != ScoreCache.key("v1", "news", "acme beats")


def test_a_score_is_found_only_under_its_version_and_source() -> None:
    cache: ScoreCache[str] = ScoreCache(10)
    cache.put(ScoreCache.key("v1", "news", "Acme beats"), "row")
    assert cache.get(ScoreCache.key("v1", "news", "Acme  beats")) == "row"
    assert cache.get(ScoreCache.key("v2", "news", "Acme beats")) is None  # another model version
    assert cache.get(ScoreCache.key("v1", "chat", "Acme beats")) is None  # another source (its own head)
    assert (cache.stats.hits, cache.stats.misses) == (1, 2)
    assert cache.stats.hit_rate == pytest.approx(1 / 3)


def test_the_cache_is_bounded_and_drops_the_least_recently_used() -> None:
    cache: ScoreCache[int] = ScoreCache(3)
    for i in range(3):
        cache.put(("v1", "news", f"t{i}"), i)
    assert cache.get(("v1", "news", "t0")) == 0  # t0 is now the most recently used
    cache.put(("v1", "news", "t3"), 3)
    assert len(cache) == 3
    assert cache.get(("v1", "news", "t1")) is None  # the least recently used went first
    assert [cache.get(("v1", "news", f"t{i}")) for i in (0, 2, 3)] == [0, 2, 3]
    for i in range(100):
        cache.put(("v1", "news", f"x{i}"), i)
    assert len(cache) == 3


def test_size_zero_disables_the_cache_and_negative_sizes_are_refused() -> None:
    cache: ScoreCache[int] = ScoreCache(0)
    cache.put(("v1", "news", "t"), 1)
    assert not cache.enabled and len(cache) == 0 and cache.get(("v1", "news", "t")) is None
    with pytest.raises(ValueError, match="max_entries"):
        ScoreCache(-1)
