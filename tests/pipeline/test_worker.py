"""The worker loop: dynamic batch collection and the delivery contract (publish, store, then commit)."""

from __future__ import annotations

import json
import threading
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

import aet.pipeline.worker as worker_mod
from aet.adapters.memory_bus import MemoryBus
from aet.pipeline.config import DeadLetterSettings, ScorerSettings, TopicSettings
from aet.pipeline.ports import BusError, BusRecord, Consumer
from aet.pipeline.records import DeadLetter, ScoredMessage, decode
from aet.pipeline.roles.scorer import Scorer
from aet.pipeline.worker import DetachedBus, Outputs, Worker, collect_batch
from aet.storage.db import Database
from aet.storage.store import ResultStore
from tests.kafka_broker import TansuBroker, kafka_broker  # noqa: F401 - a fixture, found by pytest through this import
from tests.pipeline.pipeline_fakes import FakeModel, RecordingBus, RecordingStore, Running, encode, message_payload

# -- collect_batch -------------------------------------------------------------


def rec(i: int) -> BusRecord:
    return BusRecord("t", 0, i, None, b"x", 0)


class ScriptedConsumer(Consumer):
    """Returns scripted poll results and records each poll's arguments; may advance a fake clock."""

    def __init__(
        self, script: list[list[BusRecord]], clock: SimpleNamespace | None = None, step_s: float = 0.0
    ) -> None:
        self.script = list(script)
        self.polls: list[tuple[int, int]] = []
        self.clock, self.step_s = clock, step_s

    def poll(self, max_records: int, timeout_ms: int) -> list[BusRecord]:
        self.polls.append((max_records, timeout_ms))
        if self.clock is not None:
            self.clock.now += self.step_s
        batch = self.script.pop(0) if self.script else []
        assert len(batch) <= max_records, "worker asked for fewer records than the script gives"
        return list(batch)

    def commit(self) -> None: ...

    def lag(self) -> int:
        return 0

    def close(self) -> None: ...


@pytest.mark.parametrize(("max_wait_ms", "first_timeout"), [(100, 100), (0, 50), (10, 50), (5000, 500)])
def test_first_poll_waits_a_bounded_time(max_wait_ms: int, first_timeout: int) -> None:
    consumer = ScriptedConsumer([])
    assert collect_batch(consumer, 8, max_wait_ms, threading.Event()) == []
    assert consumer.polls == [(8, first_timeout)]


def test_batch_fills_up_to_max_records() -> None:
    consumer = ScriptedConsumer([[rec(0), rec(1)], [rec(2), rec(3)], [rec(4)], [rec(5)]])
    batch = collect_batch(consumer, 5, 1000, threading.Event())
    assert [r.offset for r in batch] == [0, 1, 2, 3, 4]
    assert [m for m, _ in consumer.polls] == [5, 3, 1]  # never asks for more than the room left


def test_batch_returns_when_nothing_more_arrives() -> None:
    consumer = ScriptedConsumer([[rec(0)], [rec(1)], [], [rec(2)]])
    batch = collect_batch(consumer, 10, 1000, threading.Event())
    assert [r.offset for r in batch] == [0, 1]
    assert len(consumer.polls) == 3


