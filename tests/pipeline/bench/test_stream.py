"""The stream benchmark's verdict: AET against each peer per post-drift phase, over seeds."""

from __future__ import annotations

from typing import Any

import pytest

from aet.pipeline.bench.stream import summarize, targets


def result(post: float, phases: list[float], seconds: float, forgetting: float) -> dict[str, Any]:
    return {
        "post_drift": {"macro_f1": post, "accuracy": post},
        "phases": [{"phase": f"p{k}", "corpus": "c", "macro_f1": f, "accuracy": f} for k, f in enumerate(phases)],
        "train_seconds": seconds,
        "retrains": 1,
        "forgetting": {"corpus": "c", "before": 0.8, "after": 0.8 + forgetting / 100, "change_points": forgetting},
        "test_after_stream": {"c": {"macro_f1": 0.8}},
    }


def test_targets_compare_aet_with_each_peer_in_its_worst_phase() -> None:
    t = targets(
        {
            "aet": result(0.70, [0.8, 0.7, 0.75], 30, -1.0),
            "static": result(0.55, [0.8, 0.5, 0.6], 0, 0),
            "river": result(0.40, [0.5, 0.45, 0.4], 1, 0),
            "river-emb": result(0.60, [0.6, 0.65, 0.5], 1, 0),
            "periodic": result(0.71, [0.8, 0.71, 0.70], 90, -6),
        }
    )
    assert t["aet_minus_static_post_drift_points"] == 15.0 and t["at_least_10_points_above_static"]
    assert t["aet_minus_river_emb_per_post_drift_phase_points"] == [5.0, 25.0]
    # The worst phase against the best peer there: phase 1, periodic 0.71 against AET's 0.70.
    assert t["aet_minus_best_other_post_drift_points"] == -1.0 and not t["above_every_peer_in_every_post_drift_phase"]
    assert t["periodic_minus_aet_post_drift_points"] == 1.0 and t["train_seconds_aet_over_periodic"] == 0.33
    assert t["no_more_training_seconds_than_periodic"] and t["forgetting_no_worse_than_2_points"]
    t = targets({"aet": result(0.60, [0.8, 0.6], 95, -3.0), "periodic": result(0.50, [0.8, 0.5], 90, 0)})
    assert t["above_every_peer_in_every_post_drift_phase"] and t["aet_minus_best_other_post_drift_points"] == 10.0
    assert not t["no_more_training_seconds_than_periodic"] and not t["forgetting_no_worse_than_2_points"]


def test_several_seeds_are_summarized_as_mean_and_standard_deviation() -> None:
    per_seed = [{"aet": result(0.60, [0.8, 0.6], 10, -1.0)}, {"aet": result(0.70, [0.9, 0.7], 30, -3.0)}]
    s = summarize(per_seed)["aet"]
    assert s["seeds"] == 2
    assert s["post_drift"]["macro_f1"] == pytest.approx(0.65) and s["post_drift"]["macro_f1_std"] == pytest.approx(
        0.0707, abs=1e-4
    )
    assert [p["macro_f1"] for p in s["phases"]] == [pytest.approx(0.85), pytest.approx(0.65)]
    assert s["train_seconds"] == 20 and s["forgetting"]["change_points"] == -2.0
    # The verdict is taken on the means: 65 against 60 is +5 points.
    assert targets({**summarize(per_seed), "static": result(0.60, [0.85, 0.6], 0, 0)})[
        "aet_minus_static_post_drift_points"
    ] == pytest.approx(5.0)
