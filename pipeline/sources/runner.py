"""Running a source as a daemon: one step (a poll, a scan) after another until told to stop.

A step that fails because the bus did not acknowledge (``BusError``: the broker is away) is
not the end of the source: nothing was saved or committed for the batch in flight, so the
runner asks the source to recover (a Kafka source rejoins its group), waits, doubling the
wait up to ``max_backoff_s``, and steps again; the batch is emitted again, with the same ids.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from aet.pipeline.ports import BusError
from aet.pipeline.sources.emit import SourceStats

log = logging.getLogger(__name__)


class Steppable(Protocol):
    """A source as the runner drives it."""

    stats: SourceStats

    @property
    def name(self) -> str: ...

    @property
    def interval_s(self) -> float:
        """Time from the start of one step to the start of the next."""
        ...

    def step(self) -> None: ...

    def recover(self) -> None:
        """Make the next step emit again what the failed one did not get acknowledged."""
        ...

    def close(self) -> None: ...


class SourceRunner:
    """Steps one source until ``stop`` is set (or once, with ``once``)."""

    def __init__(self, source: Steppable, *, once: bool = False, max_backoff_s: float = 30.0) -> None:
        self.source = source
        self.once = once
        self.max_backoff_s = max_backoff_s
        self.bus_failures = 0

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.source.step()
            except BusError as exc:
                self.bus_failures += 1
                wait = min(self.max_backoff_s, 2.0 ** min(self.bus_failures - 1, 10))
                log.warning("%s: the bus did not acknowledge (%s); again in %.0f s", self.source.name, exc, wait)
                stop.wait(wait)
                try:
                    self.source.recover()
                except BusError as again:  # still away (a consumer cannot rejoin): the next step fails and waits longer
                    log.warning("%s: cannot recover yet: %s", self.source.name, again)
                continue
            self.bus_failures = 0
            if self.once:
                return
            stop.wait(max(0.0, self.source.interval_s - (time.monotonic() - started)))
