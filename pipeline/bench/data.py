"""Where benchmark messages come from: the shared corpora when they are there, else the examples.

The shared data directory (``AET_SHARED_DATA``, or ``../shared/data`` next to
the checkout) holds the real labeled corpora; a checkout without it still runs
every throughput benchmark on the small files of ``examples/``.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: The event time of every throughput benchmark's messages: throughput does not depend on it.
BENCH_TS = datetime(2026, 1, 1, tzinfo=UTC)
SHARED_CORPUS = "twitter_financial_news_sentiment/twitter_financial_news_sentiment.jsonl"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def shared_data_dir() -> Path | None:
    """``AET_SHARED_DATA``, else ``../shared/data`` from the working directory, if it exists."""
    for candidate in (os.environ.get("AET_SHARED_DATA"), "../shared/data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def load_texts(data: Path | None, n: int, *, cycle: bool = False) -> tuple[list[dict[str, Any]], str]:
    """The first ``n`` message rows (fewer if the file is shorter) and where they came from.

    Rows never repeat unless the file repeats them: a throughput measured on
    repeated texts would credit the score cache with work a real stream needs.
    Only a benchmark that must publish for a fixed time whatever the file
    holds (``cycle``) starts over at the first row.
    """
    if data is None:
        shared = shared_data_dir()
        data = shared / SHARED_CORPUS if shared and (shared / SHARED_CORPUS).is_file() else EXAMPLES / "stream.jsonl"
    rows = [json.loads(line) for line in Path(data).read_text(encoding="utf-8").split("\n") if line.strip()]
    if not rows:
        raise ValueError(f"no rows in {data}")
    picked = [rows[i % len(rows)] for i in range(n)] if cycle else rows[:n]
    return picked, str(data)
