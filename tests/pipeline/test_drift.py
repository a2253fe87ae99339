"""Drift detectors and the engine on synthetic streams: each detector fires on a shift and stays quiet
without one, the alarm budget maps to monotone parameters, one drift is one event, and state round-trips.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from river import drift as river_drift

from aet.pipeline.drift import (
    ADWIN_ARL_TABLE,
    DETECTOR_CLASSES,
    DriftConfig,
    DriftEngine,
    adwin_delta,
    chi2_threshold,
    kswin_alpha,
    page_hinkley_threshold,
    siegmund_run_length,
)

SEED = 20260301


def stream(n_before: int, n_after: int, *, seed: int = SEED, shift: bool = True) -> list[dict[str, Any]]:
    """Synthetic scored messages with labels: every signal moves at ``n_before`` when ``shift``."""
    rng = np.random.default_rng(seed)
    dim = 32
    out = []
    for i in range(n_before + n_after):
        after = shift and i >= n_before
        mix = [0.2, 0.5, 0.3] if not after else [0.45, 0.15, 0.4]
        c = int(rng.choice(3, p=mix))
        top = float(np.clip(rng.normal(0.80 if not after else 0.62, 0.08), 0.34, 1.0))
        rest = (1 - top) / 2
        probs = [rest, rest, rest]
        probs[c] = top
        emb = rng.normal(0.0 if not after else 0.6, 1.0, dim).astype(np.float32)
        correct = bool(rng.random() < (0.85 if not after else 0.5))
        out.append({"probs": probs, "emb": emb, "correct": correct})
    return out


def feed(
    engine: DriftEngine, items: list[dict[str, Any]], *, labels: bool = True, version: str = "v1", source: str = "news"
) -> list[Any]:
    """Messages with their label right after (when ``labels``); returns every alarm."""
    alarms = []
    for item in items:
        alarms += engine.message(source, version, item["probs"], item["emb"])
        if labels:
            pos = engine.source(source).position
            alarms += engine.label(source, version, pos, item["correct"])
    return alarms


def only(name: str, **kw: Any) -> DriftEngine:
    return DriftEngine(DriftConfig(detectors=(name,), embed_every=1, **kw))


# ------------------------------------------------------------------ calibration


def test_adwin_delta_reproduces_its_table_and_is_monotone() -> None:
    for delta, arl in ADWIN_ARL_TABLE:
        assert adwin_delta(arl) == pytest.approx(delta, rel=1e-9)
    run_lengths = [500, 2_000, 10_000, 50_000, 200_000, 1_000_000]
    deltas = [adwin_delta(r) for r in run_lengths]
    assert deltas == sorted(deltas, reverse=True)  # a longer run length means a smaller delta
    assert 0 < deltas[-1] < ADWIN_ARL_TABLE[0][0]


def test_page_hinkley_threshold_inverts_siegmund() -> None:
    for arl in (1_000, 10_000, 100_000):
        h = page_hinkley_threshold(arl, 0.25)
        assert siegmund_run_length(0.25, h) / 2 == pytest.approx(arl, rel=1e-3)
    assert page_hinkley_threshold(1_000) < page_hinkley_threshold(100_000)


def test_other_thresholds_grow_with_the_run_length() -> None:
    assert kswin_alpha(1e6) < kswin_alpha(1e4) <= 0.01
    assert chi2_threshold(1e6, 10, 20) > chi2_threshold(1e4, 10, 20) > 20


def test_budget_is_split_over_the_enabled_detectors() -> None:
    one = DriftConfig(detectors=("adwin_error",), expected_run_length=10_000)
    four = DriftConfig(expected_run_length=10_000, embed_every=2)
    assert one.run_length_of("adwin_error") == 10_000
    assert four.run_length_of("adwin_error") == 40_000
    assert four.run_length_of("hotelling_embedding") == 20_000  # counted in embedded messages
    with pytest.raises(ValueError, match="unknown drift detectors"):
        DriftConfig(detectors=("adwin_error", "magic"))


# ------------------------------------------------------------------ each detector


@pytest.mark.parametrize("name", sorted(DETECTOR_CLASSES))
def test_each_detector_fires_on_a_shift(name: str) -> None:
    engine = only(name, expected_run_length=20_000)
    alarms = feed(engine, stream(1500, 1500))
    events = [a for a in alarms if a.event]
    assert events, f"{name} missed a large shift"
    first = events[0]
    assert first.detector == name and first.position > 1500, f"{name} fired before the shift at {first.position}"
    assert first.position - 1500 < 800, f"{name} took {first.position - 1500} messages"
    assert first.statistic and first.parameters["run_length"] == 20_000


@pytest.mark.parametrize("name", sorted(DETECTOR_CLASSES))
def test_each_detector_stays_quiet_without_a_shift(name: str) -> None:
    engine = only(name, expected_run_length=100_000)
    alarms = feed(engine, stream(8000, 0, shift=False, seed=SEED + 1))
    assert alarms == [], f"{name} raised {[(a.position, a.statistic) for a in alarms]}"


def test_label_based_detection_needs_labels_and_label_free_does_not() -> None:
    items = stream(1500, 1500)
    assert [a for a in feed(only("adwin_error"), items, labels=False) if a.event] == []
    engine = DriftEngine(
        DriftConfig(detectors=("adwin_confidence", "page_hinkley_class_mix", "hotelling_embedding"), embed_every=1)
    )
    events = [a for a in feed(engine, items, labels=False) if a.event]
    assert len(events) == 1 and events[0].position > 1500


# ------------------------------------------------------------------ one drift, one event


def test_one_drift_is_one_event_with_every_detector_on() -> None:
    engine = DriftEngine(DriftConfig(embed_every=1, cooldown_messages=2000))
    alarms = feed(engine, stream(2000, 6000))
    events = [a for a in alarms if a.event]
    assert len(events) == 1, [(a.detector, a.position) for a in events]
    assert events[0].position > 2000
    src = engine.source("news")
    assert src.events == 1 and src.baseline_position == events[0].position


def test_raw_adwin_bursts_on_a_gradual_drift_but_the_engine_emits_one_event() -> None:
    rng = np.random.default_rng(SEED)
    n0, ramp, n1 = 2000, 3000, 2000
    p = np.concatenate([np.full(n0, 0.1), np.linspace(0.1, 0.7, ramp), np.full(n1, 0.7)])
    errors = (rng.random(len(p)) < p).astype(float)
    raw = river_drift.ADWIN(delta=adwin_delta(20_000 * 1.5), clock=32)
    raw_alarms = 0
    for e in errors:
        raw.update(e)
        raw_alarms += raw.drift_detected
    assert raw_alarms >= 3, "the premise: river's ADWIN alarms repeatedly while a drift unfolds"

    engine = only("adwin_error", expected_run_length=20_000, cooldown_messages=ramp + n1)
    events = []
    for e in errors:
        engine.message("news", "v1", [0.2, 0.6, 0.2])
        events += [a for a in engine.label("news", "v1", engine.source("news").position, e == 0.0) if a.event]
    assert len(events) == 1
    assert engine.source("news").suppressed >= 1  # the later alarms were counted, not emitted


def test_labels_of_messages_before_the_reset_are_ignored() -> None:
    """A label that arrives after a drift event for a message scored before it must not re-trigger."""
    engine = only("adwin_error", expected_run_length=20_000, cooldown_messages=0)
    src = engine.source("news")
    for i in range(100):
        engine.message("news", "v1", [0.2, 0.6, 0.2])
    src._reset_all()  # as after an event at position 100
    before = src.detectors["adwin_error"].get_state()
    assert engine.label("news", "v1", 50, False) == []
    assert src.detectors["adwin_error"].get_state() == before  # not fed
    engine.label("news", "v1", 101, False)
    assert src.detectors["adwin_error"].get_state() != before


def test_a_new_model_version_resets_and_old_versions_are_ignored() -> None:
    engine = DriftEngine(DriftConfig(embed_every=1))
    items = stream(600, 0, shift=False)
    feed(engine, items[:300], version="v1")
    src = engine.source("news")
    assert src.version == "v1"
    feed(engine, items[300:400], version="v2")
    assert src.version == "v2" and src.retired == ["v1"] and src.baseline_position == 300
    state = json.dumps(engine.state())
    assert feed(engine, items[400:], version="v1") == []  # stragglers of a retired version
    assert src.position == 600
    assert json.loads(state)["sources"]["news"]["detectors"] == engine.state()["sources"]["news"]["detectors"]


# ------------------------------------------------------------------ state


@pytest.mark.parametrize(
    "detectors",
    [("adwin_error", "adwin_confidence", "kswin_confidence", "page_hinkley_class_mix", "hotelling_embedding")],
)
def test_state_round_trips_through_json(detectors: tuple[str, ...]) -> None:
    config = DriftConfig(detectors=detectors, embed_every=1, expected_run_length=5_000, cooldown_messages=500)
    items = stream(1200, 1800)
    whole = DriftEngine(config)
    expected = feed(whole, items)

    first = DriftEngine(config)
    got = feed(first, items[:1000])
    saved = json.loads(json.dumps(first.state()))  # exactly what the database keeps
    second = DriftEngine(config)
    assert second.restore(saved) == []
    got += feed(second, items[1000:])

    key = lambda a: (a.detector, a.position, a.labeled, a.event, json.dumps(a.statistic, sort_keys=True))
    assert [key(a) for a in got] == [key(a) for a in expected]
    assert any(a.event for a in expected)
    assert json.dumps(second.state(), sort_keys=True) == json.dumps(whole.state(), sort_keys=True)


def test_state_from_another_river_version_or_configuration_starts_afresh() -> None:
    engine = DriftEngine(DriftConfig(embed_every=1))
    feed(engine, stream(300, 0, shift=False))
    state = engine.state()
    fresh = DriftEngine(DriftConfig(embed_every=1))
    warnings = fresh.restore({**state, "river": "0.1"})
    assert warnings and "river" in warnings[0] and fresh.sources == {}

    other = DriftEngine(DriftConfig(detectors=("adwin_error",)))
    warnings = other.restore(state)
    assert warnings and "start afresh" in warnings[0]
    src = other.source("news")
    assert src.position == 300 and src.baseline_position == 300


def test_fixed_reference_latches_until_the_distance_falls() -> None:
    engine = only("hotelling_embedding", expected_run_length=20_000, cooldown_messages=0)
    rng = np.random.default_rng(SEED)
    reference = rng.normal(0.0, 1.0, (300, 32)).astype(np.float32)
    engine.source("news").follow("v1")
    assert engine.set_reference("news", reference)
    far = [rng.normal(0.6, 1.0, 32).astype(np.float32) for _ in range(1500)]
    near = [rng.normal(0.0, 1.0, 32).astype(np.float32) for _ in range(1500)]
    alarms = [a for e in far for a in engine.message("news", "v1", [0.2, 0.6, 0.2], e)]
    assert len([a for a in alarms if a.event]) == 1  # latched: the stream stays far, no second event
    alarms = [a for e in near + far for a in engine.message("news", "v1", [0.2, 0.6, 0.2], e)]
    assert len([a for a in alarms if a.event]) == 1  # back near the reference re-arms; far again fires once
    assert math.isfinite(engine.source("news").detectors["hotelling_embedding"].threshold)
