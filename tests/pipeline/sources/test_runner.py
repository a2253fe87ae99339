"""The source runner: a bus that does not acknowledge is waited out (the source recovers), anything else stops it."""

from __future__ import annotations

import threading

import pytest

from aet.pipeline.ports import BusError
from aet.pipeline.sources.emit import SourceStats
from aet.pipeline.sources.runner import SourceRunner


class Flaky:
    """A source whose first ``failures`` steps find the bus down; it stops the runner after ``steps`` good steps."""

    name = "flaky"
    interval_s = 0.0

    def __init__(self, failures: int, stop: threading.Event, steps: int = 2, error: Exception | None = None) -> None:
        self.failures = failures
        self.stop = stop
        self.steps = steps
        self.error = error
        self.good = 0
        self.recovered = 0
        self.stats = SourceStats()

    def step(self) -> None:
        if self.error is not None:
            raise self.error
        if self.failures:
            self.failures -= 1
            raise BusError("broker unreachable")
        self.good += 1
        if self.good == self.steps:
            self.stop.set()

    def recover(self) -> None:
        self.recovered += 1
        if self.recovered == 1 and self.failures:  # the first recovery finds the bus still away
            raise BusError("cannot rejoin")

    def close(self) -> None:
        return None


def test_bus_errors_are_waited_out_with_a_recovery_each() -> None:
    stop = threading.Event()
    source = Flaky(failures=3, stop=stop)
    runner = SourceRunner(source, max_backoff_s=0.01)
    runner.run(stop)
    assert (source.recovered, source.good, runner.bus_failures) == (3, 2, 0)


def test_once_returns_after_the_first_good_step() -> None:
    stop = threading.Event()
    source = Flaky(failures=1, stop=stop, steps=99)
    SourceRunner(source, once=True, max_backoff_s=0.01).run(stop)
    assert (source.recovered, source.good) == (1, 1) and not stop.is_set()


def test_another_error_stops_the_runner() -> None:
    stop = threading.Event()
    with pytest.raises(RuntimeError, match="disk full"):
        SourceRunner(Flaky(0, stop, error=RuntimeError("disk full"))).run(stop)
