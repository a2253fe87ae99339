"""A throwaway AET installation for a benchmark: its own home, SQLite database and memory bus.

Benchmarks that run workers exactly as production does (scorer, alert engine,
hot swap) need a database and a bus of their own, so that measuring never writes
into the user's installation and every run starts empty. They get them from the
composition root like every other caller, not by choosing backends themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aet.pipeline.config import BusSettings, Settings
from aet.pipeline.runtime import App


def scratch_app(settings: Settings, home: Path, **sections: Any) -> App:
    """An installation in ``home`` with ``settings``' sections (some replaced by ``sections``), on a memory bus
    (with the configured ``bus.memory_retention``)."""
    bus = BusSettings(backend="memory", memory_retention=settings.bus.memory_retention)
    return App(settings.model_copy(update={"home": home, "database_url": None, "bus": bus, **sections}))
