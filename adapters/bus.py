"""The bus factory: open the backend that the settings name.

The bus contract itself (:class:`aet.pipeline.ports.Bus` and
:class:`~aet.pipeline.ports.Consumer`) lives with the roles that use it; the
backends here implement it: :class:`aet.adapters.memory_bus.MemoryBus` (one
process, optionally journaled to disk) and :class:`aet.adapters.kafka_bus.KafkaBus`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aet.pipeline.ports import Bus, BusError

if TYPE_CHECKING:
    from aet.pipeline.config import BusSettings


def open_bus(settings: BusSettings) -> Bus:
    """Open the backend named by ``settings.backend``."""
    if settings.backend == "memory":
        from aet.adapters.memory_bus import MemoryBus

        return MemoryBus(
            partitions=settings.partitions, journal_dir=settings.journal_dir, retention=settings.memory_retention
        )
    if settings.backend == "kafka":
        from aet.adapters.kafka_bus import KafkaBus

        return KafkaBus(settings)
    raise BusError(f"unknown bus backend {settings.backend!r}: use 'memory' or 'kafka'")
