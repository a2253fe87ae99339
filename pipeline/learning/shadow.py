"""Shadow scoring: a challenger the gate could not judge is judged on the live stream instead.

The gate (pipeline/learning/promotion.py) compares champion and challenger on
a held-out slice of the recent window. Early in a drift episode that slice is
a few dozen examples, and a challenger that is truly better often cannot show
it with confidence. Rather than throwing it away, the gate leaves such a
challenger (better on the slice, not worse on older data, not proven) as a
**shadow**: it serves nobody, but every labeled message that arrives from
then on is predicted by it too, beside the champion's weights (their own
prediction, under any fast-path head that served), and the exact McNemar test
(pipeline/learning/evidence.py) on those paired outcomes decides:

- promote it when it was right more often than the champion's weights, at ``alpha``;
- reject it when the champion's weights were right more often at ``alpha``, or
  after ``max_labels`` labeled messages without evidence either way.

Weights are compared with weights, as on the gate's held-out slices: after a
promotion the fast path starts afresh over the new weights and re-learns what
its heads knew within a few dozen labels, so a shadow judged against the heads
that served would be refused for a gain it would get back on top of its own.

The labeled messages are scored lazily, when their label is joined: the
shadow's prediction of a message does not depend on when it is made (it
learns nothing meanwhile), and it was trained before any of these messages
arrived, so the comparison stays prequential while costing one forward pass
per *labeled* message instead of one per message. The drift monitor runs the
trial (it joins every label to its prediction); promotions go through
:class:`~aet.pipeline.learning.promotion.Promoter`, so the scorers swap and the
automatic rollback watches the new champion as after any promotion.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from aet.pipeline import metrics
from aet.pipeline.learning.evidence import McNemar, mcnemar_counts
from aet.pipeline.ports import ChampionChanged, ModelInfo, Registry
from aet.pipeline.records import ControlEvent

log = logging.getLogger(__name__)
MAX_TEXTS = 20000  # messages remembered for lazy scoring; older ones' labels are not used


class Classifier(Protocol):
    """What a shadow scores with: :class:`aet.pipeline.model.SentimentModel` fits."""

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray: ...


class ShadowJudge:
    """Paired live outcomes of the champion's weights and of the shadow; a verdict once the evidence says so."""

    def __init__(self, alpha: float = 0.05, max_labels: int = 400) -> None:
        self.alpha = alpha
        self.max_labels = max_labels
        self.n = 0
        self.only_shadow_right = 0
        self.only_champion_right = 0

    def learn_one(self, champion_correct: bool, shadow_correct: bool) -> None:
        self.n += 1
        self.only_shadow_right += int(shadow_correct and not champion_correct)
        self.only_champion_right += int(champion_correct and not shadow_correct)

    def test(self) -> McNemar:
        return mcnemar_counts(self.n, self.only_shadow_right, self.only_champion_right)

    def verdict(self) -> str | None:
        """``"promote"``, ``"reject"`` or ``None`` (keep scoring)."""
        t = self.test()
        if t.p_challenger_better <= self.alpha:
            return "promote"
        if t.p_champion_better <= self.alpha or self.n >= self.max_labels:
            return "reject"
        return None


@dataclass
class _Trial:
    version: str
    base: str  # the champion weights it was trained from; a promotion of other weights ends the trial
    model: Classifier
    judge: ShadowJudge


