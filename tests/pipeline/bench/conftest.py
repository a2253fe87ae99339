"""Fixtures of the benchmark tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pipeline.bench.scenario_fakes import write_corpus


@pytest.fixture
def data(tmp_path: Path) -> Path:
    write_corpus(tmp_path, "news_corpus", 600)
    write_corpus(tmp_path, "chat_corpus", 400, split=True, source="chat")
    return tmp_path
