"""The drift engine: every source's detectors, one event per drift, and the state that survives a restart.

**Hysteresis and cooldown.** A raw alarm of any detector of a source opens a drift episode and emits one
event; every detector of that source is then reset so that it learns the new regime (a detector that
kept its old window would re-alarm on the same change, as river's ADWIN does), labels of messages scored
before the reset no longer feed the error signal, and further alarms within ``cooldown_messages`` of the
source are suppressed (counted, and the detector reset again). One drift therefore fires one event.
With a fixed (training-data) embedding reference the T² detector additionally latches after an alarm
until its statistic falls back below the chi-square median.

**State.** :meth:`DriftEngine.state` is plain JSON (numbers, lists, base64 of float arrays and of the
ADWIN window's own serialisation, never pickle) tagged with the river version; :meth:`DriftEngine.restore`
refuses state written by another river minor version, and the detectors then start afresh.

The engine is the pure core of the monitor role (pipeline/roles/monitor.py): no bus, no database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import river

from aet.pipeline.drift.config import DriftConfig
from aet.pipeline.drift.detectors import Detector
from aet.pipeline.drift.embedding import HotellingEmbedding
from aet.pipeline.drift.new_source import NewSourceCheck

STATE_VERSION = 1
RIVER_VERSION = ".".join(river.__version__.split(".")[:2])


@dataclass
class Alarm:
    """A detector's alarm, resolved by the engine into an event or a suppressed repeat."""

    source: str
    detector: str
    signal: str
    statistic: dict[str, Any]
    position: int
    labeled: int
    model_version: str | None
    event: bool
    corroborated_by: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)


