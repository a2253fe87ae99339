"""Champion/challenger: the promotion gate, and promotions, rejections and rollbacks as control events.

A challenger is promoted only if, on a held-out slice of the recent labeled
window, its macro-F1 beats the champion's by at least ``promote_min_gain``
*and* the paired bootstrap's lower confidence bound of that gain
(``gate_confidence``, pipeline/learning/evidence.py) is above zero — a
challenger better on a small slice by the luck of the draw is not promoted —
and, on a held-out slice of older data (the reservoir's never-trained share),
its macro-F1 is at most ``forget_max_drop`` below the champion's — a drop
counts only when the bootstrap also finds the challenger worse there with
``gate_confidence``, since a small older slice moves by several points on the
luck of the draw. Otherwise it is recorded as rejected with the numbers. Every decision, promotion and
rollback becomes a :class:`ControlEvent` for ``aet.control`` and the database.

Payloads: every event names the version it is about in ``model_version`` and
carries ``champion`` = {version, artifact_path, sha256} of the version that
serves after it, which is what a scorer needs to swap models.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from aet.pipeline import metrics
from aet.pipeline.config import RetrainSettings
from aet.pipeline.learning.evidence import paired_bootstrap
from aet.pipeline.learning.examples import Example
from aet.pipeline.model import SentimentModel
from aet.pipeline.ports import ChampionChanged, ModelInfo, Registry
from aet.pipeline.records import ControlEvent, ControlKind, utcnow

log = logging.getLogger(__name__)
EPS = 1e-9  # a difference exactly on a margin passes, whatever the float rounding


@dataclass(frozen=True)
class SliceScores:
    """Macro-F1 of champion and challenger on one held-out slice; with the bootstrap, the gain's bounds."""

    n: int
    champion: float
    challenger: float
    low: float | None = None
    high: float | None = None
    confidence: float | None = None

    @property
    def delta(self) -> float:
        return self.challenger - self.champion

    @classmethod
    def from_dict(cls, stored: dict[str, Any] | None) -> SliceScores | None:
        """The scores kept in a registry row's metrics or a gate payload (see :meth:`to_dict`); ``None`` if absent."""
        if not stored:
            return None
        bounds = [stored.get(k) for k in ("delta_low", "delta_high", "confidence")]
        low, high, confidence = (None if v is None else float(v) for v in bounds)
        return cls(
            int(stored["n"]),
            float(stored["champion_macro_f1"]),
            float(stored["challenger_macro_f1"]),
            low,
            high,
            confidence,
        )

    def to_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {
            "n": self.n,
            "champion_macro_f1": round(self.champion, 4),
            "challenger_macro_f1": round(self.challenger, 4),
            "delta": round(self.delta, 4),
        }
        if self.low is not None and self.high is not None and self.confidence is not None:
            out.update(delta_low=round(self.low, 4), delta_high=round(self.high, 4), confidence=self.confidence)
        return out


@dataclass(frozen=True)
class GateDecision:
    """Whether to promote, and why (every check, passed or failed, in words)."""

    promote: bool
    reasons: list[str] = field(default_factory=list)
    recent: SliceScores | None = None
    older: SliceScores | None = None
    margins: dict[str, float] = field(default_factory=dict)
    shadow: bool = False  # not promoted only for want of evidence: judge it on the live stream (learning/shadow.py)

    def to_dict(self) -> dict[str, Any]:
        return {
            "promote": self.promote,
            "shadow": self.shadow,
            "reasons": list(self.reasons),
            "recent": self.recent.to_dict() if self.recent else None,
            "older": self.older.to_dict() if self.older else None,
            "margins": dict(self.margins),
        }


def score_slice(
    champion: SentimentModel,
    challenger: SentimentModel,
    examples: Sequence[Example],
    *,
    confidence: float = 0.9,
    seed: int = 0,
) -> SliceScores:
    """Both models on the same examples: macro-F1, and the paired bootstrap's interval of the difference.

    The champion is judged by its weights (its fast-path heads, if any, are
    left out: they have learned from these very examples).
    """
    if not examples:
        return SliceScores(0, 0.0, 0.0)
    texts, truth = [e.text for e in examples], [e.label for e in examples]
    a = champion.predict_proba(texts).argmax(axis=1)
    b = challenger.predict_proba(texts).argmax(axis=1)
    c = paired_bootstrap(truth, a, b, confidence=confidence, seed=seed)
    return SliceScores(c.n, c.champion, c.challenger, c.low, c.high, confidence)


