"""Automatic rollback: a promoted model whose live labeled accuracy falls below its predecessor's is demoted.

The gate (pipeline/learning/promotion.py) judges a challenger on held-out data before
it serves; this judges it on the live stream after. :class:`RollbackGuard` is
the decision, in river's shape: ``learn_one(version, correct)`` for every
labeled prediction, ``watch(new, previous)`` after a promotion, and
``verdict()`` once the new version has ``labels`` labeled predictions: roll
back when its accuracy over them is below the accuracy of what served before
the promotion, over the last ``labels`` labeled predictions before it, by more
than ``margin``. What served before may be several versions (fast-path heads
versions follow each other every few dozen labels on the same weights): the
comparison is with the stream as it was served, never with a version's last
handful of labels. Each promotion is judged once.

:class:`AutoRollback` connects it to the registry for the drift monitor (which
joins every label to its prediction): it notices promotions by polling the
champion (a change whose predecessor is ``retired`` is a promotion; one whose
predecessor is ``rolled_back`` is itself a rollback and is not judged), and
applies a verdict through :class:`~aet.pipeline.learning.promotion.Promoter`, whose control
event tells the scorers to swap back.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from aet.pipeline import metrics
from aet.pipeline.ports import Registry
from aet.pipeline.records import ControlEvent

log = logging.getLogger(__name__)
KEEP_VERSIONS = 4  # versions whose recent labeled predictions are remembered


@dataclass(frozen=True)
class Verdict:
    """The live comparison of a promoted version with the champion it replaced."""

    version: str
    previous: str
    rollback: bool
    accuracy: float
    previous_accuracy: float | None
    labeled: int
    previous_labeled: int
    margin: float
    reason: str


class RollbackGuard:
    """Compares a newly promoted version's live accuracy with its predecessor's."""

    def __init__(self, labels: int = 200, margin: float = 0.05) -> None:
        self.labels = labels
        self.margin = margin
        self.windows: dict[str, deque[int]] = {}
        self.watching: tuple[str, str] | None = None  # (new, previous)
        self.watched: list[str] = []  # versions judged before (a re-promoted one starts a fresh window)
        # The last labeled predictions, whichever version served; and, for the watched promotion, those of every
        # other version (what served before it, including its labels that arrive late).
        self.served: deque[tuple[str, int]] = deque(maxlen=labels)
        self.before: deque[int] = deque(maxlen=labels)

    def learn_one(self, version: str, correct: bool) -> None:
        if version not in self.windows:
            self.windows[version] = deque(maxlen=self.labels)
            for old in list(self.windows)[:-KEEP_VERSIONS]:
                if self.watching is None or old not in self.watching:
                    del self.windows[old]
        self.windows[version].append(int(correct))
        self.served.append((version, int(correct)))
        if self.watching is not None and version != self.watching[0]:
            self.before.append(int(correct))

    def watch(self, new: str, previous: str) -> None:
        """Judge ``new`` against ``previous`` on labels of ``new``'s predictions from now on."""
        self.watching = (new, previous)
        self.before = deque((c for v, c in self.served if v != new), maxlen=self.labels)
        if new in self.watched:  # promoted again after a rollback: judge it on new labels only
            self.windows.pop(new, None)
        kept = [v for v in self.watched if v != new][-KEEP_VERSIONS * 4 :]
        self.watched = [*kept, new]

    def verdict(self) -> Verdict | None:
        """The decision on the watched promotion once it has enough labels; ``None`` until then."""
        if self.watching is None:
            return None
        new, previous = self.watching
        mine = self.windows.get(new, ())
        if len(mine) < self.labels:
            return None
        self.watching = None
        theirs: Sequence[int] = list(self.before) or list(self.windows.get(previous, ()))
        accuracy = sum(mine) / len(mine)
        if not theirs:
            return Verdict(
                new,
                previous,
                False,
                accuracy,
                None,
                len(mine),
                0,
                self.margin,
                f"kept: {previous} has no labeled predictions to compare with",
            )
        before = sum(theirs) / len(theirs)
        fell = accuracy < before - self.margin
        words = (
            f"live accuracy {accuracy:.3f} over {len(mine)} labeled messages vs {before:.3f} over the last "
            f"{len(theirs)} before the promotion (then serving {previous})"
        )
        if fell:
            return Verdict(
                new,
                previous,
                True,
                accuracy,
                before,
                len(mine),
                len(theirs),
                self.margin,
                f"{words}: below by more than the margin {self.margin:.3f}",
            )
        return Verdict(
            new,
            previous,
            False,
            accuracy,
            before,
            len(mine),
            len(theirs),
            self.margin,
            f"kept: {words}, within the margin {self.margin:.3f}",
        )

    def state(self) -> dict[str, Any]:
        return {
            "windows": {v: list(w) for v, w in self.windows.items()},
            "watching": list(self.watching) if self.watching else None,
            "watched": list(self.watched),
            "served": [list(x) for x in self.served],
            "before": list(self.before),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.windows = {v: deque(w, maxlen=self.labels) for v, w in state.get("windows", {}).items()}
        self.watching = tuple(state["watching"]) if state.get("watching") else None
        self.watched = list(state.get("watched", []))
        self.served = deque(((str(v), int(c)) for v, c in state.get("served", [])), maxlen=self.labels)
        self.before = deque(state.get("before", []), maxlen=self.labels)


class AutoRollback:
    """Feeds a :class:`RollbackGuard` from the registry's promotions and applies its verdicts."""

    def __init__(self, registry: Registry, guard: RollbackGuard, *, check_s: float = 30.0) -> None:
        self.registry = registry
        self.guard = guard
        self.check_s = check_s
        self.champion: str | None = None
        self.verdicts: list[Verdict] = []
        self._last_check = -float("inf")

    def learn_one(self, version: str, correct: bool) -> None:
        self.guard.learn_one(version, correct)

    def step(self) -> ControlEvent | None:
        """Notice a promotion, judge the watched one; a rollback's control event when it fails."""
        now = time.monotonic()
        if now - self._last_check >= self.check_s:
            self._last_check = now
            self._follow_champion()
        verdict = self.guard.verdict()
        if verdict is None:
            return None
        self.verdicts.append(verdict)
        if not verdict.rollback:
            log.info("promotion of %s stands: %s", verdict.version, verdict.reason)
            return None
        if self.champion != verdict.version:
            log.info(
                "%s no longer serves; its failed live check needs no rollback (%s)", verdict.version, verdict.reason
            )
            return None
        from aet.pipeline.learning.promotion import Promoter

        event = Promoter(self.registry).rollback(
            verdict.previous, reason=f"automatic: {verdict.reason}", live_check=asdict(verdict)
        )
        self.champion = verdict.previous
        metrics.AUTO_ROLLBACKS.inc()
        log.warning("rolled back %s to %s: %s", verdict.version, verdict.previous, verdict.reason)
        return event

    def _follow_champion(self) -> None:
        info = self.registry.champion()
        if info is None or info.version == self.champion:
            return
        previous, self.champion = self.champion, info.version
        if previous is None:
            return
        try:
            was = self.registry.get(previous).status
        except Exception:  # noqa: BLE001 - an unknown predecessor cannot be compared with
            return
        if was == "retired":
            log.info("watching the live accuracy of %s against %s", info.version, previous)
            self.guard.watch(info.version, previous)

    def state(self) -> dict[str, Any]:
        return {"guard": self.guard.state(), "champion": self.champion}

    def restore(self, state: dict[str, Any]) -> None:
        self.guard.restore(state.get("guard", {}))
        self.champion = state.get("champion")
