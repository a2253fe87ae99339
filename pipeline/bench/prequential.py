"""Prequential evaluation of a strategy on a scenario stream: predict a chunk, then learn its labels as they arrive.

Every prediction is made before its label is known; scores are computed on the
messages that got a label, per phase, after the first phase (post-drift), and
over consecutive windows of labeled messages (the plot).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aet.pipeline.bench.scenario import Stream
from aet.pipeline.bench.strategies import Strategy
from aet.pipeline.evaluation import report


def run_prequential(stream: Stream, strategy: Strategy, *, progress: bool = False) -> list[int]:
    """Predict the stream chunk by chunk, delivering each chunk's due labels after it; the predictions."""
    from tqdm import tqdm

    chunk = stream.scenario.chunk
    n = len(stream.items)
    predictions: list[int] = []
    for start in tqdm(range(0, n, chunk), desc=f"stream {strategy.name}", unit="chunk", disable=not progress):
        end = min(start + chunk, n)
        predictions.extend(strategy.predict(stream.items[start:end]))
        due = stream.labels_due(start, end)
        if due:
            strategy.learn(due, end)
    tail = stream.label_tail()
    if tail:
        strategy.learn(tail, n)
    return predictions


def phase_scores(stream: Stream, predictions: Sequence[int]) -> list[dict[str, Any]]:
    """Prequential accuracy and macro-F1 per phase, on the messages that got a label."""
    out = []
    for k, (start, end) in enumerate(stream.phase_bounds):
        labeled = [it for it in stream.items[start:end] if it.labeled]
        r = report([it.truth for it in labeled], [predictions[it.index] for it in labeled])
        phase = stream.scenario.phases[k]
        out.append(
            {
                "phase": phase.name,
                "corpus": phase.corpus,
                "messages": end - start,
                "labeled": r["n"],
                "accuracy": round(r["accuracy"], 4),
                "macro_f1": round(r["macro_f1"], 4),
            }
        )
    return out


def post_drift_score(stream: Stream, predictions: Sequence[int]) -> dict[str, Any]:
    """Prequential scores over every phase after the first."""
    start = stream.phase_bounds[1][0] if len(stream.phase_bounds) > 1 else len(stream.items)
    labeled = [it for it in stream.items[start:] if it.labeled]
    r = report([it.truth for it in labeled], [predictions[it.index] for it in labeled])
    return {"labeled": r["n"], "accuracy": round(r["accuracy"], 4), "macro_f1": round(r["macro_f1"], 4)}


def windows(stream: Stream, predictions: Sequence[int], size: int) -> list[tuple[int, float]]:
    """Macro-F1 over consecutive windows of ``size`` labeled messages: (last message index, macro-F1)."""
    labeled = [it for it in stream.items if it.labeled]
    out = []
    for i in range(0, len(labeled) - size + 1, size):
        w = labeled[i : i + size]
        out.append(
            (w[-1].index, round(report([it.truth for it in w], [predictions[it.index] for it in w])["macro_f1"], 4))
        )
    return out