def decide(recent: SliceScores, older: SliceScores | None, settings: RetrainSettings) -> GateDecision:
    """Apply the gate's margins to the two slices.

    A challenger that fails only on evidence — better on the recent slice but by less than the
    required gain or without confidence, worse there but not with confidence, or judged on too few
    examples — and is not worse on older data becomes a shadow (with ``settings.shadow``) instead of
    a rejection.
    """
    ok, reasons, inconclusive = True, [], False
    gain, drop = settings.promote_min_gain, settings.forget_max_drop
    if recent.n < settings.min_holdout:
        ok, inconclusive = False, recent.n > 0 and recent.delta > 0
        reasons.append(f"only {recent.n} held-out recent examples; the gate needs at least {settings.min_holdout}")
    elif recent.delta < gain - EPS:
        # Not better is not proven worse: on a slice of a few dozen examples a truly better challenger can
        # measure below the champion; only an interval wholly at or below zero settles it here.
        not_worse = recent.high is not None and recent.high > 0
        ok, inconclusive = False, recent.delta > 0 or not_worse
        reasons.append(
            f"recent macro-F1 {recent.champion:.3f} -> {recent.challenger:.3f} ({recent.delta:+.3f}) "
            f"does not improve by the required {gain:+.3f}"
        )
        if not_worse and recent.delta <= 0:
            reasons[-1] += (
                f", nor is it worse with {recent.confidence:.0%} confidence (the change's interval is "
                f"{recent.low:+.3f} .. {recent.high:+.3f})"
            )
    elif recent.low is not None and recent.low <= min(0.0, gain):  # a negative gain setting waives the bound
        ok, inconclusive = False, True
        reasons.append(
            f"recent macro-F1 {recent.champion:.3f} -> {recent.challenger:.3f} ({recent.delta:+.3f}) on "
            f"{recent.n} examples is not better with {recent.confidence:.0%} confidence "
            f"(the gain's interval is {recent.low:+.3f} .. {recent.high:+.3f})"
        )
    else:
        reasons.append(
            f"recent macro-F1 {recent.champion:.3f} -> {recent.challenger:.3f} ({recent.delta:+.3f}), "
            f"at least {gain:+.3f}"
        )
    older_ok = True
    if older is None or older.n < settings.min_holdout:
        n = 0 if older is None else older.n
        if settings.require_older_holdout:
            ok = older_ok = False
            reasons.append(
                f"only {n} held-out older examples, fewer than {settings.min_holdout}: forgetting cannot be checked"
            )
        else:
            reasons.append(f"forgetting not checked: only {n} held-out older examples")
    elif -older.delta > drop + EPS and older.high is not None and older.high >= 0:
        reasons.append(
            f"older macro-F1 {older.champion:.3f} -> {older.challenger:.3f} ({older.delta:+.3f}) on {older.n} "
            f"examples is not worse with {older.confidence:.0%} confidence (the change's interval is "
            f"{older.low:+.3f} .. {older.high:+.3f}): not counted as forgetting"
        )
    elif -older.delta > drop + EPS:
        ok = older_ok = False
        bound = "" if older.high is None else f", worse with {older.confidence:.0%} confidence"
        reasons.append(
            f"older macro-F1 {older.champion:.3f} -> {older.challenger:.3f} ({older.delta:+.3f}) "
            f"falls by more than the allowed {drop:.3f}{bound}"
        )
    else:
        reasons.append(
            f"older macro-F1 {older.champion:.3f} -> {older.challenger:.3f} ({older.delta:+.3f}), "
            f"within the allowed drop of {drop:.3f}"
        )
    shadow = settings.shadow and not ok and inconclusive and older_ok
    if shadow:
        reasons.append("left as a shadow: the live labeled stream decides")
    return GateDecision(
        promote=ok,
        reasons=reasons,
        recent=recent,
        older=older,
        margins={"promote_min_gain": gain, "forget_max_drop": drop, "min_holdout": settings.min_holdout},
        shadow=shadow,
    )


