"""Kafka-specific behaviour of the Kafka bus (adapters/kafka_bus.py) against a real tansu broker.

The backend-neutral contract is in test_bus_contract.py; this module covers what
only a real broker shows: poison records through a scorer, an unreachable or
restarting broker, rebalances, and long work under ``max_poll_interval_ms``.
Every wait is on an observable condition with a deadline. tansu holds a joining
member for about half the session timeout, hence the short session below.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aet.adapters.kafka_bus import KafkaBus, client_configs
from aet.pipeline import metrics
from aet.pipeline.config import BusSettings, ScorerSettings, TopicSettings
from aet.pipeline.model import Prediction
from aet.pipeline.ports import BusError, BusRecord
from aet.pipeline.records import Message
from aet.pipeline.roles.scorer import Scorer
from aet.pipeline.worker import run_paused
from aet.storage.db import Database
from aet.storage.store import ResultStore
from tests.kafka_broker import TansuBroker

pytestmark = pytest.mark.kafka

FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 2000}
DEADLINE_S = 60.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def kafka_settings(bootstrap: str, **kafka: Any) -> BusSettings:
    return BusSettings(
        backend="kafka", bootstrap_servers=bootstrap, partitions=3, connect_timeout_s=5, kafka={**FAST_GROUP, **kafka}
    )


def unique_topics() -> TopicSettings:
    tag = uuid.uuid4().hex[:8]
    return TopicSettings(**{name: f"aet.{name}.{tag}" for name in TopicSettings.model_fields})


def wait_for(condition: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def poll_until(consumer: Any, n: int, timeout: float = DEADLINE_S) -> list[BusRecord]:
    out: list[BusRecord] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        out.extend(consumer.poll(max_records=n - len(out), timeout_ms=200))
    return out


def message(i: int, text: str | None = None, tag: str = "m", keys: int = 1) -> Message:
    """A valid message; its key (the entity) is one of ``keys`` tickers."""
    entity = f"TICK{i % keys}"
    return Message(
        id=f"{tag}-{i}",
        source="news",
        channel="test",
        text=text or f"message {i} about {entity}",
        ts="2026-01-05T14:30:00+00:00",
        entities=[entity],
    )


class TinyModel:
    """A stand-in for SentimentModel: fixed probabilities, optionally blocking on one text."""

    version = "tiny-v1"

    def __init__(self, block_on: str | None = None) -> None:
        self.block_on = block_on
        self.blocked = threading.Event()
        self.release = threading.Event()

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if self.block_on is not None and self.block_on in texts:
            self.blocked.set()
            assert self.release.wait(DEADLINE_S), "test never released the blocked batch"
        return np.tile(np.array([0.2, 0.3, 0.5]), (len(texts), 1))

    base = version

    def predict(
        self, texts: Sequence[str], sources: Sequence[str] | None = None, *, features: bool = False
    ) -> Prediction:
        return Prediction(self.predict_proba(texts))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ResultStore]:
    db = Database(f"sqlite:///{tmp_path / 'kafka.db'}")
    yield ResultStore(db)
    db.dispose()


class WorkerThread(threading.Thread):
    def __init__(self, worker: Scorer) -> None:
        super().__init__(daemon=True)
        self.worker, self.stop, self.error = worker, threading.Event(), None

    def run(self) -> None:
        try:
            self.worker.run(self.stop)
        except BaseException as exc:
            self.error = exc

    def finish(self) -> None:
        self.stop.set()
        self.join(timeout=DEADLINE_S)
        assert not self.is_alive(), "worker did not stop"
        assert self.error is None, repr(self.error)


def retries(operation: str) -> float:
    return metrics.RETRIES.labels("scorer", operation)._value.get()


# -- configuration --------------------------------------------------------------------


def test_client_settings_pass_through_and_coerce() -> None:
    """Security settings reach every client; per-client sections win; env strings get their types."""
    s = BusSettings(
        backend="kafka",
        bootstrap_servers="a:9092,b:9092",
        kafka={
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "PLAIN",
            "ssl_check_hostname": "false",
            "session_timeout_ms": "6000",
            "consumer": {"max_poll_records": "7"},
            "producer": {"linger_ms": 0},
        },
    )
    cfg = client_configs(s)
    for client in ("producer", "consumer", "admin"):
        assert cfg[client]["security_protocol"] == "SASL_SSL"
        assert cfg[client]["sasl_mechanism"] == "PLAIN"
        assert cfg[client]["ssl_check_hostname"] is False
        assert cfg[client]["bootstrap_servers"] == ["a:9092", "b:9092"]
    assert cfg["consumer"]["session_timeout_ms"] == 6000 and "session_timeout_ms" not in cfg["producer"]
    assert cfg["consumer"]["max_poll_records"] == 7
    assert cfg["producer"]["linger_ms"] == 0  # overrides the measured setting
    assert cfg["consumer"]["enable_auto_commit"] is False and cfg["producer"]["acks"] == "all"
    with pytest.raises(BusError, match="sasl_plain_pasword"):
        client_configs(BusSettings(backend="kafka", kafka={"sasl_plain_pasword": "typo"}))


def test_unreachable_broker_fails_fast_with_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    settings = BusSettings(backend="kafka", bootstrap_servers=f"127.0.0.1:{port}", connect_timeout_s=2)
    started = time.monotonic()
    with pytest.raises(BusError, match=f"cannot reach Kafka at 127.0.0.1:{port}"):
        KafkaBus(settings)
    assert time.monotonic() - started < 10


# -- poison records ---------------------------------------------------------------------


def test_poison_records_go_to_the_dlq_and_consumption_continues(kafka_broker: TansuBroker, store: ResultStore) -> None:
    topics = unique_topics()
    bus = KafkaBus(kafka_settings(kafka_broker.bootstrap_servers))
    try:
        bus.create_topics(topics.all())
        good = [message(i) for i in range(6)]
        raw: list[tuple[str, bytes]] = [
            (good[0].key, good[0].to_bytes()),
            ("poison", b"\xff not json at all"),
            ("poison", json.dumps({"id": 42, "text": ["wrong"], "source": "radio"}).encode()),
        ]
        raw += [(m.key, m.to_bytes()) for m in good[1:]]
        for _, value in raw:  # one key puts the poison between good records of one partition
            bus.publish(topics.messages, value, key="TICK0")
        bus.flush()
        scorer = Scorer(bus, store, TinyModel(), topics, ScorerSettings(group=unique("scorer"), max_batch=4))
        scorer.run(threading.Event(), drain=True)

        assert sorted(store.scored_ids()) == sorted(m.id for m in good)
        assert bus.group_lag(scorer.group, [topics.messages]) == 0  # the poison offsets are committed too
        with bus.consumer(unique("reader"), [topics.dlq]) as reader:
            dead = [json.loads(r.value) for r in poll_until(reader, 2)]
        assert len(dead) == 2
        reasons = sorted(d["reason"] for d in dead)
        assert all(d["stage"] == "score" and d["topic"] == topics.messages for d in dead)
        assert any("JSON" in r for r in reasons), reasons
        assert len(store.dead_letters()) == 2
    finally:
        bus.close()


# -- losing the broker ------------------------------------------------------------------


def test_broker_restart_mid_batch_is_retried_and_nothing_published_after_it_is_lost(
    fresh_kafka_broker: TansuBroker, store: ResultStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker goes away while a batch is in flight and comes back empty (tansu keeps data in memory).

    The worker's publish fails and is retried with backoff (logged, counted in
    aet_retries_total); once the broker is back the batch is re-published and
    stored, and the worker goes on with the records the producer re-sent after
    the restart, none lost. (Records the broker held but nobody had read yet
    are gone with it: that is tansu's memory storage, not something to assert.)
    """
    caplog.set_level(logging.WARNING, logger="aet.pipeline.worker")
    broker = fresh_kafka_broker
    topics = unique_topics()
    # Records not acknowledged within 3 s fail, so the outage shows up in seconds.
    quick = {"producer": {"delivery_timeout_ms": 3000, "request_timeout_ms": 1000}}
    bus = KafkaBus(kafka_settings(broker.bootstrap_servers, **quick))
    publisher = KafkaBus(kafka_settings(broker.bootstrap_servers, **quick))
    model = TinyModel(block_on="the slow one")
    scorer = Scorer(bus, store, model, topics, ScorerSettings(group=unique("scorer"), max_batch=8, max_wait_ms=20))
    worker = WorkerThread(scorer)
    try:
        bus.create_topics(topics.all())
        # Ten keys over every partition; far more records after the restart than before, so that a
        # consumer that kept its old positions would skip some of the new ones.
        before = [message(i, tag="before", keys=10) for i in range(11)] + [message(11, "the slow one", tag="before")]
        for m in before:
            publisher.publish(topics.messages, m.to_bytes(), key=m.key)
        publisher.flush()
        publish_retries = retries("publish")
        worker.start()
        assert model.blocked.wait(DEADLINE_S), "the slow batch never started"

        broker.stop()  # the batch in flight cannot be published now
        model.release.set()
        wait_for(lambda: retries("publish") > publish_retries, "a retried publish")
        wait_for(lambda: scorer.health.state == "degraded", "the worker's health to report the broker away")
        assert scorer.health.operation == "publish"
        broker.start()  # same port, empty

        after = [message(i, tag="after", keys=10) for i in range(100)]

        def republish() -> bool:
            """What a producer does after an outage: send again until acknowledged."""
            try:
                for m in after:
                    publisher.publish(topics.messages, m.to_bytes(), key=m.key)
                publisher.flush(timeout_s=10)
                return True
            except BusError:
                return False

        wait_for(republish, "the publisher to reach the restarted broker")
        # The broker lost every record it held, including any "before" record not yet consumed;
        # what must not be lost: the batch in flight (retried until published) and everything after.
        expected = {m.id for m in after} | {before[-1].id}

        def all_scored() -> bool:
            assert worker.error is None, f"the worker died: {worker.error!r}"
            return set(store.scored_ids()) >= expected

        wait_for(all_scored, "every record published after the restart to be scored")
        wait_for(lambda: scorer.health.state == "ok", "the worker's health to clear once the broker is back")
        worker.finish()
    finally:
        model.release.set()
        worker.stop.set()
        publisher.close()
        bus.close()
    assert expected <= set(store.scored_ids()) <= {m.id for m in before + after}
    assert any("publish failed" in r.getMessage() and "retrying" in r.getMessage() for r in caplog.records)


