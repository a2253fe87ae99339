"""Scored messages and alert settings for the alert engine and alert role tests (small, hand-checkable numbers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aet.pipeline.config import AlertSettings
from aet.pipeline.records import Probs, ScoredMessage

T0 = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
PROBS = {"negative": (0.8, 0.15, 0.05), "neutral": (0.1, 0.8, 0.1), "positive": (0.05, 0.15, 0.8)}


def settings(**overrides: Any) -> AlertSettings:
    """Small numbers so the arithmetic can be checked by hand.

    With the prior share 1/3 and prior_std 0.1, an all-negative window of n messages
    has z = (1 - 1/3) / sqrt(0.01 + (2/9) / n): 2.86 at n=5, 3.43 at n=8, 4.15 at n=14.
    """
    base: dict[str, Any] = {
        "window_s": 3600,
        "step_s": 300,
        "allowed_lateness_s": 600,
        "min_count": 5,
        "min_share": 0.6,
        "min_z": 2.0,
        "warning_z": 3.0,
        "critical_z": 4.0,
        "cooldown_s": 3600,
        "baseline_min_count": 1000,
        "prior_span": 10**9,
        "prior_weight": 10**9,
        "prior_std": 0.1,
        "examples": 3,
    }
    base.update(overrides)
    return AlertSettings(**base)


_n = 0


def msg(
    minute: float,
    entity: str = "$ACME",
    label: str = "negative",
    *,
    id: str | None = None,
    p_neg: float | None = None,
    version: str = "v0001",
    text: str | None = None,
) -> ScoredMessage:
    global _n
    _n += 1
    p = list(PROBS[label])
    if p_neg is not None:
        p = [p_neg, (1 - p_neg) / 2, (1 - p_neg) / 2]
    return ScoredMessage(
        id=id or f"m{_n}",
        source="chat",
        text=text or f"message {id or _n} about {entity}",
        ts=T0 + timedelta(minutes=minute),
        entities=[entity],
        label=label,
        probs=Probs(negative=p[0], neutral=p[1], positive=p[2]),
        score=p[2] - p[0],
        model_version=version,
    )


def background(start: float, end: float, every: float, entity: str = "$OTHER") -> list[ScoredMessage]:
    """Neutral traffic of another entity that moves event time (and the watermark) forward."""
    out, m = [], start
    while m < end:
        out.append(msg(m, entity, "neutral"))
        m += every
    return out


# -- windows -------------------------------------------------------------------------------
