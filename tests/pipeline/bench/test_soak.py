"""``aet bench soak`` small: every fault of the schedule and every hostile kind, nothing lost or written twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aet.pipeline.bench.soak import CRASH_STEPS, HOSTILE, SCHEDULE, Faults, SimulatedCrash
from aet.pipeline.cli.main import app

#: 2,000 messages, a fault every 250 (every kind of the schedule at least once), a hostile record every 100.
SMALL = ["--messages", "2000", "--fault-every", "250", "--hostile-every", "100", "--no-progress"]


def test_a_small_soak_loses_nothing_and_writes_nothing_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run with a memory bus that keeps nothing its readers have committed (retention 0), so that every
    fault also meets records being dropped, and the accounting's read-back must not drop any itself."""
    monkeypatch.setenv("AET_BUS__MEMORY_RETENTION", "0")
    out = tmp_path / "out"
    home = ["--home", str(tmp_path / "home")]
    result = CliRunner().invoke(app, [*home, "bench", "soak", *SMALL, "--out", str(out)])
    assert result.exit_code == 0, result.output[-3000:]
    report = json.loads((out / "soak.json").read_text())

    assert report["error"] is None and report["worker_deaths"] == {}, report
    assert report["lost"] == 0, report["lost_examples"]
    assert report["duplicated"] == 0 and report["duplicated_on_topic"] == 0
    injected = report["faults_injected"]
    assert {f"crash_{step}" for step in CRASH_STEPS} | set(SCHEDULE) <= set(injected)
    assert injected["bad_records"] == report["hostile"] == 20 >= len(HOSTILE)
    assert report["worker_restarts"] == sum(injected[f"crash_{step}"] for step in CRASH_STEPS)
    # The faults really happened: the crash after the store write re-wrote its batch (counted by the trigger),
    # and the outages were retried.
    assert report["rewritten_after_crash"] > 0
    assert report["retries"]["store"] >= 2 * injected["db_outage"] and report["retries"]["publish"] >= 1
    assert report["good_scored"] == report["good"] == 2000 and report["good_dead_lettered"] == 0
    assert report["dead_lettered"] + sum(report["hostile_scored"].values()) == report["hostile"]
    assert report["rss_mb_start"] > 0 and report["rss_mb_end"] > 0
    # What the bus holds at the end: aet.messages, read by the scorer's group, is gone; aet.scored and
    # aet.dlq, read by no group, are whole (after the accounting has read them back).
    on_topics = report["scored"] + report["scored_topic_extra"] + report["dead_letters_on_topic"]
    assert report["bus_records"] == on_topics


def test_a_crash_after_the_store_write_allows_its_batch_one_rewrite_and_no_other() -> None:
    faults = Faults()
    faults.batch_ids = ["a", "b"]
    faults.arm("crash_after_handle")
    faults.crash("after_publish")  # not the armed step: nothing happens
    with pytest.raises(SimulatedCrash):
        faults.crash("after_handle")
    assert faults.rewrite_allowed == set() and faults.republish_allowed == {}
    faults.arm("crash_after_store")
    with pytest.raises(SimulatedCrash):
        faults.crash("after_store")
    assert faults.rewrite_allowed == {"a", "b"} and faults.republish_allowed == {"a": 1, "b": 1}
    faults.crash("after_store")  # fired once: disarmed