# -- rebalances ---------------------------------------------------------------------


def test_revoked_partitions_are_never_committed_by_their_old_owner(kafka_broker: TansuBroker) -> None:
    """A member that polled records, then lost their partitions to a newcomer, does not commit them."""
    bus = KafkaBus(kafka_settings(kafka_broker.bootstrap_servers))
    topic, group = unique("rebalance"), unique("g")
    try:
        bus.create_topics([topic], partitions=4)
        for i in range(40):
            bus.publish(topic, f"v{i}".encode(), key=f"k{i}")
        bus.flush()
        first = bus.consumer(group, [topic])
        polled = poll_until(first, 40)
        assert len(polled) == 40 and len({r.partition for r in polled}) == 4

        second = bus.consumer(group, [topic])
        got_second: list[BusRecord] = []
        stop = threading.Event()

        def run_second() -> None:
            while not stop.is_set():
                got_second.extend(second.poll(max_records=100, timeout_ms=100))

        t = threading.Thread(target=run_second, daemon=True)
        t.start()
        try:
            # The old owner learns of the rebalance in its own poll, with its batch still uncommitted.
            wait_for(
                lambda: (
                    first.poll(max_records=100, timeout_ms=100) == []
                    and len(first.assignment()) == 2
                    and len(second.assignment()) == 2
                ),
                "the first member to give up half of its partitions",
            )
            first.commit()  # the batch "finished": it must not commit what it no longer owns
            moved = {p for _, p in second.assignment()}
            assert len(moved) == 2 and first.abandoned_partitions >= 2
            committed = {tp.partition: o for tp, o in bus.committed(group).items() if tp.topic == topic}
            assert not set(committed) & moved, f"revoked partitions {moved} committed: {committed}"
            # Their records go to the new owner again (keyed outputs make that an overwrite).
            expected = sorted(r.value for r in polled if r.partition in moved)
            wait_for(lambda: len(got_second) >= len(expected), "re-delivery to the new owner")
            assert sorted(r.value for r in got_second) == expected
        finally:
            stop.set()
            t.join(timeout=DEADLINE_S)
            first.close()
            second.close()
    finally:
        bus.close()


