"""The never-seen source's accuracy check: raises on clear evidence at its looks, keeps its false-alarm budget."""

from __future__ import annotations

import numpy as np

from aet.pipeline.drift.new_source import NewSourceCheck


def feed(check: NewSourceCheck, outcomes: list[bool], reference: tuple[int, int] | None) -> list[dict]:
    return [stat for c in outcomes if (stat := check.update(c, reference)) is not None]


def test_a_clearly_worse_source_raises_at_the_first_look_and_only_once() -> None:
    check = NewSourceCheck()
    [alarm] = feed(check, [i % 2 == 0 for i in range(300)], reference=(450, 500))
    assert alarm["labeled"] == 30 and alarm["accuracy"] == 0.5 and alarm["reference_accuracy"] == 0.9
    assert alarm["p"] <= alarm["threshold"] == 0.01 / 4 and check.done


def test_a_source_worse_by_less_than_the_margin_never_raises() -> None:
    check = NewSourceCheck(margin=0.05)
    assert feed(check, [i % 25 != 0 for i in range(300)], reference=(4900, 5000)) == []  # 0.96 vs 0.98
    assert check.done and check.last["labeled"] == 240


def test_without_a_reference_nothing_is_decided() -> None:
    check = NewSourceCheck()
    assert feed(check, [False] * 300, reference=None) == []
    assert feed(NewSourceCheck(), [False] * 300, reference=(40, 40)) == []  # too few labels elsewhere


def test_equally_good_sources_keep_the_false_alarm_budget() -> None:
    """Four looks at alpha/4 each: at most ~alpha of equally good new sources raise (500 simulated)."""
    rng = np.random.default_rng(7)
    alarms = 0
    for _ in range(500):
        check = NewSourceCheck(alpha=0.05, margin=0.0)
        ref = int(rng.binomial(500, 0.8))
        alarms += bool(feed(check, list(rng.random(240) < 0.8), reference=(ref, 500)))
    assert alarms / 500 <= 0.05


def test_state_round_trip() -> None:
    check = NewSourceCheck()
    feed(check, [True] * 10 + [False] * 5, reference=(90, 100))
    again = NewSourceCheck()
    again.set_state(check.get_state())
    assert (again.labeled, again.correct, again.done) == (15, 10, False)
