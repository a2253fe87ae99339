"""The Bus contract (pipeline/ports.py), checked against every backend that ``bus_factory`` opens.

Nothing here is backend-specific. Group joins on a real broker take seconds, so
every wait is a poll loop bounded by a generous deadline rather than a fixed sleep;
on the memory bus the loops finish at once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable

from aet.pipeline.ports import Bus, BusRecord, Consumer

BusFactory = Callable[[], Bus]  # the bus_factory fixture of tests/adapters/conftest.py
Unique = Callable[[str], str]

DEADLINE_S = 60.0  # upper bound for any wait; only reached when something is broken
POLL_MS = 200


def publish_all(bus: Bus, topic: str, records: Iterable[tuple[str | None, bytes]]) -> None:
    """Publish (key, value) pairs in order and wait until the bus has them."""
    for key, value in records:
        bus.publish(topic, value, key=key)
    bus.flush(timeout_s=30)


def poll_until(consumer: Consumer, n: int, deadline_s: float = DEADLINE_S) -> list[BusRecord]:
    """Poll until ``n`` records arrived (never asking for more) or the deadline passes."""
    out: list[BusRecord] = []
    deadline = time.monotonic() + deadline_s
    while len(out) < n and time.monotonic() < deadline:
        out.extend(consumer.poll(max_records=n - len(out), timeout_ms=POLL_MS))
    return out


def values(records: Iterable[BusRecord]) -> list[bytes]:
    return [r.value for r in records]


def test_publish_poll_roundtrip(bus_factory: BusFactory, unique: Unique) -> None:
    """Bytes and keys come back exactly, with topic, partition, offset and a timestamp."""
    bus, topic = bus_factory(), unique("roundtrip")
    bus.create_topics([topic], partitions=3)
    sent: list[tuple[str | None, bytes]] = [
        ("AAPL", b'{"text": "up"}'),
        ("MSFT", "caf\u00e9 \u2192 \U0001f4c8".encode("utf-8")),
        (None, bytes(range(256))),
        ("AAPL", b""),
        (None, b"\x00"),
    ]
    before_ms = int(time.time() * 1000)
    publish_all(bus, topic, sent)
    with bus.consumer(unique("g"), [topic]) as consumer:
        got = poll_until(consumer, len(sent))
    assert Counter((r.key, r.value) for r in got) == Counter(sent)
    for r in got:
        assert r.topic == topic
        assert 0 <= r.partition < 3 and r.offset >= 0
        assert isinstance(r.value, bytes)
        assert before_ms - 60_000 <= r.timestamp_ms <= int(time.time() * 1000) + 60_000
    assert len({(r.partition, r.offset) for r in got}) == len(sent)


def test_same_key_same_partition_in_publish_order(bus_factory: BusFactory, unique: Unique) -> None:
    """All records of one key land in one partition and are read back in publish order."""
    bus, topic = bus_factory(), unique("order")
    bus.create_topics([topic], partitions=4)
    keys = [f"key-{k}" for k in range(8)]
    sent = [(key, f"{key}:{i}".encode()) for i in range(6) for key in keys]  # interleaved keys
    publish_all(bus, topic, sent)
    with bus.consumer(unique("g"), [topic]) as consumer:
        got = poll_until(consumer, len(sent))
    assert len(got) == len(sent)
    by_key: dict[str | None, list[BusRecord]] = defaultdict(list)
    for r in got:
        by_key[r.key].append(r)
    for key in keys:
        records = by_key[key]
        assert len({r.partition for r in records}) == 1, f"{key} spread over partitions"
        assert values(records) == [f"{key}:{i}".encode() for i in range(6)]
        offsets = [r.offset for r in records]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)


def test_poll_returns_empty_after_timeout(bus_factory: BusFactory, unique: Unique) -> None:
    """With nothing to read, poll waits about timeout_ms and returns []."""
    bus, topic = bus_factory(), unique("empty")
    bus.create_topics([topic], partitions=2)
    with bus.consumer(unique("g"), [topic]) as consumer:
        started = time.monotonic()
        got = consumer.poll(max_records=10, timeout_ms=300)
        elapsed = time.monotonic() - started
    assert got == []
    assert 0.25 <= elapsed < 30


def test_max_records_is_respected(bus_factory: BusFactory, unique: Unique) -> None:
    """poll never returns more than max_records."""
    bus, topic = bus_factory(), unique("max")
    bus.create_topics([topic], partitions=1)
    publish_all(bus, topic, [(None, str(i).encode()) for i in range(10)])
    with bus.consumer(unique("g"), [topic]) as consumer:
        deadline = time.monotonic() + DEADLINE_S
        batch: list[BusRecord] = []
        while not batch and time.monotonic() < deadline:
            batch = consumer.poll(max_records=3, timeout_ms=POLL_MS)
        assert 1 <= len(batch) <= 3
        assert values(batch) == [str(i).encode() for i in range(len(batch))]


def test_consumer_reads_several_topics(bus_factory: BusFactory, unique: Unique) -> None:
    """One consumer subscribed to two topics receives the records of both."""
    bus, first, second = bus_factory(), unique("multi-a"), unique("multi-b")
    bus.create_topics([first, second], partitions=2)
    publish_all(bus, first, [("k", b"a1"), ("k", b"a2")])
    publish_all(bus, second, [("k", b"b1")])
    with bus.consumer(unique("g"), [first, second]) as consumer:
        got = poll_until(consumer, 3)
    assert sorted((r.topic, r.value) for r in got) == [(first, b"a1"), (first, b"a2"), (second, b"b1")]


def test_group_members_split_partitions(bus_factory: BusFactory, unique: Unique) -> None:
    """Two members of one group share the partitions: each record goes to exactly one of them."""
    bus, topic, group = bus_factory(), unique("split"), unique("g")
    bus.create_topics([topic], partitions=4)
    members = [bus.consumer(group, [topic]), bus.consumer(group, [topic])]
    received: list[list[BusRecord]] = [[], []]
    progress = threading.Condition()
    stop = threading.Event()
    errors: list[BaseException] = []

    def run(index: int) -> None:
        consumer = members[index]
        try:
            while not stop.is_set():
                batch = consumer.poll(max_records=50, timeout_ms=100)
                if batch:
                    consumer.commit()
                    with progress:
                        received[index].extend(batch)
                        progress.notify_all()
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)
            with progress:
                progress.notify_all()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    keys = [f"key-{k}" for k in range(32)]  # enough keys to reach every partition
    try:
        # Warm-up: publish probe waves until both members have been given partitions.
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and not errors and not all(received):
            publish_all(bus, topic, [(k, b"probe") for k in keys])
            with progress:
                progress.wait_for(lambda: all(received) or bool(errors), timeout=2.0)
        assert not errors, errors
        assert all(received), "a member never got an assignment"

        sent = [(k, f"real-{k}-{i}".encode()) for i in range(3) for k in keys]
        publish_all(bus, topic, sent)
        real = lambda: [[r for r in rs if r.value.startswith(b"real-")] for rs in received]
        with progress:
            progress.wait_for(lambda: sum(map(len, real())) >= len(sent) or bool(errors), timeout=DEADLINE_S)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=DEADLINE_S)
        for c in members:
            c.close()
    assert not errors, errors
    first, second = real()
    assert first and second, "one member got all the records"
    assert Counter(values(first + second)) == Counter(v for _, v in sent), "records lost or duplicated"
    assert not {(r.partition, r.offset) for r in first} & {(r.partition, r.offset) for r in second}
    assert not {r.partition for r in first} & {r.partition for r in second}


def test_commit_close_and_resume(bus_factory: BusFactory, unique: Unique) -> None:
    """A new member of the group starts right after the last committed record."""
    bus, topic, group = bus_factory(), unique("resume"), unique("g")
    bus.create_topics([topic], partitions=1)
    sent = [f"v{i}".encode() for i in range(10)]
    publish_all(bus, topic, [("k", v) for v in sent])
    with bus.consumer(group, [topic]) as first:
        assert values(poll_until(first, 4)) == sent[:4]
        first.commit()
    with bus.consumer(group, [topic]) as second:
        rest = poll_until(second, 6)
        assert values(rest) == sent[4:]
        assert [r.offset for r in rest] == sorted(r.offset for r in rest)
        assert second.poll(max_records=10, timeout_ms=500) == []


def test_uncommitted_records_are_redelivered(bus_factory: BusFactory, unique: Unique) -> None:
    """Records polled after the last commit go to the next member again (at-least-once)."""
    bus, topic, group = bus_factory(), unique("redeliver"), unique("g")
    bus.create_topics([topic], partitions=1)
    sent = [f"v{i}".encode() for i in range(6)]
    publish_all(bus, topic, [("k", v) for v in sent])
    with bus.consumer(group, [topic]) as first:
        assert values(poll_until(first, 3)) == sent[:3]
        first.commit()
        assert values(poll_until(first, 3)) == sent[3:]
        # closed without committing the last three
    with bus.consumer(group, [topic]) as second:
        assert values(poll_until(second, 3)) == sent[3:]


def test_each_group_gets_every_record(bus_factory: BusFactory, unique: Unique) -> None:
    """Two groups read the same topic independently; each sees all records once."""
    bus, topic = bus_factory(), unique("fanout")
    bus.create_topics([topic], partitions=3)
    sent = [(f"k{i % 5}", f"v{i}".encode()) for i in range(20)]
    publish_all(bus, topic, sent)
    group_a, group_b = unique("ga"), unique("gb")
    with bus.consumer(group_a, [topic]) as a, bus.consumer(group_b, [topic]) as b:
        got_a, got_b = poll_until(a, len(sent)), poll_until(b, len(sent))
        a.commit()
        assert b.poll(max_records=100, timeout_ms=300) == []
    assert bus.group_lag(group_a, [topic]) == 0
    assert bus.group_lag(group_b, [topic]) == len(sent)  # one group's commit is not the other's
    expected = Counter(v for _, v in sent)
    assert Counter(values(got_a)) == expected
    assert Counter(values(got_b)) == expected


def test_group_lag_goes_to_zero_after_commit(bus_factory: BusFactory, unique: Unique) -> None:
    """group_lag counts records not committed by the group: all before, none after commit."""
    bus, topic, group = bus_factory(), unique("lag"), unique("g")
    bus.create_topics([topic], partitions=3)
    publish_all(bus, topic, [(f"k{i}", b"x") for i in range(7)])
    assert bus.group_lag(group, [topic]) == 7
    with bus.consumer(group, [topic]) as consumer:
        assert len(poll_until(consumer, 7)) == 7
        assert bus.group_lag(group, [topic]) == 7  # polled is not committed
        consumer.commit()
        assert bus.group_lag(group, [topic]) == 0
    publish_all(bus, topic, [("k0", b"y"), ("k1", b"y")])
    assert bus.group_lag(group, [topic]) == 2


def test_create_topics_is_idempotent(bus_factory: BusFactory, unique: Unique) -> None:
    """Creating an existing topic again, even with another partition count, changes nothing."""
    bus, topic = bus_factory(), unique("idem")
    bus.create_topics([topic], partitions=2)
    publish_all(bus, topic, [("before", b"kept")])
    bus.create_topics([topic], partitions=2)
    bus.create_topics([topic, unique("other")], partitions=5)
    bus.create_topics([topic])
    sent = [(f"key-{k}", b"after") for k in range(30)]
    publish_all(bus, topic, sent)
    with bus.consumer(unique("g"), [topic]) as consumer:
        got = poll_until(consumer, len(sent) + 1)
    assert Counter(values(got)) == Counter({b"kept": 1, b"after": 30})
    assert {r.partition for r in got} == {0, 1}