def test_batch_returns_max_wait_after_the_first_record(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(worker_mod, "time", SimpleNamespace(monotonic=lambda: clock.now))
    consumer = ScriptedConsumer([[rec(i)] for i in range(20)], clock=clock, step_s=0.03)
    batch = collect_batch(consumer, 100, 100, threading.Event())
    # The first record arrives at t=0.03, so the deadline is t=0.13; each poll takes 0.03.
    follow_up = [t for _, t in consumer.polls[1:]]
    assert len(batch) == 5
    assert follow_up == pytest.approx([100, 70, 40, 10], abs=1)
    assert all(t <= 100 for t in follow_up)


def test_batch_collection_stops_on_stop_request() -> None:
    stop = threading.Event()
    stop.set()
    consumer = ScriptedConsumer([[rec(0)], [rec(1)]])
    assert [r.offset for r in collect_batch(consumer, 10, 1000, stop)] == [0]
    assert len(consumer.polls) == 1


# -- the delivery contract, on the real MemoryBus and SQLite -------------------


def scorer(bus: Any, store: Any, model: FakeModel, topics: TopicSettings, **settings: Any) -> Scorer:
    return Scorer(bus, store, model, topics, ScorerSettings(**{"max_batch": 64, "max_wait_ms": 20, **settings}))


def publish_messages(bus: Any, topics: TopicSettings, n: int, start: int = 0) -> list[str]:
    ids = []
    for i in range(start, start + n):
        payload = message_payload(i, entities=[f"$E{i % 4}"])
        bus.publish(topics.messages, encode(payload), key=payload["entities"][0])
        ids.append(payload["id"])
    return ids


def scored_on_bus(bus: MemoryBus, topics: TopicSettings) -> list[ScoredMessage]:
    return [decode(ScoredMessage, r.value) for r in bus.read_all(topics.scored)]


def test_drain_returns_once_everything_is_committed(bus: MemoryBus, store: ResultStore, topics: TopicSettings) -> None:
    ids = publish_messages(bus, topics, 25)
    model = FakeModel()
    w = scorer(bus, store, model, topics, max_batch=8)
    assert bus.group_lag(w.group, [topics.messages]) == 25
    assert w.run(threading.Event(), drain=True) == 25
    assert bus.group_lag(w.group, [topics.messages]) == 0
    assert sorted(store.scored_ids()) == sorted(ids)
    assert sorted(m.id for m in scored_on_bus(bus, topics)) == sorted(ids)
    assert w.batches == len(model.calls) >= 4  # 25 records, at most 8 per batch


def test_drain_on_an_empty_topic_returns_at_once(bus: MemoryBus, store: ResultStore, topics: TopicSettings) -> None:
    model = FakeModel()
    assert scorer(bus, store, model, topics).run(threading.Event(), drain=True) == 0
    assert model.calls == [] and store.count_scored() == 0


def test_store_failure_is_retried_and_the_batch_committed_only_after(
    bus: MemoryBus, store: ResultStore, topics: TopicSettings
) -> None:
    ids = publish_messages(bus, topics, 6)
    group = ScorerSettings().group
    seen: list[tuple[int, int]] = []  # (uncommitted lag, records on aet.scored) at each write attempt
    flaky = RecordingStore(
        store,
        fail_times=1,
        on_write=lambda _: seen.append((bus.group_lag(group, [topics.messages]), len(bus.read_all(topics.scored)))),
    )
    w = scorer(bus, flaky, FakeModel(), topics)
    assert w.run(threading.Event(), drain=True) == 6
    assert flaky.attempts == 2
    # Published before storing; not committed at either attempt, including the successful retry.
    assert seen == [(6, 6), (6, 6)]
    assert bus.group_lag(group, [topics.messages]) == 0
    # Stored exactly once, published exactly once (the retry does not republish).
    assert len(flaky.writes) == 1 and sorted(m.id for m in flaky.writes[0]["scored"]) == sorted(ids)
    assert store.count_scored() == 6
    assert len(bus.read_all(topics.scored)) == 6


class FlakyPublishBus(RecordingBus):
    """Fails the first publish to one topic."""

    def __init__(self, inner: MemoryBus, topic: str) -> None:
        super().__init__(inner)
        self.topic, self.failures = topic, 0

    def publish(self, topic: str, value: bytes, key: str | None = None) -> None:
        if topic == self.topic and self.failures == 0:
            self.failures += 1
            raise BusError("broker unavailable (injected)")
        super().publish(topic, value, key)


def test_publish_failure_is_retried_before_storing(bus: MemoryBus, store: ResultStore, topics: TopicSettings) -> None:
    ids = publish_messages(bus, topics, 4)
    flaky_bus = FlakyPublishBus(bus, topics.scored)
    at_write: list[int] = []
    recording = RecordingStore(store, on_write=lambda _: at_write.append(len(bus.read_all(topics.scored))))
    w = scorer(flaky_bus, recording, FakeModel(), topics)
    assert w.run(threading.Event(), drain=True) == 4
    assert flaky_bus.failures == 1
    assert at_write == [4]  # the store was written once, after every output was on the bus
    assert sorted(m["id"] for m in flaky_bus.on(topics.scored)) == sorted(ids)
    assert bus.group_lag(w.group, [topics.messages]) == 0


def test_stop_during_an_outage_leaves_the_batch_uncommitted(
    bus: MemoryBus, store: ResultStore, topics: TopicSettings
) -> None:
    ids = publish_messages(bus, topics, 5)
    broken = RecordingStore(store, fail_times=10**9)
    run = Running(scorer(bus, broken, FakeModel(), topics))
    assert broken.failed.wait(10)
    run.finish()
    assert isinstance(run.error, OSError)  # the batch is abandoned, not committed without its rows
    assert bus.group_lag(ScorerSettings().group, [topics.messages]) == 5
    assert store.count_scored() == 0
    # A healthy scorer in the same group picks the batch up again and stores it once.
    w = scorer(bus, store, FakeModel(), topics)
    assert w.run(threading.Event(), drain=True) == 5
    assert sorted(store.scored_ids()) == sorted(ids)


class Crash(BaseException):
    """Stands in for SIGKILL between storing a batch and committing it."""


def test_crash_before_commit_redelivers_and_store_stays_exactly_once(
    bus: MemoryBus, store: ResultStore, topics: TopicSettings
) -> None:
    ids = publish_messages(bus, topics, 7)

    class CrashAfterWrite(RecordingStore):
        def write(self, **kwargs: Any) -> None:
            super().write(**kwargs)
            raise Crash()

    with pytest.raises(Crash):
        scorer(bus, CrashAfterWrite(store), FakeModel("v1"), topics).run(threading.Event())
    assert store.count_scored() == 7
    assert bus.group_lag(ScorerSettings().group, [topics.messages]) == 7  # never committed
    model = FakeModel("v2")
    assert scorer(bus, store, model, topics).run(threading.Event(), drain=True) == 7
    assert sorted(store.scored_ids()) == sorted(ids)  # one row per message, overwritten
    assert {store.scored(i).model_version for i in ids} == {"v2"}
    assert len(bus.read_all(topics.scored)) == 14  # at-least-once on the bus, keyed by message id


def test_stop_event_ends_the_loop_after_the_current_batch(
    bus: MemoryBus, store: ResultStore, topics: TopicSettings
) -> None:
    publish_messages(bus, topics, 9)
    entered, release = threading.Event(), threading.Event()
    model = FakeModel(gate=(entered, release))
    run = Running(scorer(bus, store, model, topics, max_batch=3))
    assert entered.wait(10), "the first batch never reached the model"
    run.stop.set()  # while the first batch is inside the model
    release.set()
    run.thread.join(10)
    assert not run.thread.is_alive() and run.error is None
    assert run.result == 3
    assert model.batch_sizes == [3]
    assert store.count_scored() == 3  # the current batch was finished ...
    assert bus.group_lag(ScorerSettings().group, [topics.messages]) == 6  # ... and committed, nothing more


def test_threaded_worker_keeps_up_with_new_records(bus: MemoryBus, store: ResultStore, topics: TopicSettings) -> None:
    w = scorer(bus, store, FakeModel(), topics)
    run = Running(w)
    try:
        first = publish_messages(bus, topics, 3)
        run.wait_committed(bus, [topics.messages])
        assert sorted(store.scored_ids()) == sorted(first)
        second = publish_messages(bus, topics, 4, start=3)
        run.wait_committed(bus, [topics.messages])
        assert sorted(store.scored_ids()) == sorted(first + second)
    finally:
        run.finish()
    assert run.error is None and run.result == 7


# -- a role's handle() output goes through the same contract --------------------


class EchoWorker(Worker):
    """A minimal role: dead-letters records whose value starts with b"!", republishes the rest."""

    role = "echo"

    def handle(self, records: list[BusRecord]) -> Outputs:
        out = Outputs()
        for r in records:
            if r.value.startswith(b"!"):
                out.dead_letters.append(
                    DeadLetter.of(
                        r.value,
                        stage="echo",
                        reason="bang",
                        topic=r.topic,
                        partition=r.partition,
                        offset=r.offset,
                        key=r.key,
                    )
                )
            else:
                out.publish.append(("echo.out", r.key, r.value.upper()))
        return out


def test_dead_letters_from_handle_are_published_and_stored(bus: MemoryBus, store: ResultStore) -> None:
    for v in [b"a", b"!b", b"c", b"!d\xff"]:
        bus.publish("echo.in", v, key="k")
    w = EchoWorker(bus, store, group="echo", topics=["echo.in"], dlq_topic="aet.dlq", max_wait_ms=10)
    assert w.run(threading.Event(), drain=True) == 4
    assert [r.value for r in bus.read_all("echo.out")] == [b"A", b"C"]
    dlq = [decode(DeadLetter, r.value) for r in bus.read_all("aet.dlq")]
    assert [(d.stage, d.reason, d.offset) for d in dlq] == [("echo", "bang", 1), ("echo", "bang", 3)]
    assert dlq[1].raw is None and dlq[1].raw_base64  # non-UTF-8 kept exactly
    rows = store.dead_letters()
    assert sorted(r.offset for r in rows) == [1, 3] and {r.stage for r in rows} == {"echo"}
    assert json.loads(bus.read_all("aet.dlq")[0].value)["raw"] == "!b"


def test_a_detached_worker_refuses_every_bus_operation() -> None:
    """A data-parallel follower's trainer has no bus: using it is an error, closing it is not."""
    bus = DetachedBus()
    with pytest.raises(BusError, match="detached"):
        bus.publish("t", b"x")
    with pytest.raises(BusError, match="detached"):
        bus.consumer("g", ["t"])
    with bus:
        pass


# -- permanent vs transient failures (issue 13) ----------------------------------


class MessageSizeTooLargeError(Exception):
    """Named like kafka-python's: the broker will never take this record."""


class OperationalError(Exception):
    """Named like SQLAlchemy's: the database is unreachable for now."""


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (OSError("connection refused"), True),
        (OperationalError("server closed the connection"), True),
        (BusError("flush timed out"), True),
        (ValueError("bad data"), False),
        (RuntimeError("a bug of no known kind"), False),
    ],
)
def test_errors_are_classified(error: Exception, transient: bool) -> None:
    assert worker_mod.is_transient(error) is transient


