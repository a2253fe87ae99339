"""Fixtures of the integration tests: a fresh tansu Kafka-protocol broker per test that asks for one."""

from tests.kafka_broker import fresh_kafka_broker  # noqa: F401 - a fixture, found by pytest through this import
