"""The alarm budget maps to monotone detector parameters that reproduce their tables and formulas."""

from __future__ import annotations

import pytest

from aet.pipeline.drift import (
    ADWIN_ARL_TABLE,
    adwin_delta,
    chi2_threshold,
    kswin_alpha,
    page_hinkley_threshold,
    siegmund_run_length,
)


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
