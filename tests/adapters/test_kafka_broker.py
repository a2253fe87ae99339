"""Quick checks that the tansu test broker (tests/kafka_broker.py) works.

If these fail, every Kafka-backed test will fail too, so a failure here means
the fixture is broken, not AET.
"""

from __future__ import annotations

import time
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

# The fixtures come from tests/adapters/conftest.py, which imports them from here.
from tests.kafka_broker import TansuBroker

pytestmark = pytest.mark.kafka

# tansu holds a new group member's join for about session_timeout_ms / 2, so
# keep the session timeout short. With kafka-python's 45 s default, joins take
# about 23 s.
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 2000}


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()


def _produce(bootstrap: str, topic: str, count: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        for i in range(count):
            producer.send(topic, key=f"key-{i % 7}".encode(), value=f"value-{i}".encode())
        producer.flush(timeout=10)
    finally:
        producer.close()


def _consume(bootstrap: str, topic: str, group: str, count: int, timeout: float = 20.0) -> list[bytes]:
    """Read up to ``count`` records in consumer group ``group``, then commit manually."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **FAST_GROUP,
    )
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout
        while len(values) < count and time.monotonic() < deadline:
            batches = consumer.poll(timeout_ms=200, max_records=count - len(values))
            values.extend(record.value for records in batches.values() for record in records)
        consumer.commit()
    finally:
        consumer.close()
    return values


def test_broker_answers_metadata(kafka_broker: TansuBroker) -> None:
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
    try:
        cluster = admin.describe_cluster()
    finally:
        admin.close()
    assert [(b["host"], b["port"]) for b in cluster["brokers"]] == [("127.0.0.1", kafka_broker.port)]


def test_round_trip_with_group_and_manual_commit(kafka_broker: TansuBroker) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topic, group = _unique("roundtrip"), _unique("group")
    _create_topic(bootstrap, topic, partitions=3)
    _produce(bootstrap, topic, 30)

    first = _consume(bootstrap, topic, group, 20)
    # A new consumer in the same group continues from the committed offsets:
    # it gets the remaining records and nothing twice.
    second = _consume(bootstrap, topic, group, 10)

    assert len(first) == 20
    assert sorted(first + second) == sorted(f"value-{i}".encode() for i in range(30))

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        committed = {p: consumer.committed(TopicPartition(topic, p)) for p in range(3)}
    finally:
        consumer.close()
    assert sum(committed.values()) == 30


def test_restart_keeps_port_and_loses_data(fresh_kafka_broker: TansuBroker) -> None:
    broker = fresh_kafka_broker
    bootstrap = broker.bootstrap_servers
    topic = _unique("restart")
    _create_topic(bootstrap, topic, partitions=1)

    broker.restart()

    assert broker.bootstrap_servers == bootstrap
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        assert topic not in admin.list_topics()  # memory storage: topics are gone
    finally:
        admin.close()
    _create_topic(bootstrap, topic, partitions=1)
    _produce(bootstrap, topic, 3)
    assert len(_consume(bootstrap, topic, _unique("group"), 3)) == 3