# -- long work ------------------------------------------------------------------------


def test_run_paused_keeps_the_member_in_its_group_through_long_work(kafka_broker: TansuBroker) -> None:
    """Work longer than max_poll_interval_ms evicts a member that stops polling, not one using run_paused."""
    max_poll_interval_ms = 3000
    work_s = max_poll_interval_ms / 1000 * 1.5
    bus = KafkaBus(kafka_settings(kafka_broker.bootstrap_servers, max_poll_interval_ms=max_poll_interval_ms))
    topic = unique("long")
    try:
        bus.create_topics([topic], partitions=2)
        for i in range(10):
            bus.publish(topic, f"v{i}".encode(), key=f"k{i}")
        bus.flush()

        # With run_paused: the same member, the same generation, and its commit lands.
        group = unique("g")
        with bus.consumer(group, [topic]) as consumer:
            batch = poll_until(consumer, 5)
            generations = consumer.generations
            result = run_paused(consumer, lambda: time.sleep(work_s) or "done", poll_interval_ms=100)
            assert result == "done"
            assert consumer.generations == generations and consumer.revocations == 0
            consumer.commit()
            assert sum(bus.committed(group).values()) == len(batch)
            assert len(poll_until(consumer, 5)) == 5  # resumed after the work

            # Errors come back to the caller, and the partitions are resumed.
            with pytest.raises(ValueError, match="boom"):
                run_paused(consumer, lambda: (_ for _ in ()).throw(ValueError("boom")))
            assert not consumer.paused

        # Control: the same work without polling gets the member evicted, and its batch is abandoned.
        group = unique("g")
        with bus.consumer(group, [topic]) as consumer:
            assert len(poll_until(consumer, 5)) == 5
            time.sleep(work_s)  # the slow work itself, not a synchronisation
            consumer.poll(max_records=1, timeout_ms=100)
            consumer.commit()
            assert consumer.revocations >= 1
            assert sum(bus.committed(group).values()) == 0
    finally:
        bus.close()


# -- aet bench bus ----------------------------------------------------------------------


def test_bench_bus_reports_both_kafka_settings_and_the_memory_bus(kafka_broker: TansuBroker, tmp_path: Path) -> None:
    """A tiny run of the benchmark behind `aet bench bus` (the numbers themselves are in docs/kafka.md)."""
    from aet.pipeline.bench.bus import bus_benchmark
    from aet.pipeline.cli.bench import bus_backends

    report = bus_benchmark(
        BusSettings(),
        bus_backends(),
        bootstrap_servers=kafka_broker.bootstrap_servers,
        n=3000,
        repeats=1,
        out=tmp_path,
        scorer={"messages_per_s": 50.0},
        progress=False,
    )
    assert set(report["results"]) == {"memory", "kafka_chosen", "kafka_defaults"}
    for result in report["results"].values():
        assert result["produce_msgs_per_s"] > 0 and result["consume_msgs_per_s"] > 0
    assert set(report["ratios"]) >= {"kafka_chosen_vs_defaults_produce", "kafka_chosen_vs_defaults_consume"}
    assert set(report["bus_limits_scorer"]) == set(report["results"])
    assert json.loads((tmp_path / "bus.json").read_text())["benchmark"] == "bus"
