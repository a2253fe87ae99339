"""The alarm budget is split over the enabled detectors, and unknown detectors are refused."""

from __future__ import annotations

import pytest

from aet.pipeline.drift import DriftConfig


def test_budget_is_split_over_the_enabled_detectors() -> None:
    one = DriftConfig(detectors=("adwin_error",), expected_run_length=10_000)
    four = DriftConfig(expected_run_length=10_000, embed_every=2)
    assert one.run_length_of("adwin_error") == 10_000
    assert four.run_length_of("adwin_error") == 40_000
    assert four.run_length_of("hotelling_embedding") == 20_000  # counted in embedded messages
    with pytest.raises(ValueError, match="unknown drift detectors"):
        DriftConfig(detectors=("adwin_error", "magic"))
