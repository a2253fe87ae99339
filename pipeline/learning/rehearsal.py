"""The replay reservoir: a bounded, per-source, class-balanced sample of past labeled examples.

Each (source, label) stratum has ``capacity_per_source // 3`` slots and is
filled by reservoir sampling (Vitter's algorithm R): the n-th example a
stratum sees takes a free slot while there is one, and afterwards replaces
slot j with j uniform in [0, n), kept only if j is a slot. Every stratum thus
holds a uniform sample of everything it has seen, in bounded space, however
long the stream. The random draw for the n-th example of a stratum is a hash
of (seed, source, label, n), so the reservoir is deterministic for a seed and
the same after a restart, with no random state to store. Rows live in a
:class:`~aet.pipeline.ports.ReservoirStore` (the database, storage/training_store.py).

The same examples serve two purposes: replay in training, and the older
held-out slice of the champion/challenger gate. :func:`is_holdout` splits
them by a stable hash of the text, so an example is held out in every round
or in none, and the forgetting check never sees an example that was replayed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aet.pipeline.learning.examples import Example
from aet.pipeline.ports import ReservoirStore
from aet.pipeline.records import LABELS


def uniform(*parts: object) -> float:
    """A deterministic number in [0, 1) from ``parts``."""
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def text_key(text: str) -> str:
    """The text lowercased with runs of whitespace collapsed: duplicates up to case and spacing share a key."""
    return re.sub(r"\s+", " ", text.strip().lower())


def is_holdout(text: str, fraction: float) -> bool:
    """Whether an example belongs to the never-trained held-out share ``fraction`` (stable across runs and rounds)."""
    return uniform("holdout", text_key(text)) < fraction


def split_holdout(examples: Sequence[Example], fraction: float) -> tuple[list[Example], list[Example]]:
    """(trainable, held out) by :func:`is_holdout`."""
    train: list[Example] = []
    held: list[Example] = []
    for e in examples:
        (held if is_holdout(e.text, fraction) else train).append(e)
    return train, held


@dataclass(frozen=True)
class ReservoirStats:
    kept: int
    replaced: int
    dropped: int
    duplicate: int


class Reservoir:
    """Reservoir sampling of labeled examples into the database, per source and class."""

    def __init__(self, store: ReservoirStore, capacity_per_source: int = 3000, seed: int = 13) -> None:
        if capacity_per_source < len(LABELS):
            raise ValueError(f"capacity_per_source must be at least {len(LABELS)} (one slot per label)")
        self.store = store
        self.capacity_per_source = capacity_per_source
        self.per_class = capacity_per_source // len(LABELS)
        self.seed = seed

    def choose_slot(self, source: str, label: str, n: int, capacity: int) -> int | None:
        """Algorithm R for the n-th example (1-based) of a stratum with ``capacity`` slots."""
        if n <= capacity:
            return n - 1
        j = int(uniform(self.seed, source, label, n) * n)
        return j if j < capacity else None

    def add(self, examples: Iterable[Example], ts: datetime | None = None) -> ReservoirStats:
        """Offer examples in order; an example already held (same id in its stratum) is not counted twice."""
        items: list[dict[str, Any]] = [
            {
                "id": e.id or hashlib.sha256(e.text.encode()).hexdigest()[:32],
                "text": e.text,
                "label": LABELS[e.label],
                "source": e.source or "news",
                "ts": ts,
            }
            for e in examples
        ]
        stats = self.store.reservoir_add(items, self.per_class, self.choose_slot)
        return ReservoirStats(**stats)

    def examples(self, source: str | None = None) -> list[Example]:
        """Every example held (optionally of one source), in a stable order."""
        return [
            Example(text=r["text"], label=LABELS.index(r["label"]), source=r["source"], id=r["example_id"])
            for r in self.store.reservoir_rows(source)
        ]

    def summary(self) -> dict[str, Any]:
        """Held and seen counts per source and label."""
        held: dict[str, dict[str, int]] = {}
        for r in self.store.reservoir_rows():
            held.setdefault(r["source"], {}).setdefault(r["label"], 0)
            held[r["source"]][r["label"]] += 1
        seen: dict[str, dict[str, int]] = {}
        for (source, label), n in self.store.reservoir_seen().items():
            seen.setdefault(source, {})[label] = n
        return {
            "capacity_per_source": self.capacity_per_source,
            "per_class": self.per_class,
            "held": held,
            "seen": seen,
        }
