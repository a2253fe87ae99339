"""The engine: one drift is one event, labels and model versions are followed, and state round-trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
from river import drift as river_drift

from aet.pipeline.drift import DriftConfig, DriftEngine, adwin_delta
from tests.pipeline.drift.synthetic import SEED, feed, only, stream


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
    for _ in range(100):
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