def test_a_permanent_cause_inside_a_transient_wrapper_is_permanent() -> None:
    try:
        try:
            raise MessageSizeTooLargeError("1048600 bytes")
        except MessageSizeTooLargeError as exc:
            raise BusError("publish to aet.scored failed") from exc
    except BusError as wrapped:
        assert not worker_mod.is_transient(wrapped)


class PayloadWorker(Worker):
    """Turns each record into a scored message whose text is the record's value (no validation on the way)."""

    role = "payload"

    def handle(self, records: list[BusRecord]) -> Outputs:
        out = Outputs()
        for r in records:
            m = decode(ScoredMessage, SCORED_TEMPLATE).model_copy(update={"id": r.key, "text": r.value.decode()})
            out.scored.append(m)
            out.publish.append(("payload.out", r.key, m.to_bytes()))
        return out


SCORED_TEMPLATE = {
    **message_payload("t"),
    "label": "neutral",
    "probs": {"negative": 0.2, "neutral": 0.6, "positive": 0.2},
    "score": 0.0,
    "model_version": "v0001",
}


@pytest.mark.postgres
def test_a_row_postgresql_refuses_is_dead_lettered_and_the_rest_committed(
    bus: MemoryBus, postgres_url: str, topics: TopicSettings
) -> None:
    """Reproduces issue 13: a NUL in text made PostgreSQL refuse the batch and `aet run` retry it every 30 s forever.

    (decode now refuses NUL; this record slipped past it, as a record of another producer or version could.)
    """
    db = Database(postgres_url)
    try:
        store = ResultStore(db)
        for key, text in [("a", "fine"), ("b", "nul \x00 inside"), ("c", "fine too")]:
            bus.publish("payload.in", text.encode(), key=key)
        w = PayloadWorker(bus, store, group="payload", topics=["payload.in"], dlq_topic=topics.dlq, max_wait_ms=10)
        w.delivery = DeadLetterSettings(max_attempts=2)
        run = Running(w)
        try:
            run.wait_committed(bus, ["payload.in"], timeout_s=20)
        finally:
            run.finish()
        assert run.error is None
        assert sorted(store.scored_ids()) == ["a", "c"]
        [dead] = store.dead_letters()
        assert dead.stage == "payload" and "DataError" in dead.reason and "NUL" in dead.reason
        assert len(dead.reason) < 600  # the first line of the error, not the statement and its rows
        [published] = [decode(DeadLetter, r.value) for r in bus.read_all(topics.dlq)]
        assert json.loads(published.kept)["id"] == "b" and published.complete
        assert w.health.gave_up == 1 and w.health.state == "ok"
    finally:
        db.dispose()


