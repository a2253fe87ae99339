"""Interop: records written and read by another Kafka client (aiokafka), hostile ones included.

AET's Kafka bus uses kafka-python; a real deployment gets its input from other
producers. aiokafka produces, into the test broker, good messages around a
tombstone (value None), non-UTF-8 bytes and a 2 MB value; the real scorer role
(the tiny model, so no transformer is loaded) drains ``aet.messages``; aiokafka
then reads ``aet.scored`` and ``aet.dlq`` back. Every good message must be
scored and every hostile record must be a dead letter with a reason, naming
the offset it was read from. A tombstone used to stop the scorer with a
TypeError, and the 2 MB dead letter (it kept the whole input) could never be
published under kafka-python's 1 MiB request size.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from aet.pipeline.config import load_settings
from aet.pipeline.records import DeadLetter, ScoredMessage, decode
from aet.pipeline.runtime import App
from tests.kafka_broker import TansuBroker
from tests.pipeline.pipeline_fakes import encode, message_payload
from tests.pipeline.tiny_model import register_tiny

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 2000}
KEY = b"$ACME"  # one key, one partition: the hostile records sit in the same batches as the good ones
HUGE = 2 * 1024 * 1024
GOOD = 50


@pytest.fixture
def app(fresh_kafka_broker: TansuBroker, tmp_path: Path) -> Iterator[App]:
    settings = load_settings(
        home=tmp_path / "home",
        bus={"backend": "kafka", "bootstrap_servers": fresh_kafka_broker.bootstrap_servers, "kafka": FAST_GROUP},
        scorer={"max_batch": 16, "max_wait_ms": 20, "hot_swap": False},
    )
    application = App(settings)
    register_tiny(application)
    yield application
    application.close()


def hostile_records() -> dict[str, bytes | None]:
    huge = message_payload("huge", text="x" * HUGE)
    return {"tombstone": None, "not utf-8": b"\xff\xfe\x00garbage\x80", "2 MB": encode(huge)}


async def produce(servers: str, topic: str, values: list[bytes | None]) -> list[int]:
    """Produce ``values`` in order with aiokafka; returns their offsets."""
    producer = AIOKafkaProducer(bootstrap_servers=servers, max_request_size=4 * HUGE, acks="all")
    await producer.start()
    try:
        return [(await producer.send_and_wait(topic, value, key=KEY)).offset for value in values]
    finally:
        await producer.stop()


async def read_back(servers: str, want: dict[str, int], deadline_s: float = 30) -> dict[str, list[bytes]]:
    """Every record of the topics in ``want`` read by aiokafka, until each holds at least its count."""
    consumer = AIOKafkaConsumer(
        *want,
        bootstrap_servers=servers,
        group_id=None,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * HUGE,
        fetch_max_bytes=8 * HUGE,
    )
    await consumer.start()
    got: dict[str, list[bytes]] = {t: [] for t in want}
    try:
        deadline = time.monotonic() + deadline_s
        while any(len(got[t]) < n for t, n in want.items()) and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                got[tp.topic].extend(r.value for r in records if r.value is not None)
    finally:
        await consumer.stop()
    return got


def test_good_messages_around_hostile_ones_from_aiokafka_are_scored_and_the_hostile_ones_dead_lettered(
    app: App,
) -> None:
    topics = app.settings.topics
    servers = app.settings.bus.bootstrap_servers
    app.bus.create_topics(topics.all())  # before aiokafka writes to them
    good = [encode(message_payload(i, text=f"Acme shares soar on record profit, day {i}")) for i in range(GOOD)]
    hostile = hostile_records()
    values = [*good[: GOOD // 2], *hostile.values(), *good[GOOD // 2 :]]
    offsets = asyncio.run(produce(servers, topics.messages, values))
    hostile_at = dict(zip(hostile, offsets[GOOD // 2 : GOOD // 2 + len(hostile)], strict=True))

    scorer = app.scorer(app.load_model(app.registry.champion()))
    stop = threading.Event()
    outcome: dict[str, object] = {}

    def drain() -> None:
        try:
            outcome["processed"] = scorer.run(stop, drain=True)
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=drain, daemon=True)
    worker.start()
    worker.join(90)
    stop.set()  # a scorer stuck retrying gives up its batch and returns
    worker.join(30)
    assert "error" not in outcome, f"the scorer died: {outcome.get('error')!r}"
    assert outcome.get("processed") == len(values), "the scorer did not drain aet.messages (stuck on a record?)"

    got = asyncio.run(read_back(servers, {topics.scored: GOOD, topics.dlq: len(hostile)}))
    scored = [decode(ScoredMessage, v) for v in got[topics.scored]]
    assert sorted(m.id for m in scored) == sorted(f"m{i}" for i in range(GOOD)), "every good message scored once"
    dead = {d.offset: d for d in (decode(DeadLetter, v) for v in got[topics.dlq])}
    for kind, offset in hostile_at.items():
        assert offset in dead, f"the {kind} record (offset {offset}) is not on {topics.dlq}"
        assert dead[offset].stage == "score" and dead[offset].reason, f"the {kind} dead letter has no reason"
    assert len(dead) == len(hostile)

    stored = {row.offset: row for row in app.store.dead_letters()}
    assert set(stored) == set(hostile_at.values()), "each hostile record stored once as a dead letter"
    assert app.store.count_scored() == GOOD
    assert all(len(json.dumps(row.reason)) < 2000 for row in stored.values())