def _serving(info: ModelInfo) -> dict[str, str]:
    return {"version": info.version, "artifact_path": info.artifact_path, "sha256": info.sha256}


class Promoter:
    """Applies decisions to the registry and describes each change as a control event."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def apply(
        self, version: str, decision: GateDecision, *, expect_weights: str | None = None, **context: Any
    ) -> ControlEvent:
        """Promote or reject challenger ``version`` per ``decision``; ``context`` (e.g. request_id) joins the event.

        With ``expect_weights`` (the weights it was trained from), a promotion that finds other weights
        serving becomes a rejection: the gate compared it with weights that no longer serve.
        """
        if decision.promote:
            try:
                return self.promote(
                    version,
                    reason="passed the champion/challenger gate",
                    gate=decision.to_dict(),
                    expect_weights=expect_weights,
                    **context,
                )
            except ChampionChanged as exc:
                decision = replace(decision, promote=False, shadow=False, reasons=[*decision.reasons, str(exc)])
        before = self.registry.champion()
        if decision.shadow:
            note = {"since": utcnow().isoformat(), "gate": decision.to_dict(), **context}
            self.registry.set_status(version, "challenger", note={"shadow": note})
            log.info("challenger %s left as a shadow: %s", version, "; ".join(decision.reasons))
            payload = {"reason": "; ".join(decision.reasons), "gate": decision.to_dict(), **context}
            if before is not None:
                payload["champion"] = _serving(before)
            return ControlEvent(kind="shadow", model_version=version, payload=payload)
        self.registry.set_status(version, "rejected", note={"rejection": decision.to_dict()})
        log.info("rejected challenger %s: %s", version, "; ".join(decision.reasons))
        payload = {"reason": "; ".join(decision.reasons), "gate": decision.to_dict(), **context}
        if before is not None:
            payload["champion"] = _serving(before)
        return ControlEvent(kind="rejection", model_version=version, payload=payload)

    def promote(
        self,
        version: str,
        *,
        reason: str = "manual",
        kind: ControlKind = "promotion",
        expect_weights: str | None = None,
        **context: Any,
    ) -> ControlEvent:
        """Make ``version`` the champion (``kind="heads"`` for a fast-path heads version); with
        ``expect_weights``, only while those weights serve (else :class:`ChampionChanged`)."""
        before = self.registry.champion()
        if before is not None and before.version == version:
            raise ValueError(f"{version} is already the champion")
        info = self.registry.promote(version, expect_weights=expect_weights)
        metrics.PROMOTIONS.labels(kind).inc()
        log.info("promoted %s (previous champion %s): %s", version, before.version if before else None, reason)
        return ControlEvent(
            kind=kind,
            model_version=version,
            payload={
                "reason": reason,
                "previous": before.version if before else None,
                "champion": _serving(info),
                **context,
            },
        )

    def rollback(self, to: str | None = None, *, reason: str = "manual", **context: Any) -> ControlEvent:
        """Demote the champion and reinstate ``to`` (default: the previous champion)."""
        demoted, champion = self.registry.rollback(to)
        metrics.PROMOTIONS.labels("rollback").inc()
        log.info("rolled back %s; %s serves again: %s", demoted.version, champion.version, reason)
        return ControlEvent(
            kind="rollback",
            model_version=demoted.version,
            payload={
                "reason": reason,
                "from": demoted.version,
                "to": champion.version,
                "champion": _serving(champion),
                **context,
            },
        )


def decision_from_dict(data: dict[str, Any]) -> GateDecision:
    """Rebuild a decision stored in a payload (for display)."""

    return GateDecision(
        shadow=bool(data.get("shadow", False)),
        promote=data["promote"],
        reasons=list(data.get("reasons", [])),
        recent=SliceScores.from_dict(data.get("recent")),
        older=SliceScores.from_dict(data.get("older")),
        margins=dict(data.get("margins", {})),
    )
