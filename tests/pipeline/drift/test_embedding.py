"""The embedding detector with a fixed reference latches after an alarm until the distance falls."""

from __future__ import annotations

import math

import numpy as np

from tests.pipeline.drift.synthetic import SEED, only


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
