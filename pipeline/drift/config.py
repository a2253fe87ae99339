"""Which detectors the monitor runs and how it shares the alarm budget among them: :class:`DriftConfig`.

The names here (:data:`DETECTORS`) are the ones used in settings, events and the
benchmark; :data:`DETECTOR_CLASSES` maps each to its class and :data:`SIGNAL_OF`
to the signal it watches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aet.pipeline.drift.detectors import AdwinConfidence, AdwinError, Detector, KswinConfidence, PageHinkleyClassMix
from aet.pipeline.drift.embedding import HotellingEmbedding

DETECTORS = ("adwin_error", "adwin_confidence", "kswin_confidence", "page_hinkley_class_mix", "hotelling_embedding")
DEFAULT_DETECTORS = ("adwin_error", "adwin_confidence", "page_hinkley_class_mix", "hotelling_embedding")
SIGNAL_OF = {
    "adwin_error": "error",
    "adwin_confidence": "confidence",
    "kswin_confidence": "confidence",
    "page_hinkley_class_mix": "class",
    "hotelling_embedding": "embedding",
}

DETECTOR_CLASSES: dict[str, type[Detector]] = {
    cls.name: cls for cls in (AdwinError, AdwinConfidence, KswinConfidence, PageHinkleyClassMix, HotellingEmbedding)
}


@dataclass(frozen=True)
class DriftConfig:
    """What the engine needs from the monitor settings (see ``MonitorSettings``)."""

    detectors: tuple[str, ...] = DEFAULT_DETECTORS
    expected_run_length: float = 20_000
    warmup: int = 200
    cooldown_messages: int = 500
    reference_size: int = 300
    embedding_window: int = 100
    embed_every: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [d for d in self.detectors if d not in DETECTOR_CLASSES]
        if unknown:
            raise ValueError(f"unknown drift detectors {unknown}: choose from {list(DETECTOR_CLASSES)}")

    @classmethod
    def from_settings(cls, settings: Any) -> DriftConfig:
        return cls(
            detectors=tuple(settings.detectors),
            expected_run_length=settings.expected_run_length,
            warmup=settings.warmup,
            cooldown_messages=settings.cooldown_messages,
            reference_size=settings.reference_size,
            embedding_window=settings.embedding_window,
            embed_every=settings.embed_every,
            seed=settings.seed,
        )

    def run_length_of(self, name: str) -> float:
        """The share of the alarm budget one detector gets, in its own updates."""
        per_detector = self.expected_run_length * max(1, len(self.detectors))
        if SIGNAL_OF[name] == "embedding":
            return per_detector / max(1, self.embed_every)  # only one message in embed_every is embedded
        return per_detector  # labels are at most one per message: counting them as messages is conservative

    def build(self, name: str) -> Detector:
        """Detector ``name`` with its share of the budget; each takes the options it uses and ignores the rest."""
        make: Callable[..., Detector] = DETECTOR_CLASSES[name]
        return make(
            self.run_length_of(name),
            warmup=self.warmup,
            reference_size=self.reference_size,
            window=self.embedding_window,
            seed=self.seed,
        )