class ShadowTrial:
    """Finds the registry's shadow challenger, scores it on labeled live messages, applies the verdict."""

    def __init__(
        self,
        registry: Registry,
        load: Callable[[ModelInfo], Classifier],
        *,
        alpha: float = 0.05,
        max_labels: int = 400,
        check_s: float = 30.0,
    ) -> None:
        self.registry = registry
        self.load = load
        self.alpha = alpha
        self.max_labels = max_labels
        self.check_s = check_s
        self.trial: _Trial | None = None
        self.texts: OrderedDict[str, str] = OrderedDict()
        self.queue: list[tuple[str, int, bool]] = []  # (message id, true label, the champion's weights were right)
        self.verdicts: list[dict[str, Any]] = []
        self._last_check = -float("inf")
        self._events: list[ControlEvent] = []
        self._restored: dict[str, Any] | None = None

    @property
    def active(self) -> bool:
        return self.trial is not None

    def observe(self, message_id: str, text: str) -> None:
        """A scored message: remembered while a trial runs, so that its label can be scored by the shadow."""
        if self.trial is None:
            return
        self.texts[message_id] = text
        while len(self.texts) > MAX_TEXTS:
            self.texts.popitem(last=False)

    def learn_one(self, message_id: str, true: int, champion_correct: bool) -> None:
        """A joined label; scored by the shadow in :meth:`step` (one forward pass per batch)."""
        if self.trial is not None and message_id in self.texts:
            self.queue.append((message_id, true, champion_correct))

    def follow(self) -> None:
        """Start or end a trial as the registry says (every ``check_s``); call before a batch's messages."""
        now = time.monotonic()
        if now - self._last_check >= self.check_s:
            self._last_check = now
            self._events += self._follow_registry()

    def step(self) -> list[ControlEvent]:
        """Score the queued labels and apply a verdict; the events to publish (with those of :meth:`follow`)."""
        events, self._events = self._events, []
        trial = self.trial
        if trial is None or not self.queue:
            self.queue = []
            return events
        queue, self.queue = self.queue, []
        probs = trial.model.predict_proba([self.texts.pop(mid) for mid, _, _ in queue])
        for (_, true, champion_correct), row in zip(queue, np.asarray(probs).argmax(axis=1), strict=True):
            trial.judge.learn_one(champion_correct, int(row) == true)
        verdict = trial.judge.verdict()
        if verdict is not None:
            events.append(self._apply(trial, verdict))
        return events

    # ------------------------------------------------------------------ registry

    def _follow_registry(self) -> list[ControlEvent]:
        champion = self.registry.champion()
        if self.trial is not None:
            if champion is not None and champion.weights_version not in (self.trial.base, self.trial.version):
                return [self._end(self.trial, f"the champion's weights changed to {champion.weights_version}")]
            if self.registry.get(self.trial.version).status != "challenger":
                log.info("shadow %s was decided elsewhere; its trial ends", self.trial.version)
                self._stop()
            return []
        shadows = [
            m
            for m in self.registry.list()
            if m.status == "challenger" and (m.info or {}).get("shadow") and not (m.info or {}).get("shadow_verdict")
        ]
        if not shadows:
            return []
        newest, *older = sorted(shadows, key=lambda m: m.created_at, reverse=True)
        events = [self._end_quietly(m.version, f"superseded by the newer shadow {newest.version}") for m in older]
        parent = self.registry.get(newest.parent) if newest.parent else None
        if champion is None or parent is None or champion.weights_version != parent.weights_version:
            events.append(self._end_quietly(newest.version, "the champion's weights changed since it was trained"))
            return events
        try:
            model = self.load(newest)
        except Exception as exc:  # noqa: BLE001 - a shadow that cannot load is rejected, the monitor goes on
            events.append(self._end_quietly(newest.version, f"cannot load it: {type(exc).__name__}: {exc}"))
            return events
        judge = ShadowJudge(self.alpha, self.max_labels)
        restored = self._restored or {}
        if restored.get("version") == newest.version:
            judge.n, judge.only_shadow_right, judge.only_champion_right = (
                int(restored[k]) for k in ("n", "only_shadow_right", "only_served_right")
            )
        self._restored = None
        self.trial = _Trial(newest.version, parent.weights_version, model, judge)
        metrics.SHADOW_TRIALS.labels("started").inc()
        log.info("shadow scoring %s beside %s on every labeled message from now on", newest.version, champion.version)
        return events

    def _apply(self, trial: _Trial, verdict: str) -> ControlEvent:
        from aet.pipeline.learning.promotion import Promoter

        t = trial.judge.test()
        words = (
            f"on {t.n} labeled live messages, the shadow alone was right on {t.only_challenger_right} and the "
            f"champion's weights alone on {t.only_champion_right} "
            f"(McNemar p {t.p_challenger_better:.4f} better / {t.p_champion_better:.4f} worse)"
        )
        record = {"verdict": verdict, "reason": words, **t.to_dict()}
        self.verdicts.append({"version": trial.version, **record})
        self._stop()
        metrics.SHADOW_TRIALS.labels(verdict).inc()
        if verdict == "promote":
            self.registry.set_status(trial.version, "challenger", note={"shadow_verdict": record})
            try:
                event = Promoter(self.registry).promote(
                    trial.version, reason=f"shadow scoring: {words}", shadow=record, expect_weights=trial.base
                )
            except ChampionChanged as exc:  # other weights were promoted since the trial last looked
                return self._end(trial, str(exc))
            log.warning("shadow %s promoted: %s", trial.version, words)
            return event
        return self._reject(trial.version, f"shadow scoring: {words}", record)

    def _end(self, trial: _Trial, why: str) -> ControlEvent:
        self._stop()
        metrics.SHADOW_TRIALS.labels("ended").inc()
        return self._reject(trial.version, why, {"verdict": "ended", "reason": why, **trial.judge.test().to_dict()})

    def _end_quietly(self, version: str, why: str) -> ControlEvent:
        metrics.SHADOW_TRIALS.labels("ended").inc()
        return self._reject(version, why, {"verdict": "ended", "reason": why})

    def _reject(self, version: str, why: str, record: dict[str, Any]) -> ControlEvent:
        self.registry.set_status(version, "rejected", note={"shadow_verdict": record})
        log.info("shadow %s rejected: %s", version, why)
        info = self.registry.get(version).info or {}
        shadow = info.get("shadow") or {}
        return ControlEvent(
            kind="rejection",
            model_version=version,
            payload={"reason": why, "shadow": record, "drift_event_id": shadow.get("drift_event_id")},
        )

    def _stop(self) -> None:
        self.trial = None
        self.texts.clear()
        self.queue = []

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any] | None:
        if self.trial is None:
            return None
        j = self.trial.judge
        return {
            "version": self.trial.version,
            "n": j.n,
            "only_shadow_right": j.only_shadow_right,
            "only_served_right": j.only_champion_right,  # the key earlier releases saved
        }

    def restore(self, state: dict[str, Any] | None) -> None:
        """Counts of the trial that ran before a restart; it resumes when the registry still names it."""
        self._restored = state
