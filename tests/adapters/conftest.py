"""Fixtures for the bus tests.

``bus_factory`` is the one place that knows about backends: the contract tests in
test_bus_contract.py run once per entry of ``BUS_BACKENDS``. To run them on another
backend, add its name to the list and a branch to ``_open`` (plus whatever fixture
starts its broker).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from aet.pipeline.ports import Bus

BusFactory = Callable[[], Bus]

# "memory-retained" drops every record all its readers have committed past (retention=0): the
# contract must hold however little the memory bus keeps.
BUS_BACKENDS: list = ["memory", "memory-retained", pytest.param("kafka", marks=pytest.mark.kafka)]


def _open(backend: str, request: pytest.FixtureRequest) -> Bus:
    if backend == "memory":
        from aet.adapters.memory_bus import MemoryBus

        return MemoryBus(partitions=3)
    if backend == "memory-retained":
        from aet.adapters.memory_bus import MemoryBus

        return MemoryBus(partitions=3, retention=0)
    if backend == "kafka":
        from aet.adapters.kafka_bus import KafkaBus
        from aet.pipeline.config import BusSettings

        broker = request.getfixturevalue("kafka_broker")
        return KafkaBus(
            BusSettings(
                backend="kafka",
                bootstrap_servers=broker.bootstrap_servers,
                kafka={"session_timeout_ms": 6000, "heartbeat_interval_ms": 2000},
            )
        )
    raise ValueError(f"no bus_factory branch for backend {backend!r}")


@pytest.fixture(params=BUS_BACKENDS)
def bus_factory(request: pytest.FixtureRequest) -> Iterator[BusFactory]:
    """A callable that opens a fresh Bus of the parametrized backend; every bus is closed afterwards.

    Tests must use unique topic and group names (see ``unique``) because a real broker
    is shared between tests.
    """
    opened: list[Bus] = []

    def make() -> Bus:
        bus = _open(request.param, request)
        opened.append(bus)
        return bus

    yield make
    for bus in reversed(opened):
        bus.close()


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Make a name no other test uses: ``unique("orders")`` -> ``orders-3f2a...``."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:10]}"


# -- Kafka (tansu) test brokers, for the Kafka bus tests ---------------------------
# Importing the fixtures here registers them for every test under tests/adapters/.
from tests.kafka_broker import fresh_kafka_broker, kafka_broker  # noqa: E402,F401
