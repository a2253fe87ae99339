"""Synthetic scored streams for the drift tests: every signal moves at a chosen position, or none does."""

from __future__ import annotations

from typing import Any

import numpy as np

from aet.pipeline.drift import DriftConfig, DriftEngine

SEED = 20260301


def stream(n_before: int, n_after: int, *, seed: int = SEED, shift: bool = True) -> list[dict[str, Any]]:
    """Synthetic scored messages with labels: every signal moves at ``n_before`` when ``shift``."""
    rng = np.random.default_rng(seed)
    dim = 32
    out = []
    for i in range(n_before + n_after):
        after = shift and i >= n_before
        mix = [0.2, 0.5, 0.3] if not after else [0.45, 0.15, 0.4]
        c = int(rng.choice(3, p=mix))
        top = float(np.clip(rng.normal(0.80 if not after else 0.62, 0.08), 0.34, 1.0))
        rest = (1 - top) / 2
        probs = [rest, rest, rest]
        probs[c] = top
        emb = rng.normal(0.0 if not after else 0.6, 1.0, dim).astype(np.float32)
        correct = bool(rng.random() < (0.85 if not after else 0.5))
        out.append({"probs": probs, "emb": emb, "correct": correct})
    return out


def feed(
    engine: DriftEngine, items: list[dict[str, Any]], *, labels: bool = True, version: str = "v1", source: str = "news"
) -> list[Any]:
    """Messages with their label right after (when ``labels``); returns every alarm."""
    alarms = []
    for item in items:
        alarms += engine.message(source, version, item["probs"], item["emb"])
        if labels:
            pos = engine.source(source).position
            alarms += engine.label(source, version, pos, item["correct"])
    return alarms


def only(name: str, **kw: Any) -> DriftEngine:
    return DriftEngine(DriftConfig(detectors=(name,), embed_every=1, **kw))