def test_a_transient_store_failure_is_retried_and_health_says_so(
    bus: MemoryBus, store: ResultStore, topics: TopicSettings
) -> None:
    publish_messages(bus, topics, 3)
    states: list[str] = []
    flaky = RecordingStore(store, fail_times=3, on_write=lambda _: states.append(w.health.state))
    w = scorer(bus, flaky, FakeModel(), topics)
    w.delivery = DeadLetterSettings(max_attempts=1)  # a transient failure is never counted against the tries
    assert w.run(threading.Event(), drain=True) == 3
    assert states == ["ok", "degraded", "degraded", "degraded"]
    assert w.health.state == "ok" and w.health.retries == 3 and w.health.gave_up == 0
    assert store.count_scored() == 3 and store.dead_letters() == []


class RefusingBus(RecordingBus):
    """Refuses to publish values that start with ``prefix``, the way Kafka refuses a record over its limit."""

    def __init__(self, inner: MemoryBus, prefix: bytes) -> None:
        super().__init__(inner)
        self.prefix = prefix
        self.refusals = 0

    def publish(self, topic: str, value: bytes, key: str | None = None) -> None:
        if value.startswith(self.prefix):
            self.refusals += 1
            try:
                raise MessageSizeTooLargeError(f"{len(value)} bytes")
            except MessageSizeTooLargeError as exc:
                raise BusError(f"publish to {topic} failed") from exc
        super().publish(topic, value, key=key)