class SourceDrift:
    """The detectors of one source, following the model version that scores it."""

    def __init__(self, source: str, config: DriftConfig) -> None:
        self.source = source
        self.config = config
        self.detectors: dict[str, Detector] = {name: config.build(name) for name in config.detectors}
        self.position = 0  # messages of this source seen
        self.labeled = 0  # labels of this source joined
        self.version: str | None = None
        self.retired: list[str] = []
        self.baseline_position = 0  # detectors learn the regime that started after this position
        self.last_event_position: int | None = None
        self.events = 0
        self.suppressed = 0
        self.novel: NewSourceCheck | None = None  # set by the monitor for a source the champion never saw

    def _reset_all(self) -> None:
        for d in self.detectors.values():
            if isinstance(d, HotellingEmbedding):
                d.arm_latch()
            d.reset()
        self.baseline_position = self.position

    def follow(self, version: str) -> bool:
        """Switch to a new model version (resetting the detectors); ``False`` for a retired one.

        A fixed embedding reference belongs to the previous version and is dropped.
        """
        if version == self.version:
            return True
        if version in self.retired:
            return False
        if self.version is not None:
            self.retired = [*self.retired, self.version][-20:]
        self.version = version
        for d in self.detectors.values():
            if isinstance(d, HotellingEmbedding):
                d.clear_reference()
            else:
                d.reset()
        self.baseline_position = self.position
        self.last_event_position = None
        return True

    def message(self, version: str, probs: Sequence[float], embedding: np.ndarray | None) -> list[Alarm]:
        """Feed one scored message; returns the alarms it caused (at most one is an event)."""
        following = self.follow(version)  # before counting: the regime of a new version starts with this message
        self.position += 1
        if not following:
            return []
        raw: list[tuple[Detector, dict[str, Any]]] = []
        for d in self.detectors.values():
            if d.signal == "confidence":
                value: Any = float(max(probs))
            elif d.signal == "class":
                value = int(np.argmax(probs))
            elif d.signal == "embedding":
                if embedding is None:
                    continue
                value = embedding
            else:
                continue
            stat = d.update(value)
            if stat is not None:
                raw.append((d, stat))
        return self._resolve(raw)

    def label(
        self,
        version: str,
        message_position: int | None,
        correct: bool,
        reference: tuple[int, int] | None = None,
        served_correct: bool | None = None,
    ) -> list[Alarm]:
        """Feed one joined label; labels of messages scored before the last reset are ignored.

        ``correct`` is whether ``version``'s weights predicted it (the error detectors' signal);
        ``served_correct`` whether what served it did (a fast-path head; default ``correct``).
        ``reference`` is the (correct, labeled) of the champion on the other sources, for a
        never-seen source's accuracy check (which counts every label of the source, whichever
        version served it: it asks whether the source is served worse than the others).
        """
        self.labeled += 1
        raw: list[tuple[Detector | NewSourceCheck, dict[str, Any]]] = []
        if self.novel is not None:
            stat = self.novel.update(correct if served_correct is None else served_correct, reference)
            if stat is not None:
                raw.append((self.novel, stat))
        if version != self.version or (message_position is not None and message_position <= self.baseline_position):
            return self._resolve(raw)
        for d in self.detectors.values():
            if d.signal == "error":
                stat = d.update(0.0 if correct else 1.0)
                if stat is not None:
                    raw.append((d, stat))
        return self._resolve(raw)

    def _resolve(self, raw: Sequence[tuple[Detector | NewSourceCheck, dict[str, Any]]]) -> list[Alarm]:
        if not raw:
            return []
        cooling = (
            self.last_event_position is not None
            and self.position - self.last_event_position < self.config.cooldown_messages
        )
        alarms = []
        if cooling:
            for d, stat in raw:
                self.suppressed += 1
                d.reset()
                alarms.append(self._alarm(d, stat, event=False))
            return alarms
        first, stat = raw[0]
        alarm = self._alarm(first, stat, event=True)
        alarm.corroborated_by = [d.name for d, _ in raw[1:]]
        self.events += 1
        self.last_event_position = self.position
        self._reset_all()
        return [alarm]

    def _alarm(self, d: Detector | NewSourceCheck, stat: dict[str, Any], *, event: bool) -> Alarm:
        return Alarm(
            source=self.source,
            detector=d.name,
            signal=d.signal,
            statistic=stat,
            position=self.position,
            labeled=self.labeled,
            model_version=self.version,
            event=event,
            parameters=d.describe(),
        )

    def get_state(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "labeled": self.labeled,
            "version": self.version,
            "retired": self.retired,
            "baseline_position": self.baseline_position,
            "last_event_position": self.last_event_position,
            "events": self.events,
            "suppressed": self.suppressed,
            "detectors": {name: d.get_state() for name, d in self.detectors.items()},
            "novel": self.novel.get_state() if self.novel is not None else None,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.position, self.labeled = int(state["position"]), int(state["labeled"])
        self.version, self.retired = state["version"], list(state["retired"])
        self.baseline_position = int(state["baseline_position"])
        self.last_event_position = state["last_event_position"]
        self.events, self.suppressed = int(state["events"]), int(state["suppressed"])
        for name, d in self.detectors.items():
            if name in state["detectors"]:
                d.set_state(state["detectors"][name])
        if state.get("novel") is not None:
            self.novel = NewSourceCheck()
            self.novel.set_state(state["novel"])


class DriftEngine:
    """Every source's detectors; the pure core of the monitor role (no bus, no database)."""

    def __init__(self, config: DriftConfig) -> None:
        self.config = config
        self.sources: dict[str, SourceDrift] = {}

    def source(self, name: str) -> SourceDrift:
        if name not in self.sources:
            self.sources[name] = SourceDrift(name, self.config)
        return self.sources[name]

    def message(
        self, source: str, version: str, probs: Sequence[float], embedding: np.ndarray | None = None
    ) -> list[Alarm]:
        return self.source(source).message(version, probs, embedding)

    def label(
        self,
        source: str,
        version: str,
        message_position: int | None,
        correct: bool,
        reference: tuple[int, int] | None = None,
        served_correct: bool | None = None,
    ) -> list[Alarm]:
        return self.source(source).label(version, message_position, correct, reference, served_correct)

    def set_reference(self, source: str, vectors: np.ndarray) -> bool:
        """Give the embedding detector of ``source`` a fixed reference; ``False`` if it has none."""
        d = self.source(source).detectors.get("hotelling_embedding")
        if not isinstance(d, HotellingEmbedding):
            return False
        d.set_reference(vectors)
        return True

    def state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "river": RIVER_VERSION,
            "detectors": list(self.config.detectors),
            "sources": {name: s.get_state() for name, s in self.sources.items()},
        }

    def restore(self, state: dict[str, Any]) -> list[str]:
        """Load :meth:`state`; returns warnings about what could not be restored (and started afresh)."""
        warnings = []
        if state.get("version") != STATE_VERSION or state.get("river") != RIVER_VERSION:
            return [
                f"detector state written by state v{state.get('version')} / river {state.get('river')}; "
                f"this build is v{STATE_VERSION} / river {RIVER_VERSION}: starting the detectors afresh"
            ]
        same = list(state.get("detectors", [])) == list(self.config.detectors)
        for name, s in state.get("sources", {}).items():
            src = self.source(name)
            if same:
                src.set_state(s)
            else:
                # Keep the positions and episode, start the detectors afresh under the new configuration.
                src.set_state({**s, "detectors": {}})
                src.baseline_position = src.position
                warnings.append(
                    f"source {name}: detectors changed from {state.get('detectors')} "
                    f"to {list(self.config.detectors)}; they start afresh"
                )
        return warnings
