"""Scorers as separate processes on Kafka: a consumer group survives a SIGKILL and a newcomer.

A real corpus is replayed into a tansu broker with ``aet replay``; two ``aet score``
daemons share the partitions in one consumer group; one is killed with SIGKILL
mid-stream and a third joins. Every message must end up scored exactly once in
the (shared SQLite) store, and ``aet.scored`` must hold every message id, with
duplicates only from batches in flight at the kill or a rebalance, carrying
identical content. Waits are on observable conditions (rows in the store, log
lines, offsets) with deadlines.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from aet.adapters.kafka_bus import KafkaBus
from aet.pipeline.config import BusSettings, TopicSettings
from aet.storage.db import Database
from aet.storage.store import ResultStore
from tests.cli_helpers import aet_env, run_aet, start_aet, wait_until
from tests.conftest import shared_corpus
from tests.kafka_broker import TansuBroker

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

STREAM_LIMIT = 1500  # enough that the survivor is still scoring when the newcomer (a fresh process) joins
MAX_BATCH = 16
PARTITIONS = 4
GROUP = "aet-scorer"
TOPICS = TopicSettings()
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 2000}
ASSIGNED = re.compile(r"group aet-scorer: assigned \[(.*)\]")


def _scored_count(db_url: str) -> int:
    db = Database(db_url, migrate_schema=False)
    try:
        return ResultStore(db).count_scored()
    finally:
        db.dispose()


def _assignments(log: Path) -> list[list[str]]:
    """Every assignment a scorer logged, oldest first."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return [re.findall(r"'([^']+)'", m.group(1)) for m in ASSIGNED.finditer(text)]


def _holds_partitions(log: Path) -> bool:
    got = _assignments(log)
    return bool(got and got[-1])


def _read_topics(bus: KafkaBus, topics: list[str], deadline_s: float = 120) -> dict[str, list[dict]]:
    """Every record of ``topics``, read up to their (exact) end offsets by a fresh group."""
    ends = {t: sum(bus.end_offsets(t).values()) for t in topics}
    out: dict[str, list[dict]] = {t: [] for t in topics}
    with bus.consumer(f"reader-{uuid.uuid4().hex[:8]}", topics) as reader:
        deadline = time.monotonic() + deadline_s
        while any(len(out[t]) < ends[t] for t in topics):
            assert time.monotonic() < deadline, f"read {[len(v) for v in out.values()]} of {ends}"
            for r in reader.poll(max_records=2000, timeout_ms=200):
                out[r.topic].append(json.loads(r.value))
    return out


def _spread_over_channels(corpus: Path, out: Path, channels: int = 12) -> Path:
    """The corpus as chat from several desks: its rows have no entities and one channel, which
    would key every message alike and put the whole stream on one partition."""
    with open(corpus, encoding="utf-8") as src, open(out, "w", encoding="utf-8") as dst:
        for i, line in enumerate(src):
            if i >= STREAM_LIMIT:
                break
            row = json.loads(line)
            row["channel"] = f"desk-{i % channels}"
            dst.write(json.dumps(row) + "\n")
    return out


def test_two_scorers_share_partitions_survive_sigkill_and_a_newcomer(
    fresh_kafka_broker: TansuBroker, app_with_champion, tmp_path: Path
) -> None:
    corpus = _spread_over_channels(shared_corpus("financial_phrasebank"), tmp_path / "phrasebank.jsonl")
    broker = fresh_kafka_broker
    home = app_with_champion.settings.home
    db_url = app_with_champion.settings.db_url
    kafka_flags = ["--bus", "kafka", "--bootstrap-servers", broker.bootstrap_servers]
    env = aet_env(
        home,
        AET_DATABASE_URL=db_url,
        AET_BUS__PARTITIONS=str(PARTITIONS),
        **{f"AET_BUS__KAFKA__{k.upper()}": str(v) for k, v in FAST_GROUP.items()},
    )

    replay = run_aet([*kafka_flags, "replay", str(corpus), "--limit", str(STREAM_LIMIT), "--no-progress"], env)
    assert replay.returncode == 0, replay.stderr[-3000:]
    published = json.loads(replay.stdout)["published"]
    assert published > 300

    score = [*kafka_flags, "score", "--max-batch", str(MAX_BATCH), "--max-wait-ms", "20"]
    logs = {name: tmp_path / f"scorer-{name}.log" for name in "abc"}
    procs: dict[str, subprocess.Popen] = {}
    try:
        procs["a"] = start_aet(score, env, logs["a"])
        procs["b"] = start_aet(score, env, logs["b"])

        def sharing() -> bool:
            if not (_holds_partitions(logs["a"]) and _holds_partitions(logs["b"])):
                return False
            a, b = set(_assignments(logs["a"])[-1]), set(_assignments(logs["b"])[-1])
            return not a & b and len(a | b) == PARTITIONS

        wait_until(sharing, 180, "the two scorers to share the partitions", procs["b"])
        wait_until(lambda: _scored_count(db_url) >= published // 5, 300, "a fifth of the stream scored", procs["a"])

        procs["a"].send_signal(signal.SIGKILL)
        assert procs["a"].wait(30) == -signal.SIGKILL
        at_kill = _scored_count(db_url)
        assert at_kill < published, "the stream was scored before the kill; the test proves nothing"

        procs["c"] = start_aet([*score, "--drain"], env, logs["c"])
        wait_until(lambda: _scored_count(db_url) >= published, 600, "every message scored", procs["b"])
        assert procs["c"].wait(120) == 0, logs["c"].read_text()[-3000:]
        procs["b"].send_signal(signal.SIGTERM)
        assert procs["b"].wait(120) == 0, logs["b"].read_text()[-3000:]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(30)

    assert _assignments(logs["c"]) and any(_assignments(logs["c"])), "the newcomer never got partitions"

    bus = KafkaBus(BusSettings(backend="kafka", bootstrap_servers=broker.bootstrap_servers, kafka=FAST_GROUP))
    try:
        topics = _read_topics(bus, [TOPICS.messages, TOPICS.scored])
        lag = bus.group_lag(GROUP, [TOPICS.messages])
    finally:
        bus.close()
    ids = [m["id"] for m in topics[TOPICS.messages]]
    assert len(ids) == len(set(ids)) == published

    db = Database(db_url, migrate_schema=False)
    try:
        stored = ResultStore(db).scored_ids()
    finally:
        db.dispose()
    assert len(stored) == len(set(stored)) and set(stored) == set(ids), "every message scored exactly once in the store"

    outputs: dict[str, list[dict]] = defaultdict(list)
    for o in topics[TOPICS.scored]:
        outputs[o["id"]].append(o)
    assert set(outputs) == set(ids), "aet.scored holds every message id at least once"
    duplicated = {i: os for i, os in outputs.items() if len(os) > 1}
    for i, os in duplicated.items():
        content = {(o["label"], json.dumps(o["probs"], sort_keys=True), o["score"], o["model_version"]) for o in os}
        assert len(content) == 1, f"{i} was scored twice with different content: {content}"
    # In flight at most: A's batch at the kill, and one batch of each member at each of the
    # rebalances (A's death, C's arrival, C's departure).
    assert sum(len(os) - 1 for os in duplicated.values()) <= 6 * MAX_BATCH, f"{len(duplicated)} duplicated ids"
    assert lag == 0