def test_a_publish_the_bus_always_refuses_is_dead_lettered_after_bounded_tries(
    bus: MemoryBus, store: ResultStore
) -> None:
    """Before: the publish was retried with backoff forever and the batch never committed."""
    for v in [b"a", b"big", b"c"]:
        bus.publish("echo.in", v, key="k")
    refusing = RefusingBus(bus, b"BIG")
    w = EchoWorker(refusing, store, group="echo", topics=["echo.in"], dlq_topic="aet.dlq", max_wait_ms=10)
    w.delivery = DeadLetterSettings(max_attempts=3)
    assert w.run(threading.Event(), drain=True) == 3
    assert refusing.refusals == 3 + 3  # the batch's tries, then the record's own: bounded, not forever
    # Every try re-sent what came before the refused record (at least once, as any retried publish).
    assert {r.value for r in bus.read_all("echo.out")} == {b"A", b"C"}
    [dead] = [decode(DeadLetter, r.value) for r in bus.read_all("aet.dlq")]
    assert dead.stage == "echo" and dead.topic == "echo.out" and dead.kept == b"BIG" and dead.complete
    assert "MessageSizeTooLargeError" in dead.reason
    assert [r.stage for r in store.dead_letters()] == ["echo"]
    assert bus.group_lag("echo", ["echo.in"]) == 0


