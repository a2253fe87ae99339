"""A vendor's Kafka topic on a real tansu broker, read with a field mapping into AET's messages topic."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from aet.adapters.kafka_bus import KafkaBus
from aet.adapters.memory_bus import MemoryBus
from aet.pipeline.config import BusSettings, FieldMapping, KafkaTopicSourceSettings
from aet.pipeline.ports import BusError
from aet.pipeline.records import DeadLetter, Message
from aet.pipeline.sources.emit import Emitter
from aet.pipeline.sources.kafka_topic import ForeignTopicSource
from tests.kafka_broker import TansuBroker, kafka_broker  # noqa: F401 - the session's broker fixture
from tests.pipeline.sources.conftest import TOPICS

pytestmark = pytest.mark.kafka
DEADLINE_S = 60.0
MAPPING = FieldMapping(
    id="$.uid", text="$.body.headline", ts="$.body.time", entities="$.body.tickers", channel="$.desk"
)


def vendor(uid: str, headline: object = "Acme raises dividend", **extra: object) -> bytes:
    body = {"headline": headline, "time": "2026-03-02T13:00:00Z", "tickers": ["$ACME"], **extra}
    return json.dumps({"uid": uid, "desk": "equities", "body": body}).encode()


@pytest.fixture
def foreign(kafka_broker: TansuBroker) -> Iterator[KafkaBus]:  # noqa: F811
    bus = KafkaBus(
        BusSettings(
            backend="kafka",
            bootstrap_servers=kafka_broker.bootstrap_servers,
            partitions=2,
            connect_timeout_s=5,
            kafka={"session_timeout_ms": 6000, "heartbeat_interval_ms": 2000},
        )
    )
    yield bus
    bus.close()


def produce(bus: KafkaBus, topic: str, values: list[bytes]) -> None:
    bus.create_topics([topic])
    for i, v in enumerate(values):
        bus.publish(topic, v, key=f"k{i}")
    bus.flush(30)


def drain(source: ForeignTopicSource, expected: int) -> int:
    """Poll until ``expected`` records were read (a joining member gets nothing at first), within a deadline."""
    read, deadline = 0, time.monotonic() + DEADLINE_S
    while read < expected:
        assert time.monotonic() < deadline, f"read {read} of {expected} records in {DEADLINE_S} s"
        read += source.poll_once()
    return read


def settings(topic: str, group: str) -> KafkaTopicSourceSettings:
    return KafkaTopicSourceSettings(name="vendor", topic=topic, group=group, mapping=MAPPING, poll_interval_s=0.5)


def test_mapped_records_published_unreadable_ones_dead_lettered_offsets_committed(
    foreign: KafkaBus,
    emitter: Emitter,
    published: Callable[[], list[Message]],
    dead_letters: Callable[[], list[DeadLetter]],
) -> None:
    topic, group = f"vendor.news.{uuid.uuid4().hex[:8]}", f"aet-ingest-{uuid.uuid4().hex[:8]}"
    produce(
        foreign,
        topic,
        [vendor("NX-1"), b"<xml>not json</xml>", vendor("NX-2", headline=None), vendor("NX-3", "Globex <i>slides</i>")],
    )
    source = ForeignTopicSource(settings(topic, group), lambda: foreign.consumer(group, [topic]), emitter)
    try:
        drain(source, 4)
    finally:
        source.close()
    got = {m.id: m for m in published()}
    assert set(got) == {"vendor:NX-1", "vendor:NX-3"}
    assert got["vendor:NX-3"].text == "Globex slides" and got["vendor:NX-3"].entities == ["$ACME"]
    assert got["vendor:NX-1"].channel == "equities" and got["vendor:NX-1"].meta == {
        "topic": topic,
        "platform": "vendor",
    }
    dead = sorted(dead_letters(), key=lambda d: d.reason)
    assert [d.topic for d in dead] == [topic, topic] and all(d.stage == "ingest:vendor" for d in dead)
    assert any("not JSON" in d.reason and d.kept == b"<xml>not json</xml>" for d in dead)
    assert any("mapping.text '$.body.headline' matched nothing" in d.reason for d in dead)
    assert all(d.offset is not None and d.partition is not None for d in dead)
    assert foreign.group_lag(group, [topic]) == 0  # committed after the bus acknowledged


class DownBus(MemoryBus):
    """AET's bus refusing to acknowledge (a broker down)."""

    def flush(self, timeout_s: float | None = None) -> None:
        raise BusError("broker unreachable")


def test_nothing_is_committed_until_the_bus_acknowledged(
    foreign: KafkaBus, emitter: Emitter, published: Callable[[], list[Message]]
) -> None:
    topic, group = f"vendor.news.{uuid.uuid4().hex[:8]}", f"aet-ingest-{uuid.uuid4().hex[:8]}"
    produce(foreign, topic, [vendor("NX-10"), vendor("NX-11")])
    down = DownBus()
    down.create_topics(TOPICS.all())
    source = ForeignTopicSource(settings(topic, group), lambda: foreign.consumer(group, [topic]), Emitter(down, TOPICS))
    try:
        with pytest.raises(BusError):
            drain(source, 2)
        assert foreign.group_lag(group, [topic]) == 2
        source.emitter = emitter  # the bus is back: rejoining reads the records not committed again
        source.recover()
        drain(source, 2)
    finally:
        source.close()
    assert sorted(m.id for m in published()) == ["vendor:NX-10", "vendor:NX-11"]
    assert foreign.group_lag(group, [topic]) == 0
