"""Crash and shutdown of a scorer on the embedded setup (memory bus journal + SQLite).

The scorer runs as a real subprocess. SIGKILL mid-stream, then a restart, must
end with every input scored exactly once in the store; SIGTERM must finish
the batch in flight, commit it and exit 0.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

import pytest

from aet.adapters.memory_bus import MemoryBus
from aet.pipeline.config import TopicSettings
from aet.storage.db import Database
from aet.storage.store import ResultStore
from tests.cli_helpers import aet_env, run_aet, start_aet, wait_until
from tests.conftest import EXAMPLES, SHARED_DATA

pytestmark = pytest.mark.slow
MAX_BATCH = 16
STREAM_LIMIT = "800"
TOPICS = TopicSettings()


def stream_file() -> Path:
    """A real corpus when the shared data is present, else the examples."""
    phrasebank = SHARED_DATA / "financial_phrasebank" / "financial_phrasebank.jsonl"
    return phrasebank if phrasebank.is_file() else EXAMPLES / "stream.jsonl"


@pytest.fixture
def home(app_with_champion) -> Path:
    return app_with_champion.settings.home


def _published_ids(journal: Path) -> list[str]:
    bus = MemoryBus(journal_dir=journal)
    try:
        return [json.loads(r.value)["id"] for r in bus.read_all(TOPICS.messages)]
    finally:
        bus.close()


def _scored_count(home: Path) -> int:
    db = Database(f"sqlite:///{home / 'aet.db'}", migrate_schema=False)
    try:
        return ResultStore(db).count_scored()
    finally:
        db.dispose()


def test_sigkill_mid_stream_then_restart_scores_everything_exactly_once(home: Path, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    env = aet_env(home, AET_BUS__JOURNAL_DIR=str(journal))
    replay = run_aet(["replay", str(stream_file()), "--limit", STREAM_LIMIT, "--no-progress"], env)
    assert replay.returncode == 0, replay.stderr[-2000:]
    ids = _published_ids(journal)
    assert len(ids) == len(set(ids)) > 200

    scorer = start_aet(
        ["score", "--drain", "--max-batch", str(MAX_BATCH), "--max-wait-ms", "20"], env, tmp_path / "s1.log"
    )
    wait_until(lambda: _scored_count(home) >= min(len(ids) // 4, 150), 300, "a quarter of the stream scored", scorer)
    scorer.send_signal(signal.SIGKILL)
    assert scorer.wait(30) == -signal.SIGKILL
    scored_at_kill = _scored_count(home)
    assert scored_at_kill < len(ids), "the scorer finished before it was killed; the test proves nothing"

    restarted = run_aet(["score", "--drain", "--max-batch", str(MAX_BATCH)], env, timeout=600)
    assert restarted.returncode == 0, restarted.stderr[-2000:]

    db = Database(f"sqlite:///{home / 'aet.db'}", migrate_schema=False)
    try:
        stored = ResultStore(db).scored_ids()
    finally:
        db.dispose()
    assert sorted(stored) == sorted(ids), "every input scored exactly once in the store"

    bus = MemoryBus(journal_dir=journal)
    try:
        outputs = [json.loads(r.value) for r in bus.read_all(TOPICS.scored)]
        committed_lag = bus.group_lag("aet-scorer", [TOPICS.messages])
        dead = bus.read_all(TOPICS.dlq)
    finally:
        bus.close()
    counts = Counter(o["id"] for o in outputs)
    assert set(counts) == set(ids), "aet.scored holds every message at least once"
    duplicates = sum(c - 1 for c in counts.values())
    assert duplicates <= MAX_BATCH, f"{duplicates} duplicates: more than the one batch in flight at the kill"
    assert committed_lag == 0
    assert dead == []
    restarted_from_zero = all(c == 2 for c in counts.values())
    assert not restarted_from_zero, "the restart re-scored everything instead of resuming from the commit"


def test_sigterm_finishes_the_batch_commits_and_exits_zero(home: Path, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    env = aet_env(home, AET_BUS__JOURNAL_DIR=str(journal))
    assert run_aet(["replay", str(stream_file()), "--limit", STREAM_LIMIT, "--no-progress"], env).returncode == 0
    total = len(_published_ids(journal))

    scorer = start_aet(["score", "--max-batch", str(MAX_BATCH)], env, tmp_path / "score.log")
    wait_until(lambda: _scored_count(home) >= 50, 300, "some messages scored", scorer)
    scorer.send_signal(signal.SIGTERM)
    assert scorer.wait(60) == 0, (tmp_path / "score.log").read_text()[-2000:]

    stored = _scored_count(home)
    bus = MemoryBus(journal_dir=journal)
    try:
        committed = total - bus.group_lag("aet-scorer", [TOPICS.messages])
    finally:
        bus.close()
    assert committed == stored, "the batch in flight at SIGTERM was stored and committed, nothing more"
