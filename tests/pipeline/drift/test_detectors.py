"""Each detector fires on a synthetic shift and stays quiet without one; labels feed only the label-based one."""

from __future__ import annotations

import pytest

from aet.pipeline.drift import DETECTOR_CLASSES, DriftConfig, DriftEngine
from tests.pipeline.drift.synthetic import SEED, feed, only, stream


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