def test_an_output_over_the_record_limit_is_dead_lettered_before_publishing(bus: MemoryBus, store: ResultStore) -> None:
    bus.publish("echo.in", b"x" * 5000, key="k")
    bus.publish("echo.in", b"small", key="k")
    w = EchoWorker(bus, store, group="echo", topics=["echo.in"], dlq_topic="aet.dlq", max_wait_ms=10)
    w.delivery = DeadLetterSettings(max_record_bytes=4096)
    assert w.run(threading.Event(), drain=True) == 2
    assert [r.value for r in bus.read_all("echo.out")] == [b"SMALL"]
    [dead] = [decode(DeadLetter, r.value) for r in bus.read_all("aet.dlq")]
    assert dead.raw_size == 5000 and dead.truncated and "over dead_letters.max_record_bytes" in dead.reason
    assert len(bus.read_all("aet.dlq")[0].value) < 6000


def test_a_conflict_found_by_the_store_is_published_to_the_dead_letter_topic(
    bus: MemoryBus, store: ResultStore, topics: TopicSettings
) -> None:
    bus.publish("payload.in", b"first text", key="same-id")
    bus.publish("payload.in", b"another text", key="same-id")
    w = PayloadWorker(bus, store, group="payload", topics=["payload.in"], dlq_topic=topics.dlq, max_batch=1)
    assert w.run(threading.Event(), drain=True) == 2
    assert store.scored("same-id").text == "first text"  # type: ignore[union-attr]
    [dead] = [decode(DeadLetter, r.value) for r in bus.read_all(topics.dlq)]
    assert dead.stage == "store" and "different text" in dead.reason


@pytest.mark.kafka
def test_a_kafka_tombstone_is_dead_lettered_and_the_batch_around_it_scored(
    kafka_broker: TansuBroker,  # noqa: F811 - the fixture imported above
    store: ResultStore,
    topics: TopicSettings,
) -> None:
    """Issue 13: a tombstone (value None) from another client stopped `aet score` with a TypeError, and none of the
    good messages of its batch reached aet.scored."""
    from kafka import KafkaProducer

    from aet.adapters.kafka_bus import KafkaBus
    from aet.pipeline.config import BusSettings

    names = TopicSettings(**{f: f"{getattr(topics, f)}-{uuid.uuid4().hex[:8]}" for f in TopicSettings.model_fields})
    settings = BusSettings(
        backend="kafka",
        bootstrap_servers=kafka_broker.bootstrap_servers,
        partitions=1,
        kafka={"session_timeout_ms": 6000, "heartbeat_interval_ms": 2000},
    )
    bus = KafkaBus(settings)
    try:
        bus.create_topics(names.all())
        producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers)
        for i in range(3):
            producer.send(names.messages, key=b"k", value=encode(message_payload(i)))
        producer.send(names.messages, key=b"k", value=None)  # a tombstone
        producer.send(names.messages, key=b"k", value=encode(message_payload(3)))
        producer.flush()
        producer.close()
        w = Scorer(bus, store, FakeModel(), names, ScorerSettings(group=f"g-{uuid.uuid4().hex[:8]}", max_wait_ms=200))
        assert w.run(threading.Event(), drain=True) == 5
        assert sorted(store.scored_ids()) == ["m0", "m1", "m2", "m3"]
        [dead] = store.dead_letters()
        assert dead.stage == "score" and "tombstone" in dead.reason and dead.raw_size == 0 and dead.offset == 3
        assert bus.group_lag(w.group, [names.messages]) == 0
    finally:
        bus.close()
