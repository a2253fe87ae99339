"""A bounded cache of scores by model version, source and normalized text: work not done at all.

News feeds repeat a headline across outlets and retweets repeat a tweet; a
text the serving model already scored needs no second forward pass. The key
holds the version that serves (a fast-path heads version included) and the
message's source (a head serves per source), so a swap can never serve a
score of the model it replaced. The text is normalized only where the
tokenizer would not see a difference: surrounding and repeated whitespace.
The cache holds at most ``max_entries`` rows and drops the least recently
used first; ``max_entries=0`` disables it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")


def normalize_text(text: str) -> str:
    """The text with surrounding whitespace stripped and inner runs of whitespace as one space."""
    return " ".join(text.split())


@dataclass
class CacheStats:
    """Look-ups that found a score (``hits``) and that did not (``misses``)."""

    hits: int = 0
    misses: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class ScoreCache(Generic[V]):
    """Least-recently-used map from (version, source, normalized text) to what the model computed for it."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 0:
            raise ValueError(f"max_entries must be >= 0, got {max_entries}")
        self.max_entries = max_entries
        self.stats = CacheStats()
        self._rows: OrderedDict[Hashable, V] = OrderedDict()

    @staticmethod
    def key(version: str, source: str, text: str) -> tuple[str, str, str]:
        return (version, source, normalize_text(text))

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: Hashable) -> V | None:
        """The cached value (now the most recently used), or ``None``; counted as a hit or a miss."""
        if not self.enabled:
            return None
        value = self._rows.get(key)
        if value is None:
            self.stats.misses += 1
            return None
        self._rows.move_to_end(key)
        self.stats.hits += 1
        return value

    def put(self, key: Hashable, value: V) -> None:
        """Remember ``value``, dropping the least recently used rows beyond ``max_entries``."""
        if not self.enabled:
            return
        self._rows[key] = value
        self._rows.move_to_end(key)
        while len(self._rows) > self.max_entries:
            self._rows.popitem(last=False)

    def clear(self) -> None:
        """Forget every row (a swap makes them unreachable anyway; this gives their memory back)."""
        self._rows.clear()
