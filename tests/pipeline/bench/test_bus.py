"""``aet bench bus`` without Kafka: the payloads it measures and the errors when there is no broker.

The measurement on a real broker is in tests/adapters/test_kafka_bus.py (needs tansu).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aet.adapters.memory_bus import MemoryBus
from aet.adapters.tansu import NOT_FOUND, TansuBroker, TansuBrokerError
from aet.pipeline.bench.bus import BusBackends, _measure_bus, bus_benchmark, bus_payloads
from aet.pipeline.config import BusSettings
from aet.pipeline.records import Message, decode


def _memory(settings: BusSettings, *, tuned: bool = True) -> MemoryBus:
    return MemoryBus(partitions=settings.partitions)


def test_payloads_are_keyed_like_live_traffic() -> None:
    rows = [{"text": "$aapl beats, $MSFT lags"}, {"text": "no tag", "channel": "desk"}, {"text": "x", "entity": "$T"}]
    payloads = bus_payloads(rows)
    # Keyed by the first entity, else by message id (not the channel: one channel would be one partition).
    assert [key for key, _ in payloads] == ["$AAPL", decode(Message, payloads[1][1]).id, "$T"]
    assert payloads[1][0] != "desk"
    first = decode(Message, payloads[0][1])
    assert first.entities == ["$AAPL", "$MSFT"] and first.source == "news"


def test_a_memory_bus_is_measured_producing_and_consuming(tmp_path: Path) -> None:
    payloads = bus_payloads([{"text": f"message {i}", "entity": f"$E{i % 7}"} for i in range(3000)])
    result = _measure_bus(MemoryBus(partitions=3), payloads, "unit")
    assert result["produce_msgs_per_s"] > 0 and result["consume_msgs_per_s"] > 0 and result["join_s"] >= 0


def test_without_bootstrap_servers_or_a_broker_to_start_it_says_how_to_measure(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="no Kafka to measure: pass --bootstrap-servers"):
        bus_benchmark(
            BusSettings(), BusBackends(open=_memory, tuned={}), bootstrap_servers=None, n=10, repeats=1, out=tmp_path
        )


def test_a_broker_that_cannot_be_found_is_a_clear_error(tmp_path: Path) -> None:
    def missing() -> TansuBroker:
        raise TansuBrokerError(NOT_FOUND)

    backends = BusBackends(open=_memory, tuned={}, broker=missing)
    with pytest.raises(RuntimeError, match=r"pass --bootstrap-servers \(tansu binary not found"):
        bus_benchmark(BusSettings(), backends, bootstrap_servers=None, n=10, repeats=1, out=tmp_path)
    assert not (tmp_path / "bus.json").exists()
