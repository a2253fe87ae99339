"""The alert engine: windows, baselines, thresholds, severity, cooldown, lateness, de-duplication."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aet.pipeline.alert_engine import AlertEngine, alert_id
from aet.pipeline.ports import BaselineSnapshot
from aet.pipeline.records import ScoredMessage
from tests.pipeline.alert_messages import T0, background, msg, settings


def test_a_burst_within_the_window_alerts_on_the_message_that_completes_it() -> None:
    engine = AlertEngine(settings())
    burst = [msg(60 + i) for i in range(5)]
    assert engine.process(burst[:4]) == []
    [alert] = engine.process(burst[4:])
    assert (alert.entity, alert.kind, alert.trigger_id) == ("$ACME", "negative_surge", burst[4].id)
    # The window ends with the 5-minute bucket of the trigger (13:04 -> 13:05) and spans one hour.
    assert alert.window_end == T0 + timedelta(minutes=65)
    assert alert.window_start == alert.window_end - timedelta(hours=1)
    assert alert.counts == {"total": 5, "negative": 5, "neutral": 0, "positive": 0}
    assert alert.shares["negative"] == 1.0
    assert alert.z == pytest.approx((1 - 1 / 3) / (0.01 + (2 / 9) / 5) ** 0.5, rel=1e-3)
    assert alert.baseline["mean"] == pytest.approx(1 / 3, rel=1e-3) and alert.baseline["windows"] == 0
    assert alert.severity == "info"
    assert alert.model_version == "v0001" and alert.model_versions == {"v0001": 5}


def test_the_same_messages_spread_over_more_than_a_window_do_not_alert() -> None:
    engine = AlertEngine(settings())
    spread = [msg(20 * i) for i in range(10)]  # one every 20 minutes: at most 3 in any hour
    assert engine.process(spread) == []


def test_messages_leave_the_sliding_window() -> None:
    """Four early negatives plus one 70 minutes later are never five in one window."""
    engine = AlertEngine(settings())
    assert engine.process([msg(i) for i in range(4)] + background(5, 70, 5) + [msg(70)]) == []


def test_each_entity_has_its_own_windows() -> None:
    engine = AlertEngine(settings())
    mixed = [msg(i, "$A" if i % 2 else "$B") for i in range(9)]  # 4 for $A, 5 for $B
    assert [a.entity for a in engine.process(mixed)] == ["$B"]


def test_entities_come_from_cashtags_and_the_gazetteer(tmp_path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("- id: $XYZ\n  names: [Xylo Dynamics]\n")
    engine = AlertEngine(settings(gazetteer=path))
    texts = ["Xylo Dynamics restates", "$xyz halted", "xylo dynamics auditor quits", "$XYZ down 38%", "XYLO DYNAMICS!"]
    batch = [
        ScoredMessage(**msg(i).model_dump(exclude={"entities", "text"}), entities=[], text=t)
        for i, t in enumerate(texts)
    ]
    [alert] = engine.process(batch)
    assert alert.entity == "$XYZ" and alert.counts["total"] == 5


# -- thresholds and severity -------------------------------------------------------------------


def test_min_count() -> None:
    assert AlertEngine(settings(min_count=6)).process([msg(i) for i in range(5)]) == []


def test_min_share() -> None:
    # 4 neutral, then 6 negative: the window's negative share reaches 0.6 with the tenth (z ≈ 1.5)
    mix = [msg(i, label="neutral") for i in range(4)] + [msg(4 + i) for i in range(6)]
    assert AlertEngine(settings(min_share=0.7, min_z=1.0)).process(mix) == []
    [alert] = AlertEngine(settings(min_share=0.6, min_z=1.0)).process([m.model_copy() for m in mix])
    assert alert.shares["negative"] == pytest.approx(0.6) and alert.z == pytest.approx(1.49, abs=0.01)


def test_min_z_against_the_entitys_own_baseline() -> None:
    """An entity that is always negative does not alert on negative messages; a normal one does."""
    engine = AlertEngine(settings())
    engine.restore(
        [BaselineSnapshot("$GLOOMY", "negative_surge", mean=0.9, var=0.01, noise=0.008, windows=200, through=None)]
    )
    out = engine.process([msg(i, "$GLOOMY") for i in range(8)] + [msg(i, "$NORMAL") for i in range(5)])
    assert [a.entity for a in out] == ["$NORMAL"]


@pytest.mark.parametrize("min_count, severity", [(5, "info"), (8, "warning"), (14, "critical")])
def test_severity_grows_with_z(min_count: int, severity: str) -> None:
    [alert] = AlertEngine(settings(min_count=min_count)).process([msg(i / 2) for i in range(min_count)])
    assert alert.severity == severity


def test_positive_surges_and_kinds() -> None:
    burst = [msg(i, label="positive") for i in range(5)]
    assert [a.kind for a in AlertEngine(settings()).process(burst)] == ["positive_surge"]
    assert AlertEngine(settings(kinds=["negative_surge"])).process(burst) == []


def test_examples_are_the_most_negative_first() -> None:
    ps = [0.6, 0.95, 0.7, 0.99, 0.8]
    burst = [msg(i, p_neg=p, id=f"ex{i}") for i, p in enumerate(ps)]
    [alert] = AlertEngine(settings(examples=3)).process(burst)
    assert alert.example_ids == ["ex3", "ex1", "ex4"]


# -- cooldown, de-duplication, restarts -------------------------------------------------------


def test_cooldown_suppresses_the_rest_of_the_burst_and_a_second_burst_within_it() -> None:
    engine = AlertEngine(settings(cooldown_s=3 * 3600))
    first = [msg(i) for i in range(30)]  # one long burst: one alert
    second = [msg(120 + i) for i in range(5)]  # 2 h later, within the 3 h cooldown
    third = [msg(300 + i) for i in range(5)]  # 5 h later: a new episode
    alerts = engine.process(first + background(30, 120, 10) + second + background(125, 300, 10) + third)
    assert [a.trigger_id for a in alerts] == [first[4].id, third[4].id]
    assert engine.stats.suppressed > 0


def test_duplicate_deliveries_of_a_message_count_once() -> None:
    engine = AlertEngine(settings())
    four = [msg(i) for i in range(4)]
    again = [m.model_copy() for m in four]
    assert engine.process(four + again) == []
    assert engine.stats.duplicates == 4


def test_repeated_texts_count_once_per_entity() -> None:
    """Retweets and bot storms: the same text (up to case, spacing, links) counts once per entity."""
    storm = [msg(i / 10, text=f"$ACME is DONE   https://t.co/x{i}") for i in range(20)]
    engine = AlertEngine(settings())
    assert engine.process(storm) == []
    assert engine.stats.repeats == 19
    assert len(AlertEngine(settings(dedupe_texts=False)).process([m.model_copy() for m in storm])) == 1


def test_alert_ids_are_deterministic() -> None:
    burst = [msg(i, id=f"d{i}") for i in range(6)]
    a = AlertEngine(settings()).process(burst)
    b = AlertEngine(settings()).process([m.model_copy() for m in burst])
    assert [x.id for x in a] == [x.id for x in b] == [alert_id("$ACME", "negative_surge", a[0].window_end)]


def test_a_restart_keeps_the_cooldown_and_re_raises_the_same_alert_once() -> None:
    burst = [msg(i, id=f"r{i}") for i in range(12)]
    [first] = AlertEngine(settings()).process(burst[:8])
    # A restart that re-reads the same batch (its commit was lost): the same alert id, once.
    replayed = AlertEngine(settings())
    replayed.restore(alerts=[first])
    assert [a.id for a in replayed.process([m.model_copy() for m in burst[:8]])] == [first.id]
    # A restart that resumes after it: the rest of the burst is within the cooldown.
    resumed = AlertEngine(settings())
    resumed.restore(alerts=[first])
    assert resumed.process(burst[8:] + [msg(12 + i) for i in range(8)]) == []


# -- lateness and order ----------------------------------------------------------------------


def test_events_later_than_the_allowed_lateness_are_dropped() -> None:
    engine = AlertEngine(settings(allowed_lateness_s=600))
    engine.process(background(0, 61, 1, "$ACME"))  # $ACME's newest event at minute 60: its watermark is 50
    assert engine.process([msg(45)]) == []
    assert engine.stats.late == 1
    engine.process([msg(55)])  # 5 minutes late: within the allowance
    assert engine.stats.late == 1 and engine.stats.counted == 62


def test_a_late_event_within_the_allowance_can_complete_a_burst() -> None:
    engine = AlertEngine(settings(allowed_lateness_s=600, min_count=6))
    assert engine.process([msg(50 + i) for i in range(4)] + background(54, 59, 1, "$ACME")) == []
    late = msg(54)  # arrives after events of minute 58
    [alert] = engine.process([late])
    assert alert.trigger_id == late.id
    assert alert.window_end == T0 + timedelta(minutes=55)


def test_time_moves_per_entity() -> None:
    """Another entity's partition is read a day ahead: $ACME's events are not late for $ACME."""
    engine = AlertEngine(settings(allowed_lateness_s=60))
    ahead = background(0, 24 * 60, 30, entity="$FAST")
    behind = [msg(i) for i in range(6)]
    alerts = engine.process(ahead + behind)
    assert engine.stats.late == 0 and [a.entity for a in alerts] == ["$ACME"]
    assert engine.watermark("$FAST") > engine.watermark("$ACME")
    # ... but an event behind its own entity's newest one by more than the lateness is.
    engine.process([msg(-10)])
    assert engine.stats.late == 1


def test_out_of_order_within_the_allowance_raises_one_alert() -> None:
    import random

    burst = [msg(100 + i / 2) for i in range(12)]
    rng = random.Random(3)
    shuffled = burst[:]
    rng.shuffle(shuffled)
    alerts = AlertEngine(settings()).process(background(40, 100, 2) + shuffled)
    assert [a.entity for a in alerts] == ["$ACME"]


# -- baselines -------------------------------------------------------------------------------


def test_baselines_learn_an_entitys_share_and_survive_a_restart() -> None:
    s = settings(baseline_min_count=5, warmup_windows=5, min_z=99)  # learn only, never alert
    engine = AlertEngine(s)
    stream = []
    for i in range(24 * 12):  # a day, a message a minute... 5 per 5-minute bucket
        for j in range(5):
            stream.append(msg(i * 5 + j, "$STEADY", "negative" if (i * 5 + j) % 10 < 3 else "neutral"))
    engine.process(stream)
    base = engine.baseline("$STEADY")
    assert base is not None and base["windows"] > 200
    assert base["mean"] == pytest.approx(0.3, abs=0.02)
    baselines, buckets = engine.dirty_state()
    assert {(b.entity, b.kind) for b in baselines} >= {("$STEADY", "negative_surge"), ("*", "negative_surge")}
    assert sum(b.n for b in buckets) == len(stream)
    # Restored into a new engine, and a replay of already-folded windows does not count twice.
    again = AlertEngine(s)
    again.restore(baselines)
    assert again.baseline("$STEADY") == base
    again.process([m.model_copy() for m in stream])
    assert again.baseline("$STEADY")["windows"] == base["windows"]


def test_a_burst_does_not_drag_the_baseline_along() -> None:
    s = settings(baseline_min_count=5, warmup_windows=5, min_z=99)
    engine = AlertEngine(s)
    calm = [msg(i, "$E", "negative" if i % 10 < 3 else "neutral") for i in range(600)]
    burst = [msg(600 + i / 3, "$E") for i in range(60)]
    engine.process(calm)
    before = engine.baseline("$E")["mean"]
    engine.process(burst + background(620, 800, 1))
    after = engine.baseline("$E")["mean"]
    assert before == pytest.approx(0.3, abs=0.03)
    assert after - before < 0.25  # clipped to 3 spreads per window instead of jumping to ~1.0


def test_a_learned_baseline_sets_the_bar() -> None:
    """Two entities with the same burst: the one whose baseline is already negative raises a lower z."""
    s = settings(baseline_min_count=5, warmup_windows=5, min_z=0.0)
    engine = AlertEngine(s)
    history = []
    for i in range(600):
        history.append(msg(i, "$CALM", "negative" if i % 10 < 1 else "neutral"))
        history.append(msg(i, "$EDGY", "negative" if i % 10 < 5 else "neutral"))
    engine.process(history)
    alerts = engine.process([msg(700 + i / 10, e) for i in range(8) for e in ("$CALM", "$EDGY")])
    z = {a.entity: a.z for a in alerts}
    assert z["$CALM"] > z["$EDGY"] + 1


# -- the role ----------------------------------------------------------------------------------


def test_a_far_future_message_moves_no_watermark_and_forgets_nothing() -> None:
    """Before: 9999-12-31T23:58Z moved $ACME's watermark to year 9999 (its real messages became late), expired the
    dedupe memory, and a window past it overflowed (`year 10000 is out of range`)."""
    engine = AlertEngine(settings())
    burst = [msg(60 + i) for i in range(4)]
    assert engine.process(burst) == []
    watermark = engine.watermark("$ACME")
    far = datetime(9999, 12, 31, 23, 58, tzinfo=UTC)
    future = [msg(61).model_copy(update={"id": f"future-{i}", "ts": far}) for i in range(5)]  # skips validation
    assert engine.process(future) == []
    assert engine.stats.future == 5 and engine.watermark("$ACME") == watermark
    assert engine.process([burst[0].model_copy()]) == [] and engine.stats.duplicates == 1  # still remembered
    [alert] = engine.process([msg(64)])  # not late: the burst completes
    assert alert.counts["total"] == 5 and engine.stats.late == 0
